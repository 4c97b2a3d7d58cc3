"""The lean entry point of an extra receiver process: ``python -m dicomd.receivermain``.

`dicomd serve` starts its extra receiver processes (``receiver_processes > 1``) with this module
rather than through the CLI: the CLI imports every command (FastAPI, uvicorn, pydantic, the HTTP
routes), and a receiver process needs none of them. It also keeps out what the libraries import
only because it is installed, which a receiver never uses: pydicom imports NumPy (and through its
pixel decoders Pillow) for pixel data, which ingest never decodes; sqlite-utils imports pandas;
pydicom's test-data downloader imports requests. Each library treats the missing package as not
installed. Measured: a receiver process holds about 50 MB instead of about 125 MB.

``dicomd receiver-process`` (hidden) stays the same body under the CLI, for a person to run.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import logging
import sys
from typing import Sequence

logger = logging.getLogger(__name__)

NOT_IN_A_RECEIVER = frozenset({"numpy", "pandas", "PIL", "requests"})


class _KeepOut(importlib.abc.MetaPathFinder):
    """Makes the named top-level packages look not installed (ImportError, as when they are absent)."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] in self.names:
            raise ImportError(f"{fullname} is not used by a dicomd receiver process", name=fullname)
        return None


def main(argv: Sequence[str] | None = None) -> None:
    sys.meta_path.insert(0, _KeepOut(NOT_IN_A_RECEIVER))
    parser = argparse.ArgumentParser(prog="python -m dicomd.receivermain", description=__doc__)
    parser.add_argument("--config")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--ports", required=True, help="comma-separated, one per receiver")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from dicomd.config import load  # after the finder: nothing below may pull the packages in
    from dicomd.workers import run_receiver_process

    config = load(args.config, {"data_dir": args.data_dir})
    logging.getLogger().setLevel(config.log_level)
    run_receiver_process(config, [int(p) for p in args.ports.split(",")])


if __name__ == "__main__":
    main()
