"""The state store on SQLite (one file under the state dir), written through one dedicated thread.

A rollback journal (journal_mode=DELETE) with synchronous=FULL: no memory-mapped WAL index, so a state dir that
turns read-only or full gives an error the agent reports (503), never a SIGBUS. Every state change commits in one
transaction with the audit record describing it (write-ahead: a traffic intent and the policy row it sets are on
disk before the push). The audit table is append-only from the agent's side; the hash chain makes any edit
detectable, and the policy row names the record that set it, so an edited row is detected too
(agent.adapters.store.state_check).

The `meta` table identifies the store: its id (a random UUID, also kept in the marker file beside it), the model
it belongs to, and the schema version. A database without it is not a state store of this agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from agent.domain.audit_chain import GENESIS_HASH, seal
from agent.domain.audit_events import wrap
from agent.domain.audit_signing import RecordSigner
from agent.domain.records import policy_from_pb, policy_to_pb, timestamp
from agent.domain.traffic import TrafficPolicy
from agent.pb.rollback_agent.v1 import audit_pb2, traffic_pb2
from agent.ports.store import StateRefusedError, StoreUnavailableError

T = TypeVar("T")
log = logging.getLogger(__name__)
SealedObserver = Callable[[audit_pb2.AuditRecord], None]

SCHEMA_VERSION = "2"
STATE_DB = "state.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS policy (
    id INTEGER PRIMARY KEY CHECK (id = 1), record BLOB NOT NULL, audit_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS policy_history (revision INTEGER PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, record BLOB NOT NULL);
"""


@contextlib.contextmanager
def _storage_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreUnavailableError(f"state store {path}: {_cause(exc, path)}") from None
    except OSError as exc:
        raise StoreUnavailableError(f"state store {path}: {exc.strerror or exc}") from None


def _cause(exc: sqlite3.Error, path: Path) -> str:
    text = str(exc)
    if "readonly" in text:
        return f"read-only ({text})"
    if "full" in text:
        return f"disk full ({text})"
    # SQLite says only "unable to open database file" when it cannot create the rollback journal beside the
    # database: name the usual cause, a state dir that cannot be written (read-only, immutable, permissions).
    if "unable to open" in text and not os.access(path.parent, os.W_OK):
        return f"the state dir {path.parent} is not writable: read-only or permission denied ({text})"
    return text


class SqliteStateStore:
    def __init__(
        self, path: Path, model: str = "", clock: Callable[[], float] = time.time, signer: RecordSigner | None = None
    ) -> None:
        self.path = path
        self.model = model
        self._clock = clock
        self.signer = signer  # signs every record this store seals (audit.signing); None: hash chain only
        # Called on the event loop with each record once it is committed (the head metric, the audit log line).
        self.sealed_observers: list[SealedObserver] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-store")
        self._conn: sqlite3.Connection | None = None
        self._store_id = ""
        self.head_seq = 0  # the newest audit record's seq, as last written or read by this process

    # -- opening ------------------------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        model: str = "",
        clock: Callable[[], float] = time.time,
        signer: RecordSigner | None = None,
    ) -> SqliteStateStore:
        """Open the store at `path`, creating an empty one if there is none (tools and tests; the agent itself
        goes through agent.adapters.store.state_check, which never creates a store silently)."""
        store = cls(path, model, clock, signer)
        await store._run(store._open_or_create)
        return store

    @classmethod
    async def open_existing(
        cls,
        path: Path,
        *,
        model: str = "",
        clock: Callable[[], float] = time.time,
        signer: RecordSigner | None = None,
    ) -> SqliteStateStore:
        """Open an existing store; StateRefusedError when the file is not a (readable) state store."""
        store = cls(path, model, clock, signer)
        try:
            await store._run(store._open_existing)
        except BaseException:
            await store.close()
            raise
        return store

    @classmethod
    async def create(
        cls,
        path: Path,
        *,
        model: str,
        establish: audit_pb2.StateEstablished,
        actor: str,
        clock: Callable[[], float] = time.time,
        signer: RecordSigner | None = None,
        observers: tuple[SealedObserver, ...] = (),
    ) -> SqliteStateStore:
        """Create a new store whose first record is `establish` (its policy becomes the policy row), all in one
        transaction. `path` must not hold a database with tables."""
        store = cls(path, model, clock, signer)
        store.sealed_observers.extend(observers)
        try:
            await store._run(store._open_or_create)
            if not establish.store_id:
                establish.store_id = store.store_id
            policy = policy_from_pb(establish.policy)
            await store.change_policy(policy, establish, actor)
        except BaseException:
            await store.close()
            raise
        return store

    def _connect(self, uri: str) -> sqlite3.Connection:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    def _open_or_create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect(f"file:{self.path}")
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(SCHEMA)
        self._conn = conn
        meta = self._meta()
        if not meta.get("store_id"):
            store_id = str(uuid.uuid4())
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                for key, value in (
                    ("store_id", store_id),
                    ("model", self.model),
                    ("schema_version", SCHEMA_VERSION),
                    ("created_at", f"{self._clock():.3f}"),
                ):
                    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
            meta = self._meta()
        self._store_id = meta["store_id"]

    def _open_existing(self) -> None:
        if not self.path.exists():
            raise StateRefusedError(f"{self.path} does not exist")
        try:
            conn = self._connect(f"file:{self.path}?mode=rw")
            self._conn = conn
            check = conn.execute("PRAGMA quick_check").fetchall()
            if [tuple(row) for row in check] != [("ok",)]:
                problems = "; ".join(str(row[0]) for row in check[:3])
                raise StateRefusedError(f"{self.path} is damaged (SQLite quick_check: {problems})")
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            missing = {"meta", "policy", "settings", "audit"} - tables
            if missing:
                what = "an empty database" if not tables else f"a database without the table(s) {sorted(missing)}"
                raise StateRefusedError(f"{self.path} is {what}, not a state store of this agent")
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("PRAGMA synchronous=FULL")
            meta = self._meta()
        except sqlite3.DatabaseError as exc:
            raise StateRefusedError(f"{self.path} is not a readable SQLite state store ({exc})") from None
        if not meta.get("store_id"):
            raise StateRefusedError(f"{self.path} has no store id: not a state store of this agent")
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise StateRefusedError(
                f"{self.path} has schema version {meta.get('schema_version')!r}; this agent reads {SCHEMA_VERSION}"
            )
        self._store_id = meta["store_id"]

    def _meta(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self._db.execute("SELECT key, value FROM meta")}

    async def meta(self) -> dict[str, str]:
        return await self._run(self._meta)

    @property
    def store_id(self) -> str:
        return self._store_id

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("state store is closed")
        return self._conn

    # -- the policy -----------------------------------------------------------------------------------------------

    async def load_policy(self) -> TrafficPolicy | None:
        row = await self.policy_row()
        return None if row is None else policy_from_pb(row[0])

    async def policy_row(self) -> tuple[traffic_pb2.TrafficPolicy, int] | None:
        """The persisted policy and the seq of the audit record that set it."""

        def read() -> tuple[traffic_pb2.TrafficPolicy, int] | None:
            row = self._db.execute("SELECT record, audit_seq FROM policy WHERE id = 1").fetchone()
            if row is None:
                return None
            return traffic_pb2.TrafficPolicy.FromString(row[0]), int(row[1])

        return await self._run(read)

    async def change_policy(self, policy: TrafficPolicy, event: Message, actor: str) -> audit_pb2.AuditRecord:
        blob = policy_to_pb(policy).SerializeToString(deterministic=True)
        record = self._stamped(event, actor)

        def write() -> audit_pb2.AuditRecord:
            with _storage_errors(self.path), self._db:
                self._db.execute("BEGIN IMMEDIATE")
                sealed = self._append_in_txn(record)
                self._db.execute(
                    "INSERT OR REPLACE INTO policy (id, record, audit_seq) VALUES (1, ?, ?)", (blob, sealed.seq)
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO policy_history (revision, record) VALUES (?, ?)", (policy.revision, blob)
                )
            self.head_seq = sealed.seq
            return sealed

        return self._observed(await self._run(write))

    async def first_policy(self) -> TrafficPolicy | None:
        """The oldest persisted policy (the one the agent started with): where the history replay begins."""

        def read() -> TrafficPolicy | None:
            row = self._db.execute("SELECT record FROM policy_history ORDER BY revision LIMIT 1").fetchone()
            return None if row is None else policy_from_pb(traffic_pb2.TrafficPolicy.FromString(row[0]))

        return await self._run(read)

    # -- settings -------------------------------------------------------------------------------------------------

    async def get_setting(self, key: str) -> str | None:
        def read() -> str | None:
            row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row[0])

        return await self._run(read)

    async def settings_with_prefix(self, prefix: str) -> dict[str, str]:
        def read() -> dict[str, str]:
            rows = self._db.execute(
                "SELECT key, value FROM settings WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
            )
            return {str(k): str(v) for k, v in rows}

        return await self._run(read)

    async def record_setting(self, key: str, value: str, event: Message, actor: str) -> audit_pb2.AuditRecord:
        record = self._stamped(event, actor)

        def write() -> audit_pb2.AuditRecord:
            with _storage_errors(self.path), self._db:
                self._db.execute("BEGIN IMMEDIATE")
                sealed = self._append_in_txn(record)
                if value:
                    self._db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))
                else:
                    self._db.execute("DELETE FROM settings WHERE key = ?", (key,))
            self.head_seq = sealed.seq
            return sealed

        return self._observed(await self._run(write))

    async def put_setting(self, key: str, value: str) -> None:
        def write() -> None:
            with _storage_errors(self.path), self._db:
                self._db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))

        await self._run(write)

    # -- the audit log --------------------------------------------------------------------------------------------

    def _stamped(self, event: Message, actor: str) -> audit_pb2.AuditRecord:
        record = event if isinstance(event, audit_pb2.AuditRecord) else wrap(event)
        record.at.CopyFrom(timestamp(self._clock()))
        record.model = self.model
        record.actor = actor
        return record

    def _append_in_txn(self, record: audit_pb2.AuditRecord) -> audit_pb2.AuditRecord:
        row = self._db.execute("SELECT seq, record FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            seq, prev = 1, GENESIS_HASH
        else:
            seq, prev = int(row[0]) + 1, _audit_record(int(row[0]), row[1]).hash
        sealed = seal(record, seq, prev, self.signer)
        self._db.execute(
            "INSERT INTO audit (seq, record) VALUES (?, ?)", (seq, sealed.SerializeToString(deterministic=True))
        )
        return sealed

    async def append(self, event: Message, actor: str) -> audit_pb2.AuditRecord:
        record = self._stamped(event, actor)

        def write() -> audit_pb2.AuditRecord:
            with _storage_errors(self.path), self._db:
                self._db.execute("BEGIN IMMEDIATE")
                sealed = self._append_in_txn(record)
            self.head_seq = sealed.seq
            return sealed

        return self._observed(await self._run(write))

    def _observed(self, sealed: audit_pb2.AuditRecord) -> audit_pb2.AuditRecord:
        for observer in self.sealed_observers:
            try:
                observer(sealed)
            except Exception:  # an observer (metric, log line) must never fail a committed write
                log.exception("audit record observer failed")
        return sealed

    async def records(self, since_seq: int = 0, limit: int | None = None) -> list[audit_pb2.AuditRecord]:
        def read() -> list[audit_pb2.AuditRecord]:
            rows = self._db.execute(
                "SELECT seq, record FROM audit WHERE seq > ? ORDER BY seq LIMIT ?",
                (since_seq, -1 if limit is None else limit),
            ).fetchall()
            return [_audit_record(int(seq), blob) for seq, blob in rows]

        return await self._run(read)

    async def record_at(self, seq: int) -> audit_pb2.AuditRecord | None:
        def read() -> audit_pb2.AuditRecord | None:
            row = self._db.execute("SELECT seq, record FROM audit WHERE seq = ?", (seq,)).fetchone()
            return None if row is None else _audit_record(int(row[0]), row[1])

        return await self._run(read)

    async def last_records(self, count: int) -> list[audit_pb2.AuditRecord]:
        def read() -> list[audit_pb2.AuditRecord]:
            rows = self._db.execute("SELECT seq, record FROM audit ORDER BY seq DESC LIMIT ?", (count,)).fetchall()
            return [_audit_record(int(seq), blob) for seq, blob in reversed(rows)]

        return await self._run(read)

    async def head(self) -> tuple[int, bytes]:
        def read() -> tuple[int, bytes]:
            row = self._db.execute("SELECT seq, record FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            if row is None:
                return 0, GENESIS_HASH
            self.head_seq = int(row[0])
            return int(row[0]), _audit_record(int(row[0]), row[1]).hash

        return await self._run(read)

    # Kept for callers written against the first version of the port.
    async def append_audit(self, record: audit_pb2.AuditRecord) -> audit_pb2.AuditRecord:
        def write() -> audit_pb2.AuditRecord:
            with _storage_errors(self.path), self._db:
                self._db.execute("BEGIN IMMEDIATE")
                return self._append_in_txn(record)

        return self._observed(await self._run(write))

    async def audit_records(self, since_seq: int = 0, limit: int | None = None) -> list[audit_pb2.AuditRecord]:
        return await self.records(since_seq, limit)

    async def backup(self, destination: Path) -> None:
        """A consistent copy of the whole store (SQLite's online backup), written atomically."""

        def copy() -> None:
            partial = destination.with_name(destination.name + ".partial")
            partial.unlink(missing_ok=True)
            target = sqlite3.connect(partial)
            try:
                self._db.backup(target)
            finally:
                target.close()
            partial.replace(destination)

        await self._run(copy)

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        with contextlib.suppress(RuntimeError):
            await self._run(close)
        self._executor.shutdown(wait=True)


def _audit_record(seq: int, blob: bytes) -> audit_pb2.AuditRecord:
    try:
        return audit_pb2.AuditRecord.FromString(blob)
    except DecodeError:
        # A row that no longer parses (corrupted or tampered with) stays in place as an empty record with its seq:
        # its hash cannot match, so the chain check names it instead of the whole trail becoming unreadable.
        return audit_pb2.AuditRecord(seq=seq)


def read_audit_records(path: Path) -> list[audit_pb2.AuditRecord]:
    """Every audit record of the store at `path`, read-only (for tools, benches and tests: no raw SQL elsewhere)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as conn:
        rows = conn.execute("SELECT seq, record FROM audit ORDER BY seq").fetchall()
    return [_audit_record(int(seq), blob) for seq, blob in rows]
