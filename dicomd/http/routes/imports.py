"""`POST /data/services/import`: a raw zip / tar / tar.gz / DICOM body, or a multipart form.

The body is streamed into a temp file under the data dir (never held in memory), then staged as
one all-or-nothing batch by `dicomd.operations.import_upload`. `dest=/archive/...` or
`auto-archive=true` archive right after staging. The reply is `text/uri-list`.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from dicomd import operations, storage
from dicomd.auth import User
from dicomd.stores import Stores
from dicomd.errors import InvalidInput, StorageFailure, StorageFull, TooLarge
from dicomd.http import targets
from dicomd.http.context import current_user, stores_of
from dicomd.http.params import Params
from dicomd.http.results import uri_list
from dicomd.importjobs import ImportJob, ImportJobs
from dicomd.operations import ImportPlan
from dicomd.progress import BatchProgress
from dicomd.routing import Explicit

router = APIRouter()

HANDLERS = ("DICOM-zip", "gradual-DICOM", "DICOM", "")
_MAX_FIELD = 64 * 1024


@router.post(
    "/data/services/import",
    summary="Import DICOM (zip, tar, tar.gz or one file; raw body or multipart)",
    description="Parameters: project|PROJECT_ID, subject|SUBJECT_ID, session|EXPT_LABEL, dest, overwrite, "
    "import-handler (DICOM-zip, gradual-DICOM), auto-archive, Ignore-Unparsable, prevent_anon; async=true "
    "returns at once with the status URI (/data/status/ID), http-session-listener=ID names a status to poll. "
    "Reply: text/uri-list of /data/prearchive/... or /data/archive/... URIs.",
)
async def import_(request: Request) -> Response:
    stores, user = stores_of(request), current_user(request)
    storage.check_free(stores.layout.root, stores.config.min_free_bytes)
    _check_room(stores, request.headers.get("content-length"))
    folder = stores.layout.temp_dir("http-")
    upload = folder / "upload"  # the name error messages show
    query = tuple(request.query_params.multi_items())
    multipart = request.headers.get("content-type", "").lower().startswith("multipart/form-data")
    # Parameters in the query are checked before a byte is received; form fields after the body.
    plan = None if multipart else _plan(stores, user, Params(query))
    job = _open_job(request, user, Params(query))  # async=true or http-session-listener=ID: a status to poll
    accept = request.headers.get("accept", "")
    try:
        fields = await _receive(request, upload, job.tracker if job else None)
        plan = plan or _plan(stores, user, Params(query + tuple(fields)))
    except BaseException as exc:
        shutil.rmtree(folder, ignore_errors=True)
        if job is not None:
            job_list(request).fail(job, exc)
        raise
    client = _client(request)
    if job is not None and job.background:  # staged on a pool thread; the reply names the status
        job_list(request).submit(job, lambda: _stage(stores, user, upload, plan, client, job.tracker),
                                 cleanup=lambda: shutil.rmtree(folder, ignore_errors=True))
        response = uri_list([job.uri], accept)
        response.headers["Location"] = job.uri
        return response
    try:
        if job is not None:
            uris = await run_in_threadpool(job_list(request).run, job,
                                           lambda: _stage(stores, user, upload, plan, client, job.tracker))
        else:
            uris = await run_in_threadpool(_stage, stores, user, upload, plan, client)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return uri_list(uris, accept)


def job_list(request: Request) -> ImportJobs:
    return request.app.state.import_jobs


def _open_job(request: Request, user: User, given: Params) -> ImportJob | None:
    background = bool(given.flag("async", default=False))
    listener = given.get("http-session-listener")
    if not background and not listener:
        return None
    return job_list(request).open(user.name, listener, background=background)


# ---------------------------------------------------------------- what to do


def _plan(stores: Stores, user: User, given: Params) -> ImportPlan:
    handler = given.get("import-handler", "import_handler")
    if handler not in HANDLERS:
        raise InvalidInput(f"import-handler {handler!r} is not supported (DICOM-zip, gradual-DICOM)")
    project = given.get("project", "PROJECT_ID")
    subject = given.get("subject", "SUBJECT_ID")
    session = given.get("session", "EXPT_LABEL")
    dest = given.get("dest")
    to_archive = False
    if dest:
        stage, dest_project, dest_subject, dest_session = _parse_dest(dest)
        to_archive = stage == "archive"
        if project and dest_project and project != dest_project:
            raise InvalidInput(f"project {project!r} and dest {dest!r} disagree")
        project, subject, session = project or dest_project, subject or dest_subject, session or dest_session
    auto = given.flag("auto-archive", "AUTO_ARCHIVE")
    to_archive = to_archive or bool(auto) or bool(given.flag("Direct-Archive"))
    targets.check_names(project, subject, session)
    project = operations.import_project(stores, user, project, archive=to_archive)
    return ImportPlan(
        explicit=Explicit(project=project, subject=subject, session=session),
        archive=to_archive,
        overwrite=operations.overwrite_policy(given.get("overwrite")),
        ignore_unparsable=bool(given.flag("Ignore-Unparsable", "ignore-unparsable", default=False)),
        prevent_anon=bool(given.flag("prevent_anon", default=False)),
        auto_archive=False if auto is False else None,
    )


def _parse_dest(dest: str) -> tuple[str, str, str, str]:
    """`/prearchive[/projects/P]` or `/archive/projects/P[/subjects/S[/experiments/E]]`."""
    parts = targets.segments(dest)
    if not parts or parts[0] not in ("prearchive", "archive"):
        raise InvalidInput("dest must start with /prearchive or /archive")
    stage, rest = parts[0], parts[1:]
    values = {"projects": "", "subjects": "", "experiments": ""}
    while rest:
        if len(rest) < 2 or rest[0] not in values:
            raise InvalidInput(f"dest {dest!r} is not /{stage}/projects/P[/subjects/S[/experiments/E]]")
        values[rest[0]] = rest[1]
        rest = rest[2:]
    return stage, values["projects"], values["subjects"], values["experiments"]


def _client(request: Request) -> str:
    host = request.client.host if request.client else ""
    return f"{current_user(request).name}@{host}"


# ---------------------------------------------------------------- staging


def _stage(stores: Stores, user: User, upload: Path, plan: ImportPlan, client: str,
           tracker: BatchProgress | None = None) -> list[str]:
    if not upload.exists() or upload.stat().st_size == 0:
        raise InvalidInput("the request has no data (send the file as the body or a multipart file field)")
    return [o.uri for o in operations.import_upload(stores, user, upload, plan, address=client, tracker=tracker)]


def _check_room(stores: Stores, length: str | None) -> None:
    limit = stores.config.http.max_upload_bytes
    if limit and length and length.isdigit() and int(length) > limit:
        raise TooLarge(f"an upload of {length} bytes is larger than max_upload_bytes ({limit} bytes)")
    if not length or not length.isdigit() or stores.config.min_free_bytes <= 0:
        return
    free = os.statvfs(stores.layout.root)
    available = free.f_bavail * free.f_frsize
    if available - int(length) < stores.config.min_free_bytes:
        raise StorageFull(f"an upload of {length} bytes would leave less than the free-space floor")


# ---------------------------------------------------------------- receiving the body


class _Spool:
    """Writes an upload to disk in ~1 MiB blocks off the event loop, watching the free-space floor."""

    BLOCK = 1024 * 1024
    CHECK_EVERY = 64 * 1024 * 1024

    def __init__(self, stores: Stores, fh: Any, tracker: BatchProgress | None = None) -> None:
        self.stores = stores
        self.fh = fh
        self.tracker = tracker
        self.buffer = bytearray()
        self.written = 0
        self._next_check = self.CHECK_EVERY

    def tell(self) -> int:
        return self.written + len(self.buffer)

    def add(self, data: bytes) -> None:
        self.buffer += data

    async def drain(self, force: bool = False) -> None:
        if len(self.buffer) < self.BLOCK and not (force and self.buffer):
            return
        block, self.buffer = bytes(self.buffer), bytearray()
        await run_in_threadpool(self._write, block)

    def _write(self, block: bytes) -> None:
        try:
            self.fh.write(block)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"disk full while receiving an upload: {exc.strerror}") from None
            raise StorageFailure(f"cannot write the upload: {exc.strerror or type(exc).__name__}") from None
        self.written += len(block)
        if self.tracker is not None:
            self.tracker.set(received_bytes=self.written)
        limit = self.stores.config.http.max_upload_bytes
        if limit and self.written > limit:
            raise TooLarge(f"the upload is larger than max_upload_bytes ({limit} bytes)")
        if self.written >= self._next_check:
            self._next_check += self.CHECK_EVERY
            storage.check_free(self.stores.layout.root, self.stores.config.min_free_bytes)


async def _receive(request: Request, dest: Path, tracker: BatchProgress | None = None) -> list[tuple[str, str]]:
    """Write the body (or the multipart file part) to ``dest``; returns multipart text fields."""
    stores = stores_of(request)
    content_type = request.headers.get("content-type", "")
    storage.ensure_dir(dest.parent)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        spool = _Spool(stores, out, tracker)
        if content_type.lower().startswith("multipart/form-data"):
            fields = await _receive_multipart(request, content_type, spool)
        else:
            fields = []
            async for chunk in request.stream():
                spool.add(chunk)
                await spool.drain()
        await spool.drain(force=True)
    return fields


async def _receive_multipart(request: Request, content_type: str, out: Any) -> list[tuple[str, str]]:
    _ctype, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise InvalidInput("multipart body without a boundary")
    fields: list[tuple[str, str]] = []
    part: dict[str, Any] = {}

    def on_part_begin() -> None:
        part.clear()
        part.update(headers={}, field=b"", value=bytearray(), file=False, name="")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        key = part["field"].decode("latin-1").lower()
        part["headers"][key] = part["headers"].get(key, b"") + data[start:end]

    def on_header_end() -> None:
        part["field"] = b""

    def on_headers_finished() -> None:
        _disp, opts = parse_options_header(part["headers"].get("content-disposition", b""))
        part["name"] = opts.get(b"name", b"").decode("utf-8", "replace")
        part["file"] = b"filename" in opts
        if part["file"]:
            if out.tell() > 0:
                raise InvalidInput("send one file per import request")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part["file"]:
            out.add(data[start:end])
        else:
            part["value"] += data[start:end]
            if len(part["value"]) > _MAX_FIELD:
                raise InvalidInput(f"form field {part['name']!r} is too large")

    def on_part_end() -> None:
        if not part["file"]:
            fields.append((part["name"], part["value"].decode("utf-8", "replace")))

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data, "on_part_end": on_part_end,
    })
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            await out.drain()
        parser.finalize()
    except MultipartParseError as exc:
        raise InvalidInput(f"malformed multipart body: {exc}") from None
    return fields
