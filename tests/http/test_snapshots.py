"""Snapshots over HTTP: contact sheets and scan images of prearchive and archive sessions, XNAT's
/xapi snapshot paths and SNAPSHOTS resource, with the session's permissions."""

from __future__ import annotations

import io

from PIL import Image

from dicomd.catalog import ARCHIVE, PREARCHIVE
from tests.http.conftest import Site, stage

PNG = b"\x89PNG\r\n\x1a\n"


def picture(response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png" and response.content.startswith(PNG)
    assert response.headers["cache-control"] == "no-store"
    return Image.open(io.BytesIO(response.content))


def test_prearchive_sheet_and_scan_images_for_readers_only(site: Site) -> None:
    uri = stage(site, "demo", seed=1)  # two scans of two instances
    collab = site.as_user("collab")
    sheet = picture(collab.get(uri + "/snapshot.png?size=128"))
    assert sheet.width == 2 * 128, "one tile per scan"
    scan = picture(collab.get(uri + "/scans/2/snapshot.png?size=96"))
    assert scan.size == (96, 96)
    assert picture(site.as_user("admin").get("/REST" + uri[len("/data"):] + "/snapshot.png")).width == 2 * 256
    for name in ("outsider",):
        assert site.as_user(name).get(uri + "/snapshot.png").status_code == 403
        assert site.as_user(name).get(uri + "/scans/1/snapshot.png").status_code == 403
    assert collab.get(uri + "/scans/9/snapshot.png").status_code == 404
    assert collab.get(uri + "/snapshot.png?size=5000").status_code == 400
    # the prearchive listing paths under the session still work next to the snapshot paths
    assert collab.get(uri + "/scans?format=json").status_code == 200


def test_snapshots_resource_and_xapi_paths_of_an_archived_scan(site: Site) -> None:
    stage(site, "demo", seed=1, session="E1")
    (session,) = site.stores.catalog.sessions(PREARCHIVE)
    site.stores.archiver.archive(session.id, overwrite="none")
    (archived,) = site.stores.catalog.sessions(ARCHIVE)
    collab = site.as_user("collab")
    base = f"/data/projects/demo/subjects/{archived.subject}/experiments/E1"
    files = collab.get(base + "/scans/1/resources/SNAPSHOTS/files?format=json").json()["ResultSet"]["Result"]
    assert [f["Name"] for f in files] == ["E1_1_qc.png", "E1_1_qc_t.png"]
    assert [f["file_content"] for f in files] == ["ORIGINAL", "THUMBNAIL"]
    assert picture(collab.get(files[0]["URI"])).size == (512, 512)
    assert picture(collab.get(files[1]["URI"])).size == (128, 128)
    gif = collab.get("/data/archive/projects/demo/experiments/E1/scans/1/resources/SNAPSHOTS/files/E1_1_qc_t.gif")
    assert gif.status_code == 200 and gif.headers["content-type"] == "image/gif"
    assert collab.get(base + "/scans/1/resources/SNAPSHOTS/files/other.png").status_code == 404
    assert picture(collab.get("/data/projects/demo/experiments/E1/snapshot.png")).width == 2 * 256
    for path in ("/xapi/experiments/E1/scan/2/snapshot", "/xapi/projects/demo/experiments/E1/scan/2/snapshot",
                 f"/xapi/projects/demo/subjects/{archived.subject}/experiments/E1/scan/2/snapshot"):
        assert picture(collab.get(path)).size == (512, 512)
    grid = picture(collab.get("/xapi/projects/demo/experiments/E1/scan/1/snapshot/grid/2X2?size=64"))
    assert grid.width == 2 * 64, "a scan of two instances fills one row of a 2X2 grid"
    assert collab.get("/xapi/projects/demo/experiments/E1/scan/1/snapshot/grid/9X9").status_code == 400
    outsider = site.as_user("outsider")
    assert outsider.get("/xapi/projects/demo/experiments/E1/scan/1/snapshot").status_code == 403
    assert outsider.get(base + "/scans/1/resources/SNAPSHOTS/files").status_code == 403
    assert outsider.get("/data/projects/demo/experiments/E1/snapshot.png").status_code == 403
    assert outsider.get("/xapi/experiments/E1/scan/1/snapshot").status_code == 404, "no E1 in a project it reads"
