"""Benchmark data, generated deterministically by dicomd.testing.generator and cached in the work folder."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from dicomd.testing.generator import generate_study, large_multiframe, write_study

logger = logging.getLogger(__name__)
SIZES = {"MR": 256, "CT": 512}  # MR 256x256x16 bit ~130 KB, CT 512x512x16 bit ~520 KB
SEEDS = {"MR": 7001, "CT": 7002}
PER_SERIES = 100


def instance_files(root: Path, modality: str, count: int, variant: int = 0) -> list[Path]:
    """``count`` single-frame instances of one study (series of 100), written once and reused.

    Each ``variant`` is a different patient and study, so a receiver that keeps state (dicomd)
    gets new data for every measurement instead of re-sends."""
    folder = root / f"{modality}-{count}-{variant}"
    done = folder / ".complete"
    if not done.exists():
        size = SIZES[modality]
        datasets = generate_study(SEEDS[modality] + 1000 * variant, modality=modality, rows=size, cols=size,
                                  series=math.ceil(count / PER_SERIES),
                                  instances_per_series=min(count, PER_SERIES))[:count]
        write_study(datasets, folder)
        done.touch()
    return sorted(p for p in folder.iterdir() if p.suffix == ".dcm")


def big_file(root: Path, megabytes: int) -> Path:
    """One multi-frame instance of at least ``megabytes`` MB (10^6 bytes), streamed to disk once."""
    path = root / f"big-{megabytes}MB.dcm"
    done = root / f".big-{megabytes}.complete"
    if not done.exists():
        root.mkdir(parents=True, exist_ok=True)
        large_multiframe(path, megabytes * 1_000_000, seed=7003)
        done.touch()
    return path
