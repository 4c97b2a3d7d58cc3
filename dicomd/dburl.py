"""Where a database lives: a SQLite file or a PostgreSQL URL (``catalog.url``, ``keys.url``).

A value is parsed once into a frozen `DatabaseUrl`; its ``masked`` form (password replaced by
``***``) is the only one that may appear in a log line, an error or `dicomd status`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from dicomd.errors import InvalidInput

SQLITE, POSTGRESQL = "sqlite", "postgresql"
_SCHEMES = ("postgresql://", "postgres://")
_PASSWORD_RE = re.compile(r"(://[^:/@\s]*:)([^@\s]*)(@)")
_SECRET_PARAM_RE = re.compile(r"(?i)(password=)([^&\s]*)")


@dataclass(frozen=True)
class DatabaseUrl:
    """A SQLite file (``path``) or a PostgreSQL server (``dsn``)."""

    kind: str
    path: Path | None = None
    dsn: str = ""

    @property
    def is_postgresql(self) -> bool:
        return self.kind == POSTGRESQL

    @property
    def masked(self) -> str:
        """What may be shown: the file path, or the URL with its password as ``***``."""
        return str(self.path) if self.path is not None else mask(self.dsn)

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"DatabaseUrl({self.masked!r})"


def mask(text: str) -> str:
    """``text`` with every URL password (``user:secret@``, ``password=secret``) replaced by ``***``."""
    return _SECRET_PARAM_RE.sub(r"\1***", _PASSWORD_RE.sub(r"\1***\3", text))


def parse(value: str | Path, base: Path) -> DatabaseUrl:
    """A config value: ``postgresql://user:pass@host:port/db`` or a file path (relative to ``base``)."""
    text = str(value).strip()
    if not text:
        raise InvalidInput("must not be empty")
    if text.startswith(_SCHEMES):
        parts = urlsplit(text)
        if not parts.hostname and "host=" not in (parts.query or ""):
            raise InvalidInput(f"{mask(text)}: a PostgreSQL URL needs a host (postgresql://user:pass@host:port/db)")
        if not parts.path.strip("/"):
            raise InvalidInput(f"{mask(text)}: a PostgreSQL URL needs a database name (postgresql://host/db)")
        try:
            parts.port
        except ValueError:
            raise InvalidInput(f"{mask(text)}: the port is not a number") from None
        return DatabaseUrl(POSTGRESQL, dsn=text)
    if "://" in text:
        raise InvalidInput(f"{mask(text)}: only a file path or a postgresql:// URL is understood")
    path = Path(text).expanduser()
    return DatabaseUrl(SQLITE, path=(path if path.is_absolute() else base / path).resolve())


def sqlite_file(path: Path) -> DatabaseUrl:
    return DatabaseUrl(SQLITE, path=Path(path))


def same_database(a: DatabaseUrl, b: DatabaseUrl) -> bool:
    """Whether two URLs name the same file, or the same PostgreSQL database as the same user and schema."""
    if a.kind != b.kind:
        return False
    if a.path is not None:
        return a.path == b.path
    pa, pb = urlsplit(a.dsn), urlsplit(b.dsn)
    return ((pa.hostname, pa.port or 5432, pa.path, pa.username, pa.query)
            == (pb.hostname, pb.port or 5432, pb.path, pb.username, pb.query))
