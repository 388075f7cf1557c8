"""The version registry: declared versions (the registry file from git, or the agent config) plus a runtime overlay
in the state store's SQLite file (state_dir/state.db), so statuses the agent sets survive restarts without the
agent ever editing the git file.

Tables (own connection, rollback journal, one worker thread; the state store's connection shares the file):

* version_status_overlay: the runtime status of a version (model, tag) -> status, reason, actor, changed_at,
  before_quarantine. It wins over the declared status, also when the file changes later: a version the agent
  marked failed is not made eligible again by a deploy of an older registry file.
* version_evidence_overlay: evidence checks added at runtime (e.g. the verification after a rollback), as JSON.

The overlay is read on every call, so a change made by another process on the same state dir is seen at once.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from agent.config import AgentConfig
from agent.ports.registry import PROMOTIONS, StatusTransitionError, UnknownVersionError, VersionStatus
from agent.registry.fallback import registry_from_config
from agent.registry.loader import RegistryFileError, RegistrySource, load_registry
from agent.registry.model import EvidenceCheck, StatusChange, Version, VersionSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

STATE_DB = "state.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS version_status_overlay (
    model TEXT NOT NULL,
    tag TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    changed_at REAL NOT NULL,
    before_quarantine TEXT,
    PRIMARY KEY (model, tag)
);
CREATE TABLE IF NOT EXISTS version_evidence_overlay (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    tag TEXT NOT NULL,
    evidence TEXT NOT NULL,
    added_at REAL NOT NULL
);
"""

_Overlay = tuple[dict[str, StatusChange], dict[str, tuple[EvidenceCheck, ...]]]


class FileRegistry:
    """Implements agent.ports.registry.VersionRegistry[Version, EvidenceCheck] (agent.registry.Registry)."""

    def __init__(self, source: RegistrySource, state_db: Path, clock: Callable[[], float] = time.time) -> None:
        self._source = source
        self._specs: dict[str, VersionSpec] = {v.tag: v for v in source.versions}
        self.state_db = state_db
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="registry")
        self._conn: sqlite3.Connection | None = None

    @classmethod
    async def open(
        cls, source: RegistrySource, state_db: Path, *, clock: Callable[[], float] = time.time
    ) -> FileRegistry:
        registry = cls(source, state_db, clock)
        await registry._run(registry._open)
        return registry

    @classmethod
    async def from_file(
        cls, registry_file: Path, state_db: Path, *, clock: Callable[[], float] = time.time
    ) -> FileRegistry:
        """Raises RegistryFileError naming the file, line and field of every problem."""
        source = await asyncio.to_thread(load_registry, registry_file)
        return await cls.open(source, state_db, clock=clock)

    @classmethod
    async def from_agent_config(
        cls, config: AgentConfig, state_db: Path | None = None, *, clock: Callable[[], float] = time.time
    ) -> FileRegistry:
        """The fallback when no registry file is configured (see agent.registry.fallback)."""
        path = state_db if state_db is not None else config.state_dir / STATE_DB
        return await cls.open(registry_from_config(config), path, clock=clock)

    def _open(self) -> None:
        self.state_db.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.state_db, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(SCHEMA)
        self._conn = conn

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("registry is closed")
        return self._conn

    @property
    def model(self) -> str:
        return self._source.model

    @property
    def origin(self) -> str:
        return self._source.origin

    @property
    def declared(self) -> tuple[VersionSpec, ...]:
        return self._source.versions

    # --- reads

    def _spec(self, tag: str) -> VersionSpec:
        try:
            return self._specs[tag]
        except KeyError:
            raise UnknownVersionError(tag, list(self._specs)) from None

    def _read_change(self, tag: str) -> StatusChange | None:
        row = self._db.execute(
            "SELECT status, reason, actor, changed_at, before_quarantine FROM version_status_overlay "
            "WHERE model = ? AND tag = ?",
            (self.model, tag),
        ).fetchone()
        return None if row is None else self._change_from_row(tag, row)

    def _change_from_row(self, tag: str, row: tuple[str, str, str, float, str | None]) -> StatusChange | None:
        status, reason, actor, changed_at, before = row
        try:
            return StatusChange(
                status=VersionStatus(status),
                reason=reason,
                actor=actor,
                at=datetime.fromtimestamp(changed_at, UTC),
                before_quarantine=VersionStatus(before) if before else None,
            )
        except ValueError:
            log.error("%s: ignoring an unreadable runtime status of %s: %r", self.state_db, tag, row)
            return None

    def _read_overlay(self) -> _Overlay:
        changes: dict[str, StatusChange] = {}
        for tag, *rest in self._db.execute(
            "SELECT tag, status, reason, actor, changed_at, before_quarantine FROM version_status_overlay "
            "WHERE model = ?",
            (self.model,),
        ):
            change = self._change_from_row(tag, (rest[0], rest[1], rest[2], rest[3], rest[4]))
            if change is not None:
                changes[tag] = change
        evidence: dict[str, list[EvidenceCheck]] = {}
        for tag, blob in self._db.execute(
            "SELECT tag, evidence FROM version_evidence_overlay WHERE model = ? ORDER BY id", (self.model,)
        ):
            try:
                evidence.setdefault(tag, []).append(EvidenceCheck.model_validate_json(blob))
            except ValidationError:
                log.error("%s: ignoring unreadable runtime evidence of %s: %r", self.state_db, tag, blob)
        return changes, {tag: tuple(checks) for tag, checks in evidence.items()}

    def _merge(self, spec: VersionSpec, overlay: _Overlay) -> Version:
        changes, evidence = overlay
        return Version.from_spec(spec, changes.get(spec.tag), evidence.get(spec.tag, ()))

    async def list_versions(self) -> list[Version]:
        overlay = await self._run(self._read_overlay)
        return [self._merge(spec, overlay) for spec in self._source.versions]

    async def get(self, tag: str) -> Version:
        spec = self._spec(tag)
        overlay = await self._run(self._read_overlay)
        return self._merge(spec, overlay)

    # --- writes

    def _write_change(self, tag: str, change: StatusChange) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO version_status_overlay "
            "(model, tag, status, reason, actor, changed_at, before_quarantine) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                self.model,
                tag,
                str(change.status),
                change.reason,
                change.actor,
                change.at.timestamp(),
                str(change.before_quarantine) if change.before_quarantine else None,
            ),
        )

    async def set_status(self, tag: str, status: VersionStatus, reason: str, actor: str) -> VersionStatus:
        spec = self._spec(tag)
        status = VersionStatus(status)
        at = datetime.fromtimestamp(self._clock(), UTC)

        def write() -> VersionStatus:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                current = self._read_change(tag)
                previous = current.status if current is not None else spec.status
                if previous is VersionStatus.QUARANTINED and status in PROMOTIONS:
                    raise StatusTransitionError(
                        f"{tag} is quarantined"
                        + (f" ({current.reason})" if current is not None and current.reason else "")
                        + f"; it cannot become {status} until an operator clears the quarantine"
                    )
                before: VersionStatus | None = None
                if status is VersionStatus.QUARANTINED:
                    # Re-quarantining keeps the status held before the first quarantine.
                    if previous is not VersionStatus.QUARANTINED:
                        before = previous
                    elif current is not None:
                        before = current.before_quarantine
                change = StatusChange(status=status, reason=reason, actor=actor, at=at, before_quarantine=before)
                self._write_change(tag, change)
                return previous

        previous = await self._run(write)
        log.info("version %s: %s -> %s by %s: %s", tag, previous, status, actor, reason)
        return previous

    async def clear_quarantine(self, tag: str, actor: str, reason: str = "") -> VersionStatus:
        spec = self._spec(tag)
        at = datetime.fromtimestamp(self._clock(), UTC)

        def write() -> VersionStatus:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                current = self._read_change(tag)
                status = current.status if current is not None else spec.status
                if status is not VersionStatus.QUARANTINED:
                    raise StatusTransitionError(f"{tag} is {status}, not quarantined; there is nothing to clear")
                # A version quarantined in the file itself has no earlier status: it must be verified again.
                restored = (
                    current.before_quarantine
                    if current is not None and current.before_quarantine is not None
                    else VersionStatus.CANDIDATE
                )
                why = reason or "quarantine cleared by an operator"
                self._write_change(tag, StatusChange(status=restored, reason=why, actor=actor, at=at))
                return restored

        restored = await self._run(write)
        log.warning("version %s: quarantine cleared by %s; back to %s", tag, actor, restored)
        return restored

    async def add_evidence(self, tag: str, evidence: EvidenceCheck) -> None:
        self._spec(tag)
        blob = evidence.model_dump_json()
        added_at = self._clock()

        def write() -> None:
            self._db.execute(
                "INSERT INTO version_evidence_overlay (model, tag, evidence, added_at) VALUES (?, ?, ?, ?)",
                (self.model, tag, blob, added_at),
            )

        await self._run(write)

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await self._run(close)
        self._executor.shutdown(wait=True)


async def open_registry(
    config: AgentConfig, registry_file: Path | None = None, *, clock: Callable[[], float] = time.time
) -> FileRegistry:
    """The registry for this agent: the file when one is configured, else the fallback from the config.

    Raises RegistryFileError when the file is invalid, names another model, or lacks a version the config routes to.
    """
    state_db = config.state_dir / STATE_DB
    if registry_file is None:
        return await FileRegistry.from_agent_config(config, state_db, clock=clock)
    source = await asyncio.to_thread(load_registry, registry_file)
    if source.model != config.model.name:
        raise RegistryFileError(
            f"{registry_file}: model: the registry is for {source.model!r}, the agent config for {config.model.name!r}"
        )
    declared = {v.tag for v in source.versions}
    missing = [tag for tag in config.tags if tag not in declared]
    if missing:
        raise RegistryFileError(
            f"{registry_file}: versions: no entry for {', '.join(missing)} (in the agent config); every version the "
            "agent routes to needs its provenance recorded"
        )
    return await FileRegistry.open(source, state_db, clock=clock)
