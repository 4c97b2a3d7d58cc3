"""What the HTTP API does to sessions, with permission checks, over the library (no HTTP here).

Permission is checked on the project a URI names *before* anything is looked up, so a caller
cannot learn what exists in projects they cannot read (403, not 404).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from dicomd.auth import MANAGE, READ, UPLOAD, User
from dicomd.catalog import SessionRow
from dicomd.config import OVERWRITE_POLICIES
from dicomd.errors import InvalidInput, NotFound
from dicomd.http import targets
from dicomd.lifecycle import RECEIVABLE, SETTABLE, Stage
from dicomd.routing import UNASSIGNED
from dicomd.stores import Stores

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """One session an operation touched: its row before, and the URI it now has (if any)."""

    before: SessionRow
    uri: str


def project_id(stores: Stores, name: str) -> str:
    """A configured project's ID from an ID or alias (Unassigned included); NotFound otherwise."""
    if name == UNASSIGNED:
        return UNASSIGNED
    found = stores.config.resolve_project(name)
    if found is None:
        raise NotFound(f"no project {name!r}")
    return found


def prearchive_sessions(stores: Stores, user: User, srcs: Sequence[str], action: str) -> list[SessionRow]:
    """Resolve `src` URIs to prearchive sessions; every one is permission-checked first."""
    if not srcs:
        raise InvalidInput("src is required")
    parsed = [targets.parse(src) for src in srcs]
    for target in parsed:
        if target.stage != Stage.PREARCHIVE:
            raise InvalidInput(f"{target.uri}: not a prearchive session")
        user.require(action, target.project)
    return [targets.session_for(stores.catalog, t) for t in parsed]


def overwrite_policy(value: str) -> str | None:
    if not value:
        return None
    if value not in OVERWRITE_POLICIES:
        raise InvalidInput(f"overwrite must be one of {', '.join(OVERWRITE_POLICIES)}")
    return value


def archive(stores: Stores, user: User, session: SessionRow, *, overwrite: str | None,
            new_project: str = "") -> Outcome:
    """Archive one prearchive session (optionally moving it to ``new_project`` first)."""
    user.require(MANAGE, session.project)
    if new_project:
        user.require(MANAGE, project_id(stores, new_project))  # archiving writes into the target project
    before = session
    if new_project and project_id(stores, new_project) != session.project:
        session = move(stores, user, session, new_project).before
        session = stores.catalog.session(session.id)
    result = stores.archiver.archive(session.id, overwrite=overwrite, actor=f"http:{user.name}")
    return Outcome(before, "/data" + result.url)


def move(stores: Stores, user: User, session: SessionRow, new_project: str) -> Outcome:
    target = project_id(stores, new_project)
    user.require(MANAGE, session.project)
    user.require(MANAGE, target)  # a move writes into the target project's prearchive
    moved = stores.prearchive.move(session.id, target, actor=f"http:{user.name}")
    return Outcome(session, "/data" + moved.url)


def delete(stores: Stores, user: User, session: SessionRow) -> Outcome:
    user.require(MANAGE, session.project)
    stores.prearchive.delete(session.id, actor=f"http:{user.name}")
    return Outcome(session, "")


def rebuild(stores: Stores, user: User, session: SessionRow) -> Outcome:
    user.require(UPLOAD, session.project)
    row = stores.prearchive.rebuild(session.id, actor=f"http:{user.name}") or stores.catalog.session(session.id)
    return Outcome(session, "/data" + row.url)


def build(stores: Stores, user: User, session: SessionRow) -> Outcome:
    user.require(UPLOAD, session.project)
    row = stores.prearchive.build(session.id, actor=f"http:{user.name}") or stores.catalog.session(session.id)
    return Outcome(session, "/data" + row.url)


def set_status(stores: Stores, user: User, session: SessionRow, status: str) -> Outcome:
    """XNAT's set-status, for sessions stuck after a failure: READY, RECEIVING or ERROR only."""
    user.require(MANAGE, session.project)
    if status not in SETTABLE:
        raise InvalidInput(f"status must be one of {', '.join(SETTABLE)}")
    stores.catalog.set_status(session.id, status, "set over HTTP", expect=RECEIVABLE, actor=f"http:{user.name}")
    return Outcome(session, "/data" + session.url)


def readable_projects(stores: Stores, user: User, names: Sequence[str]) -> list[str]:
    """Project IDs for names given by the caller; 403 for any they cannot read."""
    ids = [project_id(stores, n) for n in names]
    for pid in ids:
        user.require(READ, pid)
    return ids
