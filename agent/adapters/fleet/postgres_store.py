"""The fleet audit store on PostgreSQL: every agent's audit records, one row per (store_id, seq).

The driver is psycopg 3 (the `fleet` extra), imported only when a fleet store is configured or queried. Chosen
over asyncpg because it ships its own type annotations (the agent is type-checked strictly), gives the shipper an
asyncio connection and the offline CLI a plain blocking one from the same library, and takes libpq's connection
strings as they are (sslmode, passfile, service files: what a DBA hands out).

A row keeps the record as the agent sealed it (`record`, the deterministic protobuf serialization: hash, prev_hash
and any signature come along) beside columns to query by (pod, model, at, kind, actor, hash, prev_hash). Shipping is
idempotent: INSERT ... ON CONFLICT DO NOTHING, and a row already there must hold the same record. A different one is
a conflict (two stores claiming one id, a rewritten local trail): it is reported, never overwritten.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError

from agent.config import FleetSection
from agent.domain.audit_chain import GENESIS_HASH
from agent.pb.rollback_agent.v1 import audit_pb2

if TYPE_CHECKING:
    import psycopg

CONNECT_TIMEOUT_S = 5
# Serializes schema creation: two agents starting at once must not race on CREATE TABLE IF NOT EXISTS.
_SCHEMA_LOCK = 0x726F6C6C  # "roll"

SCHEMA = """
CREATE TABLE IF NOT EXISTS stores (
    store_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    pod TEXT NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS audit_records (
    store_id TEXT NOT NULL REFERENCES stores (store_id),
    seq BIGINT NOT NULL CHECK (seq > 0),
    pod TEXT NOT NULL,
    model TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    hash BYTEA NOT NULL,
    prev_hash BYTEA NOT NULL,
    record BYTEA NOT NULL,
    shipped_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (store_id, seq)
);
CREATE INDEX IF NOT EXISTS audit_records_model_at ON audit_records (model, at);
"""

_INSERT = """
INSERT INTO audit_records (store_id, seq, pod, model, at, kind, actor, hash, prev_hash, record)
SELECT %(store_id)s, r.seq, %(pod)s, r.model, r.at, r.kind, r.actor, r.hash, r.prev_hash, r.record
FROM unnest(%(seq)s::bigint[], %(model)s::text[], %(at)s::timestamptz[], %(kind)s::text[], %(actor)s::text[],
            %(hash)s::bytea[], %(prev_hash)s::bytea[], %(record)s::bytea[])
     AS r (seq, model, at, kind, actor, hash, prev_hash, record)
ON CONFLICT (store_id, seq) DO NOTHING
RETURNING seq
"""

_TOUCH_STORE = """
INSERT INTO stores (store_id, model, pod) VALUES (%s, %s, %s)
ON CONFLICT (store_id) DO UPDATE SET pod = EXCLUDED.pod, model = EXCLUDED.model, last_seen = now()
"""


class FleetError(Exception):
    """The fleet store cannot be used (driver missing, DSN unreadable, database unreachable); the message says why."""


class FleetConflictError(FleetError):
    """The fleet store holds a record of this store that differs from the local one: never overwritten."""


def driver() -> ModuleType:
    """psycopg, imported on first use: an agent without a fleet store does not need it."""
    try:
        return importlib.import_module("psycopg")
    except ImportError:
        raise FleetError(
            "the fleet audit store needs the PostgreSQL driver psycopg 3: pip install 'model-rollback-agent[fleet]'"
        ) from None


def read_dsn(fleet: FleetSection, environ: dict[str, str] | None = None) -> str:
    """The DSN from the Secret file or the environment variable; FleetError naming which one is unusable."""
    import os

    if fleet.dsn_file is not None:
        try:
            dsn = Path(fleet.dsn_file).read_text().strip()
        except OSError as exc:
            raise FleetError(f"audit.fleet.dsn_file {fleet.dsn_file}: cannot read: {exc.strerror}") from None
        if not dsn:
            raise FleetError(f"audit.fleet.dsn_file {fleet.dsn_file} is empty")
        return dsn
    name = fleet.dsn_env or ""
    dsn = (environ if environ is not None else dict(os.environ)).get(name, "").strip()
    if not dsn:
        raise FleetError(f"audit.fleet.dsn_env: the environment variable {name} is not set")
    return dsn


@dataclass(frozen=True, slots=True)
class StoreIdentity:
    store_id: str
    model: str
    pod: str


def _at(record: audit_pb2.AuditRecord) -> datetime:
    return datetime.fromtimestamp(record.at.ToNanoseconds() / 1e9, UTC)


def _columns(records: Sequence[audit_pb2.AuditRecord]) -> dict[str, list[Any]]:
    return {
        "seq": [r.seq for r in records],
        "model": [r.model for r in records],
        "at": [_at(r) for r in records],
        "kind": [r.WhichOneof("event") or "" for r in records],
        "actor": [r.actor for r in records],
        "hash": [r.hash for r in records],
        "prev_hash": [r.prev_hash for r in records],
        "record": [r.SerializeToString(deterministic=True) for r in records],
    }


class FleetWriter:
    """The shipper's side: one asyncio connection, opened on demand and dropped after any error."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            pg = driver()
            conn = await pg.AsyncConnection.connect(self._dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                await conn.execute(SCHEMA)
            self._conn = conn
        return self._conn

    async def shipped_head(self, identity: StoreIdentity) -> tuple[int, bytes]:
        """(seq, hash) of this store's newest record in the fleet store; (0, genesis) when it has none. Also
        registers the store (first seen / last seen)."""
        conn = await self._connection()
        async with conn.transaction():
            await conn.execute(_TOUCH_STORE, (identity.store_id, identity.model, identity.pod))
            cur = await conn.execute(
                "SELECT seq, hash FROM audit_records WHERE store_id = %s ORDER BY seq DESC LIMIT 1",
                (identity.store_id,),
            )
            row = await cur.fetchone()
        return (0, GENESIS_HASH) if row is None else (int(row[0]), bytes(row[1]))

    async def ship(self, identity: StoreIdentity, records: Sequence[audit_pb2.AuditRecord]) -> int:
        """Insert `records` (one transaction); returns how many were new. A record already there with another
        hash raises FleetConflictError and nothing of the batch is written."""
        if not records:
            return 0
        conn = await self._connection()
        async with conn.transaction():
            await conn.execute(_TOUCH_STORE, (identity.store_id, identity.model, identity.pod))
            cur = await conn.execute(_INSERT, {"store_id": identity.store_id, "pod": identity.pod, **_columns(records)})
            inserted = {int(row[0]) for row in await cur.fetchall()}
            already = {r.seq: r for r in records if r.seq not in inserted}
            if already:
                cur = await conn.execute(
                    "SELECT seq, hash, record FROM audit_records WHERE store_id = %s AND seq = ANY(%s)",
                    (identity.store_id, list(already)),
                )
                held = {int(seq): (bytes(h), bytes(blob)) for seq, h, blob in await cur.fetchall()}
                for seq, record in already.items():
                    hash_, blob = held.get(seq, (b"", b""))
                    if blob != record.SerializeToString(deterministic=True):
                        raise FleetConflictError(
                            f"store {identity.store_id}: the fleet store holds a different record {seq} "
                            f"(hash {hash_.hex()[:16]}, local {record.hash.hex()[:16]}): two stores with one id, "
                            f"or a rewritten local trail; not overwritten"
                        )
        return len(inserted)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


@dataclass(frozen=True, slots=True)
class FleetStoreRow:
    store_id: str
    model: str
    pod: str
    first_seen: datetime
    last_seen: datetime
    records: int
    head_seq: int


@dataclass(frozen=True, slots=True)
class FleetChain:
    store: FleetStoreRow
    records: list[audit_pb2.AuditRecord]
    column_problems: list[str]  # a queryable column that disagrees with the record it was shipped with


class FleetReader:
    """The offline CLI's side: blocking reads."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    @classmethod
    @contextlib.contextmanager
    def open(cls, dsn: str) -> Iterator[FleetReader]:
        pg = driver()
        try:
            conn = pg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        except pg.Error as exc:
            raise FleetError(f"cannot connect to the fleet store: {str(exc).strip()}") from None
        try:
            tables = {
                row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
            }
            if not {"stores", "audit_records"} <= tables:
                raise FleetError("the database is not a fleet audit store (no stores / audit_records tables)")
            yield cls(conn)
        finally:
            conn.close()

    def stores(self, model: str | None = None) -> list[FleetStoreRow]:
        rows = self._conn.execute(
            """
            SELECT s.store_id, s.model, s.pod, s.first_seen, s.last_seen, count(a.seq), coalesce(max(a.seq), 0)
            FROM stores s LEFT JOIN audit_records a ON a.store_id = s.store_id
            WHERE %(model)s::text IS NULL OR s.model = %(model)s
            GROUP BY s.store_id ORDER BY s.model, s.pod, s.first_seen
            """,
            {"model": model},
        ).fetchall()
        return [FleetStoreRow(str(r[0]), str(r[1]), str(r[2]), r[3], r[4], int(r[5]), int(r[6])) for r in rows]

    def chain(self, store: FleetStoreRow) -> FleetChain:
        rows = self._conn.execute(
            "SELECT seq, hash, prev_hash, record FROM audit_records WHERE store_id = %s ORDER BY seq",
            (store.store_id,),
        ).fetchall()
        records: list[audit_pb2.AuditRecord] = []
        problems: list[str] = []
        for seq, hash_, prev_hash, blob in rows:
            try:
                record = audit_pb2.AuditRecord.FromString(bytes(blob))
            except DecodeError:
                record = audit_pb2.AuditRecord(seq=int(seq))
            if record.seq != seq or record.hash != bytes(hash_) or record.prev_hash != bytes(prev_hash):
                problems.append(f"record {seq}: the row's seq/hash/prev_hash columns differ from its record")
            records.append(record)
        return FleetChain(store, records, problems)

    def close(self) -> None:
        self._conn.close()
