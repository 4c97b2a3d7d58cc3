"""Spool hygiene: the temporary files pynetdicom streams incoming C-STORE datasets into.

A dropped association leaves its half-received file behind; a receive thread that died on a
write error (ENOSPC) leaves one without any close event. The SCP removes both kinds.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


def discard_partial_spool(assoc: object) -> str | None:
    """Remove the half-received instance pynetdicom was spooling for a dropped association.

    pynetdicom streams each incoming dataset into a temporary file and deletes it only after the
    C-STORE handler ran; when the association dies mid-instance the file stays. Returns its name.
    """
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    spool = getattr(message, "_data_set_file", None)
    name = getattr(spool, "name", None)
    if spool is None or not name:
        return None
    try:
        spool.close()
    except OSError:
        pass
    try:
        os.unlink(name)
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning("could not remove a partial instance %s: %s", name, exc)
        return None
    return str(name)


def sweep_spool(folder: Path, older_than: float, keep: set[str]) -> list[str]:
    """Remove spool files last written before ``older_than`` (epoch seconds) that are not in ``keep``.

    Catches what :func:`discard_partial_spool` cannot: a receive thread that died on a write error
    (ENOSPC) leaves its file without any close event. Anything this old belongs to an association
    that the network timeout has already dropped.
    """
    removed: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        try:
            if not entry.is_file() or entry.path in keep or entry.stat().st_mtime >= older_than:
                continue
            os.unlink(entry.path)
            removed.append(entry.name)
        except OSError:
            continue
    if removed:
        logger.warning("removed %d abandoned partial instance(s) from %s", len(removed), folder)
    return removed
