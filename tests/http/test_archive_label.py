"""`POST /data/services/archive` with a new session label: `dest=/archive/projects/P/subjects/S/experiments/E`
or `session=E`, for one src; the subject is never renamed at archive time."""

from __future__ import annotations

from dicomd.catalog import ARCHIVE
from tests.http.conftest import Site, stage


def test_dest_experiment_gives_the_archived_session_a_new_label(site: Site) -> None:
    owner = site.as_user("owner")
    uri = stage(site, "demo", seed=86)
    reply = owner.post("/data/services/archive",
                       params={"src": uri, "dest": "/archive/projects/demo/subjects/ignored/experiments/NEWLABEL"})
    assert reply.status_code == 200, reply.text
    assert [s.label for s in site.stores.catalog.sessions(ARCHIVE)] == ["NEWLABEL"]
    assert reply.text.strip().endswith("/experiments/NEWLABEL")


def test_a_new_label_names_one_session_and_the_subject_stays(site: Site) -> None:
    owner = site.as_user("owner")
    one, two = stage(site, "demo", seed=87), stage(site, "demo", seed=88)
    reply = owner.post("/data/services/archive", params=[("src", one), ("src", two), ("session", "X")])
    assert reply.status_code == 400 and "names one src" in reply.text
    reply = owner.post("/data/services/archive", params={"src": one, "subject": "OTHER"})
    assert reply.status_code == 400 and "subject" in reply.text
    assert site.stores.catalog.sessions(ARCHIVE) == []
