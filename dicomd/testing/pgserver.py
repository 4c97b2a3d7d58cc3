"""A real, throwaway PostgreSQL server, for the tests (tests/pgserver.py) and the benchmark.

`start_server()` finds Debian's server binaries under /usr/lib/postgresql/*/bin
(apt-get installs the `postgresql` package when they are missing and we are root), makes a
cluster in a temp folder owned by a non-root user (`postgres`, else a `dicomd-test` system user;
initdb and pg_ctl run through `runuser`), listens on a free loopback port with password auth,
and `stop_server()` stops it and removes its folder. `PgServer.new_database()` makes a fresh
database from a template that already holds the catalog's migrations (CREATE DATABASE ... TEMPLATE
is fast).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

USER, PASSWORD = "dicomd", "test-secret-pw"
TEMPLATE = "dicomd_template"
_counter = itertools.count(1)


@dataclass
class PgServer:
    port: int
    root: Path
    user: str | None
    bindir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def new_database(self, template: str = TEMPLATE) -> str:
        name = f"t{os.getpid()}_{next(_counter)}"
        self.admin(f"CREATE DATABASE {name} TEMPLATE {template}")
        return self.url(name)


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _install() -> None:
    if os.geteuid() != 0:
        raise RuntimeError("PostgreSQL is not installed and we are not root (apt-get install postgresql)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        subprocess.run(install, env=env, capture_output=True, check=True)


def _os_user() -> str | None:
    """The user the server runs as: None when we are not root (ourselves), else a system user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "dicomd-test"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "dicomd-test"],
                   check=True, capture_output=True)
    return "dicomd-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(user: str | None, *cmd: str) -> None:
    full = (["runuser", "-u", user, "--"] if user else []) + list(cmd)
    done = subprocess.run(full, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {(done.stderr or done.stdout).strip()[-800:]}")


def start_server(*, fsync: bool = False, shared_buffers: str = "32MB") -> PgServer:
    """A new cluster, started. ``fsync=False`` (the tests) trades crash safety of the test server's
    files for speed; the benchmark runs with fsync on, as a site would."""
    bindir = _binaries()
    if bindir is None:
        _install()
        bindir = _binaries()
    if bindir is None:
        raise RuntimeError("no initdb under /usr/lib/postgresql/*/bin")
    user = _os_user()
    # not tempfile's default folder: a daemon under test points it into its data dir, which the
    # server's user cannot enter
    root = Path(tempfile.mkdtemp(prefix="dicomd-pg-", dir=os.environ.get("TMPDIR") or "/tmp"))
    os.chmod(root, 0o755)
    (root / "pw").write_text(PASSWORD + "\n")
    (root / "sock").mkdir()
    if user:
        shutil.chown(root, user)
        for child in root.iterdir():
            shutil.chown(child, user)
    _run(user, str(bindir / "initdb"), "-D", str(root / "data"), "-U", USER, "--pwfile", str(root / "pw"),
         "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
    port = _free_port()
    durability = "" if fsync else " -c fsync=off -c full_page_writes=off"
    options = (f"-p {port} -k {root / 'sock'} -c listen_addresses=127.0.0.1{durability}"
               f" -c max_connections=200 -c shared_buffers={shared_buffers}")
    _run(user, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "log"), "-o", options,
         "-w", "-t", "60", "start")
    server = PgServer(port, root, user, bindir)
    try:
        server.admin(f"CREATE DATABASE {TEMPLATE}")
        from dicomd.catalog import Catalog
        from dicomd.dburl import parse

        Catalog(parse(server.url(TEMPLATE), root)).close()  # the template holds the catalog's migrations
    except BaseException:
        stop_server(server)
        raise
    return server


def stop_server(server: PgServer) -> None:
    try:
        _run(server.user, str(server.bindir / "pg_ctl"), "-D", str(server.root / "data"), "-m", "immediate", "stop")
    finally:
        shutil.rmtree(server.root, ignore_errors=True)


