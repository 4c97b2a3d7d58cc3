"""`dicomd prearchive ...`: list, inspect and act on sessions waiting in the prearchive."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import click

from dicomd import operations
from dicomd.catalog import SessionRow
from dicomd.cli.common import (
    STATUS_COLOURS,
    colour,
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
from dicomd.errors import DicomdError, NotFound
from dicomd.lifecycle import STATUSES, Stage
from dicomd.operations import LocalOperator
from dicomd.pixels.policy import describe as describe_text
from dicomd.views import scan_table, xnat_row

LIST_COLUMNS = (("project", "project"), ("folderName", "session"), ("subject", "subject"),
                ("timestamp", "timestamp"), ("status", "status"), ("scans", "scans"),
                ("instances", "instances"), ("modalities", "modalities"), ("scan_date", "study date"),
                ("lastmod", "last activity"))
SCAN_COLUMNS = (("scan_id", "scan"), ("series_number", "series"), ("description", "description"),
                ("modality", "modality"), ("instances", "instances"), ("size", "size"))
PREARCHIVE_STATES = tuple(str(s) for s in STATUSES[Stage.PREARCHIVE])
HISTORY_COLUMNS = (("when", "when"), ("status", "status"), ("actor", "by"), ("reason", "reason"))


@click.group()
def prearchive() -> None:
    """Review and act on sessions waiting in the prearchive.

    SESSION is P/T/S (project/timestamp/folder), its url (/prearchive/projects/P/T/S), the folder
    name when it is unique, or a unique prefix of it.

    Example:

        dicomd prearchive list --status READY
    """


@prearchive.command("list")
@store_options
@click.option("--project", "projects", multiple=True, help="Only these projects (repeatable).")
@click.option("--status", type=click.Choice(PREARCHIVE_STATES, case_sensitive=False),
              help="Only sessions in this status.")
@json_option
def list_sessions(config: Config, projects: tuple[str, ...], status: str | None, as_json: bool) -> None:
    """List prearchive sessions, newest first.

    Example:

        dicomd prearchive list --project demo --status READY --json
    """
    with open_stores(config) as stores:
        rows = [xnat_row(r, config) for r in stores.catalog.sessions(Stage.PREARCHIVE, projects=projects, status=status)]
    if as_json:
        print_json(rows)
    else:
        print_table(rows, LIST_COLUMNS)


@prearchive.command("show")
@store_options
@click.argument("session")
@json_option
def show(config: Config, session: str, as_json: bool) -> None:
    """Show one session: scans, status history with reasons, conflicts and warnings, mapped fields.

    Example:

        dicomd prearchive show demo/20240619_091425123/SESSION1
    """
    with open_stores(config) as stores:
        row = stores.prearchive.resolve(session)
        data = {
            **xnat_row(row, config),
            "bytes": row.bytes,
            "late_for": row.late_for,
            "warnings": operations.session_warnings(stores, LocalOperator.current(), row),
            "scans_detail": [{**s, "size": human_bytes(s["bytes"])} for s in scan_table(stores.catalog, row)],
            "history": [{**h, "when": stamp(h["at"])} for h in stores.catalog.history(row.id)],
        }
        data["pixel_text_summary"] = describe_text(data["pixel_text"])
    if as_json:
        print_json(data)
        return
    print_fields([
        ("session", data["url"]), ("project", data["project"]), ("subject", data["subject"]),
        ("label", data["folderName"]), ("status", colour(data["status"], STATUS_COLOURS.get(data["status"]))),
        ("reason", data["reason"]), ("study uid", data["tag"]), ("study date", data["scan_date"]),
        ("modalities", data["modalities"]), ("scans", data["scans"]), ("instances", data["instances"]),
        ("size", human_bytes(data["bytes"])), ("source", data["SOURCE"]), ("received", data["uploaded"]),
        ("last activity", data["lastmod"]), ("auto-archive", data["autoarchive"]),
        ("burned-in text (OCR)", data["pixel_text_summary"]),
    ])
    if data["custom"]:
        click.echo(colour("\nmapped fields", bold=True))
        print_fields(sorted(data["custom"].items()))
    for warning in data["warnings"]:
        click.echo(colour(f"warning: {warning}", "yellow"))
    click.echo(colour("\nscans", bold=True))
    print_table(data["scans_detail"], SCAN_COLUMNS)
    click.echo(colour("\nhistory", bold=True))
    print_table(data["history"], HISTORY_COLUMNS)


# --------------------------------------------------------------------------- actions


Action = Callable[[Any, LocalOperator, SessionRow], dict[str, Any]]


def _act(config: Config, sessions: tuple[str, ...], as_json: bool, action: Action, *,
         question: str | None = None, yes: bool = False) -> None:
    """Resolve every SESSION first (nothing happens if one is unknown), then act on each in turn.

    A failure on one session is reported and the others still run; the exit code is 1 if any failed.
    """
    results: list[dict[str, Any]] = []
    failed = 0
    operator = LocalOperator.current()
    with open_stores(config) as stores:
        rows = [stores.prearchive.resolve(name) for name in dict.fromkeys(sessions)]
        if question:
            listing = ", ".join(r.url for r in rows)
            confirm(f"{question} {len(rows)} session(s): {listing}?", yes)
        for row in rows:
            try:
                result = action(stores, operator, row)
            except DicomdError as exc:
                failed += 1
                gone = isinstance(exc, NotFound) and stores.catalog.find_session(
                    Stage.PREARCHIVE, row.project, row.timestamp, row.label) is None
                message = "no longer in the prearchive (archived, moved or deleted meanwhile)" if gone else str(exc)
                results.append({"session": row.url, "error": message})
                report_error(f"{row.url}: {message}")
                continue
            results.append(result)
            if not as_json:
                click.echo(result.pop("_text", ""))
            else:
                result.pop("_text", None)
    if as_json:
        print_json(results)
    if failed:
        raise SystemExit(1)


@prearchive.command("archive")
@store_options
@click.argument("sessions", nargs=-1, required=True)
@click.option("--overwrite", type=click.Choice(["none", "append", "delete"]),
              help="Overwrite policy when the archive has the session (default: the project's).")
@click.option("--force", is_flag=True, help="Archive even when the session is held for review (burned-in data).")
@click.option("--confirm-text", is_flag=True,
              help="Archive even though the OCR check found text outside the redacted areas (look at the snapshot first).")
@click.option("--label", default="", help="Archive the (one) session under this session label instead.")
@yes_option
@json_option
def archive_sessions(config: Config, sessions: tuple[str, ...], overwrite: str | None, force: bool,
                     confirm_text: bool, label: str, yes: bool, as_json: bool) -> None:
    """Archive prearchive sessions. --overwrite delete asks for confirmation.

    Two operators archiving the same session get one success and one refusal (exit 1). --label
    gives one session a new label (a way out of "session already exists in the archive").

    Example:

        dicomd prearchive archive demo/20240619_091425123/S1 --overwrite append
    """
    if label and len(sessions) != 1:
        raise click.UsageError("--label names one session's new label: give exactly one session")

    def run(stores: Any, operator: LocalOperator, row: SessionRow) -> dict[str, Any]:
        done = operations.archive(stores, operator, row, overwrite=overwrite, force_review=force, label=label,
                                  confirm_text=confirm_text)
        return {"session": row.url, "archived": done.url, "instances": done.instances,
                "_text": f"{row.url} -> {done.url} ({done.instances} instances)"}

    question = "Replace what the archive holds for" if overwrite == "delete" else None
    _act(config, sessions, as_json, run, question=question, yes=yes)


@prearchive.command("move")
@store_options
@click.argument("sessions", nargs=-1, required=True)
@click.option("--to", "project", required=True, help="Target project (ID or alias, or Unassigned).")
@json_option
def move(config: Config, sessions: tuple[str, ...], project: str, as_json: bool) -> None:
    """Move sessions to another project (fix routing); they are rebuilt there.

    Example:

        dicomd prearchive move Unassigned/20240619_091425123/S1 --to demo
    """
    if project != "Unassigned" and config.resolve_project(project) is None:
        known = ", ".join(["Unassigned", *config.project_ids()])
        raise click.BadParameter(f"no project {project!r} (known: {known})", param_hint="--to")

    def run(stores: Any, operator: LocalOperator, row: SessionRow) -> dict[str, Any]:
        moved = operations.move(stores, operator, row, project).current
        return {"session": row.url, "moved": moved.url, "status": moved.status,
                "_text": f"{row.url} -> {moved.url} ({moved.status})"}

    _act(config, sessions, as_json, run)


@prearchive.command("delete")
@store_options
@click.argument("sessions", nargs=-1, required=True)
@yes_option
@json_option
def delete(config: Config, sessions: tuple[str, ...], yes: bool, as_json: bool) -> None:
    """Delete sessions and their files from the prearchive (asks first; --yes for scripts).

    Example:

        dicomd prearchive delete demo/20240619_091425123/S1 --yes
    """
    def run(stores: Any, operator: LocalOperator, row: SessionRow) -> dict[str, Any]:
        operations.delete(stores, operator, row)
        return {"session": row.url, "deleted": True, "_text": f"{row.url} deleted"}

    _act(config, sessions, as_json, run, question="Delete", yes=yes)


@prearchive.command("rebuild")
@store_options
@click.argument("sessions", nargs=-1, required=True)
@json_option
def rebuild(config: Config, sessions: tuple[str, ...], as_json: bool) -> None:
    """Re-scan session folders against the catalog and rebuild their summaries.

    Example:

        dicomd prearchive rebuild demo/20240619_091425123/S1
    """
    def run(stores: Any, operator: LocalOperator, row: SessionRow) -> dict[str, Any]:
        now = operations.rebuild(stores, operator, row).current
        return {"session": now.url, "status": now.status, "scans": now.scans, "instances": now.instances,
                "_text": f"{now.url}: {now.status}, {now.scans} scans, {now.instances} instances"}

    _act(config, sessions, as_json, run)


# --------------------------------------------------------------------------- looking at it


@prearchive.command("snapshot")
@store_options
@click.argument("session")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True),
              help="PNG file to write (default: <folder name>.png here).")
@click.option("--size", type=click.IntRange(64, 1024), default=256, show_default=True, help="Tile size in pixels.")
@json_option
def snapshot(config: Config, session: str, output: str | None, size: int, as_json: bool) -> None:
    """Contact sheet of one image per series (middle slice, windowed) to look for burned-in text.

    Rectangles a redaction rule will blank are drawn in magenta, boxes where the OCR check found
    text in yellow. A series that cannot be rendered shows a labelled placeholder. The PNG may show
    patient data: it is written readable by its owner only.

    Example:

        dicomd prearchive snapshot S1 -o S1.png
    """
    with open_stores(config) as stores:
        row = stores.prearchive.resolve(session)
        tiles = _write_sheet(stores, row, Path(output or f"{row.label}.png"), size)
    target = Path(output or f"{row.label}.png")
    series = [{"label": t.label, "rendered": t.rendered, "problem": t.problem} for t in tiles]
    if as_json:
        print_json({"session": row.url, "file": str(target), "series": series})
        return
    placeholders = sum(1 for t in tiles if not t.rendered)
    click.echo(f"wrote {target} ({len(tiles)} series, {placeholders} placeholder(s))")
    for tile in tiles:
        if not tile.rendered:
            click.echo(colour(f"  {tile.label}: {tile.problem}", "yellow"))


def _write_sheet(stores: Any, row: SessionRow, target: Path, size: int) -> list[Any]:
    """The session's contact sheet with the rectangles to blank and the OCR boxes, owner-only."""
    from dicomd.snapshot import marks_of, png_bytes, session_sheet  # numpy/Pillow only when needed

    marks = marks_of(stores.hooks.inspect_pixels.marks(row))
    sheet, tiles = session_sheet(stores.catalog, stores.layout, row.id, title=row.url, size=size, marks=marks)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(png_bytes(sheet))
    except OSError as exc:
        raise click.ClickException(f"cannot write {target}: {exc.strerror or exc}") from None
    return tiles


@prearchive.command("preview")
@store_options
@click.argument("session")
@click.option("--scan", "scans", multiple=True, help="Only these scans (repeatable).")
@click.option("--png", "png", type=click.Path(dir_okay=False, writable=True),
              help="Also write the contact sheet with the rectangles to blank (magenta) and the OCR boxes (yellow).")
@json_option
def preview(config: Config, session: str, scans: tuple[str, ...], png: str | None, as_json: bool) -> None:
    """What anonymization will change, on the first instance of each scan (nothing is written):
    attributes, the redaction rule and rectangles per scan, the OCR check's findings.

    Example:

        dicomd prearchive preview demo/20240619_091425123/S1 --scan 2 --png S1-preview.png
    """
    with open_stores(config) as stores:
        row = stores.prearchive.resolve(session)
        report = operations.preview_anonymization(stores, LocalOperator.current(), row, scans)
        if png:
            _write_sheet(stores, row, Path(png), 256)
            report["png"] = png
    if as_json:
        print_json(report)
        return
    if not report["enabled"]:
        click.echo(report["message"])
        return
    print_fields([("session", row.url), ("archive subject", report["subject"]),
                  ("archive label", report["label"]), ("anonymization", report["fingerprint"]),
                  ("burned-in text (OCR)", report["pixel_text"]), *([("sheet", png)] if png else [])])
    for scan in report["scans"]:
        click.echo(colour(f"\nscan {scan['scan_id']} ({scan['file']})", bold=True))
        if scan.get("error"):
            click.echo(colour(f"  cannot preview: {scan['error']}", "red"))
            continue
        pixels = scan.get("pixels") or {}
        if pixels.get("rule"):
            boxes = " ".join("[{},{} {}x{}]".format(*r) for r in pixels["rectangles"])
            click.echo(colour(f"  pixel rule {pixels['rule']} blanks {boxes}", "magenta"))
        if pixels.get("hold"):
            click.echo(colour(f"  held for review: {pixels['hold']}", "yellow"))
        print_table(scan["changes"], ("action", "path", "keyword", "before", "after"))
