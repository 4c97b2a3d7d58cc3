"""Archive prearchive sessions the way ``dicomd prearchive archive`` does, timing only the work.

``python -m bench.archive_worker CONFIG DATA_DIR URL...`` opens the stores (as every dicomd
command does), then archives each session with the library's Archiver, and prints one JSON line:
seconds spent archiving (imports, opening and starting the archive worker pool excluded: a running
daemon starts its pool once, with its first large job, and keeps it), sessions, instances, the
pool's start-up seconds and errors."""

from __future__ import annotations

import argparse
import json
import logging
import time

from dicomd.config import load
from dicomd.stores import Stores
from dicomd.errors import DicomdError

logger = logging.getLogger(__name__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config")
    parser.add_argument("data_dir")
    parser.add_argument("urls", nargs="+")
    args = parser.parse_args()
    stores = Stores.open(load(args.config, {"data_dir": args.data_dir}))
    try:
        rows = [stores.prearchive.resolve(url) for url in args.urls]
        instances, errors = 0, []
        pool_start = stores.hooks.anonymizers.pool.start()  # up before timing, as in a running daemon
        t0 = time.monotonic()
        for row in rows:
            try:
                instances += stores.archiver.archive(row.id, actor="bench").instances
            except DicomdError as exc:
                errors.append(f"{row.url}: {exc}")
        seconds = time.monotonic() - t0
    finally:
        stores.close()
    print(json.dumps({"seconds": seconds, "sessions": len(rows) - len(errors), "instances": instances,
                      "pool_start_seconds": pool_start, "errors": errors}))


if __name__ == "__main__":
    main()
