"""Hot reload of the rule file: a changed file (a ConfigMap updated by git-ops) is loaded and swapped in whole;
a broken, missing or unreadable one is refused with a clear log line, a metric and an audit record, and the last
good rule set stays. Nothing a file contains stops the watcher."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.store import StateStore
from agent.telemetry import AgentMetrics
from agent.triggers.engine import RuleEngine
from agent.triggers.errors import RuleError
from agent.triggers.ruleset import reload_rule_set

log = logging.getLogger(__name__)


class RulesWatcher:
    def __init__(
        self,
        *,
        path: Path,
        tier: str,
        tiers_dir: Path | None,
        engine: RuleEngine,
        store: StateStore,
        metrics: AgentMetrics,
        model: str,
        interval_s: float = 2.0,
    ) -> None:
        self.path = path
        self._tier = tier
        self._tiers_dir = tiers_dir
        self._engine = engine
        self._store = store
        self._metrics = metrics
        self._model = model
        self.interval_s = interval_s
        self._seen = self._stamp()
        self.last_error = ""
        # A copy of the last accepted rule file: a start with a broken file runs on it instead of crash-looping.
        self.last_good: Path | None = None

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            # Kubernetes swaps a ConfigMap through a symlink: stat follows it, so the target's identity changes.
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            stamp = self._stamp()
            if stamp != self._seen:
                self._seen = stamp
                try:
                    await self.reload()
                except Exception:  # e.g. the audit store failing: the next change is still watched for
                    log.exception("rule file %s: reload failed; the rules in force stay", self.path)

    async def reload(self) -> bool:
        current = self._engine.rule_set
        try:
            rule_set, errors = await asyncio.to_thread(reload_rule_set, self.path, current, self._tier, self._tiers_dir)
        except Exception as exc:  # whatever the file holds: a refused reload, never a dead agent
            log.exception("rule file %s: unexpected error while loading it", self.path)
            rule_set, errors = current, [RuleError(str(self.path), 0, f"cannot load the rule file: {exc!r}")]
        record = audit_pb2.AuditRecord(rules_reloaded=audit_pb2.RulesReloaded(files=[str(self.path)]))
        if errors:
            self.last_error = "; ".join(str(e) for e in errors)
            self._metrics.rule_reloads.labels(self._model, "failed").inc()
            self._metrics.rules_last_reload_ok.labels(self._model).set(0)
            log.error(
                "rule file %s refused, keeping the %d rules in force: %s",
                self.path,
                len(current.rules),
                self.last_error,
            )
            record.rules_reloaded.error = self.last_error
            record.rules_reloaded.rules = len(current.rules)
        else:
            self.last_error = ""
            self._engine.replace_rules(rule_set)
            self._metrics.rule_reloads.labels(self._model, "ok").inc()
            self._metrics.rules_last_reload_ok.labels(self._model).set(1)
            self._metrics.rules_loaded.labels(self._model).set(len(rule_set.rules))
            log.info("rule file %s reloaded: %d rules (tier %s)", self.path, len(rule_set.rules), rule_set.tier)
            record.rules_reloaded.rules = len(rule_set.rules)
            if self.last_good is not None:
                await asyncio.to_thread(keep_last_good, self.path, self.last_good)
        await self._store.append(record, "rules-watcher")
        return not errors


def keep_last_good(source: Path, copy: Path) -> None:
    """Atomically copy an accepted rule file to `copy` (best effort: a failure is logged, never raised)."""
    try:
        data = source.read_bytes()
        partial = copy.with_name(copy.name + ".partial")
        partial.write_bytes(data)
        partial.replace(copy)
    except OSError as exc:
        log.warning("could not keep a copy of the accepted rule file %s at %s: %s", source, copy, exc)
