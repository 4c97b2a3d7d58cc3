"""Baselines for the anonymization section, run as a process like the dicomd CLI they compare with.

``python -m bench.anon_baseline MODE OUT FILE...`` with MODE ``pydicom`` (read + write) or
``dicognito`` (read + dicognito's anonymize + write). Prints one JSON line with the seconds spent
on the files (interpreter start-up and imports excluded)."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import pydicom

logger = logging.getLogger(__name__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=("pydicom", "dicognito"))
    parser.add_argument("out", type=Path)
    parser.add_argument("files", nargs="*", type=Path)
    args = parser.parse_args()
    anonymizer = None
    if args.mode == "dicognito":
        from dicognito.anonymizer import Anonymizer

        anonymizer = Anonymizer()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    for i, path in enumerate(args.files):
        ds = pydicom.dcmread(path)
        if anonymizer is not None:
            anonymizer.anonymize(ds)
        ds.save_as(args.out / f"{i:06d}.dcm")
    print(json.dumps({"seconds": time.monotonic() - t0, "instances": len(args.files)}))


if __name__ == "__main__":
    main()
