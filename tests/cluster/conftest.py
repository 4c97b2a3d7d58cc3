"""The cluster tests run on both catalog backends: the nodes share a SQLite file, or a database of
the test PostgreSQL server (tests/pgserver.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_section(request: pytest.FixtureRequest) -> str:
    """The `[catalog]` lines of the nodes' config ('' = the SQLite file in data_dir)."""
    return catalog_lines(request, request.param)


def catalog_lines(request: pytest.FixtureRequest, backend: str) -> str:
    if backend == "sqlite":
        return ""
    return f'\n[catalog]\nurl = "{request.getfixturevalue("pg_url")}"\n'
