"""Custom DICOM mappings (XNAT's `/xapi/dicom_mappings`): which header values become catalog fields.

Table `dicom_mappings` (own migration set "dicomd-mappings"):
    id INTEGER PRIMARY KEY, scope TEXT ('site'|'project'), scope_object_id TEXT ('' for site),
    field_name TEXT, field_type TEXT ('string'|'integer'|'float'|'boolean'|'date'),
    dicom_tag TEXT ('0xGGGGEEEE', upper-case hex), level TEXT ('session'|'scan'),
    created_at REAL, updated_at REAL; UNIQUE(scope, scope_object_id, field_name, level).
This module does not import FastAPI, so the build step can read mappings with `MappingStore`.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Mapping

from dicomd.migrations import Migrations, Schema

from dicomd import dicomtags
from dicomd.errors import InvalidInput, NotFound

if TYPE_CHECKING:  # the catalog sits above this module's pure half (validate, convert), which config uses
    from dicomd.catalog import Catalog

SCOPES = ("site", "project")
FIELD_TYPES = ("string", "integer", "float", "boolean", "date")
LEVELS = ("session", "scan")
SCHEMA_ELEMENTS = {"session": "xnat:imageSessionData", "scan": "xnat:imageScanData"}
_FIELD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")

migrations = Migrations("dicomd-mappings")


@migrations(name="001_dicom_mappings")
def _m001(db: Schema) -> None:
    db.script(
        """
        CREATE TABLE IF NOT EXISTS dicom_mappings (
            id INTEGER PRIMARY KEY,
            scope TEXT NOT NULL,
            scope_object_id TEXT NOT NULL DEFAULT '',
            field_name TEXT NOT NULL,
            field_type TEXT NOT NULL,
            dicom_tag TEXT NOT NULL,
            level TEXT NOT NULL DEFAULT 'session',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            UNIQUE(scope, scope_object_id, field_name, level)
        );
        """
    )


@dataclass(frozen=True)
class DicomMapping:
    id: int
    scope: str
    scope_object_id: str
    field_name: str
    field_type: str
    dicom_tag: str
    level: str

    @property
    def tag(self) -> int:
        return int(self.dicom_tag, 16)

    def xnat(self) -> dict[str, Any]:
        """XNAT's JSON shape (plus `level`)."""
        return {
            "id": self.id,
            "scope": self.scope,
            "scopeObjectId": self.scope_object_id or None,
            "fieldName": self.field_name,
            "fieldType": self.field_type,
            "dicomTag": self.dicom_tag,
            "schemaElement": SCHEMA_ELEMENTS[self.level],
            "level": self.level,
        }


def parse_tag(text: str) -> str:
    """'0x00181000', '00181000', '(0018,1000)' or a DICOM keyword -> '0x00181000'."""
    try:
        return f"0x{dicomtags.parse_tag(text):08X}"
    except dicomtags.BadTag:
        raise InvalidInput(f"dicomTag {text!r}: expected 0xGGGGEEEE, (gggg,eeee) or a DICOM keyword") from None


def validate(body: Mapping[str, Any]) -> dict[str, Any]:
    """XNAT-shaped JSON -> checked column values; InvalidInput names the bad key."""
    scope = str(body.get("scope") or "site").lower()
    if scope not in SCOPES:
        raise InvalidInput(f"scope must be one of {', '.join(SCOPES)}")
    scope_object = str(body.get("scopeObjectId") or "").strip() if scope == "project" else ""
    if scope == "project" and not scope_object:
        raise InvalidInput("scopeObjectId (the project) is required when scope is 'project'")
    name = str(body.get("fieldName") or "").strip()
    if not _FIELD_RE.match(name):
        raise InvalidInput("fieldName must start with a letter and hold only letters, digits and _ (max 64)")
    field_type = str(body.get("fieldType") or "string").lower()
    if field_type not in FIELD_TYPES:
        raise InvalidInput(f"fieldType must be one of {', '.join(FIELD_TYPES)}")
    if not body.get("dicomTag"):
        raise InvalidInput("dicomTag is required")
    tag = parse_tag(str(body["dicomTag"]))
    level = str(body.get("level") or "").lower()
    if not level:
        element = str(body.get("schemaElement") or "").lower()
        level = "scan" if "scan" in element else "session"
    if level not in LEVELS:
        raise InvalidInput(f"level must be one of {', '.join(LEVELS)}")
    return {"scope": scope, "scope_object_id": scope_object, "field_name": name, "field_type": field_type,
            "dicom_tag": tag, "level": level}


class MappingStore:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        catalog.apply_migrations(migrations)

    def list(self, project: str | None = None) -> list[DicomMapping]:
        """All mappings, or those that apply to ``project`` (site-wide ones and its own)."""
        sql = "SELECT id, scope, scope_object_id, field_name, field_type, dicom_tag, level FROM dicom_mappings"
        args: tuple[Any, ...] = ()
        if project is not None:
            sql += " WHERE scope = 'site' OR (scope = 'project' AND scope_object_id = ?)"
            args = (project,)
        rows = self.catalog.reader().execute(sql + " ORDER BY id", args).fetchall()
        return [DicomMapping(*r) for r in rows]

    def get(self, mapping_id: int) -> DicomMapping:
        for mapping in self.list():
            if mapping.id == mapping_id:
                return mapping
        raise NotFound(f"no DICOM mapping {mapping_id}")

    def upsert(self, body: Mapping[str, Any]) -> DicomMapping:
        """Create, or update by `id` (or by scope + project + fieldName + level)."""
        values = validate(body)
        wanted_id = body.get("id")

        def txn(conn: Any) -> int:
            now = time.time()
            row = None
            if wanted_id not in (None, "", 0):
                row = conn.execute("SELECT id FROM dicom_mappings WHERE id = ?", (int(wanted_id),)).fetchone()
                if row is None:
                    raise NotFound(f"no DICOM mapping {wanted_id}")
            if row is None:
                row = conn.execute(
                    "SELECT id FROM dicom_mappings WHERE scope=? AND scope_object_id=? AND field_name=? AND level=?",
                    (values["scope"], values["scope_object_id"], values["field_name"], values["level"]),
                ).fetchone()
            if row is not None:
                sets = ", ".join(f"{k} = ?" for k in values)
                conn.execute(f"UPDATE dicom_mappings SET {sets}, updated_at = ? WHERE id = ?",
                             (*values.values(), now, row[0]))
                return int(row[0])
            cur = conn.execute(
                "INSERT INTO dicom_mappings(scope, scope_object_id, field_name, field_type, dicom_tag, level,"
                " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?) RETURNING id",
                (*values.values(), now, now),
            )
            return int(cur.fetchone()[0])

        try:
            mapping_id = self.catalog.write(txn)
        except self.catalog.IntegrityError as exc:
            raise InvalidInput(f"mapping clashes with an existing one: {exc}") from None
        return self.get(mapping_id)

    def delete(self, mapping_id: int) -> None:
        self.get(mapping_id)
        self.catalog.write(lambda c: c.execute("DELETE FROM dicom_mappings WHERE id = ?", (mapping_id,)))


def as_dicts(mappings: list[DicomMapping]) -> list[dict[str, Any]]:
    return [asdict(m) for m in mappings]


def convert(raw: Any, field_type: str) -> tuple[Any, str | None]:
    """A DICOM value as ``field_type``; (None, problem) when it does not parse."""
    if raw is None or raw == "":
        return None, None
    if isinstance(raw, (list, tuple)) or type(raw).__name__ == "MultiValue":
        raw = raw[0] if len(raw) else None
        if raw is None:
            return None, None
    text = str(raw).strip()
    try:
        if field_type == "integer":
            return int(float(text)), None
        if field_type == "float":
            return float(text), None
        if field_type == "boolean":
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "y", "t"):
                return True, None
            if lowered in ("0", "false", "no", "n", "f"):
                return False, None
            raise ValueError(text)
        if field_type == "date":
            return dt.datetime.strptime(text[:8], "%Y%m%d").date().isoformat(), None
        return text, None
    except ValueError:
        return None, f"value does not parse as {field_type}"
