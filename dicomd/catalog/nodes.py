"""Nodes and their claims: the SQL behind dicomd.cluster.

A node is one `dicomd serve` process (or a CLI command while it archives, moves or deletes) on
this catalog. It heartbeats its row; a node whose heartbeat is older than the claim expiry, that
stopped, or that the caller knows is dead, is *expired*. A claim (kind, item) names one unit of
cluster-wide work (a session's build, archive, move, delete or recovery; the start-up scan of the
whole data directory) and the node doing it. Taking a claim is one conditional upsert: it succeeds
for one node only, when the claim is free, already this node's, or held by an expired node.

Times are float epoch seconds passed in by the caller (never the database clock), so the same SQL
runs on SQLite and PostgreSQL and tests can move time.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Sequence

from dicomd.catalog.engine import Engine, marks
from dicomd.catalog.rows import dicts


@dataclass(frozen=True)
class NodeRow:
    id: str
    host: str
    pid: int
    process: str
    role: str
    dicom_ports: str
    http_port: int | None
    version: str
    started_at: float
    heartbeat_at: float
    stopped_at: float | None


@dataclass(frozen=True)
class ClaimRow:
    kind: str
    item: str
    node: str
    claimed_at: float


def _live_clause(dead: Sequence[str]) -> tuple[str, tuple[Any, ...]]:
    """SQL true when ``claims.node`` is expired: not a live node row, or one of ``dead``."""
    sql = "claims.node NOT IN (SELECT id FROM nodes WHERE stopped_at IS NULL AND heartbeat_at >= ?)"
    if dead:
        sql = f"({sql} OR claims.node IN ({marks(dead)}))"
    return sql, tuple(dead)


def take_claim(conn: sqlite3.Connection, kind: str, item: str, node: str, now: float, live_since: float,
               dead: Sequence[str] = ()) -> str:
    """Claim (kind, item) for ``node`` inside the caller's transaction; returns the holder after it
    (``node`` when taken). Race-free: on SQLite the writer's BEGIN IMMEDIATE serializes nodes; on
    PostgreSQL a concurrent upsert of the same key waits for the first and re-checks the condition."""
    expired, args = _live_clause(dead)
    conn.execute(
        "INSERT INTO claims(kind, item, node, claimed_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT(kind, item) DO UPDATE SET node = excluded.node, claimed_at = excluded.claimed_at"
        f" WHERE claims.node = excluded.node OR {expired}",
        (kind, item, node, now, live_since, *args),
    )
    row = conn.execute("SELECT node FROM claims WHERE kind = ? AND item = ?", (kind, item)).fetchone()
    return str(row[0]) if row else ""


def holds(conn: sqlite3.Connection, kind: str, item: str, node: str) -> bool:
    """Whether ``node`` still holds the claim (a fence checked inside an irreversible transaction)."""
    row = conn.execute("SELECT node FROM claims WHERE kind = ? AND item = ?", (kind, item)).fetchone()
    return row is not None and row[0] == node


class Nodes(Engine):
    # ------------------------------------------------------------ the node rows

    def register_node(self, row: NodeRow) -> None:
        def txn(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO nodes(id, host, pid, process, role, dicom_ports, http_port, version, started_at,"
                " heartbeat_at, stopped_at) VALUES (?,?,?,?,?,?,?,?,?,?,NULL)"
                " ON CONFLICT(id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, stopped_at = NULL,"
                " dicom_ports = excluded.dicom_ports, http_port = excluded.http_port",
                (row.id, row.host, row.pid, row.process, row.role, row.dicom_ports, row.http_port, row.version,
                 row.started_at, row.heartbeat_at),
            )

        self.write(txn, durable=False)

    def heartbeat(self, node: str, now: float) -> bool:
        """Refresh the node's heartbeat; False when its row is gone or it was marked stopped."""
        def txn(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("UPDATE nodes SET heartbeat_at = ? WHERE id = ? AND stopped_at IS NULL", (now, node))
            return bool(cur.rowcount)

        return self.write(txn, durable=False)

    def stop_node(self, node: str, now: float) -> None:
        """A clean stop: the node's claims go and its row says it stopped."""
        def txn(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM claims WHERE node = ?", (node,))
            conn.execute("UPDATE nodes SET stopped_at = ? WHERE id = ?", (now, node))

        self.write(txn)

    def forget_nodes(self, before: float) -> int:
        """Drop the rows of nodes silent since ``before`` that hold no claim (for `dicomd status`)."""
        def txn(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "DELETE FROM nodes WHERE heartbeat_at < ? AND id NOT IN (SELECT node FROM claims)", (before,))
            return int(cur.rowcount or 0)

        return self.write(txn, durable=False)

    def nodes(self) -> list[NodeRow]:
        cur = self.reader().execute("SELECT * FROM nodes ORDER BY started_at, id")
        return [NodeRow(**r) for r in dicts(cur)]

    # ------------------------------------------------------------ claims

    def claim(self, kind: str, item: str, node: str, *, now: float, live_since: float,
              dead: Sequence[str] = ()) -> str:
        """Take (kind, item) for ``node`` if free or expired; returns who holds it now."""
        return self.write(lambda conn: take_claim(conn, kind, item, node, now, live_since, dead))

    def release(self, kind: str, item: str, node: str) -> None:
        self.write(lambda conn: conn.execute(
            "DELETE FROM claims WHERE kind = ? AND item = ? AND node = ?", (kind, item, node)))

    def claims(self, node: str | None = None) -> list[ClaimRow]:
        sql, args = "SELECT kind, item, node, claimed_at FROM claims", ()
        if node is not None:
            sql, args = sql + " WHERE node = ?", (node,)
        cur = self.reader().execute(sql + " ORDER BY claimed_at, kind, item", args)
        return [ClaimRow(**r) for r in dicts(cur)]

    def holder(self, kind: str, item: str) -> str:
        row = self.reader().execute("SELECT node FROM claims WHERE kind = ? AND item = ?", (kind, item)).fetchone()
        return str(row[0]) if row else ""
