#!/usr/bin/env python3
"""Anonymization throughput: dicomd's Anonymizer beside dicognito alone, on the same files, same run.

Usage: python scripts/bench_anon.py [--count 200] [--size 256] [--repeat 3] [--options retain_long_modified_dates]
Prints instances/s (median of the repeats) for each, in memory (no disk I/O): the generator's
PHI-planted MR instances are decoded once, deep-copied before each timed pass.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

from dicognito.anonymizer import Anonymizer as Dicognito

from dicomd.anonymize import Anonymizer, Labels, PseudonymStore
from dicomd.config import AnonymizeConfig
from dicomd.testing.generator import generate_study


def _rate(fn, datasets, repeat: int) -> float:  # type: ignore[no-untyped-def]
    rates = []
    for _ in range(repeat):
        work = [copy.deepcopy(ds) for ds in datasets]
        start = time.perf_counter()
        for ds in work:
            fn(ds)
        rates.append(len(work) / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", type=int, default=256, help="rows = columns of each image")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--options", nargs="*", default=["retain_long_modified_dates"])
    args = parser.parse_args()
    per_series = min(args.count, 50)
    datasets = generate_study(11, series=-(-args.count // per_series), instances_per_series=per_series,
                              rows=args.size, cols=args.size)[: args.count]
    with tempfile.TemporaryDirectory() as tmp:
        store = PseudonymStore(Path(tmp) / "keys" / "pseudonyms.sqlite")
        ours = Anonymizer("bench", AnonymizeConfig(enabled=True, options=tuple(args.options)), store)
        labels = Labels("bench", "S", "E")
        ours_rate = _rate(lambda ds: ours.apply(ds, labels), datasets, args.repeat)
    dicognito = Dicognito(seed="bench")
    dicognito_rate = _rate(dicognito.anonymize, datasets, args.repeat)
    print(f"instances: {len(datasets)} MR {args.size}x{args.size}, options: {' '.join(args.options) or '-'}")
    print(f"dicomd Anonymizer (PS3.15 basic + options): {ours_rate:8.1f} instances/s")
    print(f"dicognito alone:                            {dicognito_rate:8.1f} instances/s")
    print(f"ratio dicomd/dicognito:                     {ours_rate / dicognito_rate:8.2f}")


if __name__ == "__main__":
    main()
