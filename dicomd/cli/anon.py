"""`dicomd anon`: check DicomEdit scripts, preview a file, show a project's pseudonym map."""

from __future__ import annotations

import warnings
from dataclasses import asdict
from typing import Any

import click
import pydicom

from dicomd.cli.common import print_json, print_table, store_options
from dicomd.config import Config
from dicomd.errors import InvalidInput, NotFound, ScriptError
from dicomd.dburl import DatabaseUrl


@click.group()
def anon() -> None:
    """De-identification: scripts, previews and the pseudonym map."""


@anon.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def check(files: tuple[str, ...]) -> None:
    """Validate DicomEdit 6 script FILES; each problem is printed with its line and column.

    Example:

        dicomd anon check project.das site.das
    """
    from dicomd.anonymize import check_script

    problems = [p for f in files for p in check_script(f)]
    if problems:
        raise ScriptError("\n".join(problems))
    for f in files:
        click.echo(f"{f}: OK")


@anon.command("preview")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--project", required=True, help="The project whose anonymization settings to use.")
@click.option("--subject", default="", help="Subject label the script sees (default: none).")
@click.option("--session", default="", help="Session label the script sees (default: none).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@store_options
def preview_file(config: Config, file: str, project: str, subject: str, session: str, as_json: bool) -> None:
    """Show what the project's anonymization would change in FILE, attribute by attribute.

    Nothing is written (the pseudonym key is created if the project has none yet).

    Example:

        dicomd anon preview --project demo scan.dcm
    """
    from dicomd.anonymize import Anonymizer, Labels, PseudonymStore, preview
    from dicomd.pixels.policy import PixelPolicy

    settings = config.project(project)
    if settings is None:
        raise NotFound(f"no project {project!r} in {config.source}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(file)
    except Exception as exc:  # noqa: BLE001 - any parse failure is bad input
        raise InvalidInput(f"{file}: not readable as DICOM: {exc}") from None
    store = PseudonymStore(config.keys_url)
    anonymizer = Anonymizer(project, settings.anonymize, store)
    changes = preview(ds, anonymizer, Labels(project, subject, session))
    decision = PixelPolicy(config.pixel_rules, settings.anonymize.allow_burned_in).decide(ds)
    rule = decision.rule.name if decision.rule else None
    if as_json:
        print_json({"file": file, "fingerprint": anonymizer.fingerprint,
                    "burned_in": anonymizer.burned_in_reason(ds), "pixel_rule": rule, "review": decision.hold,
                    "changes": [asdict(c) for c in changes]})
        return
    click.echo(f"{file}: {anonymizer.fingerprint}")
    if rule:
        click.echo(f"pixel rule {rule} blanks " + " ".join("[{},{} {}x{}]".format(*b) for b in decision.areas(ds)))
    if decision.hold:
        click.echo(f"review needed: {decision.hold}")
    print_table([_row(asdict(c)) for c in changes], ["action", "path", "keyword", "before", "after"])


def _row(change: dict[str, Any]) -> dict[str, Any]:
    return {k: ("" if v is None else v) for k, v in change.items()}


def _existing_keys(config: Config) -> DatabaseUrl:
    """keys.url, refused when it is a file that does not exist (nothing to read)."""
    url = config.keys_url
    if url.path is not None and not url.path.exists():
        raise NotFound(f"no pseudonym store at {url.path}")
    return url


@anon.command("map")
@click.argument("project")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@store_options
def pseudonym_map(config: Config, project: str, as_json: bool) -> None:
    """Print PROJECT's original -> pseudonym map (identifying data: for an operator on this machine).

    Example:

        dicomd anon map demo
    """
    from dicomd.anonymize import PseudonymStore

    rows = PseudonymStore(_existing_keys(config)).lookup(project)
    if as_json:
        print_json(rows)
        return
    print_table(rows, ["kind", "original", "pseudonym", "first_seen"])


@anon.group("key")
def key() -> None:
    """Back up and restore the projects' pseudonym keys (keys.url; by default keys/pseudonyms.sqlite).

    A project's key decides every pseudonym its patients get: lose it and the same patient gets
    new pseudonyms; keep the backup as safe as the identified data.
    """


@key.command("export")
@click.option("--output", "-o", "output", required=True, type=click.Path(dir_okay=False),
              help="File to write (created owner-only; '-' for standard output).")
@store_options
def key_export(config: Config, output: str) -> None:
    """Write every project's key to a JSON backup file.

    Example:

        dicomd anon key export --output /secure/dicomd-keys.json
    """
    import json
    import os

    from dicomd.anonymize import PseudonymStore

    keys = PseudonymStore(_existing_keys(config)).export_keys()
    text = json.dumps({"dicomd_keys": 1, "keys": keys}, indent=2) + "\n"
    if output == "-":
        click.echo(text, nl=False)
        return
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    click.echo(f"wrote the keys of {len(keys)} project(s) to {output}")


@key.command("import")
@click.argument("backup", type=click.Path(dir_okay=False, exists=True))
@store_options
def key_import(config: Config, backup: str) -> None:
    """Restore keys from a backup written by `dicomd anon key export`. A project that already has
    a different key is refused (nothing is imported): pseudonyms never change under a project.

    Example:

        dicomd anon key import /secure/dicomd-keys.json
    """
    import json

    from dicomd.anonymize import PseudonymStore

    try:
        data = json.loads(open(backup, encoding="utf-8").read())
        rows = data["keys"]
    except (OSError, ValueError, KeyError, TypeError):
        raise InvalidInput(f"{backup}: not a key backup written by `dicomd anon key export`") from None
    added, same = PseudonymStore(config.keys_url).import_keys(rows)
    click.echo(f"imported {len(added)} key(s){': ' + ', '.join(added) if added else ''};"
               f" {len(same)} already present")


commands = [anon]
