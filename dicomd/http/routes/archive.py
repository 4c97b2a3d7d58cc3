"""`POST /data/services/archive` and the archive listings: projects, subjects, experiments, scans,
file and zip downloads (paths under `/data/projects` and its alias `/data/archive/projects`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from dicomd import operations
from dicomd.auth import MANAGE, READ, User
from dicomd.catalog import SessionRow
from dicomd.stores import Stores
from dicomd.errors import InvalidInput, NotFound
from dicomd.http import browse, targets
from dicomd.http.context import current_user, stores_of
from dicomd.http.params import params
from dicomd.http.results import pick_format, result_set, uri_list
from dicomd.layout import SessionRef
from dicomd.lifecycle import Stage
from dicomd.routing import UNASSIGNED
from dicomd.views import experiment_row, session_xsi, xnat_scan_rows

router = APIRouter()
PREFIXES = ("/data/projects", "/data/archive/projects")
_RESERVED = {"format", "columns", "xsiType", "offset", "limit", "sortBy", "sortOrder", "accept-not-found"}


@router.post("/data/services/archive",
             summary="Archive prearchive sessions: src (repeatable), overwrite, dest, confirmText")
async def archive_service(request: Request) -> Response:
    stores, user = stores_of(request), current_user(request)
    given = await params(request)
    srcs = given.all("src")
    overwrite = operations.overwrite_policy(given.get("overwrite"))
    dest_project, dest_label = _dest(given.get("dest"))
    dest_project = dest_project or given.get("project")
    label = _new_label(given.get("subject"), dest_label or given.get("session"), srcs)
    confirm_text = bool(given.flag("confirmText", default=False))  # past OCR text outside redacted areas

    def run() -> Response:
        sessions = operations.prearchive_sessions(stores, user, targets.parse_sources(srcs), MANAGE)
        uris = [operations.archive(stores, user, s, overwrite=overwrite, new_project=dest_project, label=label,
                                    confirm_text=confirm_text).uri
                for s in sessions]
        return uri_list(uris, request.headers.get("accept", ""))

    return await run_in_threadpool(run)


def _dest(dest: str) -> tuple[str, str]:
    """(project, new session label) from `/archive/projects/P[/subjects/S/experiments/E]`."""
    if not dest:
        return "", ""
    parts = targets.segments(dest)
    if parts[:1] == ["archive"]:
        parts = parts[1:]
    if parts[:1] != ["projects"] or len(parts) < 2:
        raise InvalidInput("dest must look like /archive/projects/P")
    if len(parts) == 2:
        return parts[1], ""
    if len(parts) == 6 and parts[2] == "subjects" and parts[4] == "experiments":
        return parts[1], parts[5]
    raise InvalidInput("dest must look like /archive/projects/P or /archive/projects/P/subjects/S/experiments/E")


def _new_label(subject: str, session: str, srcs: list[str]) -> str:
    """A new session label for one session; the subject is never renamed at archive time."""
    if subject:
        raise InvalidInput("renaming the subject at archive time is not supported; set subject when importing")
    if not session:
        return ""
    if len(srcs) != 1:
        raise InvalidInput("a new session label (session= or dest=.../experiments/E) names one src")
    return "" if session == targets.parse(srcs[0]).label else session


# ---------------------------------------------------------------- listings


def _project_row(stores: Stores, pid: str) -> dict[str, Any]:
    project = stores.config.project(pid)
    return {"ID": pid, "secondary_ID": pid, "name": (project.name if project else "") or pid,
            "description": "", "pi_firstname": "", "pi_lastname": "", "URI": f"/data/projects/{pid}"}


def _readable_project(stores: Stores, user: User, name: str) -> str:
    targets.check_names(name)
    user.require(READ, name)
    if name == UNASSIGNED or stores.config.project(name) is None:
        raise NotFound(f"no project {name!r}")
    return name


def _filters(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.query_params.items() if k not in _RESERVED}


def list_projects(request: Request, format: str | None = None) -> Response:
    stores, user = stores_of(request), current_user(request)
    rows = [_project_row(stores, p) for p in stores.config.project_ids() if user.can(READ, p)]
    return result_set(rows, pick_format(format), title="projects")


def get_project(request: Request, project: str, format: str | None = None) -> Response:
    stores = stores_of(request)
    pid = _readable_project(stores, current_user(request), project)
    row = _project_row(stores, pid)
    if (format or "json").lower() == "json":
        return JSONResponse(_items("xnat:projectData", row, []))
    return result_set([row], pick_format(format), title="project")


def list_subjects(request: Request, project: str, format: str | None = None) -> Response:
    stores = stores_of(request)
    pid = _readable_project(stores, current_user(request), project)
    by_subject: dict[str, list[SessionRow]] = {}
    for row in stores.catalog.sessions(Stage.ARCHIVE, projects=[pid]):
        by_subject.setdefault(row.subject, []).append(row)
    rows = [{"ID": s, "label": s, "project": pid, "experiments": len(r), "URI": f"/data/projects/{pid}/subjects/{s}"}
            for s, r in sorted(by_subject.items())]
    return result_set(rows, pick_format(format), title="subjects")


def get_subject(request: Request, project: str, subject: str, format: str | None = None) -> Response:
    stores = stores_of(request)
    pid = _readable_project(stores, current_user(request), project)
    targets.check_names(subject)
    sessions = stores.catalog.sessions(Stage.ARCHIVE, projects=[pid], subject=subject)
    if not sessions:
        raise NotFound(f"no subject {subject!r} in project {pid}")
    row = {"ID": subject, "label": subject, "project": pid, "URI": f"/data/projects/{pid}/subjects/{subject}"}
    children = [{"field": "experiments/experiment", "items": [
        {"meta": {"xsi:type": session_xsi(s.modalities), "isHistory": False}, "data_fields": experiment_row(s)}
        for s in sessions]}]
    if (format or "json").lower() == "json":
        return JSONResponse(_items("xnat:subjectData", row, children))
    return result_set([row], pick_format(format), title="subject")


def list_experiments(request: Request, project: str, subject: str = "", format: str | None = None) -> Response:
    stores = stores_of(request)
    pid = _readable_project(stores, current_user(request), project)
    if subject:
        targets.check_names(subject)
    sessions = stores.catalog.sessions(Stage.ARCHIVE, projects=[pid], subject=subject or None, where=_filters(request))
    return result_set([experiment_row(s) for s in sessions], pick_format(format), title="experiments")


def all_experiments(request: Request, format: str | None = None) -> Response:
    """Archived sessions of every project the caller may read."""
    stores, user = stores_of(request), current_user(request)
    readable = [p for p in stores.config.project_ids() if user.can(READ, p)]
    sessions = stores.catalog.sessions(Stage.ARCHIVE, projects=readable, where=_filters(request)) if readable else []
    return result_set([experiment_row(s) for s in sessions], pick_format(format), title="experiments")


def experiment(request: Request, project: str, label: str, subject: str = "", rest: str = "",
               format: str | None = None) -> Response:
    stores = stores_of(request)
    pid = _readable_project(stores, current_user(request), project)
    targets.check_names(subject, label, rest)
    session = operations.session_for(stores.catalog, SessionRef.archive(pid, subject, label))
    fmt = "zip" if (format or "").lower() == "zip" else pick_format(format)
    base = SessionRef.of(session).browse_uri

    def own_rows() -> Response:
        row = experiment_row(session)
        if fmt in ("json", "zip"):
            scans = [{"meta": {"xsi:type": s["xsiType"], "isHistory": False}, "data_fields": s}
                     for s in xnat_scan_rows(stores.catalog, session, base)]
            return JSONResponse(_items(row["xsiType"], row, [{"field": "scans/scan", "items": scans}]))
        return result_set([row], fmt, title="experiment")

    return browse.respond(stores.catalog, stores.layout, session, base, rest.split("/"), fmt, own_rows)


def _items(xsi_type: str, fields: dict[str, Any], children: list[dict[str, Any]]) -> dict[str, Any]:
    return {"items": [{"meta": {"xsi:type": xsi_type, "isHistory": False}, "data_fields": fields,
                       "children": children}]}


router.add_api_route("/data/experiments", all_experiments, methods=["GET"],
                     summary="Archived sessions of every readable project")
router.add_api_route("/data/archive/experiments", all_experiments, methods=["GET"], include_in_schema=False)

for _prefix in PREFIXES:
    _doc = _prefix == PREFIXES[0]
    router.add_api_route(_prefix, list_projects, methods=["GET"], include_in_schema=_doc,
                         summary="Projects the caller may read")
    router.add_api_route(_prefix + "/{project}", get_project, methods=["GET"], include_in_schema=_doc)
    router.add_api_route(_prefix + "/{project}/subjects", list_subjects, methods=["GET"], include_in_schema=_doc)
    router.add_api_route(_prefix + "/{project}/subjects/{subject}", get_subject, methods=["GET"],
                         include_in_schema=_doc)
    router.add_api_route(_prefix + "/{project}/experiments", list_experiments, methods=["GET"],
                         include_in_schema=_doc, summary="Archived sessions with their mapped custom fields")
    router.add_api_route(_prefix + "/{project}/subjects/{subject}/experiments", list_experiments, methods=["GET"],
                         include_in_schema=_doc)
    for _tail in ("", "/{rest:path}"):
        router.add_api_route(_prefix + "/{project}/experiments/{label}" + _tail, experiment, methods=["GET"],
                             include_in_schema=_doc, summary="A session, its scans/files, or format=zip")
        router.add_api_route(_prefix + "/{project}/subjects/{subject}/experiments/{label}" + _tail, experiment,
                             methods=["GET"], include_in_schema=_doc)
