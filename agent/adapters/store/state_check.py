"""Opening the state store so that lost or foreign state is a loud refusal, never a silent fresh start.

The state dir holds the SQLite store (state.db) and a marker file (store.json) naming the store's id, its model
and a checkpoint of its audit chain (sequence and hash of a record). At start:

* a store that exists is checked: SQLite's quick_check, its identity (model, and the marker's store id), its
  audit chain from the marker's checkpoint (a chain shorter than the checkpoint, or a different record there, was
  truncated or rewritten), and the policy row against the audit record that set it (an edited row is refused);
* with no store (missing, empty, not a database of ours), it is a first start only when nothing says the agent ran
  here before: no marker, no forensic archive, and the local Envoy serves no route of this agent (Envoy keeps the
  last config it got from the agent while the agent is away, so it remembers a previous run even when the whole
  state dir is gone). An unreachable Envoy admin is noted in the first record, not taken as evidence either way.

Anything else raises StateRefusedError naming what was found and the recovery commands, which are explicit and
audited: `rollback-agent state init` (a new store from the config or from what Envoy serves now; the old files are
moved aside, never deleted) and `rollback-agent state restore FILE` (a verified backup).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agent.adapters.envoy_admin import EnvoyServing
from agent.adapters.store.sqlite_store import STATE_DB, SealedObserver, SqliteStateStore
from agent.domain.audit_chain import GENESIS_HASH, verify_chain
from agent.domain.audit_events import policy_carried_by
from agent.domain.audit_signing import RecordSigner
from agent.domain.records import policy_to_pb
from agent.domain.traffic import TrafficPolicy
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.store import StateRefusedError

log = logging.getLogger(__name__)

MARKER = "store.json"
RECOVERY = (
    "recover explicitly: `rollback-agent state restore BACKUP --config CONFIG --reason TEXT` from a backup, or "
    "`rollback-agent state init --from-envoy|--from-config --config CONFIG --reason TEXT` to start a new store "
    "(the old files are kept aside); see docs/state.md"
)


@dataclass(frozen=True, slots=True)
class Marker:
    store_id: str
    model: str
    head_seq: int = 0
    head_hash: str = ""  # hex

    def to_json(self) -> str:
        return json.dumps(
            {"store_id": self.store_id, "model": self.model, "head_seq": self.head_seq, "head_hash": self.head_hash}
        )


def read_marker(state_dir: Path) -> Marker | None:
    path = state_dir / MARKER
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateRefusedError(f"{path}: cannot read the store marker: {exc.strerror}; {RECOVERY}") from None
    try:
        data = json.loads(raw)
        return Marker(str(data["store_id"]), str(data["model"]), int(data["head_seq"]), str(data["head_hash"]))
    except (ValueError, KeyError, TypeError, RecursionError):
        raise StateRefusedError(f"{path}: the store marker is damaged; {RECOVERY}") from None


def write_marker(state_dir: Path, marker: Marker) -> None:
    """Atomically (write, fsync, rename, fsync the dir)."""
    path = state_dir / MARKER
    partial = path.with_name(MARKER + ".partial")
    with open(partial, "w", encoding="utf-8") as out:
        out.write(marker.to_json())
        out.flush()
        os.fsync(out.fileno())
    partial.replace(path)
    dir_fd = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


async def checkpoint(store: SqliteStateStore, state_dir: Path) -> Marker:
    """Move the marker's checkpoint to the head of the chain."""
    seq, digest = await store.head()
    marker = Marker(store.store_id, store.model, seq, digest.hex() if seq else "")
    write_marker(state_dir, marker)
    return marker


@dataclass(frozen=True, slots=True)
class OpenedState:
    store: SqliteStateStore
    created: bool  # a first start: the store was created now
    notes: tuple[str, ...] = ()


EnvoyEvidence = Callable[[], Awaitable[EnvoyServing]]


async def open_state(
    state_dir: Path,
    *,
    model: str,
    starting_policy: Callable[[], TrafficPolicy],
    envoy: EnvoyEvidence | None = None,
    clock: Callable[[], float] = time.time,
    signer: RecordSigner | None = None,
    observers: tuple[SealedObserver, ...] = (),
) -> OpenedState:
    """The agent's store, checked; or a new one on a genuine first start. StateRefusedError otherwise. `signer`
    signs every record the store seals; `observers` see each committed record (the first one included)."""
    db = state_dir / STATE_DB
    marker = read_marker(state_dir)
    if _holds_a_store(db):
        try:
            store = await SqliteStateStore.open_existing(db, model=model, clock=clock, signer=signer)
            store.sealed_observers.extend(observers)
        except StateRefusedError as exc:
            raise StateRefusedError(f"damaged state: {exc}; {RECOVERY}") from None
        try:
            notes = await verify_store(store, model=model, marker=marker)
        except StateRefusedError as exc:
            await store.close()
            raise StateRefusedError(f"{exc}; {RECOVERY}") from None
        except BaseException:
            await store.close()
            raise
        if marker is None:
            notes.append(f"the marker {state_dir / MARKER} was missing and has been rewritten")
        await checkpoint(store, state_dir)
        return OpenedState(store, False, tuple(notes))

    what = f"{db} is missing" if not db.exists() else f"{db} holds no state store ({_describe(db)})"
    if marker is not None:
        raise StateRefusedError(
            f"state lost: {what}, but {state_dir / MARKER} says store {marker.store_id} of model {marker.model} "
            f"with {marker.head_seq} audit records was here; {RECOVERY}"
        )
    archive = state_dir / "archive"
    if archive.is_dir() and any(archive.iterdir()):
        raise StateRefusedError(
            f"state lost: {what}, but {archive} holds forensic bundles of an earlier run; {RECOVERY}"
        )
    evidence = await envoy() if envoy is not None else None
    if evidence is not None and evidence.serves_our_route:
        raise StateRefusedError(f"state lost: {what}, but the agent ran here before: {evidence.detail}; {RECOVERY}")
    detail = f"first start: {what}; " + (evidence.detail if evidence is not None else "no Envoy admin to ask")
    if db.exists():
        _move_aside(state_dir, [db], "unusable")
    store = await SqliteStateStore.create(
        db,
        model=model,
        establish=audit_pb2.StateEstablished(how="first_start", policy=policy_to_pb(starting_policy()), detail=detail),
        actor="agent",
        clock=clock,
        signer=signer,
        observers=observers,
    )
    await checkpoint(store, state_dir)
    log.warning("state store created (%s)", detail)
    return OpenedState(store, True, (detail,))


async def verify_store(store: SqliteStateStore, *, model: str, marker: Marker | None) -> list[str]:
    """Identity, chain (from the marker's checkpoint) and policy row of an open store; StateRefusedError when any
    is wrong. Returns notes worth logging."""
    notes: list[str] = []
    meta = await store.meta()
    if meta.get("model") != model:
        raise StateRefusedError(
            f"foreign state: {store.path} belongs to model {meta.get('model')!r}, this agent runs {model!r}"
        )
    if marker is not None and marker.store_id != store.store_id:
        raise StateRefusedError(
            f"foreign state: {store.path} is store {store.store_id}, but the marker says this state dir holds store "
            f"{marker.store_id} (a database copied in from elsewhere?)"
        )
    first_seq, prev_hash = 1, GENESIS_HASH
    if marker is not None and marker.head_seq > 0:
        anchor = await store.record_at(marker.head_seq)
        if anchor is None:
            head_seq, _ = await store.head()
            raise StateRefusedError(
                f"truncated state: the audit trail of {store.path} ends at record {head_seq}, but it had reached "
                f"record {marker.head_seq}"
            )
        if anchor.hash.hex() != marker.head_hash:
            raise StateRefusedError(
                f"rewritten state: audit record {marker.head_seq} of {store.path} is not the one checkpointed"
            )
        first_seq, prev_hash = marker.head_seq + 1, anchor.hash
    problems = verify_chain(await store.records(since_seq=first_seq - 1), first_seq=first_seq, prev_hash=prev_hash)
    if problems:
        raise StateRefusedError(f"damaged state: the audit chain of {store.path} is broken: {problems[0]}")
    row = await store.policy_row()
    if row is None:
        raise StateRefusedError(f"damaged state: {store.path} has no traffic policy")
    policy, seq = row
    setter = await store.record_at(seq)
    carried = policy_carried_by(setter) if setter is not None else None
    if carried is None or _split(carried) != _split(policy):
        raise StateRefusedError(
            f"damaged state: the traffic policy in {store.path} does not match audit record {seq} that set it "
            f"(edited outside the agent?)"
        )
    later = [r.seq for r in await store.records(since_seq=seq) if policy_carried_by(r) is not None]
    if later:
        raise StateRefusedError(
            f"damaged state: the traffic policy in {store.path} is older than audit record {later[-1]}, which set "
            f"another one"
        )
    return notes


def _split(policy: object) -> tuple[tuple[tuple[str, int], ...], int]:
    weights = tuple((w.version, w.weight) for w in policy.weights)  # type: ignore[attr-defined]
    return weights, int(policy.revision)  # type: ignore[attr-defined]


def _holds_a_store(db: Path) -> bool:
    """A file that is (or claims to be) a database: anything but a missing or empty file. A damaged file is still
    'a store' here, so that it is refused as damaged rather than replaced."""
    try:
        return db.stat().st_size > 0
    except FileNotFoundError:
        return False


def _describe(db: Path) -> str:
    try:
        size = db.stat().st_size
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    return "0 bytes" if size == 0 else f"{size} bytes"


def _move_aside(state_dir: Path, paths: list[Path], label: str) -> Path:
    """Move files of a replaced store into state_dir/replaced-<time>-<label>/ (never deleted: forensics)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    target = state_dir / f"replaced-{stamp}-{label}-{uuid.uuid4().hex[:6]}"
    target.mkdir(parents=True)
    for path in paths:
        for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if candidate.exists():
                shutil.move(str(candidate), target / candidate.name)
    return target


def _clear_for_new_store(state_dir: Path, label: str) -> tuple[str, str]:
    """Move the current store and marker aside; returns (their store id, where they went)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    previous_id = ""
    with contextlib.suppress(StateRefusedError):
        marker = read_marker(state_dir)
        previous_id = marker.store_id if marker else ""
    old = [p for p in (state_dir / STATE_DB, state_dir / MARKER) if p.exists()]
    return previous_id, str(_move_aside(state_dir, old, label)) if old else ""


# -- explicit, audited recovery ---------------------------------------------------------------------------------


async def init_state(
    state_dir: Path,
    *,
    model: str,
    policy: TrafficPolicy,
    how: str,
    reason: str,
    actor: str,
    detail: str,
    clock: Callable[[], float] = time.time,
    signer: RecordSigner | None = None,
) -> tuple[SqliteStateStore, str]:
    """A new store starting on `policy`; whatever was in the state dir is moved aside. Returns the store and where
    the old files went ("" when there were none)."""
    db = state_dir / STATE_DB
    previous_id, moved = await asyncio.to_thread(_clear_for_new_store, state_dir, "before-init")
    store = await SqliteStateStore.create(
        db,
        model=model,
        establish=audit_pb2.StateEstablished(
            how=how,
            policy=policy_to_pb(policy),
            detail=detail,
            reason=reason,
            previous_store_id=previous_id,
            previous_files=moved,
        ),
        actor=actor,
        clock=clock,
        signer=signer,
    )
    await checkpoint(store, state_dir)
    return store, moved


async def restore_state(
    state_dir: Path,
    backup: Path,
    *,
    model: str,
    reason: str,
    actor: str,
    clock: Callable[[], float] = time.time,
    signer: RecordSigner | None = None,
) -> tuple[SqliteStateStore, str]:
    """Put a verified backup in place (its whole chain and its policy row are checked first); the current files
    are moved aside. The restore is recorded in the restored chain."""
    probe = await SqliteStateStore.open_existing(backup, model=model, clock=clock)
    try:
        await verify_store(probe, model=model, marker=None)
    finally:
        await probe.close()
    db = state_dir / STATE_DB
    _, moved = await asyncio.to_thread(_clear_for_new_store, state_dir, "before-restore")
    partial = db.with_name(STATE_DB + ".partial")
    await asyncio.to_thread(shutil.copyfile, backup, partial)
    partial.replace(db)
    store = await SqliteStateStore.open_existing(db, model=model, clock=clock, signer=signer)
    current = await store.load_policy()
    assert current is not None  # verified above
    await store.change_policy(
        current,
        audit_pb2.StateEstablished(
            how="restored",
            store_id=store.store_id,
            policy=policy_to_pb(current),
            detail=f"restored from {backup}",
            reason=reason,
            previous_files=moved,
        ),
        actor,
    )
    await checkpoint(store, state_dir)
    return store, moved
