"""Operations commands: `dicomd status`, `dicomd dump`, `dicomd config check|keys`, `dicomd check`."""

from __future__ import annotations

import os
import shutil
import time
import socket
import warnings
from pathlib import Path
from typing import Any

import click

from dicomd import config as config_mod
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
from dicomd.cluster import NodeState
from dicomd.config import Config
from dicomd.dburl import DatabaseUrl
from dicomd.dicomtags import BadTag, element_rows, parse_tag
from dicomd.errors import ConfigError, InvalidInput, NotFound
from dicomd.lifecycle import NEEDS_ATTENTION, QuarantineStatus, Stage

PROBLEM_STATES = NEEDS_ATTENTION
PROBLEM_EVENTS = ("quarantined", "mapping_warning", "instance_replaced", "login_locked")
MAX_VALUE = 100


# --------------------------------------------------------------------------- status


@click.command()
@store_options
@json_option
def status(config: Config, as_json: bool) -> None:
    """Receivers and ports, what arrived in the last hour through each way in, sessions per state,
    disk free, the last errors, and the nodes sharing the catalog with their heartbeats and the work
    each holds (works while the daemon runs).

    Example:

        dicomd status --config config.example.toml
    """
    with open_stores(config) as stores:
        counts = stores.catalog.status_counts()
        arrivals = stores.catalog.arrivals(time.time() - 3600)
        held = len(stores.catalog.quarantine())
        stored = [  # receivers added over /xapi/dicomscp (a port of 0 is chosen at each start)
            {"ae_title": r.ae_title, "bind": r.bind, "port": r.port, "project": r.project,
             "listening": _listening(r.bind, r.port) if r.enabled else False, "source": f"api #{r.id}"}
            for r in stores.catalog.receivers()
        ]
        problems = [
            {"session": r.url, "status": r.status, "reason": r.reason, "when": stamp(r.updated_at)}
            for r in stores.catalog.sessions_in(Stage.PREARCHIVE, PROBLEM_STATES)
        ]
        events = [
            {"when": stamp(e["at"]), "kind": e["kind"], "session_id": e["session_id"],
             "detail": _event_text(e["detail"])}
            for e in stores.catalog.events(kinds=PROBLEM_EVENTS, limit=8)
        ]
        nodes = [_node_fields(state) for state in stores.node.states()] if stores.node is not None else []
    disk = shutil.disk_usage(config.data_dir)
    data = {
        "config": config.source,
        "data_dir": str(config.data_dir),
        "catalog": _backend(config.catalog_url),
        "keys": _backend(config.keys_url),
        "receivers": [
            {"ae_title": r.ae_title, "bind": r.bind, "port": r.port, "project": r.project,
             "listening": _listening(r.bind, r.port), "source": "config"}
            for r in config.receivers
        ] + stored,
        "http": {"enabled": config.http.enabled, "host": config.http.host, "port": config.http.port,
                 "listening": _listening(config.http.host, config.http.port) if config.http.enabled else None},
        "drop_folders": [f.path for f in config.drop_folders],
        "last_hour": arrivals,
        "prearchive": counts.get(Stage.PREARCHIVE, {}),
        "archive": counts.get(Stage.ARCHIVE, {}),
        "quarantine_held": held,
        "disk": {"free": disk.free, "total": disk.total, "min_free": config.min_free_bytes,
                 "below_floor": disk.free < config.min_free_bytes},
        "problems": problems,
        "last_errors": events,
        "ocr": _ocr_status(config),
        "nodes": nodes,
    }
    if as_json:
        print_json(data)
        return
    _print_status(data)


def _ocr_status(config: Config) -> dict[str, Any]:
    """Whether the OCR check for burned-in text runs, and with what (or why not)."""
    from dicomd.pixels.ocr import availability

    if not config.ocr.enabled:
        return {"enabled": False, "available": False, "engine": "off: ocr.enabled is false in the config"}
    found = availability()
    return {"enabled": True, "available": found.available, "engine": found.engine}


def _node_fields(state: NodeState) -> dict[str, Any]:
    row = state.row
    return {
        "id": row.id, "host": row.host, "pid": row.pid, "role": row.role, "version": row.version,
        "dicom_ports": [int(p) for p in row.dicom_ports.split(",") if p], "http_port": row.http_port,
        "started": stamp(row.started_at), "heartbeat_age_seconds": round(state.heartbeat_age, 1),
        "state": state.state, "holds": [f"{c.kind} {c.item}" for c in state.claims],
    }


def _print_nodes(nodes: list[dict[str, Any]]) -> None:
    click.echo(colour("\nnodes", bold=True))
    rows = [{**n, "ports": ",".join(str(p) for p in n["dicom_ports"]) or "-",
             "heartbeat": f"{n['heartbeat_age_seconds']:.0f} s ago",
             "state": colour(n["state"], "green" if n["state"] == "alive" else "red" if n["state"] == "expired" else None),
             "holds": ", ".join(n["holds"]) or "-"} for n in nodes]
    print_table(rows, ("id", "role", "ports", "started", "heartbeat", "state", "holds"))


def _print_status(data: dict[str, Any]) -> None:
    disk = data["disk"]
    free = f"{human_bytes(disk['free'])} of {human_bytes(disk['total'])} (floor {human_bytes(disk['min_free'])})"
    ocr = data["ocr"]
    print_fields([("config", data["config"]), ("data", data["data_dir"]),
                  ("catalog", f"{data['catalog']['backend']}: {data['catalog']['url']}"),
                  ("keys", f"{data['keys']['backend']}: {data['keys']['url']}"),
                  ("disk free", colour(free, "red") if disk["below_floor"] else free),
                  ("ocr (burned-in text)", ocr["engine"] if ocr["available"] else colour(ocr["engine"], "yellow"))])
    click.echo(colour("\nreceivers", bold=True))
    rows = [{**r, "listening": _yes_no(r["listening"])} for r in data["receivers"]]
    http = data["http"]
    if http["enabled"]:
        rows.append({"ae_title": "(HTTP)", "bind": http["host"], "port": http["port"],
                     "listening": _yes_no(http["listening"]), "source": "config"})
    print_table(rows, ("ae_title", "bind", "port", "project", "listening", "source"))
    for folder in data["drop_folders"]:
        click.echo(f"drop folder  {folder}")
    click.echo(colour("\nlast hour", bold=True))
    print_table([{"way in": way, **n} for way, n in data["last_hour"].items()],
                ("way in", "instances", "sessions", "refused", "quarantined"))
    click.echo(colour("\nsessions", bold=True))
    counts = [{"stage": "prearchive", "status": s, "sessions": n} for s, n in sorted(data["prearchive"].items())]
    counts += [{"stage": "archive", "status": s, "sessions": n} for s, n in sorted(data["archive"].items())]
    counts.append({"stage": "quarantine", "status": QuarantineStatus.HELD, "sessions": data["quarantine_held"]})
    print_table(counts, ("stage", "status", ("sessions", "count")))
    if data["problems"]:
        click.echo(colour("\nsessions needing attention", bold=True))
        print_table(data["problems"], ("when", "status", "session", "reason"))
    if data["last_errors"]:
        click.echo(colour("\nlast errors", bold=True))
        print_table(data["last_errors"], ("when", "kind", "detail"))
    if data["nodes"]:
        _print_nodes(data["nodes"])


def _backend(url: DatabaseUrl) -> dict[str, str]:
    """Which database: its backend and where (a PostgreSQL password is shown as ***)."""
    return {"backend": url.kind, "url": url.masked}


def _yes_no(value: bool | None) -> str:
    return "auto port" if value is None else ("yes" if value else "no")


def _listening(host: str, port: int) -> bool | None:
    """Whether something accepts TCP connections there (None for port 0: chosen at start-up)."""
    if not port:
        return None
    target = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    try:
        with socket.create_connection((target, port), timeout=0.3):
            return True
    except OSError:
        return False


def _event_text(detail: dict[str, Any]) -> str:
    """An event's detail as one line; the reason (or problem) last, since it is the part that matters."""
    main = detail.get("reason") or detail.get("problem") or ""
    rest = [f"{k}={v}" for k, v in detail.items() if k not in ("reason", "problem", "path")]
    return "; ".join([*rest, str(main)] if main else rest)


# --------------------------------------------------------------------------- dump


@click.command()
@store_options
@click.argument("target")
@click.option("--tag", "tags", multiple=True,
              help="Only this attribute: keyword (PatientID) or tag (0010,0020) (repeatable).")
@click.option("--scan", help="With a SESSION: dump the first instance of this scan.")
@json_option
def dump(config: Config, target: str, tags: tuple[str, ...], scan: str | None, as_json: bool) -> None:
    """A readable header dump of a DICOM FILE, or of the first instance of a SESSION.

    SESSION is looked up in the prearchive, then in the archive. Pixel data is not loaded.

    Example:

        dicomd dump demo/20240619_091425123/S1 --tag PatientID --tag "(0008,0060)"
    """
    wanted = [_tag_option(t) for t in tags]
    path = Path(target)
    if not path.is_file():
        path = _session_file(config, target, scan)
    ds = _read(path)
    rows = element_rows(ds, wanted)
    if as_json:
        print_json({"file": str(path), "elements": rows})
        return
    click.echo(colour(f"# {path}", bold=True))
    if ds.file_meta and not wanted:
        for row in element_rows(ds.file_meta):
            click.echo(_line(row))
    for row in rows:
        click.echo(_line(row))


def _tag_option(text: str) -> int:
    try:
        return parse_tag(text)
    except BadTag as exc:
        raise click.BadParameter(str(exc), param_hint="--tag") from None


def _session_file(config: Config, name: str, scan: str | None) -> Path:
    with open_stores(config) as stores:
        try:
            row = stores.prearchive.resolve(name)
        except NotFound:
            try:
                row = stores.prearchive.resolve(name, stage=Stage.ARCHIVE)
            except NotFound:
                raise NotFound(f"{name!r} is neither a file nor a prearchive or archive session") from None
        instances = stores.catalog.instances(row.id, scan)
        if not instances:
            raise NotFound(f"{row.url} has no instances" + (f" in scan {scan}" if scan else ""))
        return stores.layout.resolve(instances[0].path)


def _read(path: Path) -> Any:
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(path, force=True, defer_size=4096)
        except Exception as exc:  # noqa: BLE001 - any parse failure is "not readable DICOM" here
            raise InvalidInput(f"{path}: cannot read as DICOM: {type(exc).__name__}: {exc}") from None


def _line(row: dict[str, Any]) -> str:
    indent = "  " * row["depth"]
    if row["tag"].startswith("item"):
        return f"{indent}-- {row['tag']}"
    value = "(not present)" if row["value"] is None and not row["vr"] else row["value"]
    return f"{indent}{row['tag']} {row['vr']:2} {row['keyword']:<32} {value}"


# --------------------------------------------------------------------------- config


@click.group("config")
def config_group() -> None:
    """Check a configuration file, list every setting.

    Example:

        dicomd config check config.example.toml
    """


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
@json_option
def config_check(file: str, as_json: bool) -> None:
    """Validate FILE: unknown keys, bad values, projects, routing rules and anonymization scripts.

    Exit code 1 with a message naming the key and the file when something is wrong.

    Example:

        dicomd config check /etc/dicomd/dicomd.toml
    """
    loaded = config_mod.load(file)
    problems = _script_problems(loaded)
    if problems:
        raise ConfigError("; ".join(problems))
    summary = {
        "file": file, "ok": True, "data_dir": str(loaded.data_dir),
        "receivers": [f"{r.ae_title}@{r.bind}:{r.port}" for r in loaded.receivers],
        "http": f"{loaded.http.host}:{loaded.http.port}" if loaded.http.enabled else "off",
        "projects": loaded.project_ids(), "drop_folders": [f.path for f in loaded.drop_folders],
    }
    if as_json:
        print_json(summary)
        return
    click.echo(f"{file}: OK")
    print_fields([("data_dir", summary["data_dir"]), ("receivers", ", ".join(summary["receivers"]) or "(none)"),
                  ("http", summary["http"]), ("projects", ", ".join(summary["projects"]) or "(none)"),
                  ("drop folders", ", ".join(summary["drop_folders"]) or "(none)")])


def _script_problems(loaded: Config) -> list[str]:
    scripts = [(f"projects.{pid}.anonymize.script", p.anonymize.script) for pid, p in loaded.projects.items()
               if p.anonymize.script]
    if loaded.anonymize.site_script:
        scripts.append(("anonymize.site_script", loaded.anonymize.site_script))
    if not scripts:
        return []
    try:
        from dicomd.anonymize import check_script
    except ImportError:  # pragma: no cover - the package ships with dicomd
        return []
    problems: list[str] = []
    for key, path in scripts:
        if not os.path.isfile(path):
            problems.append(f"{loaded.source}: {key}: file not found: {path}")
            continue
        problems += [f"{loaded.source}: {key}: {p}" for p in check_script(path)]
    return problems


@config_group.command("keys")
@json_option
def config_keys(as_json: bool) -> None:
    """Every configuration key with its meaning.

    Example:

        dicomd config keys
    """
    rows = [{"key": key, "help": text} for key, text in config_mod.describe()]
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ("key", "help"))


# --------------------------------------------------------------------------- check


@click.command()
@store_options
@click.option("--verify-hashes", is_flag=True, help="Also re-hash every file (slow on a big store).")
@json_option
def check(config: Config, verify_hashes: bool, as_json: bool) -> None:
    """Compare the catalog with the disk and list what a restart's recovery would do. Changes nothing.

    Exit code 0 when the store is consistent, 1 when there are findings. While the daemon is
    running, work in progress (a session being built or archived) shows up too.

    Example:

        dicomd check --config config.example.toml --verify-hashes
    """
    from dicomd.storecheck import check_store

    with open_stores(config) as stores:
        recovery = stores.archiver.recover(dry_run=True) + stores.prearchive.recover(dry_run=True)
        report = check_store(stores.layout, stores.catalog, verify_hashes=verify_hashes)
    findings = [{"kind": f.kind, "where": f.where, "detail": f.detail} for f in report.findings]
    catalog = _backend(config.catalog_url)
    if as_json:
        print_json({"ok": not recovery and not findings, "catalog": catalog, "recovery": recovery,
                    "findings": findings})
    else:
        click.echo(f"catalog: {catalog['backend']}: {catalog['url']}")
        click.echo(colour("recovery at the next start would:", bold=True))
        for line in recovery or ["(nothing)"]:
            click.echo(f"  {line}")
        click.echo(colour("catalog against disk:", bold=True))
        if findings:
            print_table(findings, ("kind", "where", "detail"))
        else:
            click.echo("  consistent")
    if recovery or findings:
        raise SystemExit(1)


commands = [status, dump, config_group, check]
