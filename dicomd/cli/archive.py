from __future__ import annotations

import click

from dicomd.catalog import ARCHIVE
from dicomd.cli.common import json_option, print_json, print_table, store_options
from dicomd.config import Config
from dicomd.daemon import Stores
from dicomd.errors import DicomdError
from dicomd.prearchive import archive_row

LIST_COLUMNS = ("project", "subject", "label", "scans", "instances", "modalities", "scan_date", "custom")


def parse_where(values: tuple[str, ...]) -> dict[str, str]:
    where: dict[str, str] = {}
    for item in values:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise click.BadParameter(f"{item!r} is not field=value", param_hint="--where")
        where[field.strip()] = value
    return where


@click.group()
def archive() -> None:
    """Query the archive catalog."""


@archive.command("list")
@store_options
@click.option("--project", "projects", multiple=True, help="Only these projects (repeatable).")
@click.option("--subject", help="Only this subject.")
@click.option("--where", "where", multiple=True, help="field=value on mapped custom fields (repeatable).")
@json_option
def list_sessions(config: Config, projects: tuple[str, ...], subject: str | None, where: tuple[str, ...],
                  as_json: bool) -> None:
    """List archived sessions, newest first.

    Example:

        dicomd archive list --project demo --where scanner=Prisma --json
    """
    stores = Stores.open(config)
    try:
        rows = [archive_row(r) for r in stores.catalog.sessions(ARCHIVE, projects=projects, subject=subject,
                                                                where=parse_where(where))]
    finally:
        stores.close()
    if as_json:
        print_json(rows)
    else:
        print_table(rows, LIST_COLUMNS)


@archive.command("show")
@store_options
@click.argument("session")
@json_option
def show(config: Config, session: str, as_json: bool) -> None:
    """Show one archived session (P/LABEL, its url, or a unique label) with its scans.

    Example:

        dicomd archive show demo/SESSION1
    """
    stores = Stores.open(config)
    try:
        row = stores.prearchive.resolve(session, stage=ARCHIVE)
        data = {**archive_row(row), "scans_detail": stores.catalog.scans(row.id),
                "history": stores.catalog.history(row.id)}
    finally:
        stores.close()
    if as_json:
        print_json(data)
        return
    for key in ("project", "subject", "label", "study_instance_uid", "instances", "modalities", "url"):
        click.echo(f"{key:20} {data[key]}")
    print_table(data["scans_detail"], ("scan_id", "series_number", "description", "modality", "instances", "bytes"))


__all__ = ["archive", "DicomdError"]
