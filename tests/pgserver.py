"""The PostgreSQL fixtures: a real, throwaway server (dicomd.testing.pgserver) for the tests that
run on the PostgreSQL backend.

`postgres` (session scope) starts it (Debian's `postgresql` package, installed with apt-get when
missing; a cluster in a temp folder owned by a non-root user, on a free loopback port) and stops it
at the end of the session; `pg_url` gives each test its own fresh database with the catalog's
migrations. When the server cannot be started the tests that need it FAIL under CI=true and are
skipped with the reason otherwise.
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from dicomd.testing.pgserver import PASSWORD, USER, PgServer, start_server, stop_server

__all__ = ["PASSWORD", "USER", "PgServer", "pg_url", "postgres"]


def unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL is needed and could not be started: {reason}")
    pytest.skip(f"PostgreSQL could not be started: {reason}")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    try:
        server = start_server()
    except Exception as exc:  # noqa: BLE001 - any failure is reported, with its reason
        unavailable(str(exc))
        raise
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def pg_url(postgres: PgServer) -> str:
    """A fresh database of the test server (the catalog's migrations already applied)."""
    return postgres.new_database()
