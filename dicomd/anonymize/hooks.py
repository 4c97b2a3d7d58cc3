"""Where de-identification plugs into the pipeline (built once by `Stores.open`, as `AnonymizationHooks`):

- the archive step's writer: the project's profile + script on every instance (or a plain copy),
  and the site's redaction rules (Clean Pixel Data, dicomd.pixels) with the review hold;
- the build step's OCR check for burned-in text (dicomd.pixels.policy.inspect_session);
- the ingest step's site script, run on each instance as it enters the prearchive;
- the build step's custom field extractor (DICOM mappings), reading the data as it will be archived.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Iterator, Sequence


from dicomd.anonymize.anonymizer import Anonymizer, Labels, SiteScript, key_owner
from dicomd.anonymize.filemeta import fresh_file_meta
from dicomd.anonymize.ordered import ScriptFirst, script_first
from dicomd.anonymize.pseudonyms import PseudonymStore
from dicomd.anonymize.parallel import ArchivePool, PixelStep, WorkerSpec, anonymize_file, read_dataset
from dicomd import storage
from dicomd.archive import CopyWriter, SessionWriter, Written, written_in_turn
from dicomd.catalog import ARCHIVE, Catalog, InstanceRow, SessionRow
from dicomd.config import Config
from dicomd.errors import Rejected, StorageFailure
from dicomd.header import HeaderInfo, read_header
from dicomd.layout import Layout
from dicomd.mappings import MappingStore, convert
from dicomd.pixels.policy import PIXEL_TEXT, PixelPolicy, inspect_session, session_marks, text_outside
from dicomd.pixels.rules import Box
from dicomd.processors import PROFILE, SCRIPT, archive_order, mappings_enabled
from dicomd.routing import Route

logger = logging.getLogger(__name__)


def labels_of(session: SessionRow) -> Labels:
    return Labels(session.project, session.subject, session.label, session.subject_from, session.session_from)


_read = read_dataset


class Anonymizers:
    """One Anonymizer per project, built on first use and shared by every archive job."""

    def __init__(self, config: Config, layout: Layout, catalog: Catalog) -> None:
        self.config = config
        self.layout = layout
        self.catalog = catalog
        self._store: PseudonymStore | None = None  # opened on first use: opening stores writes nothing
        self._by_project: dict[str, Anonymizer | None] = {}
        self._script_first: dict[str, ScriptFirst] = {}
        self._lock = threading.Lock()
        self.pool = ArchivePool(config.archive.pool_size())  # no process starts until a large job

    def for_project(self, project: str) -> Anonymizer | None:
        with self._lock:
            if project not in self._by_project:
                settings = self.config.project(project)
                wanted = settings is not None and settings.anonymize.enabled and (
                    settings.anonymize.profile != "none" or settings.anonymize.script
                )
                if wanted and settings:
                    self._check_key(project)
                self._by_project[project] = (
                    Anonymizer(project, settings.anonymize, self._pseudonyms()) if wanted and settings else None
                )
            return self._by_project[project]

    def pixel_policy(self, project: str) -> PixelPolicy:
        """The site's redaction rules with the project's `allow_burned_in`."""
        settings = self.config.project(project)
        return PixelPolicy(self.config.pixel_rules, bool(settings and settings.anonymize.allow_burned_in))

    def in_order(self, project: str) -> Anonymizer | ScriptFirst | None:
        """The project's de-identification in the order its processors run (dicomd.processors)."""
        anonymizer = self.for_project(project)
        settings = self.config.project(project)
        if anonymizer is None or settings is None or archive_order(self.config, self.catalog, project) != (
                SCRIPT, PROFILE):
            return anonymizer
        with self._lock:
            if project not in self._script_first:
                self._script_first[project] = script_first(anonymizer, self._pseudonyms())
            return self._script_first[project]

    def _check_key(self, project: str) -> None:
        """A project whose de-identified data is archived must keep its key: a new one would give
        its patients new pseudonyms silently (a lost or unreadable keys file stops archiving)."""
        settings = self.config.project(project)
        owner = key_owner(project, settings.anonymize) if settings else project
        if self._pseudonyms().has_key(owner):
            return
        archived = [s for s in self.catalog.sessions(ARCHIVE, projects=[project]) if s.anonymization]
        if archived:
            raise StorageFailure(
                f"the pseudonym key of project {project} is missing from {self._where_keys()}"
                f" while the archive holds {len(archived)} de-identified session(s) of it; restore the key with"
                " `dicomd anon key import BACKUP` (a new key would give every patient new pseudonyms)"
            )

    def _pseudonyms(self) -> PseudonymStore:
        if self._store is None:
            self._store = PseudonymStore(self.config.keys_url)
        return self._store

    def _where_keys(self) -> str:
        url = self.config.keys_url
        return self.layout.relative(url.path) if url.path is not None and url.path.is_relative_to(self.layout.root) \
            else url.masked

    def close(self) -> None:
        self.pool.close()
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
            self._by_project.clear()
            self._script_first.clear()


class AnonymizingWriter:
    """Writes each prearchive instance, de-identified, into the archive job's work folder (in the
    job's process, or spread over the archive pool for a large session: dicomd.anonymize.parallel);
    the instances a redaction rule matches have its rectangles blanked (Clean Pixel Data)."""

    def __init__(self, session: SessionRow, anonymizer: Anonymizer | ScriptFirst, first: Path,
                 policy: PixelPolicy, pool: ArchivePool | None = None, spec: WorkerSpec | None = None) -> None:
        self.session = session
        self.anonymizer = anonymizer
        self.policy = policy
        self._labels = labels_of(session)
        self._archive_labels = anonymizer.archive_labels(_read(first), self._labels)
        self._review: str | None = None
        self._ran: dict[str, int] = {}  # rule name -> instances it redacted
        self._unredacted = 0  # instances with a burned-in reason that no rule cleaned
        self._areas: dict[str, list[Box]] = {}  # prearchive scan id -> rectangles blanked in it
        self._pool = pool
        self._spec = spec

    @property
    def fingerprint(self) -> str:
        """The anonymizer's, and the redaction rules that ran (recorded on the archive row)."""
        base = self.anonymizer.fingerprint
        return f"{base};clean-pixels:{','.join(sorted(self._ran))}" if self._ran else base

    def labels(self) -> tuple[str, str]:
        return self._archive_labels

    def review_reason(self) -> str | None:
        return self._review

    def unconfirmed_text(self) -> str | None:
        """OCR text (found at build time) outside every rectangle this job blanked, or None."""
        if self.policy.allow_burned_in:
            return None
        outside = text_outside(self.session.summary_fields().get(PIXEL_TEXT), self._areas)
        if not outside:
            return None
        return (f"OCR found {outside.characters} characters in {outside.boxes} boxes outside redacted areas"
                f" (scan {', '.join(outside.scans)}); look at `dicomd prearchive snapshot`, then archive with"
                " --confirm-text (HTTP: confirmText=true) or add a pixel rule")

    def report(self) -> dict[str, Any] | None:
        """What the pixel step did, for the catalog's event (rule names and counts: no PHI)."""
        if not self._ran and not self._unredacted:
            return None
        return {"redacted": dict(sorted(self._ran.items())), "unredacted_burned_in": self._unredacted}

    def _hold(self, reason: str) -> None:
        if self._review is None:
            self._review = reason

    def write(self, src: Path, inst: InstanceRow, work_dir: Path) -> Written:
        written, step = anonymize_file(self.anonymizer, self._labels, self.policy, src, inst, work_dir)
        self._count(inst.scan_id, step)
        return written

    def write_all(self, items: Sequence[tuple[Path, InstanceRow]], work_dir: Path) -> Iterator[Written | Rejected]:
        if self._pool is None or self._spec is None or not self._pool.wanted(len(items)):
            yield from written_in_turn(self, items, work_dir)
            return
        for (_, inst), outcome in zip(items, self._pool.run(self._spec, self._labels, self.policy, work_dir, items)):
            if outcome.written is None:
                yield Rejected(outcome.rejected)
                continue
            self._count(inst.scan_id, outcome.pixels)
            storage.hint_writeback(work_dir / outcome.written.relpath)  # this process waits for workers meanwhile
            yield outcome.written

    def _count(self, scan_id: str, step: PixelStep) -> None:
        if step.hold:
            self._hold(step.hold)
        if step.rule is not None:
            self._ran[step.rule] = self._ran.get(step.rule, 0) + 1
            self._areas.setdefault(scan_id, []).extend(step.areas)
        self._unredacted += step.unredacted


class WriterFactory:
    def __init__(self, anonymizers: Anonymizers, catalog: Catalog, layout: Layout) -> None:
        self.anonymizers = anonymizers
        self.catalog = catalog
        self.layout = layout

    def __call__(self, session: SessionRow) -> SessionWriter:
        anonymizer = self.anonymizers.in_order(session.project)  # prevent_anon skips only the site script
        if anonymizer is None:
            return CopyWriter(session)
        instances = self.catalog.instances(session.id)
        if not instances:
            return CopyWriter(session)
        spec = WorkerSpec(session.project, anonymizer.settings, isinstance(anonymizer, ScriptFirst),
                          anonymizer.fingerprint, self.anonymizers.config.keys_url)
        return AnonymizingWriter(session, anonymizer, self.layout.resolve(instances[0].path),
                                 self.anonymizers.pixel_policy(session.project), self.anonymizers.pool, spec)


class SiteTransform:
    """Runs the site script on a staged file before it enters the prearchive (rewrites it in place)."""

    def __init__(self, script: SiteScript) -> None:
        self.script = script

    def __call__(self, path: Path, header: HeaderInfo, route: Route) -> HeaderInfo:
        ds = _read(path)
        self.script.apply(ds, Labels(route.project, route.subject, route.session, route.subject_from,
                                     route.session_from))
        fresh_file_meta(ds)
        tmp = path.with_name(path.name + ".site")
        ds.save_as(tmp, enforce_file_format=False)
        os.replace(tmp, path)
        return read_header(path)


class FieldExtractor:
    """Custom DICOM mappings -> session and scan custom fields, read from the data as archived."""

    def __init__(self, anonymizers: Anonymizers, catalog: Catalog, layout: Layout) -> None:
        self.anonymizers = anonymizers
        self.catalog = catalog
        self.layout = layout
        self._mappings: MappingStore | None = None

    def __call__(self, session: SessionRow) -> dict[str, Any]:
        if self._mappings is None:
            self._mappings = MappingStore(self.catalog)
        mappings = self._mappings.list(session.project)
        if not mappings or not mappings_enabled(self.anonymizers.config, self.catalog, session.project):
            return {"session": {}, "scans": {}}
        anonymizer = self.anonymizers.in_order(session.project)  # prevent_anon skips only the site script
        first_by_scan: dict[str, InstanceRow] = {}
        for inst in self.catalog.instances(session.id):
            first_by_scan.setdefault(inst.scan_id, inst)
        session_fields: dict[str, Any] = {}
        scan_fields: dict[str, dict[str, Any]] = {}
        for scan_id, inst in first_by_scan.items():
            ds = _read(self.layout.resolve(inst.path))
            if anonymizer is not None:
                ds = copy.deepcopy(ds)
                anonymizer.apply(ds, labels_of(session))
            for mapping in mappings:
                elem = ds.get(mapping.tag)
                raw = None if elem is None else elem.value
                value, problem = convert(raw, mapping.field_type)
                if problem:
                    self.catalog.event("mapping_warning", {"field": mapping.field_name, "problem": problem}, session.id)
                if mapping.level == "scan":
                    scan_fields.setdefault(scan_id, {})[mapping.field_name] = value
                else:
                    session_fields.setdefault(mapping.field_name, value)
        return {"session": session_fields, "scans": scan_fields}


class PixelInspector:
    """The build step's OCR check (de-identified projects only): the findings for the build summary."""

    def __init__(self, anonymizers: Anonymizers, catalog: Catalog, layout: Layout) -> None:
        self.anonymizers = anonymizers
        self.catalog = catalog
        self.layout = layout

    def __call__(self, session: SessionRow) -> dict[str, Any] | None:
        if self.anonymizers.for_project(session.project) is None:
            return None
        return inspect_session(self.catalog.instances(session.id), self.layout.resolve,
                               self.anonymizers.pixel_policy(session.project), self.anonymizers.config.ocr)

    def marks(self, session: SessionRow) -> dict[str, tuple[list[Box], list[Box]]]:
        """Per scan id: the rectangles archiving will blank and the OCR boxes of the last build
        (nothing is blanked where the project is not de-identified)."""
        if self.anonymizers.for_project(session.project) is None:
            return {}
        return session_marks(self.catalog.instances(session.id), self.layout.resolve,
                             self.anonymizers.pixel_policy(session.project), session.summary_fields().get(PIXEL_TEXT))


@dataclass(frozen=True)
class AnonymizationHooks:
    """What de-identification hands the pipeline: the archive writer, the site script run at
    ingest (None without one) and the build step's custom-field extractor."""

    writers: WriterFactory
    site_transform: SiteTransform | None
    extract_fields: FieldExtractor
    anonymizers: Anonymizers
    inspect_pixels: PixelInspector

    def close(self) -> None:
        self.anonymizers.close()


def build_hooks(config: Config, layout: Layout, catalog: Catalog) -> AnonymizationHooks:
    anonymizers = Anonymizers(config, layout, catalog)
    site = SiteTransform(SiteScript(config.anonymize.site_script)) if config.anonymize.site_script else None
    return AnonymizationHooks(
        WriterFactory(anonymizers, catalog, layout), site, FieldExtractor(anonymizers, catalog, layout), anonymizers,
        PixelInspector(anonymizers, catalog, layout),
    )
