"""Named crash points for kill tests.

``crashpoint("archive.planned")`` does nothing unless the environment variable
``DICOMD_CRASHPOINT`` names that point, in which case the process SIGKILLs itself right there
(no cleanup, no flush: exactly what a power cut or the OOM killer does). Kill tests start
``dicomd serve`` with the variable set to walk every step of receive, build, archive, move
and delete. ``DICOMD_CRASHPOINT`` may hold several names separated by commas; a name ending
in ``*`` matches every point with that prefix.
"""

from __future__ import annotations

import logging
import os
import signal

logger = logging.getLogger(__name__)

CRASHPOINT_ENV = "DICOMD_CRASHPOINT"


def crashpoint(name: str) -> None:
    """SIGKILL this process here when ``DICOMD_CRASHPOINT`` names ``name`` (a test hook)."""
    wanted = os.environ.get(CRASHPOINT_ENV)
    if not wanted:
        return
    for pattern in wanted.split(","):
        pattern = pattern.strip()
        if pattern == name or (pattern.endswith("*") and name.startswith(pattern[:-1])):
            logger.critical("crash point %s reached: killing the process", name)
            os.kill(os.getpid(), signal.SIGKILL)
