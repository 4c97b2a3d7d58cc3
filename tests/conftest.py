"""Shared fixtures: real daemons on loopback with port 0, real SQLite files, pynetdicom SCUs."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomd.config import Config, load
from dicomd.daemon import Daemon
from tests.pgserver import pg_url, postgres  # noqa: F401 - fixtures: a throwaway PostgreSQL server

ENGINE_ENV = "DICOMD_TEST_ENGINE"
CATALOG_ENV = "DICOMD_TEST_CATALOG"  # catalog.url for write_config, set per test by the ``backend`` fixture
BACKENDS = ("sqlite", "postgresql")


def write_config(tmp_path: Path, extra: str = "", *, projects: str | None = None, receiver: str = "",
                 engine: str = "") -> Path:
    """A config file for tests: one receiver on port 0, HTTP off, short idle time, on ``engine``
    (default: $DICOMD_TEST_ENGINE, set per test by the ``engine`` fixture, else asyncio)."""
    if projects is None:
        projects = """
[projects.demo]
aliases = ["DEMO"]
auto_archive = 0

[projects.auto]
auto_archive = 4
overwrite = "append"
"""
    text = f"""
data_dir = "data"
session_idle_seconds = 0.5
watch_interval_seconds = 0.1
min_free_bytes = 0
log_level = "DEBUG"

[[receivers]]
ae_title = "DICOMD"
port = 0
bind = "127.0.0.1"
engine = "{engine or os.environ.get(ENGINE_ENV, "asyncio")}"
{receiver}

[http]
enabled = false
{extra}
{projects}
"""
    if os.environ.get(CATALOG_ENV):
        text += f'\n[catalog]\nurl = "{os.environ[CATALOG_ENV]}"\n'
    path = tmp_path / "dicomd.toml"
    path.write_text(text)
    return path


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``both_engines`` run on the asyncio engine and again on pynetdicom (that copy
    is marked slow: a quick run with -m "not slow" checks the default engine only)."""
    if metafunc.definition.get_closest_marker("both_engines") and "engine" in metafunc.fixturenames:
        metafunc.parametrize("engine", ["asyncio", pytest.param("pynetdicom", marks=pytest.mark.slow)],
                             indirect=True)
    if metafunc.definition.get_closest_marker("both_backends") and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture(autouse=True)
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The receive engine this test's configs name (write_config reads $DICOMD_TEST_ENGINE)."""
    name = getattr(request, "param", None) or os.environ.get(ENGINE_ENV) or "asyncio"
    monkeypatch.setenv(ENGINE_ENV, name)
    return str(name)


@pytest.fixture(autouse=True)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The catalog backend this test's configs name: sqlite (the default), or postgresql for the
    tests marked ``both_backends`` (write_config then names a fresh database of the test server)."""
    name = getattr(request, "param", None) or "sqlite"
    if name == "postgresql":
        monkeypatch.setenv(CATALOG_ENV, request.getfixturevalue("pg_url"))
    else:
        monkeypatch.delenv(CATALOG_ENV, raising=False)
    return str(name)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(config: Config | Path | None = None, **overrides: Any) -> Daemon:
        if config is None:
            config = write_config(tmp_path)
        if isinstance(config, Path):
            config = load(config, overrides)
        daemon = Daemon(config).start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture
def daemon(make_daemon: Callable[..., Daemon]) -> Daemon:
    return make_daemon()


def send(port: int, datasets: Iterable[Dataset], *, ae_title: str = "SCANNER", called: str = "DICOMD") -> list[int]:
    """Send datasets over one association; returns the C-STORE statuses (-1 when no answer)."""
    ae = AE(ae_title=ae_title)
    ae.requested_contexts = StoragePresentationContexts[:120]
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        raise ConnectionRefusedError("association not established")
    statuses = []
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            statuses.append(int(status.Status) if "Status" in status else -1)
    finally:
        assoc.release()
    return statuses


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, message: str = "") -> Any:
    """Poll until ``predicate()`` is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message or f"condition not met within {timeout}s")
        time.sleep(interval)
