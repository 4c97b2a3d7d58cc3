"""`dicomd import PATH...`: stage files, folders and archives through the same path as the receivers."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from dicomd.bulk import BatchResult, stage_batch
from dicomd.cli.common import human_bytes, json_option, open_stores, print_json, store_options
from dicomd.config import Config
from dicomd.errors import DicomdError
from dicomd.ingest import Source
from dicomd.progress import BatchProgress
from dicomd.routing import Explicit


@dataclass
class _Tally:
    """What the whole command did, path by path."""

    sessions: dict[int, Any] = field(default_factory=dict)
    staged: int = 0
    duplicates: int = 0
    quarantined: int = 0
    bad: list[tuple[str, str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: Path, result: BatchResult) -> None:
        for row in result.sessions:
            self.sessions[row.id] = row
        self.staged += result.staged
        self.duplicates += result.duplicates
        self.quarantined += result.quarantined
        self.bad += [(str(path), name, reason) for name, reason in result.bad]
        self.skipped += [(str(path), name, why) for name, why in result.skipped]

    def as_dict(self) -> dict[str, Any]:
        return {
            "sessions": [
                {"url": r.url, "project": r.project, "subject": r.subject, "label": r.label, "instances": r.instances}
                for r in self.sessions.values()
            ],
            "staged": self.staged,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "bad": [{"path": p, "member": n, "reason": r} for p, n, r in self.bad],
            "skipped": [{"path": p, "member": n, "reason": r} for p, n, r in self.skipped],
            "failed": [{"path": p, "error": e} for p, e in self.failed],
        }


class _Meter:
    """Feeds a click progress bar from stage_batch's (done, total) member counts."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self.started = time.monotonic()
        self.files = 0
        self.bytes = 0.0
        self._path_files = 0
        self._path_bytes = 0
        self._path_base = 0.0
        self.tracker: BatchProgress | None = None

    def begin(self, size: int) -> BatchProgress:
        """Start a new PATH; its counts (the same an HTTP upload status shows) go into the tracker."""
        self._path_base, self._path_bytes, self._path_files = self.bytes, size, 0
        self.tracker = BatchProgress()
        return self.tracker

    def __call__(self, done: int, total: int) -> None:
        self.files += done - self._path_files
        self._path_files = done
        position = self._path_base + self._path_bytes * (done / total if total else 1)
        self.bar.update(int(position - self.bytes), current_item=self)
        self.bytes = position

    def end(self) -> None:
        remaining = self._path_base + self._path_bytes - self.bytes
        self.bar.update(int(remaining), current_item=self)
        self.bytes = self._path_base + self._path_bytes

    def text(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        counts = f" ({self.tracker.text()})" if self.tracker is not None else ""
        return f"{self.files} files{counts}, {human_bytes(self.bytes)}, {human_bytes(self.bytes / elapsed)}/s"


def _input_size(path: Path) -> int:
    if not path.is_dir():
        return path.stat().st_size
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files if not f.startswith("."))
    return total


@click.command("import")
@store_options
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--project", default="", help="Put everything in this project (ID or alias).")
@click.option("--subject", default="", help="Subject label for everything imported.")
@click.option("--session", default="", help="Session label for everything imported.")
@click.option("--ignore-unparsable", is_flag=True,
              help="Quarantine files that are not DICOM instead of refusing the whole PATH.")
@json_option
def import_command(
    config: Config,
    paths: tuple[Path, ...],
    project: str,
    subject: str,
    session: str,
    ignore_unparsable: bool,
    as_json: bool,
) -> None:
    """Stage DICOM files, folders, zip and tar archives into the prearchive.

    Each PATH is one all-or-nothing batch: if any file in it is not DICOM, nothing from that PATH
    is staged (unless --ignore-unparsable). Originals are left where they are. Exits 1 when any
    PATH failed.

    Example:

        dicomd import study.zip scans/ --project demo --subject S01 --session S01_MR1
    """
    if project and config.resolve_project(project) is None:
        raise click.BadParameter(f"no project {project!r} in {config.source}", param_hint="--project")
    source = Source("CLI", explicit=Explicit(project=project, subject=subject, session=session))
    tally = _Tally()
    sizes = [_input_size(p) for p in paths]
    with open_stores(config) as stores:
        bar = click.progressbar(
            length=max(sum(sizes), 1), label="Importing", file=sys.stderr,
            item_show_func=lambda meter: meter.text() if meter else None,
        )
        with bar:
            meter = _Meter(bar)
            for path, size in zip(paths, sizes):
                tracker = meter.begin(size)
                try:
                    tally.add(path, stage_batch(stores, path, source, ignore_unparsable=ignore_unparsable,
                                                progress=meter, tracker=tracker))
                except DicomdError as exc:
                    tally.failed.append((str(path), str(exc)))
                meter.end()
    _report(tally, as_json)
    if tally.failed:
        sys.exit(1)


def _report(tally: _Tally, as_json: bool) -> None:
    if as_json:
        print_json(tally.as_dict())
    else:
        click.echo(
            f"Staged {tally.staged} file(s) into {len(tally.sessions)} session(s); "
            f"{tally.duplicates} duplicate(s), {tally.quarantined} quarantined."
        )
        for row in tally.sessions.values():
            click.echo(f"  {row.url}  ({row.instances} instances)")
        for path, name, reason in tally.bad:
            click.echo(f"  quarantined {path}: {name}: {reason}")
        if tally.skipped:
            names = ", ".join(name for _path, name, _why in tally.skipped[:10])
            more = f" and {len(tally.skipped) - 10} more" if len(tally.skipped) > 10 else ""
            click.echo(f"  skipped {len(tally.skipped)} non-DICOM file(s): {names}{more}")
    for path, error in tally.failed:
        click.echo(f"Error: {path}: {error}", err=True)


commands = [import_command]
