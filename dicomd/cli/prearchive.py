from __future__ import annotations

from typing import Any

import click

from dicomd.catalog import PREARCHIVE
from dicomd.cli.common import json_option, print_json, print_table, store_options
from dicomd.config import Config
from dicomd.daemon import Stores
from dicomd.prearchive import xnat_row

LIST_COLUMNS = ("project", "folderName", "subject", "timestamp", "status", "scans", "instances", "modalities",
                "scan_date", "lastmod")


@click.group()
def prearchive() -> None:
    """Review and act on sessions waiting in the prearchive."""


@prearchive.command("list")
@store_options
@click.option("--project", "projects", multiple=True, help="Only these projects (repeatable).")
@click.option("--status", help="Only sessions in this status (READY, RECEIVING, CONFLICT, ...).")
@json_option
def list_sessions(config: Config, projects: tuple[str, ...], status: str | None, as_json: bool) -> None:
    """List prearchive sessions, newest first.

    Example:

        dicomd prearchive list --project demo --status READY --json
    """
    stores = Stores.open(config)
    try:
        rows = [xnat_row(r, config) for r in stores.catalog.sessions(PREARCHIVE, projects=projects, status=status)]
    finally:
        stores.close()
    if as_json:
        print_json(rows)
    else:
        print_table(rows, LIST_COLUMNS)


@prearchive.command("archive")
@store_options
@click.argument("sessions", nargs=-1, required=True)
@click.option("--overwrite", type=click.Choice(["none", "append", "delete"]), help="Overwrite policy (default: the project's).")
@click.option("--force", is_flag=True, help="Archive even when the session is held for review (burned-in data).")
@json_option
def archive_sessions(config: Config, sessions: tuple[str, ...], overwrite: str | None, force: bool, as_json: bool) -> None:
    """Archive prearchive sessions (SESSION is P/T/S, its url, or a unique folder name).

    Example:

        dicomd prearchive archive demo/20240619_091425123/S1 --overwrite append
    """
    stores = Stores.open(config)
    results: list[dict[str, Any]] = []
    try:
        for name in sessions:
            row = stores.prearchive.resolve(name)
            result = stores.archiver.archive(row.id, overwrite=overwrite, actor="cli", force_review=force)
            results.append({"session": row.url, "archived": result.url, "instances": result.instances})
            if not as_json:
                click.echo(f"{row.url} -> {result.url} ({result.instances} instances)")
    finally:
        stores.close()
    if as_json:
        print_json(results)
