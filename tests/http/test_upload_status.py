"""Upload statuses: `async=true` on the import service returns at once with /data/status/ID, which
reports progress and then the result URIs or the error; `http-session-listener=ID` names a status
for an import that runs in the request; only the owner and site admins may read one."""

from __future__ import annotations

import pytest

from dicomd.catalog import PREARCHIVE
from dicomd.errors import Conflict, Forbidden, NotFound, RateLimited
from dicomd.importjobs import ImportJobs
from tests.conftest import wait_for
from tests.http.conftest import Site, study_files, zip_bytes

ZIP = {"Content-Type": "application/zip"}


def finished(client, uri: str) -> dict:
    def done() -> dict | None:
        reply = client.get(uri)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        return body if body["done"] else None
    return wait_for(done, message=f"{uri} did not finish")


def test_async_import_returns_a_status_that_ends_with_the_uris(site: Site) -> None:
    body = zip_bytes(study_files(site.tmp, seed=1), extra={"README.txt": b"not dicom"})
    member = site.as_user("member")
    reply = member.post("/data/services/import?project=demo&subject=S1&session=V1&async=true", content=body,
                        headers=ZIP)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/uri-list")
    status_uri = reply.text.strip()
    assert status_uri.startswith("/data/status/") and reply.headers["location"] == status_uri
    status = finished(member, status_uri)
    (session,) = site.stores.catalog.sessions(PREARCHIVE)
    uri = "/data" + session.url
    assert status["state"] == "done" and status["uris"] == [uri] and status["error"] == ""
    progress = status["progress"]
    assert (progress["files"], progress["staged"], progress["skipped"], progress["refused"]) == (5, 4, 1, 0)
    assert progress["received_bytes"] == len(body) and progress["phase"] == "done"
    last = status["msgs"][0][-1]  # XNAT's upload page reads the last message
    assert last == {"status": "COMPLETED", "msg": f"XXXprearchive:{session.url}"}
    assert member.get("/REST/status/" + status_uri.rsplit("/", 1)[1]).json()["uris"] == [uri]
    assert [s["id"] for s in member.get("/data/status").json()] == [status["id"]]


def test_a_failed_async_import_reports_its_error(site: Site) -> None:
    body = zip_bytes(study_files(site.tmp, seed=2), extra={"bad.dcm": b"\0" * 128 + b"DICM" + b"\xff" * 64})
    member = site.as_user("member")
    status_uri = member.post("/data/services/import?project=demo&async=true", content=body, headers=ZIP).text.strip()
    status = finished(member, status_uri)
    assert status["state"] == "failed" and status["uris"] == []
    assert "unparseable member" in status["error"] and "bad.dcm" in status["error"]
    assert status["progress"]["refused"] == 1 and status["progress"]["staged"] == 0
    assert status["msgs"][0][-1]["status"] == "FAILED" and status["msgs"][0][-1]["msg"].startswith("XXX")
    assert site.stores.catalog.sessions(PREARCHIVE) == [], "all or nothing, in the background too"


def test_a_named_status_follows_an_import_that_runs_in_the_request(site: Site) -> None:
    member = site.as_user("member")
    reply = member.post("/data/services/import?project=demo&http-session-listener=up-1",
                        content=zip_bytes(study_files(site.tmp, seed=3)), headers=ZIP)
    assert reply.status_code == 200 and reply.text.startswith("/data/prearchive/projects/demo/")
    status = member.get("/data/status/up-1").json()
    assert status["state"] == "done" and status["uris"] == [reply.text.strip()] and status["async"] is False
    # the same name again, once finished, is the owner's to reuse; another user may not take it
    again = member.post("/data/services/import?project=demo&http-session-listener=up-1",
                        content=zip_bytes(study_files(site.tmp, seed=4)), headers=ZIP)
    assert again.status_code == 200
    owner = site.as_user("owner")
    taken = owner.post("/data/services/import?project=demo&http-session-listener=up-1",
                       content=zip_bytes(study_files(site.tmp, seed=5)), headers=ZIP)
    assert taken.status_code == 409
    assert member.post("/data/services/import?project=demo&http-session-listener=a/b", content=b"x",
                       headers=ZIP).status_code in (400, 404)


def test_only_the_owner_and_admins_read_a_status(site: Site) -> None:
    member = site.as_user("member")
    status_uri = member.post("/data/services/import?project=demo&async=true",
                             content=zip_bytes(study_files(site.tmp, seed=6)), headers=ZIP).text.strip()
    finished(member, status_uri)
    for name in ("collab", "owner", "outsider"):
        assert site.as_user(name).get(status_uri).status_code == 403, name
        assert site.as_user(name).get("/data/status").json() == []
    assert site.as_user("admin").get(status_uri).status_code == 200
    assert member.get("/data/status/nothing-here").status_code == 404
    # an async import is checked like any other before its body is read
    assert site.as_user("collab").post("/data/services/import?project=demo&async=true", content=b"x",
                                       headers=ZIP).status_code == 403


def test_jobs_are_bounded() -> None:
    jobs = ImportJobs(max_running=1, max_kept=3)
    try:
        first = jobs.open("alice", background=True)
        with pytest.raises(RateLimited):
            jobs.open("bob", background=True)
        jobs.open("bob", "mine", background=False)  # a request that runs in place is not a background one
        jobs.run(first, lambda: ["/data/prearchive/projects/demo/T/S"])
        second = jobs.open("bob", background=True)  # the first ended: room again
        jobs.fail(second, Conflict("no"))
        kept = [jobs.open("carol", background=False) for _ in range(2)]  # the oldest finished make room
        assert {j.id for j in jobs.jobs("x", admin=True)} == {"mine", kept[0].id, kept[1].id}
        with pytest.raises(RateLimited):
            jobs.open("carol", background=False)  # three unfinished: nothing to drop
        with pytest.raises(NotFound):
            jobs.get("alice", False, first.id)
        with pytest.raises(Forbidden):
            jobs.get("alice", False, "mine")
    finally:
        jobs.close()


def test_closing_ends_queued_imports_with_a_reason() -> None:
    import threading

    # Given one background import running and another queued behind it
    jobs = ImportJobs(max_running=1, max_kept=1000)
    gate, cleaned = threading.Event(), []
    running = jobs.open("alice", background=True)
    jobs.submit(running, lambda: ["/data/a"] if gate.wait(10) else [], cleanup=lambda: cleaned.append("running"))
    queued = jobs.open("alice", background=False)
    jobs.submit(queued, lambda: ["/data/b"], cleanup=lambda: cleaned.append("queued"))
    # When the server stops while the first still runs
    closer = threading.Thread(target=jobs.close)
    closer.start()

    def refused() -> bool:  # the pool takes nothing more once it is shutting down
        try:
            jobs.submit(jobs.open("bob", background=False), lambda: [], cleanup=lambda: None)
        except Conflict:
            return True
        return False

    wait_for(refused)
    gate.set()
    closer.join(10)
    # Then the running one finishes, the queued one never starts and says why, and both are cleaned up
    assert running.state == "done" and running.uris == ["/data/a"]
    assert queued.state == "failed" and "stopped before this import started" in queued.error
    assert sorted(cleaned) == ["queued", "running"]
