"""`dicomd quarantine ...`: what was refused and why; retry after a fix, or delete."""

from __future__ import annotations

import json
import shutil
from typing import Any

import click

from dicomd import operations
from dicomd.catalog import QuarantineRow
from dicomd.cli.common import (
    confirm,
    human_bytes,
    json_option,
    open_stores,
    print_fields,
    print_json,
    print_table,
    report_error,
    stamp,
    store_options,
    yes_option,
)
from dicomd.config import Config
from dicomd.errors import DicomdError
from dicomd.operations import DELETED, HELD, LocalOperator
from dicomd.routing import Explicit

LIST_COLUMNS = ("id", "when", "status", "source", "size", "reason")


def entry_dict(row: QuarantineRow) -> dict[str, Any]:
    return {"id": row.id, "at": row.at, "when": stamp(row.at), "status": row.status, "source": row.source,
            "reason": row.reason, "path": row.path, "bytes": row.size, "size": human_bytes(row.size),
            "sop_instance_uid": row.sop_instance_uid}


@click.group()
def quarantine() -> None:
    """What was refused and why; retry after a fix, or delete.

    Example:

        dicomd quarantine list
    """


@quarantine.command("list")
@store_options
@click.option("--all", "everything", is_flag=True, help="Also entries already retried or deleted.")
@json_option
def list_entries(config: Config, everything: bool, as_json: bool) -> None:
    """List quarantined data, newest first (held entries unless --all).

    Example:

        dicomd quarantine list --all --json
    """
    with open_stores(config) as stores:
        rows = [entry_dict(r) for r in stores.catalog.quarantine(None if everything else HELD)]
    if as_json:
        print_json(rows)
    else:
        print_table(rows, LIST_COLUMNS)


@quarantine.command("show")
@store_options
@click.argument("entry", type=int)
@json_option
def show(config: Config, entry: int, as_json: bool) -> None:
    """Show one entry: reason, source, file, and why its bytes are not readable DICOM (if they are not).

    Example:

        dicomd quarantine show 12
    """
    from dicomd.header import read_header

    with open_stores(config) as stores:
        row = stores.catalog.quarantine_entry(entry)
        data = entry_dict(row)
        path = stores.layout.resolve(row.path)
        data["file"] = str(path)
        data["present"] = path.is_file()
        reason_file = path.parent / "reason.json"
        data["detail"] = json.loads(reason_file.read_text()) if reason_file.is_file() else {}
        if data["present"]:
            try:
                read_header(path)
                data["readable"] = "header reads now"
            except DicomdError as exc:
                data["readable"] = str(exc)
    if as_json:
        print_json(data)
        return
    print_fields([("entry", data["id"]), ("status", data["status"]), ("when", data["when"]),
                  ("source", data["source"]), ("reason", data["reason"]), ("size", data["size"]),
                  ("file", data["file"] if data["present"] else f"{data['file']} (missing)"),
                  ("original name", data["detail"].get("original_name", "")),
                  ("header check", data.get("readable", ""))])


@quarantine.command("retry")
@store_options
@click.argument("entries", type=int, nargs=-1, required=True)
@click.option("--project", default="", help="Stage into this project (overrides routing).")
@click.option("--subject", default="", help="Subject label to use (overrides routing).")
@click.option("--session", default="", help="Session label to use (overrides routing).")
@json_option
def retry(config: Config, entries: tuple[int, ...], project: str, subject: str, session: str,
          as_json: bool) -> None:
    """Run held data through ingest again (after a config or routing fix); success marks it retried.

    The daemon's session watcher builds the resulting sessions as usual. Exit code 1 if any entry
    is still refused.

    Example:

        dicomd quarantine retry 12 13 --project demo
    """
    explicit = Explicit(project=project, subject=subject, session=session)
    operator = LocalOperator.current()
    results: list[dict[str, Any]] = []
    with open_stores(config) as stores:
        for entry in dict.fromkeys(entries):
            row = stores.catalog.quarantine_entry(entry)
            try:
                staged = operations.retry_quarantined(stores, operator, row, explicit)
            except DicomdError as exc:
                results.append({"id": entry, "ok": False, "error": str(exc)})
                report_error(f"entry {entry}: {exc}")
                continue
            results.append({"id": entry, "ok": True, "session": staged.session.url, "outcome": staged.outcome})
            if not as_json:
                click.echo(f"entry {entry}: {staged.outcome} in {staged.session.url}")
    if as_json:
        print_json(results)
    if not all(r["ok"] for r in results):
        raise SystemExit(1)


@quarantine.command("delete")
@store_options
@click.argument("entries", type=int, nargs=-1, required=True)
@yes_option
@json_option
def delete(config: Config, entries: tuple[int, ...], yes: bool, as_json: bool) -> None:
    """Delete quarantined bytes for good (asks first; --yes for scripts). The entry stays, marked deleted.

    Example:

        dicomd quarantine delete 12 --yes
    """
    results: list[dict[str, Any]] = []
    with open_stores(config) as stores:
        rows = [stores.catalog.quarantine_entry(e) for e in dict.fromkeys(entries)]
        confirm(f"Delete the quarantined data of entr{'y' if len(rows) == 1 else 'ies'} "
                f"{', '.join(str(r.id) for r in rows)}?", yes)
        for row in rows:
            folder = stores.layout.resolve(row.path).parent
            if folder.parent != stores.layout.quarantine and stores.layout.quarantine in folder.parents:
                shutil.rmtree(folder, ignore_errors=True)
            stores.catalog.set_quarantine_status(row.id, DELETED)
            results.append({"id": row.id, "deleted": True})
            if not as_json:
                click.echo(f"entry {row.id}: deleted")
    if as_json:
        print_json(results)


commands = [quarantine]
