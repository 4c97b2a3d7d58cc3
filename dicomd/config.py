"""TOML configuration -> frozen dataclasses. The only module that reads the config file.

Every key is declared once, as a dataclass field with a default and a one-line help in its
``metadata``. Loading checks that every key is known and every value has the right type and
range; errors name the key and the file.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import os
import re
import tomllib
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, get_args, get_origin, get_type_hints

from dicomd import dburl
from dicomd.allowlist import parse_entry
from dicomd.dburl import DatabaseUrl
from dicomd.errors import ConfigError, InvalidInput
from dicomd.mappings import validate as validate_mapping
from dicomd.routing import parse_rule

PROFILE_OPTIONS = (
    "retain_long_modified_dates",
    "retain_long_full_dates",
    "retain_patient_chars",
    "retain_device_id",
    "retain_institution_id",
    "retain_uids",
    "retain_safe_private",
    "clean_descriptors",
    "clean_structured_content",
    "clean_graphics",
)
_KEY_GROUP_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
OVERWRITE_POLICIES = ("none", "append", "delete")
SESSION_LABELS = ("study", "patient_id")
AUTO_ARCHIVE_CODES = (0, 4, 5)
RECEIVE_ENGINES = ("asyncio", "pynetdicom")
_LABEL_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_AE_RE = re.compile(r"^[\x20-\x7e]{1,16}$")


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass(frozen=True)
class RoutingRules:
    """Routing rules written `(gggg,eeee):regex[:group]`, tried in order."""

    project: tuple[str, ...] = field(default=(), metadata=_help("rules that pick the project"))
    subject: tuple[str, ...] = field(default=(), metadata=_help("rules that pick the subject"))
    session: tuple[str, ...] = field(default=(), metadata=_help("rules that pick the session label"))


@dataclass(frozen=True)
class ReceiverConfig:
    ae_title: str = field(default="DICOMD", metadata=_help("the AE title this receiver answers to"))
    port: int = field(default=11112, metadata=_help("TCP port (0 picks a free one)", min=0, max=65535))
    bind: str = field(default="0.0.0.0", metadata=_help("address to listen on"))
    allowed: tuple[str, ...] = field(
        default=(), metadata=_help("senders allowed: 'AE', 'AE@ip' or 'AE@cidr'; empty = everyone")
    )
    project: str = field(default="", metadata=_help("fixed project for everything this receiver gets"))
    max_associations: int = field(default=10, metadata=_help("concurrent associations", min=1, max=1000))
    max_pdu_size: int = field(
        default=1048576, metadata=_help("largest PDU we accept, bytes (0 = unlimited)", min=0)
    )
    prevent_anon: bool = field(default=False, metadata=_help("skip the site script at ingest for this receiver (never the project profile)"))
    max_instance_bytes: int = field(
        default=0, metadata=_help("refuse instances larger than this many bytes with 0xA700 (0 = no limit)", min=0)
    )
    routing: RoutingRules = field(default_factory=RoutingRules, metadata=_help("per-receiver routing rules"))
    network_timeout: float = field(default=60.0, metadata=_help("seconds a silent peer is kept", min=1))
    dimse_timeout: float = field(default=60.0, metadata=_help("seconds to wait for a DIMSE message", min=1))
    acse_timeout: float = field(default=30.0, metadata=_help("seconds to wait for association messages", min=1))
    tls_cert: str = field(default="", metadata=_help("PEM certificate: DICOM TLS on this port (with tls_key)"))
    tls_key: str = field(default="", metadata=_help("PEM private key of tls_cert"))
    tls_ca: str = field(default="", metadata=_help("PEM CA bundle: senders must present a certificate it signed"))
    engine: str = field(
        default="asyncio",
        metadata=_help("receive engine: 'asyncio' (one event loop per process) or 'pynetdicom' (a thread per association)"),
    )


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool = field(default=True, metadata=_help("serve the HTTP API"))
    host: str = field(default="127.0.0.1", metadata=_help("address to listen on"))
    port: int = field(default=8080, metadata=_help("TCP port (0 picks a free one)", min=0, max=65535))
    max_upload_bytes: int = field(
        default=0, metadata=_help("refuse upload bodies larger than this many bytes with 413 (0 = no limit)", min=0)
    )
    max_request_bytes: int = field(
        default=1024 * 1024,
        metadata=_help("refuse other request bodies (forms, JSON) larger than this many bytes with 413", min=1024),
    )
    max_header_bytes: int = field(
        default=16 * 1024, metadata=_help("largest request line plus headers accepted, bytes", min=1024)
    )
    header_timeout: float = field(
        default=15.0, metadata=_help("seconds a client has to send a request's headers before it is dropped", min=0.1)
    )
    keep_alive_timeout: float = field(
        default=30.0, metadata=_help("seconds an idle kept-alive connection stays open", min=0.1)
    )
    max_connections: int = field(
        default=512, metadata=_help("concurrent connections; past it requests get 503", min=1)
    )
    tls_cert: str = field(default="", metadata=_help("PEM certificate: serve HTTPS (with tls_key)"))
    tls_key: str = field(default="", metadata=_help("PEM private key of tls_cert"))
    max_async_imports: int = field(
        default=2, metadata=_help("imports with async=true staged at once; more get 429 until one ends", min=1, max=64)
    )
    max_import_statuses: int = field(
        default=100,
        metadata=_help("upload statuses kept for GET /data/status/ID (in memory, forgotten on restart); the oldest"
                       " finished go first", min=1, max=100_000),
    )


@dataclass(frozen=True)
class DropFolderConfig:
    path: str = field(default="", metadata=_help("folder to watch (relative paths are under data_dir)"))
    project: str = field(default="", metadata=_help("fixed project for what is dropped here"))
    processed: bool = field(
        default=False, metadata=_help("move ingested files to processed/ instead of deleting them")
    )
    stable_seconds: float = field(
        default=2.0, metadata=_help("a file must keep its size this long before it is read", min=0)
    )


@dataclass(frozen=True)
class ArchiveLimitsConfig:
    """Uploaded and dropped zip/tar archives past these limits are refused as hostile (zip bombs)."""

    max_members: int = field(default=100_000, metadata=_help("most entries one archive may hold", min=1))
    max_uncompressed_bytes: int = field(
        default=16 * 2**30, metadata=_help("most bytes one archive may expand to", min=1)
    )
    max_member_bytes: int = field(
        default=4 * 2**30, metadata=_help("most bytes one archive member may expand to", min=1)
    )


@dataclass(frozen=True)
class ArchiveConfig:
    """How archive jobs use the machine."""

    workers: int = field(
        default=0,
        metadata=_help("processes that write the de-identified instances of an archive job (0 = one per core,"
                       " 1 = in the job's own process); started on first use and shared by every job",
                       min=0, max=256),
    )

    def pool_size(self) -> int:
        """The number of worker processes ``workers`` asks for (1 = none: the job writes itself)."""
        return self.workers or os.cpu_count() or 1


@dataclass(frozen=True)
class AnonymizeConfig:
    """Per-project de-identification applied when a session is archived."""

    enabled: bool = field(default=False, metadata=_help("anonymize at archive time"))
    profile: str = field(default="basic", metadata=_help("'basic' (PS3.15 Annex E) or 'none'"))
    options: tuple[str, ...] = field(
        default=(), metadata=_help("PS3.15 options: " + ", ".join(PROFILE_OPTIONS))
    )
    script: str = field(default="", metadata=_help("DicomEdit 6 script file run after the profile"))
    private_allowlist: tuple[str, ...] = field(
        default=(), metadata=_help("private tags to keep, '(gggg,{CREATOR}ee)'")
    )
    allow_burned_in: bool = field(
        default=False,
        metadata=_help("accept instances that may carry burned-in text without a redaction rule (no review hold;"
                       " the pixels are archived as they are)"),
    )
    key_group: str = field(
        default="",
        metadata=_help("share one pseudonym key with the projects naming the same group ('' = the project's own key)"),
    )


@dataclass(frozen=True)
class ProjectConfig:
    id: str = ""
    name: str = field(default="", metadata=_help("display name"))
    aliases: tuple[str, ...] = field(default=(), metadata=_help("other names that route here"))
    auto_archive: int = field(
        default=0, metadata=_help("XNAT prearchive code: 0 review, 4 auto-archive, 5 auto-archive+overwrite")
    )
    overwrite: str = field(default="none", metadata=_help("none | append | delete"))
    allow_header_auto_archive: bool | None = field(
        default=None,
        metadata=_help("honour `AA: true` in a sender's comment tags (default: only when anonymization is off)"),
    )
    anonymize: AnonymizeConfig = field(default_factory=AnonymizeConfig, metadata=_help("de-identification"))

    @property
    def overwrite_policy(self) -> str:
        return "delete" if self.auto_archive == 5 else self.overwrite

    @property
    def header_auto_archive(self) -> bool:
        """Whether `AA: true` in a header may archive past the owner's review."""
        if self.allow_header_auto_archive is not None:
            return self.allow_header_auto_archive
        return not self.anonymize.enabled


@dataclass(frozen=True)
class MappingConfig:
    """A custom DICOM mapping declared in the config (also manageable with `dicomd mapping` and /xapi)."""

    name: str = field(default="", metadata=_help("custom field name"))
    tag: str = field(default="", metadata=_help("DICOM tag: 0xGGGGEEEE, (gggg,eeee) or a keyword"))
    type: str = field(default="string", metadata=_help("string, integer, float, boolean or date"))
    project: str = field(default="", metadata=_help("project scope ('' = site-wide)"))
    level: str = field(default="session", metadata=_help("session or scan"))

    def as_xnat(self) -> dict[str, str]:
        return {"scope": "project" if self.project else "site", "scopeObjectId": self.project,
                "fieldName": self.name, "fieldType": self.type, "dicomTag": self.tag, "level": self.level}


@dataclass(frozen=True)
class PixelMatchConfig:
    """A redaction rule's signature: header values an instance must have (unset = any). Strings
    match case-insensitively, whole value, with `*` and `?` wildcards; Rows and Columns exactly."""

    Manufacturer: str = field(default="", metadata=_help("(0008,0070), e.g. 'GE*'"))
    ManufacturerModelName: str = field(default="", metadata=_help("(0008,1090), e.g. 'LOGIQ E9'"))
    SoftwareVersions: str = field(default="", metadata=_help("(0018,1020): any of its values"))
    Modality: str = field(default="", metadata=_help("(0008,0060), e.g. 'US'"))
    SOPClassUID: str = field(default="", metadata=_help("(0008,0016): a UID (wildcards allowed) or its pydicom keyword"))
    Rows: int = field(default=0, metadata=_help("(0028,0010) exactly (0 = any)", min=0, max=65535))
    Columns: int = field(default=0, metadata=_help("(0028,0011) exactly (0 = any)", min=0, max=65535))


PIXEL_MATCH_KEYS = tuple(f.name for f in dataclasses.fields(PixelMatchConfig))


@dataclass(frozen=True)
class PixelRuleConfig:
    """Clean Pixel Data: the rectangles blanked in every frame of the instances matching a signature."""

    name: str = field(default="", metadata=_help("the rule's name, recorded in the catalog when it runs"))
    match: PixelMatchConfig = field(default_factory=PixelMatchConfig, metadata=_help("the signature"))
    rectangles: tuple[tuple[int, ...], ...] = field(
        default=(), metadata=_help("[[x, y, width, height], ...] in pixels, from the top left corner")
    )

    def conditions(self) -> dict[str, str | int]:
        """The signature's set conditions, by DICOM keyword."""
        return {k: v for k in PIXEL_MATCH_KEYS if (v := getattr(self.match, k))}


@dataclass(frozen=True)
class OcrConfig:
    """The optional OCR check for burned-in text (Tesseract; off when it is not installed)."""

    enabled: bool = field(default=True, metadata=_help("look for text with Tesseract when it is installed"))
    all_series: bool = field(
        default=False,
        metadata=_help("OCR every series, not only those with a burned-in reason or a redaction rule"),
    )
    timeout_seconds: float = field(default=20.0, metadata=_help("longest one OCR call may take", min=1, max=600))
    min_confidence: int = field(
        default=50, metadata=_help("words Tesseract is less sure of (0-100) are not counted", min=0, max=100)
    )


@dataclass(frozen=True)
class SiteAnonymizeConfig:
    site_script: str = field(default="", metadata=_help("DicomEdit 6 script run on every instance at ingest"))


@dataclass(frozen=True)
class ClusterConfig:
    """Several `dicomd serve` nodes on one catalog and one data directory (see docs/cluster.md)."""

    heartbeat_seconds: float = field(
        default=5.0, metadata=_help("how often a node refreshes its heartbeat in the catalog", min=0.05, max=3600)
    )
    claim_expiry_seconds: float = field(
        default=30.0,
        metadata=_help("a node silent this long has expired: other nodes take over the work it claimed", min=0.1),
    )


@dataclass(frozen=True)
class CatalogConfig:
    url: str = field(
        default="",
        metadata=_help("the catalog database: a SQLite file path (relative to data_dir; '' = data_dir/catalog.sqlite)"
                       " or postgresql://user:pass@host:port/db"),
    )


@dataclass(frozen=True)
class KeysConfig:
    url: str = field(
        default="",
        metadata=_help("the pseudonym keys and map: a SQLite file path (relative to data_dir; '' ="
                       " data_dir/keys/pseudonyms.sqlite) or a postgresql:// URL of another database or schema with"
                       " its own credentials (never the catalog's)"),
    )


@dataclass(frozen=True)
class Config:
    data_dir: Path = field(default=Path("dicomd-data"), metadata=_help("where every store lives"))
    session_idle_seconds: float = field(
        default=300.0, metadata=_help("a RECEIVING session idle this long is built", min=0.05)
    )
    watch_interval_seconds: float = field(
        default=0.0, metadata=_help("how often idle sessions are checked (0 = idle/4, at most 60 s)", min=0)
    )
    receiver_processes: int = field(
        default=1,
        metadata=_help("processes accepting DICOM associations on each receiver port (SO_REUSEPORT)", min=1, max=64),
    )
    min_free_bytes: int = field(
        default=512 * 1024 * 1024, metadata=_help("refuse new data below this much free disk", min=0)
    )
    log_level: str = field(default="INFO", metadata=_help("DEBUG, INFO, WARNING or ERROR"))
    receivers: tuple[ReceiverConfig, ...] = field(default=(), metadata=_help("DICOM receivers"))
    http: HttpConfig = field(default_factory=HttpConfig, metadata=_help("the HTTP API"))
    drop_folders: tuple[DropFolderConfig, ...] = field(default=(), metadata=_help("watched folders"))
    archive_limits: ArchiveLimitsConfig = field(
        default_factory=ArchiveLimitsConfig, metadata=_help("limits on uploaded and dropped archives")
    )
    archive: ArchiveConfig = field(default_factory=ArchiveConfig, metadata=_help("archive jobs"))
    routing: RoutingRules = field(default_factory=RoutingRules, metadata=_help("site-wide routing rules"))
    session_label: str = field(
        default="study",
        metadata=_help("a session label no rule, comment or parameter gave: study (Patient ID + a short hash of"
                       " the Study Instance UID: one session per study) or patient_id (XNAT's plain Patient ID)"),
    )
    anonymize: SiteAnonymizeConfig = field(default_factory=SiteAnonymizeConfig, metadata=_help("site script"))
    projects: Mapping[str, ProjectConfig] = field(default_factory=dict, metadata=_help("projects by ID"))
    mappings: tuple[MappingConfig, ...] = field(default=(), metadata=_help("custom DICOM mappings"))
    pixel_rules: tuple[PixelRuleConfig, ...] = field(
        default=(), metadata=_help("redaction rules for burned-in text (Clean Pixel Data)", named=True)
    )
    ocr: OcrConfig = field(default_factory=OcrConfig, metadata=_help("OCR check for burned-in text"))
    catalog: CatalogConfig = field(default_factory=CatalogConfig, metadata=_help("where the catalog lives"))
    keys: KeysConfig = field(default_factory=KeysConfig, metadata=_help("where the pseudonym keys live"))
    cluster: ClusterConfig = field(default_factory=ClusterConfig, metadata=_help("nodes sharing the catalog"))
    source: str = "<defaults>"

    @property
    def catalog_url(self) -> DatabaseUrl:
        """The catalog database (catalog.url; a relative file is under data_dir)."""
        return dburl.parse(self.catalog.url or "catalog.sqlite", self.data_dir)

    @property
    def keys_url(self) -> DatabaseUrl:
        """The pseudonym keys and map (keys.url; a relative file is under data_dir)."""
        return dburl.parse(self.keys.url or "keys/pseudonyms.sqlite", self.data_dir)

    def project(self, project_id: str) -> ProjectConfig | None:
        return self.projects.get(project_id)

    def resolve_project(self, name: str) -> str | None:
        """Project ID for an ID or alias (case-insensitive), or None."""
        matches = self.matching_projects(name)
        return matches[0] if matches else None

    def matching_projects(self, name: str) -> list[str]:
        """IDs of the projects that ``name`` (an ID or alias, case-insensitive) names; a loaded
        config has at most one."""
        wanted = name.strip().lower()
        return [pid for pid, project in self.projects.items()
                if pid.lower() == wanted or wanted in (a.strip().lower() for a in project.aliases)]

    def project_ids(self) -> list[str]:
        return sorted(self.projects)

    def path(self, name: str) -> Path:
        return self.data_dir / name


# ---------------------------------------------------------------- loading


def load(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read a TOML file (or the defaults when ``path`` is None) and apply command-line overrides.

    ``overrides`` keys: data_dir, dicom_port, http_port, session_idle_seconds.
    """
    source = str(path) if path else "<defaults>"
    raw: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{source}: file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    config = _build(Config, raw, "", source)
    config = _finish(config, Path(path).parent if path else Path.cwd(), source)
    return _apply_overrides(config, overrides or {})


def _apply_overrides(config: Config, overrides: Mapping[str, Any]) -> Config:
    changes: dict[str, Any] = {}
    if overrides.get("data_dir") is not None:
        changes["data_dir"] = Path(overrides["data_dir"]).expanduser().resolve()
    if overrides.get("session_idle_seconds") is not None:
        changes["session_idle_seconds"] = float(overrides["session_idle_seconds"])
    if overrides.get("http_port") is not None:
        changes["http"] = dataclasses.replace(config.http, port=int(overrides["http_port"]))
    if overrides.get("dicom_port") is not None:
        receivers = list(config.receivers) or [ReceiverConfig()]
        receivers[0] = dataclasses.replace(receivers[0], port=int(overrides["dicom_port"]))
        changes["receivers"] = tuple(receivers)
    return dataclasses.replace(config, **changes) if changes else config


def _finish(config: Config, base: Path, source: str) -> Config:
    data_dir = config.data_dir if config.data_dir.is_absolute() else (base / config.data_dir)
    projects = {pid: dataclasses.replace(p, id=pid) for pid, p in config.projects.items()}
    if config.session_label not in SESSION_LABELS:
        raise ConfigError(f"{source}: session_label: must be one of {', '.join(SESSION_LABELS)}")
    for pid, project in projects.items():
        if not _LABEL_RE.match(pid):
            raise ConfigError(f"{source}: projects.{pid}: a project ID may hold only A-Z a-z 0-9 _ -")
        if project.auto_archive not in AUTO_ARCHIVE_CODES:
            raise ConfigError(f"{source}: projects.{pid}.auto_archive: must be one of 0, 4, 5")
        if project.overwrite not in OVERWRITE_POLICIES:
            raise ConfigError(f"{source}: projects.{pid}.overwrite: must be none, append or delete")
        for opt in project.anonymize.options:
            if opt not in PROFILE_OPTIONS:
                raise ConfigError(
                    f"{source}: projects.{pid}.anonymize.options: unknown option {opt!r} "
                    f"(known: {', '.join(PROFILE_OPTIONS)})"
                )
        if "retain_long_full_dates" in project.anonymize.options and \
                "retain_long_modified_dates" in project.anonymize.options:
            raise ConfigError(f"{source}: projects.{pid}.anonymize.options: choose one of retain_long_full_dates"
                              " and retain_long_modified_dates, not both")
        if project.anonymize.key_group and not _KEY_GROUP_RE.match(project.anonymize.key_group):
            raise ConfigError(f"{source}: projects.{pid}.anonymize.key_group: 1 to 64 characters A-Z a-z 0-9 _ -")
        if project.anonymize.profile not in ("basic", "none"):
            raise ConfigError(f"{source}: projects.{pid}.anonymize.profile: must be 'basic' or 'none'")
        if project.anonymize.script:
            script = Path(project.anonymize.script)
            script = script if script.is_absolute() else base / script
            projects[pid] = dataclasses.replace(
                projects[pid], anonymize=dataclasses.replace(project.anonymize, script=str(script))
            )
    _check_project_names(projects, source)
    if config.cluster.claim_expiry_seconds <= 2 * config.cluster.heartbeat_seconds:
        raise ConfigError(f"{source}: cluster.claim_expiry_seconds: must be more than twice cluster.heartbeat_seconds")
    if config.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"{source}: log_level: must be DEBUG, INFO, WARNING or ERROR")
    for i, receiver in enumerate(config.receivers):
        check_receiver(receiver, projects, f"{source}: receivers[{i}]")
    _check_rules(config.routing, f"{source}: routing")
    for i, folder in enumerate(config.drop_folders):
        if not folder.path:
            raise ConfigError(f"{source}: drop_folders[{i}].path: required")
        if folder.project and folder.project not in projects:
            raise ConfigError(f"{source}: drop_folders[{i}].project: no project {folder.project!r} is declared")
    receivers = tuple(_tls_paths(r, base, f"{source}: receivers[{i}]") for i, r in enumerate(config.receivers))
    http = _tls_paths(config.http, base, f"{source}: http")
    config = dataclasses.replace(config, receivers=receivers, http=http)
    for i, mapping in enumerate(config.mappings):
        try:
            validate_mapping(mapping.as_xnat())
        except InvalidInput as exc:
            raise ConfigError(f"{source}: mappings[{i}]: {exc}") from None
        if mapping.project and mapping.project not in projects:
            raise ConfigError(f"{source}: mappings[{i}].project: no project {mapping.project!r} is declared")
    config = dataclasses.replace(config, pixel_rules=_check_pixel_rules(config.pixel_rules, source))
    _check_databases(config, data_dir.resolve(), source)
    site_script = config.anonymize.site_script
    anonymize = config.anonymize
    if site_script and not Path(site_script).is_absolute():
        anonymize = SiteAnonymizeConfig(site_script=str(base / site_script))
    return dataclasses.replace(
        config,
        data_dir=data_dir.resolve(),
        projects=projects,
        anonymize=anonymize,
        log_level=config.log_level.upper(),
        source=source,
    )


def _check_databases(config: Config, data_dir: Path, source: str) -> None:
    """catalog.url and keys.url: each understood, and never the same database (the keys stay apart)."""
    urls = {}
    for key, value, default in (("catalog.url", config.catalog.url, "catalog.sqlite"),
                                ("keys.url", config.keys.url, "keys/pseudonyms.sqlite")):
        try:
            urls[key] = dburl.parse(value or default, data_dir)
        except InvalidInput as exc:
            raise ConfigError(f"{source}: {key}: {exc}") from None
    if dburl.same_database(urls["catalog.url"], urls["keys.url"]):
        raise ConfigError(f"{source}: keys.url: must not be the catalog's database ({urls['keys.url'].masked}):"
                          " give the keys their own database, schema or file, with their own credentials")


def check_receiver(receiver: ReceiverConfig, projects: Mapping[str, Any], where: str) -> None:
    """A receiver's settings as the config file checks them (also for receivers added over the API);
    ConfigError names ``where`` and the key."""
    if not _AE_RE.match(receiver.ae_title) or not receiver.ae_title.strip():
        raise ConfigError(f"{where}.ae_title: 1 to 16 printable ASCII characters")
    if receiver.project and receiver.project not in projects:
        raise ConfigError(f"{where}.project: no project {receiver.project!r} is declared")
    if receiver.engine not in RECEIVE_ENGINES:
        raise ConfigError(f"{where}.engine: must be one of {', '.join(RECEIVE_ENGINES)}")
    for entry in receiver.allowed:
        _check_allow_entry(entry, f"{where}.allowed")
    _check_rules(receiver.routing, f"{where}.routing")


def _check_project_names(projects: Mapping[str, ProjectConfig], source: str) -> None:
    """Every ID and alias names one project (compared as routing does: case-insensitively)."""
    ids: dict[str, str] = {}
    for pid in projects:
        if pid.lower() in ids:
            raise ConfigError(f"{source}: projects.{pid}: the same ID as projects.{ids[pid.lower()]} "
                              "(project names are matched case-insensitively)")
        ids[pid.lower()] = pid
    aliases: dict[str, str] = {}
    for pid, project in projects.items():
        for alias in project.aliases:
            name = alias.strip().lower()
            if ids.get(name, pid) != pid:
                raise ConfigError(f"{source}: projects.{pid}.aliases: {alias!r} is the ID of project {ids[name]!r}")
            if aliases.get(name, pid) != pid:
                raise ConfigError(f"{source}: projects.{pid}.aliases: {alias!r} is also an alias of project "
                                  f"{aliases[name]!r}")
            aliases[name] = pid


def _tls_paths(section: Any, base: Path, where: str) -> Any:
    """TLS files relative to the config file's folder; a certificate needs its key and vice versa."""
    if bool(section.tls_cert) != bool(section.tls_key):
        raise ConfigError(f"{where}: tls_cert and tls_key go together (set both or neither)")
    names = [n for n in ("tls_cert", "tls_key", "tls_ca") if getattr(section, n, "")]
    if getattr(section, "tls_ca", "") and not section.tls_cert:
        raise ConfigError(f"{where}.tls_ca: needs tls_cert and tls_key")
    changes = {}
    for name in names:
        path = Path(getattr(section, name)).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise ConfigError(f"{where}.{name}: no such file {path}")
        changes[name] = str(path)
    return dataclasses.replace(section, **changes) if changes else section


def _check_rules(rules: RoutingRules, where: str) -> None:
    for kind in ("project", "subject", "session"):
        for rule in getattr(rules, kind):
            try:
                parse_rule(rule)
            except ValueError as exc:
                raise ConfigError(f"{where}.{kind}: {exc}") from None


def _check_allow_entry(entry: str, where: str) -> None:
    try:
        parse_entry(entry)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix or 'top level'}: expected a table")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in ("id", "source")}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{source}: {name}: unknown key (known keys here: {known})")
        values[key] = _convert(hints[key], value, name, source, fields[key].metadata)
    return cls(**values)


def _convert(tp: Any, value: Any, name: str, source: str, meta: Mapping[str, Any]) -> Any:
    origin = get_origin(tp)
    if origin is types.UnionType:  # `X | None`: TOML has no null, so a value given is an X
        (item_tp,) = [arg for arg in get_args(tp) if arg is not type(None)]
        return _convert(item_tp, value, name, source, meta)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, name + ".", source)
    if origin is tuple:
        (item_tp, _ellipsis) = get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {name}: expected a list")
        return tuple(_convert(item_tp, v, _item_name(name, i, v, meta), source, {}) for i, v in enumerate(value))
    if origin in (Mapping, dict, collections.abc.Mapping):
        _key_tp, item_tp = get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {name}: expected a table")
        return {k: _convert(item_tp, v, f"{name}.{k}", source, {}) for k, v in value.items()}
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{source}: {name}: expected a path (string)")
        return Path(value).expanduser()
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {name}: expected true or false")
        return value
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (tp is int and isinstance(value, float)):
            raise ConfigError(f"{source}: {name}: expected {'an integer' if tp is int else 'a number'}")
        if "min" in meta and value < meta["min"]:
            raise ConfigError(f"{source}: {name}: must be at least {meta['min']}")
        if "max" in meta and value > meta["max"]:
            raise ConfigError(f"{source}: {name}: must be at most {meta['max']}")
        return tp(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {name}: expected a string")
        return value
    raise ConfigError(f"{source}: {name}: unsupported value")  # pragma: no cover


def _item_name(name: str, index: int, value: Any, meta: Mapping[str, Any]) -> str:
    """`pixel_rules[0]`, with the item's name when its list is `named` (messages name the rule)."""
    if meta.get("named") and isinstance(value, dict) and isinstance(value.get("name"), str) and value["name"]:
        return f"{name}[{index}] (rule {value['name']!r})"
    return f"{name}[{index}]"


_RULE_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _check_pixel_rules(rules: tuple[PixelRuleConfig, ...], source: str) -> tuple[PixelRuleConfig, ...]:
    """Names unique, a signature with at least one condition, rectangles non-empty and inside
    Rows x Columns when both are given; SOP class keywords become UIDs. Messages name the rule."""
    seen: set[str] = set()
    checked: list[PixelRuleConfig] = []
    for i, rule in enumerate(rules):
        where = f"{source}: pixel_rules[{i}]" + (f" (rule {rule.name!r})" if rule.name else "")
        if not _RULE_NAME_RE.match(rule.name):
            raise ConfigError(f"{where}.name: required, 1 to 64 characters A-Z a-z 0-9 _ . -")
        if rule.name in seen:
            raise ConfigError(f"{where}.name: another rule is named {rule.name!r} (names must be unique)")
        seen.add(rule.name)
        if not rule.conditions():
            raise ConfigError(f"{where}.match: give at least one condition ({', '.join(PIXEL_MATCH_KEYS)});"
                              " a rule without one would blank every image")
        if not rule.rectangles:
            raise ConfigError(f"{where}.rectangles: give at least one [x, y, width, height]")
        rows, columns = rule.match.Rows, rule.match.Columns
        for n, rect in enumerate(rule.rectangles):
            if len(rect) != 4:
                raise ConfigError(f"{where}.rectangles[{n}]: expected [x, y, width, height], got {list(rect)}")
            x, y, width, height = rect
            if x < 0 or y < 0:
                raise ConfigError(f"{where}.rectangles[{n}]: x and y must be 0 or more, got {list(rect)}")
            if width <= 0 or height <= 0:
                raise ConfigError(f"{where}.rectangles[{n}]: empty rectangle {list(rect)} (width and height"
                                  " must be at least 1)")
            if rows and columns and (x + width > columns or y + height > rows):
                raise ConfigError(f"{where}.rectangles[{n}]: {list(rect)} reaches outside the {columns} x {rows}"
                                  " image (Columns x Rows)")
        sop_class = _sop_class(rule.match.SOPClassUID, f"{where}.match.SOPClassUID")
        checked.append(dataclasses.replace(rule, match=dataclasses.replace(rule.match, SOPClassUID=sop_class)))
    return tuple(checked)


def _sop_class(value: str, where: str) -> str:
    """A SOP class condition as a UID pattern: a dotted UID (wildcards allowed) or pydicom's keyword."""
    if not value or re.match(r"^[0-9.*?]+$", value):
        return value
    from pydicom.uid import UID_dictionary  # only when a rule names a SOP class by keyword

    for uid, entry in UID_dictionary.items():
        if entry[4] == value:
            return str(uid)
    raise ConfigError(f"{where}: {value!r} is neither a UID nor a SOP class keyword (e.g. UltrasoundImageStorage)")


def describe() -> list[tuple[str, str]]:
    """Every settable key with its help text, for docs and `dicomd config keys`."""
    rows: list[tuple[str, str]] = []

    def walk(cls: type, prefix: str) -> None:
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in ("id", "source"):
                continue
            tp = hints[f.name]
            args = get_args(tp)
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")
            elif get_origin(tp) is tuple and args and dataclasses.is_dataclass(args[0]):
                walk(args[0], f"{prefix}{f.name}[].")
            elif get_origin(tp) in (Mapping, collections.abc.Mapping):
                walk(args[1], f"{prefix}{f.name}.<id>.")
            else:
                rows.append((prefix + f.name, f.metadata.get("help", "")))

    walk(Config, "")
    return rows
