from __future__ import annotations

import click

from dicomd.cli.common import (
    colour,
    human_bytes,
    json_option,
    open_stores,
    print_fields,
    print_json,
    print_table,
    stamp,
    store_options,
)
from dicomd.config import Config
from dicomd.errors import DicomdError
from dicomd.lifecycle import Stage
from dicomd.views import archive_row

LIST_COLUMNS = ("project", "subject", ("label", "session"), "scans", "instances", "modalities",
                ("scan_date", "study date"), ("archived", "archived"), ("custom", "fields"))
SCAN_COLUMNS = (("scan_id", "scan"), ("series_number", "series"), ("description", "description"),
                ("modality", "modality"), ("instances", "instances"), ("size", "size"))


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
    """Query the archive catalog.

    SESSION is P/LABEL, its url (/archive/projects/P/subjects/S/experiments/LABEL), or a unique label.

    Example:

        dicomd archive list --project demo
    """


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
    with open_stores(config) as stores:
        rows = [archive_row(r) for r in stores.catalog.sessions(Stage.ARCHIVE, projects=projects, subject=subject,
                                                                where=parse_where(where))]
    if as_json:
        print_json(rows)
    else:
        print_table([{**r, "archived": stamp(r["archived_at"])} for r in rows], LIST_COLUMNS)


@archive.command("show")
@store_options
@click.argument("session")
@json_option
def show(config: Config, session: str, as_json: bool) -> None:
    """Show one archived session (P/LABEL, its url, or a unique label) with its scans.

    Example:

        dicomd archive show demo/SESSION1
    """
    with open_stores(config) as stores:
        row = stores.prearchive.resolve(session, stage=Stage.ARCHIVE)
        data = {**archive_row(row), "bytes": row.bytes, "anonymization": row.anonymization,
                "scans_detail": [{**s, "size": human_bytes(s["bytes"])} for s in stores.catalog.scans(row.id)],
                "history": [{**h, "when": stamp(h["at"])} for h in stores.catalog.history(row.id)]}
    if as_json:
        print_json(data)
        return
    print_fields([("session", data["url"]), ("project", data["project"]), ("subject", data["subject"]),
                  ("label", data["label"]), ("study uid", data["study_instance_uid"]),
                  ("study date", data["scan_date"]), ("modalities", data["modalities"]),
                  ("scans", data["scans"]), ("instances", data["instances"]), ("size", human_bytes(data["bytes"])),
                  ("archived", stamp(data["archived_at"])), ("anonymization", data["anonymization"] or "none")])
    if data["custom"]:
        click.echo(colour("\nmapped fields", bold=True))
        print_fields(sorted(data["custom"].items()))
    click.echo(colour("\nscans", bold=True))
    print_table(data["scans_detail"], SCAN_COLUMNS)
    click.echo(colour("\nhistory", bold=True))
    print_table(data["history"], (("when", "when"), ("status", "status"), ("actor", "by"), ("reason", "reason")))


__all__ = ["archive", "DicomdError"]
