"""Users, per-project roles, password hashing, login sessions (JSESSIONID) and alias tokens.

Everything lives in the catalog file, in tables created by this module's own migration set
("dicomd-auth"); writes go through the catalog's writer. Passwords are hashed with scrypt;
session ids and token secrets are random and only their SHA-256 is stored.

Roles follow XNAT: a collaborator reads, a member also uploads (and rebuilds), an owner also
archives, moves and deletes. Site admins may do everything, and only they see `Unassigned`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import ClassVar, Iterable

from dicomd.migrations import Migrations, Schema

from dicomd.catalog import Catalog
from dicomd.errors import Conflict, Forbidden, InvalidInput, NotFound
from dicomd.logsafe import escape
from dicomd.routing import UNASSIGNED

logger = logging.getLogger(__name__)

ROLES = ("collaborator", "member", "owner")
READ, UPLOAD, MANAGE = "read", "upload", "manage"
_NEEDS = {READ: "collaborator", UPLOAD: "member", MANAGE: "owner"}
_NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")

SESSION_IDLE_SECONDS = 8 * 3600
TOKEN_SECONDS = 48 * 3600
# scrypt cost: about 50 ms and 16 MiB per check on a small machine.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_VERIFIED_TTL = 300.0  # seconds a verified basic-auth pair is remembered (saves a KDF per request)

migrations = Migrations("dicomd-auth")


@migrations(name="001_users_roles_sessions_tokens")
def _m001(db: Schema) -> None:
    db.script(
        """
        CREATE TABLE IF NOT EXISTS users (
            name TEXT PRIMARY KEY,
            password_hash TEXT NOT NULL,
            admin INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL
        );
        CREATE TABLE IF NOT EXISTS user_roles (
            "user" TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
            project TEXT NOT NULL,
            role TEXT NOT NULL,
            PRIMARY KEY ("user", project)
        );
        CREATE TABLE IF NOT EXISTS login_sessions (
            id_hash TEXT PRIMARY KEY,
            "user" TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        );
        CREATE TABLE IF NOT EXISTS alias_tokens (
            alias TEXT PRIMARY KEY,
            secret_hash TEXT NOT NULL,
            "user" TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        );
        """
    )


@migrations(name="002_sessions_opened_by_token")
def _m002(db: Schema) -> None:
    db.execute("ALTER TABLE login_sessions ADD COLUMN via_token INTEGER NOT NULL DEFAULT 0")


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class User:
    """A logged-in (or listed) user and what they may do."""

    name: str
    admin: bool
    roles: dict[str, str] = field(default_factory=dict)  # project -> role
    via: ClassVar[str] = "HTTP"  # users log in over the HTTP API only

    @property
    def history_name(self) -> str:
        """How the session history names this user: `http:<name>`."""
        return f"http:{self.name}"

    def role(self, project: str) -> str | None:
        return self.roles.get(project)

    def can(self, action: str, project: str) -> bool:
        """``action`` is READ, UPLOAD or MANAGE; `Unassigned` is for admins only."""
        if self.admin:
            return True
        if project == UNASSIGNED:
            return False
        role = self.roles.get(project)
        return role is not None and ROLES.index(role) >= ROLES.index(_NEEDS[action])

    def require(self, action: str, project: str) -> None:
        if not self.can(action, project):
            raise Forbidden(f"user {self.name!r} may not {_VERB[action]} in project {project!r}")

    def readable(self, projects: Iterable[str]) -> list[str]:
        return [p for p in projects if self.can(READ, p)]


_VERB = {READ: "read", UPLOAD: "upload", MANAGE: "archive, move or delete"}


@dataclass(frozen=True)
class Token:
    alias: str
    secret: str
    user: str
    expires_at: float


# ---------------------------------------------------------------- password hashing


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=64 * 2**20)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
            maxmem=64 * 2**20, dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# ---------------------------------------------------------------- the store


class Auth:
    """Users, roles, login sessions and alias tokens, stored beside the catalog."""

    def __init__(self, catalog: Catalog, *, session_idle: float = SESSION_IDLE_SECONDS,
                 token_lifetime: float = TOKEN_SECONDS) -> None:
        self.catalog = catalog
        self.session_idle = session_idle
        self.token_lifetime = token_lifetime
        self._verified: dict[str, tuple[float, str]] = {}  # hmac(name, password) -> (until, stored hash)
        self._verified_key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._dummy = ""  # a throw-away hash, made on the first unknown name
        catalog.apply_migrations(migrations)

    # ------------------------------------------------------------ users

    def add_user(self, name: str, password: str, *, admin: bool = False) -> None:
        if not _NAME_RE.match(name):
            raise InvalidInput("a user name is 1-64 characters from A-Z a-z 0-9 _ . @ -")
        if len(password) < 8:
            raise InvalidInput("a password needs at least 8 characters")
        stored = hash_password(password)

        def txn(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"user {name!r} already exists")
            conn.execute(
                "INSERT INTO users(name, password_hash, admin, created_at) VALUES (?,?,?,?)",
                (name, stored, int(admin), time.time()),
            )

        self.catalog.write(txn)
        logger.info("user %s added%s", name, " (site admin)" if admin else "")

    def set_password(self, name: str, password: str) -> None:
        """Set a new password; the user's login sessions and alias tokens end with the old one."""
        if len(password) < 8:
            raise InvalidInput("a password needs at least 8 characters")
        stored = hash_password(password)
        self._require_user(name)

        def txn(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE users SET password_hash=? WHERE name=?", (stored, name))
            conn.execute("DELETE FROM login_sessions WHERE \"user\" = ?", (name,))
            conn.execute("DELETE FROM alias_tokens WHERE \"user\" = ?", (name,))

        self.catalog.write(txn)
        logger.info("password of user %s changed: its login sessions and alias tokens are revoked", name)

    def set_role(self, name: str, project: str, role: str) -> None:
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
        self._require_user(name)
        self.catalog.write(
            lambda c: c.execute(
                "INSERT INTO user_roles(\"user\", project, role) VALUES (?,?,?)"
                " ON CONFLICT(\"user\", project) DO UPDATE SET role=excluded.role",
                (name, project, role),
            )
        )

    def remove_role(self, name: str, project: str) -> None:
        self.catalog.write(lambda c: c.execute("DELETE FROM user_roles WHERE \"user\"=? AND project=?", (name, project)))

    def remove_user(self, name: str) -> None:
        self._require_user(name)

        def txn(conn: sqlite3.Connection) -> None:
            for table in ("user_roles", "login_sessions", "alias_tokens"):
                conn.execute(f"DELETE FROM {table} WHERE \"user\" = ?", (name,))
            conn.execute("DELETE FROM users WHERE name = ?", (name,))

        self.catalog.write(txn)
        logger.info("user %s removed", name)

    def user(self, name: str) -> User:
        conn = self.catalog.reader()
        row = conn.execute("SELECT name, admin FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no user {name!r}")
        roles = dict(conn.execute("SELECT project, role FROM user_roles WHERE \"user\" = ?", (name,)).fetchall())
        return User(row[0], bool(row[1]), roles)

    def users(self) -> list[User]:
        names = [r[0] for r in self.catalog.reader().execute("SELECT name FROM users ORDER BY name").fetchall()]
        return [self.user(n) for n in names]

    def has_user(self, name: str) -> bool:
        return self.catalog.reader().execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() is not None

    def _require_user(self, name: str) -> None:
        if not self.catalog.reader().execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
            raise NotFound(f"no user {name!r}")

    # ------------------------------------------------------------ credentials

    def authenticate(self, name: str, password: str) -> User | None:
        """A user for a name + password, or an alias + secret; None when they do not match."""
        if not name or not password:
            return None
        row = self.catalog.reader().execute("SELECT password_hash FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            user = self._authenticate_token(name, password)
            if user is None:
                self._dummy = self._dummy or hash_password(secrets.token_hex(8))
                verify_password(password, self._dummy)  # same cost as a wrong password: no user probing
            return user
        stored = row[0]
        key = hmac.new(self._verified_key, f"{name}\0{password}".encode(), "sha256").hexdigest()
        now = time.monotonic()
        with self._lock:
            cached = self._verified.get(key)
        if cached is not None and cached[0] > now and cached[1] == stored:
            return self.user(name)
        if not verify_password(password, stored):
            logger.warning("failed login for user %s", escape(name))
            return None
        with self._lock:
            if len(self._verified) > 1000:
                self._verified.clear()
            self._verified[key] = (now + _VERIFIED_TTL, stored)
        return self.user(name)

    def _authenticate_token(self, alias: str, secret: str) -> User | None:
        row = self.catalog.reader().execute(
            "SELECT secret_hash, \"user\", expires_at FROM alias_tokens WHERE alias = ?", (alias,)
        ).fetchone()
        if row is None or row[2] < time.time() or not hmac.compare_digest(row[0], _sha(secret)):
            logger.warning("failed login (unknown user, or bad or expired alias token)")
            return None
        return self.user(row[1])

    # ------------------------------------------------------------ login sessions

    def open_session(self, user: User, *, via_token: bool = False) -> str:
        """A new JSESSIONID for ``user`` (32 hex digits, like Tomcat's); ``via_token`` marks a
        session opened with an alias token's credentials (it may not issue tokens either)."""
        session_id = secrets.token_hex(16).upper()
        now = time.time()

        def txn(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM login_sessions WHERE expires_at < ?", (now,))
            conn.execute(
                "INSERT INTO login_sessions(id_hash, \"user\", created_at, expires_at, via_token) VALUES (?,?,?,?,?)",
                (_sha(session_id), user.name, now, now + self.session_idle, int(via_token)),
            )

        self.catalog.write(txn)
        return session_id

    def session_user(self, session_id: str) -> User | None:
        """The user of a live session (its idle timer is renewed), or None."""
        if not session_id:
            return None
        key = _sha(session_id)
        row = self.catalog.reader().execute(
            "SELECT \"user\", expires_at FROM login_sessions WHERE id_hash = ?", (key,)
        ).fetchone()
        now = time.time()
        if row is None or row[1] < now:
            return None
        if row[1] - now < self.session_idle / 2:  # renew at most every half idle period
            self.catalog.write(
                lambda c: c.execute("UPDATE login_sessions SET expires_at=? WHERE id_hash=?", (now + self.session_idle, key))
            )
        try:
            return self.user(row[0])
        except NotFound:
            return None

    def session_via_token(self, session_id: str) -> bool:
        row = self.catalog.reader().execute(
            "SELECT via_token FROM login_sessions WHERE id_hash = ?", (_sha(session_id),)
        ).fetchone()
        return bool(row and row[0])

    def close_session(self, session_id: str) -> None:
        key = _sha(session_id)
        self.catalog.write(lambda c: c.execute("DELETE FROM login_sessions WHERE id_hash = ?", (key,)))

    # ------------------------------------------------------------ alias tokens

    def issue_token(self, user: User, lifetime: float | None = None) -> Token:
        alias = str(uuid.uuid4())
        secret = secrets.token_urlsafe(32)
        now = time.time()
        expires = now + (lifetime if lifetime is not None else self.token_lifetime)

        def txn(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM alias_tokens WHERE expires_at < ?", (now,))
            conn.execute(
                "INSERT INTO alias_tokens(alias, secret_hash, \"user\", created_at, expires_at) VALUES (?,?,?,?,?)",
                (alias, _sha(secret), user.name, now, expires),
            )

        self.catalog.write(txn)
        return Token(alias, secret, user.name, expires)

    def revoke_token(self, alias: str) -> None:
        self.catalog.write(lambda c: c.execute("DELETE FROM alias_tokens WHERE alias = ?", (alias,)))
