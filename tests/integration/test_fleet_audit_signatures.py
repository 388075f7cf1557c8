"""`audit verify --fleet-dsn` and `report --fleet-dsn` check each pod's signatures against a real PostgreSQL:
signed trails shipped by two pods with their own keys, and a row re-sealed without the key in the fleet store
(what a database administrator with UPDATE rights could do) caught only by the key."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import psycopg

from agent.adapters.fleet.postgres_store import FleetWriter, StoreIdentity
from agent.adapters.store.sqlite_store import SqliteStateStore
from agent.domain.audit_chain import seal
from agent.domain.audit_signing import HmacKey
from agent.pb.rollback_agent.v1 import audit_pb2
from harness.postgres import PostgresServer

from .test_fleet_audit_store import MODEL, cli

SECRETS = {"pod-a": b"a" * 32, "pod-b": b"b" * 32}
CONFIG = """
model: {name: credit}
versions:
  - {tag: v1, endpoint: "127.0.0.1:8001"}
stable: v1
state_dir: ./state
audit: {signing: {mode: hmac, key_file: pod-a.key, key_id: pod-a}}
"""


def ship_signed_pod(directory: Path, dsn: str, pod: str, n: int = 6) -> str:
    """A pod's store signed with its own key, every record shipped to the fleet store; returns its store id."""
    directory.mkdir()
    return asyncio.run(_ship(directory / "state.db", dsn, pod, n))


async def _ship(db: Path, dsn: str, pod: str, n: int) -> str:
    store = await SqliteStateStore.open(db, model=MODEL, signer=HmacKey.from_secret(SECRETS[pod], pod))
    writer = FleetWriter(dsn)
    try:
        for i in range(n):
            await store.append(audit_pb2.AutomationToggled(paused=bool(i % 2), reason=f"r{i}"), f"operator:{pod}")
        records = await store.records()
        assert await writer.ship(StoreIdentity(store.store_id, MODEL, pod), records) == n
        return store.store_id
    finally:
        await writer.close()
        await store.close()


def reseal_rows_without_the_key(dsn: str, store_id: str, from_seq: int) -> None:
    """Edit a row and re-seal it and every row after it, unsigned: each hash, link and column consistent again."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT seq, record FROM audit_records WHERE store_id = %s ORDER BY seq", (store_id,)
        ).fetchall()
        records = [audit_pb2.AuditRecord.FromString(bytes(blob)) for _, blob in rows]
        prev = records[from_seq - 2].hash
        for record in records[from_seq - 1 :]:
            if record.seq == from_seq:
                record.actor = "operator:mallory"
            sealed = seal(record, record.seq, prev)
            prev = sealed.hash
            conn.execute(
                "UPDATE audit_records SET record = %s, hash = %s, prev_hash = %s, actor = %s "
                "WHERE store_id = %s AND seq = %s",
                (
                    sealed.SerializeToString(deterministic=True),
                    sealed.hash,
                    sealed.prev_hash,
                    sealed.actor,
                    store_id,
                    sealed.seq,
                ),
            )


def key_files(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for pod, secret in SECRETS.items():
        paths[pod] = tmp_path / f"{pod}.key"
        paths[pod].write_bytes(secret)
    return paths


def test_fleet_verify_checks_each_pods_signatures_and_catches_a_row_resealed_without_the_key(
    tmp_path: Path, postgres_factory: Callable[..., PostgresServer]
):
    pg = postgres_factory()
    keys = key_files(tmp_path)
    a = ship_signed_pod(tmp_path / "a", pg.dsn, "pod-a")
    ship_signed_pod(tmp_path / "b", pg.dsn, "pod-b")
    both = ("--key-file", f"pod-a={keys['pod-a']}", "--key-file", f"pod-b={keys['pod-b']}")

    code, out, err = cli("audit", "verify", "--fleet-dsn", pg.dsn, *both)
    assert code == 0, err
    assert "intact pod pod-a" in out and "signed by 'pod-a'; signatures valid" in out
    assert "intact pod pod-b" in out and "signed by 'pod-b'; signatures valid" in out
    assert "records 1-6: signed by key 'pod-b' (hmac-sha256)" in out
    assert "fleet audit intact: 2 store chain(s), 12 records, signatures valid (pod-a, pod-b)" in out

    # No key: who signed is listed, not verified.
    code, out, _ = cli("audit", "verify", "--fleet-dsn", pg.dsn)
    assert code == 0 and out.count("signatures NOT checked (no key given)") == 4  # per pod: summary and run

    # One key for two pods: the other pod's records are signed by a key id nobody gave.
    code, out, err = cli("audit", "verify", "--fleet-dsn", pg.dsn, "--key-file", f"pod-a={keys['pod-a']}")
    assert code == 1
    assert "intact pod pod-a" in out and "BROKEN pod pod-b" in err
    assert "record 1: signed by unknown key id 'pod-b'" in err

    # The config's key is used when --config is given and no --key-file (as the local verify does).
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG)
    code, out, err = cli("audit", "verify", "--fleet-dsn", pg.dsn, "--config", str(config))
    assert code == 1 and "intact pod pod-a" in out and "BROKEN pod pod-b" in err

    reseal_rows_without_the_key(pg.dsn, a, from_seq=4)
    # Without the key, the re-sealed rows form a consistent chain: the documented limit of the hash chain.
    code, out, err = cli("audit", "verify", "--fleet-dsn", pg.dsn)
    assert code == 0, err
    assert "records 4-6: unsigned" in out
    code, out, err = cli("audit", "verify", "--fleet-dsn", pg.dsn, *both)
    assert code == 1
    assert "BROKEN pod pod-a" in err and "signatures FAILED: 3 problem(s)" in err
    assert "record 4: unsigned, after signed records (re-sealed without the key" in err
    assert "intact pod pod-b" in out  # the other pod still verifies
    assert "fleet audit BROKEN: 1 of 2 store chain(s)" in err

    # The fleet report states each pod's signature status with the same keys.
    code, out, err = cli("report", "--fleet-dsn", pg.dsn, "--model", MODEL, "--format", "json", *both)
    assert code == 0, err
    chains = {s["pod"]: s["report"]["audit_chain"] for s in json.loads(out)["stores"]}
    assert (chains["pod-a"]["intact"], chains["pod-a"]["signatures"]["status"]) == (False, "failed")
    assert [p["seq"] for p in chains["pod-a"]["signatures"]["problems"]] == [4, 5, 6]
    assert (chains["pod-b"]["intact"], chains["pod-b"]["signatures"]["status"]) == (True, "verified")


def test_fleet_verify_refuses_per_trail_flags_and_bad_keys_clearly(
    tmp_path: Path, postgres_factory: Callable[..., PostgresServer]
):
    pg = postgres_factory()
    code, _, err = cli("audit", "verify", "--fleet-dsn", pg.dsn, "--anchor", "3:" + "ab" * 16)
    assert code == 2 and "--anchor and --min-seq check one pod's trail" in err
    code, _, err = cli("audit", "verify", "--fleet-dsn", pg.dsn, "--key-file", str(tmp_path / "missing.key"))
    assert code == 2 and f"{tmp_path / 'missing.key'}: cannot read the signing key" in err
