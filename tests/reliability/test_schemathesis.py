"""schemathesis against the HTTP API's own OpenAPI document, in-process (ASGI): no 5xx."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

from dicomd.auth import Auth  # noqa: E402
from dicomd.config import load  # noqa: E402
from dicomd.stores import Stores  # noqa: E402
from dicomd.testing.generator import generate_study, write_study  # noqa: E402
from dicomd.http.app import create_app  # noqa: E402
from dicomd.ingest import Source  # noqa: E402
from dicomd.routing import Explicit  # noqa: E402
from tests.conftest import write_config  # noqa: E402

PASSWORD = "correct-horse-1"


def _app(tmp: Path):  # type: ignore[no-untyped-def]
    stores = Stores.open(load(write_config(tmp, projects="[projects.demo]\n[projects.auto]\nauto_archive = 4\n")))
    Auth(stores.catalog).add_user("admin", PASSWORD, admin=True)
    for path in write_study(generate_study(6, series=1, instances_per_series=2, rows=8, cols=8), tmp / "s"):
        stores.ingest.stage(path, Source(kind="CLI", explicit=Explicit(project="demo")))
    return create_app(stores.config, stores)


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    app = _app(tmp_path_factory.mktemp("schemathesis"))
    token = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    return schemathesis.openapi.from_asgi("/openapi.json", app, headers={"Authorization": f"Basic {token}"})


def test_no_server_errors(api_schema) -> None:  # type: ignore[no-untyped-def]
    """Every operation of the document, a few generated cases each (schemathesis's pytest plugin does
    not load under pytest 9, so the operations are driven directly)."""
    from hypothesis import given

    failures: list[str] = []
    calls: list[int] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 20

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(auth=("admin", PASSWORD))
            calls.append(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}")

        check()
    assert not failures, failures[:10]
    assert len(calls) >= len(operations)
    assert any(200 <= code < 300 for code in calls)  # the generated requests really reach handlers
