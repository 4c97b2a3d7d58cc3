"""Authorization on every object an action touches, source AND target: owning the source project
does not let a caller write into a project where it is only a member (or nothing)."""

from __future__ import annotations

from dicomd.auth import Auth
from dicomd.catalog import ARCHIVE, PREARCHIVE
from tests.http.conftest import Site, stage


def _owner_of_demo_member_of_other(site: Site) -> None:
    Auth(site.stores.catalog).set_role("owner", "other", "member")


def test_archive_into_another_project_needs_its_owner_rights(site: Site) -> None:
    _owner_of_demo_member_of_other(site)
    owner = site.as_user("owner")
    uri = stage(site, "demo", seed=81)
    # dest= naming a project where the caller is only a member
    reply = owner.post("/data/services/archive", params={"src": uri, "dest": "/archive/projects/other"})
    assert reply.status_code == 403, reply.text
    # action=commit with newProject=
    session_path = uri.removeprefix("/data")
    reply = owner.post(f"/data{session_path}", params={"action": "commit", "newProject": "other"})
    assert reply.status_code == 403, reply.text
    # a project where the caller has no role at all
    reply = owner.post("/data/services/archive", params={"src": uri, "dest": "/archive/projects/auto"})
    assert reply.status_code == 403, reply.text
    # nothing moved, nothing archived
    assert [s.project for s in site.stores.catalog.sessions(PREARCHIVE)] == ["demo"]
    assert site.stores.catalog.sessions(ARCHIVE) == []


def test_overwrite_delete_cannot_replace_another_projects_session(site: Site) -> None:
    # Given a session archived in project other by its admin
    admin = site.as_user("admin")
    theirs = stage(site, "other", seed=82, session="V1")
    assert admin.post("/data/services/archive", params={"src": theirs}).status_code == 200
    before = site.stores.catalog.sessions(ARCHIVE, projects=["other"])[0]
    # When demo's owner (a member of other) archives a session of the same label with overwrite=delete
    _owner_of_demo_member_of_other(site)
    mine = stage(site, "demo", seed=83, session="V1")
    reply = site.as_user("owner").post("/data/services/archive", params={
        "src": mine, "dest": "/archive/projects/other", "overwrite": "delete"})
    # Then it is refused and the other project's session is untouched
    assert reply.status_code == 403, reply.text
    after = site.stores.catalog.sessions(ARCHIVE, projects=["other"])[0]
    assert (after.id, after.study_instance_uid, after.instances) == (before.id, before.study_instance_uid,
                                                                      before.instances)


def test_move_into_a_project_needs_owner_rights_there(site: Site) -> None:
    _owner_of_demo_member_of_other(site)
    uri = stage(site, "demo", seed=84)
    reply = site.as_user("owner").post("/data/services/prearchive/move", data={"src": uri, "newProject": "other"})
    assert reply.status_code == 403, reply.text
    Auth(site.stores.catalog).set_role("owner", "other", "owner")
    reply = site.as_user("owner").post("/data/services/prearchive/move", data={"src": uri, "newProject": "other"})
    assert reply.status_code == 200, reply.text
