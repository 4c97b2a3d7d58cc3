"""Command line of the benchmark: ``python -m bench [--quick] [--out FILE.json] ...``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pydicom
import pynetdicom

from bench.archiving import run_archiving
from bench.catalog_scale import run_catalog
from bench.cluster import cluster_table, run_cluster
from bench.compare import compare
from bench.data import big_file, instance_files
from bench.httpimport import measure_http_import
from bench.archiving import ArchiveRow
from bench.catalog_scale import CatalogRow
from bench.ingest import BASELINE, IngestRow, Measurement, run_ingest, summarize
from bench.memory import MemoryRow, measure_memory
from bench.pixels import run_pixels
from bench.profile import profile_ingest
from bench.report import render, write_json
from bench.senders import DcmtkSender, PynetdicomSender, make_sender
from bench.tools import dcmtk_tool, dcmtk_version

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/bench", description=(
        "Measure dicomd against baselines started in the same run; print a table, write JSON."))
    p.add_argument("--quick", action="store_true", help="small smoke run (about 2 minutes)")
    p.add_argument("--out", type=Path, default=Path("bench-results.json"), help="JSON file to write")
    p.add_argument("--runs", type=int, help="runs per figure (default 5, quick 3)")
    p.add_argument("--mr", type=int, help="MR instances per run (default 1000, quick 200)")
    p.add_argument("--ct", type=int, help="CT instances per run (default 300, quick 60)")
    p.add_argument("--associations", default="1,4", help="comma-separated association counts")
    p.add_argument("--receivers", help="comma-separated receivers to measure (default: bare-pynetdicom, "
                   "bare-pynetdicom-nproc, dcmtk-storescp, dicomd; quick: without -nproc; the baseline "
                   "bare-pynetdicom is always added); also "
                   "dicomd-1proc (one receiver process), bare-pynetdicom-nproc (one bare process per CPU "
                   "sharing the port)")
    p.add_argument("--sender", choices=("auto", "dcmtk", "raw", "pynetdicom"), default="auto",
                   help="auto: dcmtk storescu if installed, else raw (bench.rawscu, plain socket); "
                   "pynetdicom: its SCU (slow: ~100-150 instances/s per association)")
    p.add_argument("--big-mb", type=int, default=2048, help="size of the large instance, MB (0 skips)")
    p.add_argument("--memory-receivers", help="receivers for the memory section "
                   "(default: dicomd, dicomd-pynetdicom, bare-pynetdicom-chunked, dcmtk-storescp; "
                   "quick: dicomd, bare-pynetdicom-chunked)")
    p.add_argument("--sections", default="ingest,memory,archive,catalog,pixels,cluster",
                   help="comma-separated: ingest,memory,archive,catalog,pixels,cluster")
    p.add_argument("--pdu", type=int, default=1048576,
                   help="max PDU the receivers accept (dcmtk caps it at 131072)")
    p.add_argument("--dicomd-processes", type=int, default=os.cpu_count() or 1,
                   help="receiver_processes of the measured dicomd (default: one per CPU)")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "dicomd-bench-cache",
                   help="where generated data is kept between invocations")
    p.add_argument("--profile", action="store_true",
                   help="also sample dicomd with py-spy while it receives the MR set (needs py-spy)")
    p.add_argument("--compare", type=Path, metavar="OLD.json",
                   help="also print every figure's change against an earlier result file")
    p.add_argument("--catalog-sizes", help="comma-separated instance rows for the catalog section "
                   "(default 1000000,10000000; quick 10000,100000)")
    p.add_argument("--catalog-backends", default="sqlite,postgresql",
                   help="catalog backends for the catalog section: sqlite, postgresql (a throwaway server)")
    p.add_argument("--keep", action="store_true", help="keep receiver folders and logs")
    return p


def _pick(value: int | None, default: int) -> int:
    return default if value is None else value


def _commit() -> str:
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "unknown"
    return head or "unknown"


def _receivers(text: str) -> list[str]:
    chosen = [r.strip() for r in text.split(",") if r.strip()]
    if "dcmtk-storescp" in chosen and dcmtk_tool("storescp") is None:
        print("note: dcmtk's storescp is not installed (apt-get install dcmtk); row skipped", file=sys.stderr)
        chosen.remove("dcmtk-storescp")
    if "orthanc" in chosen and shutil.which("Orthanc") is None:
        print("note: Orthanc is not installed (apt-get install orthanc); row skipped", file=sys.stderr)
        chosen.remove("orthanc")
    return [BASELINE] + [r for r in chosen if r != BASELINE]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds like Ctrl-C, so every started receiver is stopped


@dataclass
class _Results:
    """What the sections measured so far (filled in place by the sections, in order)."""

    meta: dict[str, Any]
    ingest: list[IngestRow] = field(default_factory=list)
    raw: list[Measurement] = field(default_factory=list)
    memory: list[MemoryRow] = field(default_factory=list)
    archive: list[ArchiveRow] = field(default_factory=list)
    catalog: list[CatalogRow] = field(default_factory=list)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    # bench.bare_scp and bench.scu run as subprocesses: let them import bench from anywhere
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    os.environ["DICOMD_PROCESSES"] = str(args.dicomd_processes)  # read by bench.receivers.dicomd_config
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    work = Path(tempfile.mkdtemp(prefix="dicomd-bench-"))
    try:
        res = _measure(args, work, argv)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(render(res.meta, res.ingest, res.memory, res.archive, res.catalog, res.raw))
    if res.meta.get("cluster"):
        from bench.cluster import ClusterRow

        print("\none node vs two nodes on this machine (MR, C-STORE; both nodes share its cores)")
        print("\n".join(cluster_table([ClusterRow(**row) for row in res.meta["cluster"]])))
    write_json(args.out, res.meta, res.ingest, res.memory, res.raw, res.archive, res.catalog)
    if args.compare:
        print("\n" + "\n".join(compare(json.loads(args.out.read_text()), args.compare)))
    print(f"\nwrote {args.out}" + (f"; receiver folders kept in {work}" if args.keep else ""))


def _measure(args: argparse.Namespace, work: Path, argv: list[str] | None) -> _Results:
    started = time.monotonic()

    def progress(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {text}", file=sys.stderr, flush=True)

    sender = make_sender(args.sender)
    res = _Results(meta={
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": _commit(),
        "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
        "pydicom": pydicom.__version__, "pynetdicom": pynetdicom.__version__,
        "dcmtk": dcmtk_version(), "sender": sender.name, "runs": args.runs or (3 if args.quick else 5),
        "quick": args.quick, "pdu": args.pdu, "dicomd_receiver_processes": args.dicomd_processes,
        "instances": {"MR": _pick(args.mr, 200 if args.quick else 1000),
                      "CT": _pick(args.ct, 60 if args.quick else 300)},
        "command": "scripts/bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    })
    sections = {
        "ingest": _ingest, "memory": _memory, "archive": _archive, "profile": _profile, "catalog": _catalog,
        "pixels": _pixels,
        "cluster": _cluster,
    }
    wanted = set(args.sections.split(",")) | ({"profile"} if args.profile else set())
    for name, section in sections.items():
        if name not in wanted:
            continue
        try:
            section(args, res, sender, work, progress)
        except Exception as exc:  # the one place: a broken section is reported, the others still run
            logger.warning("section %s failed", name, exc_info=True)
            progress(f"{name} section failed: {type(exc).__name__}: {exc}")
            res.meta.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"[:400]
    res.meta["seconds"] = round(time.monotonic() - started, 1)
    res.meta["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return res


Sender = DcmtkSender | PynetdicomSender
Progress = Callable[[str], None]


def _ingest(args: argparse.Namespace, res: _Results, sender: Sender, work: Path, progress: Progress) -> None:
    counts, runs = res.meta["instances"], res.meta["runs"]
    progress(f"generating data in {args.cache}")
    associations = [int(a) for a in args.associations.split(",")]
    keys = [(m, a, r) for m in counts if counts[m] > 0 for a in associations for r in range(runs)]
    sets = {k: instance_files(args.cache, k[0], counts[k[0]], variant=i) for i, k in enumerate(keys)}
    default = ("dcmtk-storescp,orthanc,dicomd,dicomd-postgresql" if args.quick
               else "bare-pynetdicom-nproc,dcmtk-storescp,orthanc,dicomd-pynetdicom,dicomd,dicomd-postgresql")
    receivers = _receivers(args.receivers or default)
    with _postgres("dicomd-postgresql" in receivers, res, progress):
        res.raw = run_ingest(sets, receivers, sender, work / "ingest", args.pdu, progress)
    res.ingest = summarize(res.raw)


def _memory(args: argparse.Namespace, res: _Results, sender: Sender, work: Path, progress: Progress) -> None:
    if args.big_mb <= 0:
        return
    progress(f"writing a {args.big_mb} MB multi-frame instance")
    big = big_file(args.cache, args.big_mb)
    default = ("dicomd,bare-pynetdicom-chunked" if args.quick else
               "dicomd,dicomd-pynetdicom,bare-pynetdicom-chunked,dcmtk-storescp")
    for receiver in (args.memory_receivers or default).split(","):
        progress(f"memory: {receiver}")
        res.memory.append(measure_memory(receiver, big, sender, work, args.pdu, args.keep))
    progress("memory: dicomd HTTP zip import")
    res.memory.append(measure_http_import(big, work, args.pdu, args.keep))


def _archive(args: argparse.Namespace, res: _Results, sender: Sender, work: Path, progress: Progress) -> None:
    sessions, instances = (2, 20) if args.quick else (4, 50)
    runs = res.meta["runs"]
    progress(f"archive: {runs} runs x 2 projects x {sessions} sessions x {instances} MR instances")
    res.archive = run_archiving(args.cache, work / "archive", runs, sessions, instances, args.pdu, sender,
                                progress)


def _profile(args: argparse.Namespace, res: _Results, sender: Sender, work: Path, progress: Progress) -> None:
    files = instance_files(args.cache, "MR", res.meta["instances"]["MR"] or 200, variant=99)
    for assoc in (1, 4):
        progress(f"profile: dicomd with py-spy, {assoc} association(s)")
        rows, note = profile_ingest(files, assoc, sender, work / f"profile-{assoc}", args.pdu)
        res.meta.setdefault("profile", []).append(
            {"associations": assoc, "note": note, "rows": [dataclasses.asdict(r) for r in rows]})


def _pixels(args: argparse.Namespace, res: _Results, sender: Sender, work: Path, progress: Progress) -> None:
    frames = 10 if args.quick else 30
    progress(f"pixels: redaction of {frames}-frame instances, {res.meta['runs']} runs")
    res.meta["pixels"] = [dataclasses.asdict(r) for r in run_pixels(work / "pixels", res.meta["runs"], frames)]


def _cluster(args: argparse.Namespace, res: _Results, sender: Sender, work: Path, progress: Progress) -> None:
    """One dicomd node vs two on this machine, on SQLite and (when a server can be had) PostgreSQL."""
    instances = res.meta["instances"]["MR"] or 200
    runs = min(res.meta["runs"], 3)
    progress(f"cluster: {runs} runs x 1 and 2 nodes x {instances} MR instances over 4 associations")
    with _postgres(True, res, progress) as server:
        rows = run_cluster(args.cache, work / "cluster", runs, instances, 4, args.pdu, sender, progress,
                           server.new_database if server is not None else None)
    res.meta["cluster"] = [dataclasses.asdict(row) for row in rows]


def _catalog(args: argparse.Namespace, res: _Results, sender: Sender, work: Path, progress: Progress) -> None:
    default = "10000,100000" if args.quick else "1000000,10000000"
    sizes = [int(n) for n in (args.catalog_sizes or default).split(",")]
    backends = [b.strip() for b in args.catalog_backends.split(",") if b.strip()]
    with _postgres("postgresql" in backends, res, progress) as server:
        fresh = (lambda: server.new_database()) if server is not None else None
        drop = (lambda url: server.admin(f"DROP DATABASE {url.rsplit('/', 1)[1]}")) if server is not None else None
        res.catalog = run_catalog(work / "catalog", sizes, progress, fresh, drop, sqlite="sqlite" in backends)


@contextlib.contextmanager
def _postgres(wanted: bool, res: _Results, progress: Progress) -> Iterator[Any]:
    """A throwaway PostgreSQL server for a section (dicomd.testing.pgserver), named in $DICOMD_BENCH_PG."""
    if not wanted:
        yield None
        return
    from bench.receivers import PG_ENV
    from dicomd.testing.pgserver import start_server, stop_server

    progress("starting a throwaway PostgreSQL server")
    server = start_server(fsync=True, shared_buffers="256MB")
    res.meta["postgresql"] = {"version": server.bindir.parent.name, "fsync": True, "shared_buffers": "256MB"}
    os.environ[PG_ENV] = server.url()
    try:
        yield server
    finally:
        os.environ.pop(PG_ENV, None)
        stop_server(server)
