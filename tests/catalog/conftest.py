"""Every catalog test runs on both backends: a SQLite file and a database of the test PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomd.catalog import Catalog
from dicomd.dburl import DatabaseUrl, parse, sqlite_file


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseUrl:
    if request.param == "sqlite":
        return sqlite_file(tmp_path / "catalog.sqlite")
    return parse(request.getfixturevalue("pg_url"), tmp_path)


@pytest.fixture
def catalog(catalog_url: DatabaseUrl) -> Iterator[Catalog]:
    cat = Catalog(catalog_url)
    yield cat
    cat.close()
