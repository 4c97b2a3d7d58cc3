"""A real store populated through the real ingest path, and a CliRunner that runs `dicomd`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner, Result

from dicomd.catalog import PREARCHIVE, SessionRow
from dicomd.cli import main
from dicomd.config import load
from dicomd.stores import Stores
from dicomd.testing.generator import generate_study, write_study
from dicomd.ingest import Source
from tests.conftest import write_config


@dataclass
class Store:
    """A config file and open stores; `cli(...)` runs a dicomd command against them."""

    config_path: Path
    stores: Stores
    tmp: Path

    def cli(self, *args: str, input: str | None = None, store_args: bool = True) -> Result:
        extra = ["--config", str(self.config_path)] if store_args else []
        return CliRunner().invoke(main, [*args, *extra], input=input, catch_exceptions=False)

    def cli_json(self, *args: str) -> Any:
        result = self.cli(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def ingest_study(self, seed: int, *, series: int = 2, instances: int = 3, description: str = "DEMO",
                     modality: str = "MR", build: bool = True) -> SessionRow:
        """Write a generated study and stage each file as a receiver would; build the session."""
        datasets = generate_study(seed, series=series, instances_per_series=instances, modality=modality,
                                  study_description=description, rows=32, cols=32)
        paths = write_study(datasets, self.tmp / f"study{seed}")
        staged = [self.stores.ingest.stage(p, Source(kind="CLI")) for p in paths]
        session_id = staged[0].session.id
        if build:
            self.stores.prearchive.build(session_id)
        return self.stores.catalog.session(session_id)

    def ingest_files(self, paths: list[Path]) -> list[SessionRow]:
        return [self.stores.ingest.stage(Path(p), Source(kind="CLI")).session for p in paths]

    def prearchive(self) -> list[SessionRow]:
        return self.stores.catalog.sessions(PREARCHIVE)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    config_path = write_config(tmp_path)
    stores = Stores.open(load(config_path))
    try:
        yield Store(config_path, stores, tmp_path)
    finally:
        stores.close()
