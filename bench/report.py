"""The printed table and the JSON file."""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

from bench.archiving import ArchiveRow
from bench.catalog_scale import CatalogRow
from bench.ingest import IngestRow, Measurement
from bench.memory import MemoryRow

# Sections of issue 7 that need parts of dicomd that do not exist yet: printed, never faked.
TODO = [
    ("memory", "peak RSS while importing a >= 1 GB zip over HTTP", "not yet measured"),
    ("anonymization", "instances/s through archive with the Basic Profile vs dicognito alone "
                      "vs pydicom read+write", "not yet measured"),
    ("catalog", "prearchive list / archive list --where / SOP Instance UID lookup at 100k and 1M rows",
     "not yet measured"),
    ("prearchive->archive", "sessions/s and instances/s archived", "not yet measured"),
]


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:.0f}"


def ingest_table(rows: list[IngestRow]) -> list[str]:
    lines = [f"{'modality':<8} {'assoc':>5}  {'receiver':<24} {'runs':>4} {'inst/s':>8} {'MB/s':>7} "
             f"{'x bare':>7} {'x Orthanc':>9} {'CPU ms/inst':>11}  note"]
    for r in rows:
        lines.append(f"{r.modality:<8} {r.associations:>5}  {r.receiver:<24} {r.runs:>4} "
                     f"{_num(r.instances_per_s, '.0f'):>8} {_num(r.mb_per_s, '.1f'):>7} "
                     f"{_num(r.ratio_vs_bare, '.2f'):>7} {_num(getattr(r, 'ratio_vs_orthanc', None), '.2f'):>9} "
                     f"{_num(r.cpu_ms_per_instance, '.2f'):>11}  {r.note}")
    return lines


def memory_table(rows: list[MemoryRow]) -> list[str]:
    lines = [f"{'receiver':<24} {'object MB':>9} {'idle MB':>8} {'peak RSS MB':>11} {'peak-idle':>9} "
             f"{'idle PSS':>8} {'peak PSS MB':>11} {'max proc MB':>11} {'max HWM MB':>10} {'seconds':>7}  stored  note"]
    for r in rows:
        grew = None if r.peak_rss is None or r.idle_rss is None else r.peak_rss - r.idle_rss
        lines.append(f"{r.receiver:<24} {_mb(r.object_bytes):>9} {_mb(r.idle_rss):>8} "
                     f"{_mb(r.peak_rss):>11} {_mb(grew):>9} {_mb(getattr(r, 'idle_pss', None)):>8} "
                     f"{_mb(getattr(r, 'peak_pss', None)):>11} {_mb(getattr(r, 'largest_process', None)):>11} "
                     f"{_mb(r.peak_hwm):>10} {_num(r.seconds, '.1f'):>7}  "
                     f"{'yes' if r.stored else 'no':<6}  {r.note}")
    return lines


def archive_table(rows: list[ArchiveRow]) -> list[str]:
    lines = [f"{'step':<36} {'runs':>4} {'sessions/s':>10} {'inst/s':>8} {'ratio':>6}  {'against':<20} note"]
    for r in rows:
        lines.append(f"{r.name:<36} {r.runs:>4} {_num(r.sessions_per_s, '.1f'):>10} "
                     f"{_num(r.instances_per_s, '.0f'):>8} {_num(r.ratio, '.2f'):>6}  {r.baseline:<20} {r.note}")
    return lines


def catalog_table(rows: list[CatalogRow]) -> list[str]:
    sizes = sorted({r.instance_rows for r in rows})
    ops = list(dict.fromkeys((r.backend, r.operation) for r in rows))
    head = f"{'backend':<10} {'query':<30}" + "".join(f" {f'{n:,} rows: ms':>17} {'results':>7} {'CLI s':>6}"
                                                    for n in sizes)
    lines = [head + f" {'growth':>7}"]
    for backend, op in ops:
        by = {r.instance_rows: r for r in rows if (r.backend, r.operation) == (backend, op)}
        line = f"{backend:<10} {op:<30}"
        for n in sizes:
            r = by.get(n)
            line += (f" {r.median_ms:>17.3f} {r.result_rows:>7} {_num(r.cli_s, '.2f'):>6}" if r
                     else f" {'-':>17} {'-':>7} {'-':>6}")
        first, last = by.get(sizes[0]), by.get(sizes[-1])
        growth = last.median_ms / first.median_ms if first and last and first.median_ms else None
        lines.append(line + f" {_num(growth, '.2f'):>6}x")
    fills = {(r.backend, r.instance_rows): r.fill_s for r in rows if r.fill_s is not None}
    if fills:
        lines.append("bulk load (s): " + ", ".join(f"{b} {n:,}: {s:.0f}" for (b, n), s in sorted(fills.items())))
    return lines


def backend_table(raw: list[Measurement]) -> list[str]:
    """dicomd with its catalog on PostgreSQL against the same on SQLite: per-run ratios, medians."""
    by = {(m.modality, m.associations, m.run, m.receiver): m for m in raw if m.valid}
    keys = sorted({(m.modality, m.associations) for m in raw if m.receiver == "dicomd-postgresql"},
                  key=lambda k: (k[0] != "MR", k[1]))
    lines = [f"{'modality':<8} {'assoc':>5} {'SQLite inst/s':>13} {'PostgreSQL inst/s':>17} {'PG / SQLite':>11}"]
    for modality, assoc in keys:
        pairs = [(m, by.get((modality, assoc, m.run, "dicomd"))) for (mo, a, _r, name), m in by.items()
                 if (mo, a, name) == (modality, assoc, "dicomd-postgresql")]
        pairs = [(pg, lite) for pg, lite in pairs if lite is not None]
        if not pairs:
            lines.append(f"{modality:<8} {assoc:>5} {'-':>13} {'-':>17} {'-':>11}")
            continue
        lite_ips = statistics.median(lite.ips for _pg, lite in pairs)
        pg_ips = statistics.median(pg.ips for pg, _lite in pairs)
        ratio = statistics.median(pg.ips / lite.ips for pg, lite in pairs)
        lines.append(f"{modality:<8} {assoc:>5} {lite_ips:>13.0f} {pg_ips:>17.0f} {ratio:>11.2f}")
    return lines


def todo(measured: set[str]) -> list[tuple[str, str, str]]:
    return [row for row in TODO if row[0] not in measured]


def render(meta: dict[str, Any], ingest: list[IngestRow], memory: list[MemoryRow],
           archive: list[ArchiveRow] | None = None, catalog: list[CatalogRow] | None = None,
           raw: list[Measurement] | None = None) -> str:
    out = [f"dicomd benchmark  {meta['date']}  {meta['cpus']} CPUs  commit {meta['commit']}",
           f"sender: {meta['sender']}; medians of {meta['runs']} runs; 'x bare' / 'x Orthanc' = median of "
           f"per-run ratios to bare-pynetdicom / Orthanc in the same run; max PDU {meta['pdu']}; dicomd receiver_processes "
           f"{meta.get('dicomd_receiver_processes', '-')}",
           f"load average (1/5/15 min) at start {meta.get('load_average_start')}, at end "
           f"{meta.get('load_average_end')}; {meta.get('seconds', '-')} s", ""]
    if ingest:
        out += ["1. Ingest over C-STORE (first association request to last Success; CPU = the receiver's "
                "user+system time per instance)"]
        out += ingest_table(ingest) + [""]
    if raw and any(m.receiver == "dicomd-postgresql" for m in raw):
        out += ["1b. dicomd's catalog on SQLite vs PostgreSQL (same run, same data; median of per-run ratios)"]
        out += backend_table(raw) + [""]
    if memory:
        out += ["3. Memory: one large multi-frame instance over C-STORE, and the same in a zip over HTTP",
                "   (RSS summed over the receiver's process tree, sampled every 20 ms; HWM = kernel peak of "
                "the largest single process)"]
        out += memory_table(memory) + [""]
    if archive:
        out += ["4+6. Prearchive -> archive, MR 256x256 (work only: process start-up excluded)"]
        out += archive_table(archive) + [""]
    if catalog:
        out += ["5. Catalog (synthetic rows; in-process median ms through dicomd's Catalog; one CLI call "
                "with start-up in 'CLI s')"]
        out += catalog_table(catalog) + [""]
    if meta.get("pixels"):
        from bench.pixels import PixelRow, pixels_table

        out += ["7. Clean Pixel Data: read, decode every frame, blank 2 rectangles, re-encode, write (in process)"]
        out += pixels_table([PixelRow(**r) for r in meta["pixels"]]) + [""]
    for prof in meta.get("profile", []):
        out += [f"Profile of dicomd (py-spy, share of samples): {prof['note']}"]
        for kind in ("stage", "self", "inclusive"):
            out += [f"  {kind}:"] + [f"    {r['share']:6.1%}  {r['frame'][:110]}"
                                     for r in prof["rows"] if r["kind"] == kind]
        out += [""]
    for section, error in meta.get("errors", {}).items():
        out += [f"Section {section} FAILED: {error}"]
    missing = todo(_measured(memory, archive, catalog))
    if missing:
        out += ["Not measured in this run:"]
        out += [f"  {section}: {what}" for section, what, _ in missing]
    return "\n".join(out)


def _measured(memory: list[MemoryRow], archive: list[ArchiveRow] | None,
              catalog: list[CatalogRow] | None = None) -> set[str]:
    done = {"catalog"} if catalog else set()
    if archive:
        done |= {"anonymization", "prearchive->archive"}
    if any(r.receiver.endswith("HTTP zip") for r in memory):
        done.add("memory")
    return done


def write_json(path: Path, meta: dict[str, Any], ingest: list[IngestRow], memory: list[MemoryRow],
               raw: list[Any], archive: list[ArchiveRow] | None = None,
               catalog: list[CatalogRow] | None = None) -> None:
    doc = {
        "meta": meta,
        "ingest": [dataclasses.asdict(r) for r in ingest],
        "memory": [dataclasses.asdict(r) for r in memory],
        "archive": [dataclasses.asdict(r) for r in archive or []],
        "catalog": [dataclasses.asdict(r) for r in catalog or []],
        "not_yet_measured": [{"section": s, "what": w, "status": st}
                             for s, w, st in todo(_measured(memory, archive, catalog))],
        "raw_ingest": [dataclasses.asdict(m) for m in raw],
    }
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
