"""The HTTP API driven from its own OpenAPI document with hypothesis-generated hostile parameters
(path traversal, odd formats; beside the schemathesis run in test_schemathesis.py): no 5xx."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("dicomd.http.app")
from fastapi.testclient import TestClient  # noqa: E402

from dicomd.auth import Auth  # noqa: E402
from dicomd.config import load  # noqa: E402
from dicomd.stores import Stores  # noqa: E402
from dicomd.testing.generator import generate_study, write_study  # noqa: E402
from dicomd.http.app import create_app  # noqa: E402
from dicomd.ingest import Source  # noqa: E402
from dicomd.routing import Explicit  # noqa: E402
from tests.conftest import write_config  # noqa: E402

PASSWORD = "correct-horse-1"
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=24)
NASTY = st.sampled_from(["..", "../..", "%2e%2e", "*", "", " ", "demo", "Unassigned", "auto", "-1", "0", "99999999999",
                         "a" * 300, "é", "\\", "null", "true", "zip", "json", "csv", "xml", "html", "DICOM-zip"])
QUERY_NAMES = ["format", "src", "overwrite", "project", "subject", "session", "dest", "newProject", "async",
               "import-handler", "Ignore-Unparsable", "auto-archive", "rest", "label", "inbody", "PROJECT_ID"]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, list[str]]]]:
    tmp = tmp_path_factory.mktemp("api")
    stores = Stores.open(load(write_config(tmp, projects="[projects.demo]\n[projects.auto]\nauto_archive = 4\n")))
    Auth(stores.catalog).add_user("admin", PASSWORD, admin=True)
    for i, path in enumerate(write_study(generate_study(5, series=1, instances_per_series=2, rows=8, cols=8), tmp / "s")):
        staged = stores.ingest.stage(path, Source(kind="CLI", explicit=Explicit(project="demo")))
    stores.prearchive.build(staged.session.id)
    row = stores.catalog.session(staged.session.id)
    known = {"project": ["demo", row.project], "timestamp": [row.timestamp], "label": [row.label],
             "subject": [row.subject], "projects": ["demo", "demo,auto"], "operation": ["move", "delete", "rebuild"],
             "rest": ["scans", "scans/1", "scans/1/resources/DICOM/files", "files"]}
    app = create_app(stores.config, stores)
    client = TestClient(app, raise_server_exceptions=False)
    client.auth = ("admin", PASSWORD)
    known["_operations"] = _operations(client)  # read once: the fuzz's bad logins soon throttle this address
    yield client, known
    stores.close()


def _operations(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    spec = client.get("/openapi.json").json()
    return sorted((method.upper(), path, op) for path, ops in spec["paths"].items() for method, op in ops.items()
                  if not path.startswith("/data/services/tokens/invalidate"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(data=st.data())
def test_no_request_ends_in_a_server_error(api: tuple[TestClient, dict[str, list[str]]], data: st.DataObject) -> None:
    client, known = api
    method, template, op = data.draw(st.sampled_from(known["_operations"]), label="operation")
    path = template
    for name in re.findall(r"{(\w+)}", template):
        value = data.draw(st.one_of(st.sampled_from(known.get(name, ["x"])), NASTY, TEXT), label=name)
        path = path.replace("{" + name + "}", _quote(value) or "x")
    declared = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
    names = data.draw(st.lists(st.sampled_from(declared + QUERY_NAMES), max_size=4), label="query names")
    params = [(n, data.draw(st.one_of(NASTY, TEXT, st.sampled_from(known.get(n, ["x"]))), label=n)) for n in names]
    body = data.draw(st.one_of(st.none(), st.binary(max_size=200), st.just(b'{"a": 1}')), label="body") \
        if method in ("POST", "PUT") else None
    reply = client.request(method, path, params=params, content=body)
    assert reply.status_code < 500, f"{method} {path} {params} -> {reply.status_code}: {reply.text[:300]}"


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")
