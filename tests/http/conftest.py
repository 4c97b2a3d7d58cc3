"""HTTP fixtures: a real Stores over tmp_path, the real app in-process, users of every role."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from dicomd.auth import Auth
from dicomd.config import load
from dicomd.stores import Stores
from dicomd.testing.generator import generate_study, write_study
from dicomd.http.app import create_app
from dicomd.ingest import Source
from dicomd.routing import Explicit
from tests.conftest import write_config

PASSWORD = "correct-horse-1"
# user -> (admin, {project: role})
USERS = {
    "admin": (True, {}),
    "owner": (False, {"demo": "owner"}),
    "member": (False, {"demo": "member"}),
    "collab": (False, {"demo": "collaborator"}),
    "outsider": (False, {"auto": "owner"}),
}


@dataclass
class Site:
    stores: Stores
    client: TestClient
    tmp: Path

    def as_user(self, name: str) -> TestClient:
        """A fresh client logged in with basic auth as ``name``."""
        client = TestClient(self.client.app)
        client.auth = (name, PASSWORD)
        return client


def add_users(stores: Stores) -> None:
    auth = Auth(stores.catalog)
    for name, (admin, roles) in USERS.items():
        auth.add_user(name, PASSWORD, admin=admin)
        for project, role in roles.items():
            auth.set_role(name, project, role)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    config = load(write_config(tmp_path, projects="""
[projects.demo]
aliases = ["DEMO"]

[projects.auto]
auto_archive = 4
overwrite = "append"

[projects.other]
"""))
    stores = Stores.open(config)
    add_users(stores)
    app = create_app(config, stores)
    with TestClient(app) as client:
        yield Site(stores, client, tmp_path)
    stores.close()


def study_files(tmp: Path, seed: int = 1, series: int = 2, per_series: int = 2, name: str = "study") -> list[Path]:
    return write_study(generate_study(seed=seed, series=series, instances_per_series=per_series), tmp / name)


def zip_bytes(paths: list[Path], extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in paths:
            zf.write(path, f"dicom/{path.name}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def stage(site: Site, project: str = "demo", seed: int = 1, session: str = "") -> str:
    """Stage a study through the real ingest path; returns its prearchive URI (with /data)."""
    paths = study_files(site.tmp, seed=seed, name=f"s{seed}-{project}-{session}")
    source = Source(kind="CLI", explicit=Explicit(project=project, session=session))
    staged = [site.stores.ingest.stage(p, source) for p in paths]
    return "/data" + staged[0].session.url
