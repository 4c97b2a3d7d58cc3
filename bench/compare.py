"""``--compare OLD.json``: the change of every figure against an earlier result file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _ingest_key(row: dict[str, Any]) -> tuple:
    return ("ingest", row["modality"], row["associations"], row["receiver"])


def _figures(doc: dict[str, Any]) -> dict[tuple, tuple[float | None, str]]:
    """Every comparable figure: key -> (value, unit); bigger is better unless the unit says ms/MB."""
    out: dict[tuple, tuple[float | None, str]] = {}
    for row in doc.get("ingest", []):
        out[_ingest_key(row)] = (row.get("instances_per_s"), "inst/s")
        out[_ingest_key(row) + ("ratio",)] = (row.get("ratio_vs_bare"), "x bare")
    for row in doc.get("memory", []):
        out[("memory", row["receiver"])] = (row.get("peak_rss") and row["peak_rss"] / 1e6, "peak MB")
    for row in doc.get("archive", []):
        out[("archive", row["name"])] = (row.get("instances_per_s"), "inst/s")
    for row in doc.get("catalog", []):
        backend = row.get("backend", "sqlite")  # runs before the PostgreSQL backend were all SQLite
        key = ("catalog", row["operation"], row["instance_rows"]) + (() if backend == "sqlite" else (backend,))
        out[key] = (row.get("median_ms"), "ms")
    return out


def compare(current: dict[str, Any], old_path: Path) -> list[str]:
    old_doc = json.loads(old_path.read_text())
    old, new = _figures(old_doc), _figures(current)
    lines = [f"Change against {old_path} (commit {old_doc.get('meta', {}).get('commit', '?')}, "
             f"{old_doc.get('meta', {}).get('date', '?')}):",
             f"{'figure':<60} {'before':>9} {'now':>9} {'change':>8}"]
    for key, (value, unit) in new.items():
        before = old.get(key, (None, unit))[0]
        if value is None or before is None:
            continue
        change = value / before if before else float("nan")
        name = " ".join(str(k) for k in key[1:]) + f" ({unit})"
        lines.append(f"{name:<60} {before:>9.3g} {value:>9.3g} {change:>7.2f}x")
    return lines
