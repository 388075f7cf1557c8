"""The state store on SQLite (one file under the state dir), written through one dedicated thread.

WAL with synchronous=FULL: a policy is on disk before the agent pushes it, so a crash mid-push restarts on the
intended policy. The audit table is append-only from the agent's side; the chain makes any edit detectable.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from google.protobuf.message import DecodeError

from agent.domain.audit_chain import GENESIS_HASH, seal
from agent.domain.records import policy_from_pb, policy_to_pb
from agent.domain.traffic import TrafficPolicy
from agent.pb.rollback_agent.v1 import audit_pb2, traffic_pb2

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS policy (id INTEGER PRIMARY KEY CHECK (id = 1), record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS policy_history (revision INTEGER PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, record BLOB NOT NULL);
"""


class SqliteStateStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-store")
        self._conn: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: Path) -> SqliteStateStore:
        store = cls(path)
        await store._run(store._open)
        return store

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(SCHEMA)
        self._conn = conn

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("state store is closed")
        return self._conn

    async def load_policy(self) -> TrafficPolicy | None:
        def read() -> TrafficPolicy | None:
            row = self._db.execute("SELECT record FROM policy WHERE id = 1").fetchone()
            if row is None:
                return None
            return policy_from_pb(traffic_pb2.TrafficPolicy.FromString(row[0]))

        return await self._run(read)

    async def save_policy(self, policy: TrafficPolicy) -> None:
        blob = policy_to_pb(policy).SerializeToString(deterministic=True)

        def write() -> None:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT OR REPLACE INTO policy (id, record) VALUES (1, ?)", (blob,))
                self._db.execute(
                    "INSERT OR REPLACE INTO policy_history (revision, record) VALUES (?, ?)", (policy.revision, blob)
                )

        await self._run(write)

    async def first_policy(self) -> TrafficPolicy | None:
        """The oldest persisted policy (the one the agent started with): where the history replay begins."""

        def read() -> TrafficPolicy | None:
            row = self._db.execute("SELECT record FROM policy_history ORDER BY revision LIMIT 1").fetchone()
            return None if row is None else policy_from_pb(traffic_pb2.TrafficPolicy.FromString(row[0]))

        return await self._run(read)

    async def get_setting(self, key: str) -> str | None:
        def read() -> str | None:
            row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row[0])

        return await self._run(read)

    async def set_setting(self, key: str, value: str) -> None:
        def write() -> None:
            self._db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))

        await self._run(write)

    async def append_audit(self, record: audit_pb2.AuditRecord) -> audit_pb2.AuditRecord:
        def write() -> audit_pb2.AuditRecord:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute("SELECT seq, record FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                if row is None:
                    seq, prev = 1, GENESIS_HASH
                else:
                    seq, prev = int(row[0]) + 1, audit_pb2.AuditRecord.FromString(row[1]).hash
                sealed = seal(record, seq, prev)
                self._db.execute(
                    "INSERT INTO audit (seq, record) VALUES (?, ?)", (seq, sealed.SerializeToString(deterministic=True))
                )
                return sealed

        return await self._run(write)

    async def audit_records(self, since_seq: int = 0, limit: int | None = None) -> list[audit_pb2.AuditRecord]:
        def read() -> list[audit_pb2.AuditRecord]:
            rows = self._db.execute(
                "SELECT seq, record FROM audit WHERE seq > ? ORDER BY seq LIMIT ?",
                (since_seq, -1 if limit is None else limit),
            ).fetchall()
            return [_audit_record(int(seq), blob) for seq, blob in rows]

        return await self._run(read)

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await self._run(close)
        self._executor.shutdown(wait=True)


def _audit_record(seq: int, blob: bytes) -> audit_pb2.AuditRecord:
    try:
        return audit_pb2.AuditRecord.FromString(blob)
    except DecodeError:
        # A row that no longer parses (corrupted or tampered with) stays in place as an empty record with its seq:
        # its hash cannot match, so the chain check names it instead of the whole trail becoming unreadable.
        return audit_pb2.AuditRecord(seq=seq)
