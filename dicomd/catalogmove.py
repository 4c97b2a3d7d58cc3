"""`dicomd catalog migrate`: the SQLite catalog (and the pseudonym keys, when asked) into PostgreSQL.

Holds the data directory's run lock for the whole copy, so no `dicomd serve` writes to the source
meanwhile (and none starts); the copying itself is dicomd.catalog.transfer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from dicomd.anonymize.pseudonyms import PseudonymStore
from dicomd.auth import migrations as auth_migrations
from dicomd.catalog import schema
from dicomd.catalog.transfer import TransferReport, copy_database
from dicomd.config import Config
from dicomd.dburl import DatabaseUrl
from dicomd.layout import Layout
from dicomd.mappings import migrations as mapping_migrations
from dicomd.runlock import RunLock

logger = logging.getLogger(__name__)

CATALOG_SETS = (schema.migrations, auth_migrations, mapping_migrations)


def migrate_catalog(
    config: Config,
    target: DatabaseUrl,
    *,
    source: Path | None = None,
    keys_target: DatabaseUrl | None = None,
    batch_rows: int = 5000,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[TransferReport]:
    """Copy the catalog (then the keys) and verify the counts; one report per database copied."""
    layout = Layout(config.data_dir)
    catalog_file = source or (config.catalog_url.path or layout.catalog)
    lock = RunLock.migrating(layout)
    try:
        logger.info("copying the catalog %s to %s", catalog_file, target.masked)
        reports = [copy_database(catalog_file, target, CATALOG_SETS, batch_rows=batch_rows, progress=progress)]
        if keys_target is not None:
            keys_file = config.keys_url.path or layout.pseudonyms
            PseudonymStore(keys_target).close()  # the keys' tables, made as the daemon makes them
            logger.info("copying the pseudonym keys %s to %s", keys_file, keys_target.masked)
            reports.append(copy_database(keys_file, keys_target, (), batch_rows=batch_rows, progress=progress))
        return reports
    finally:
        lock.release()
