"""Hot reload of the rule file: a good change is swapped in, a broken one is refused and the last good set stays."""

import asyncio
from pathlib import Path

from agent.adapters.store.sqlite_store import SqliteStateStore
from agent.engine.rules_watch import RulesWatcher
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.telemetry import AgentMetrics
from agent.triggers.engine import RuleEngine
from agent.triggers.ruleset import load_rule_set
from harness.wait import async_wait_until

GOOD = """
rules:
  - name: error-rate
    kind: error_rate
"""
TWO = (
    GOOD
    + """
  - name: crash
    kind: crash
"""
)
BROKEN = """
rules:
  - name: error-rate
    kind: error_rate
    max_rate: lots
"""


def value(metrics: AgentMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def watched(tmp_path: Path, text: str, interval_s: float = 2.0):
    """A rules file holding `text`, its engine, a store, metrics and a watcher over them."""
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(text)
    engine = RuleEngine(load_rule_set(rules_file, "critical"))
    store = await SqliteStateStore.open(tmp_path / "state.db")
    metrics = AgentMetrics("m")
    watcher = RulesWatcher(
        path=rules_file,
        tier="critical",
        tiers_dir=None,
        engine=engine,
        store=store,
        metrics=metrics,
        model="m",
        interval_s=interval_s,
    )
    return rules_file, engine, store, metrics, watcher


async def test_good_reload_swaps_and_broken_reload_keeps_the_last_good_rules(tmp_path: Path):
    rules_file, engine, store, metrics, watcher = await watched(tmp_path, GOOD)

    rules_file.write_text(TWO)
    assert await watcher.reload()
    assert [r.name for r in engine.rule_set.rules] == ["error-rate", "crash"]
    assert value(metrics, "rollback_agent_rules_loaded", model="m") == 2

    rules_file.write_text(BROKEN)
    assert not await watcher.reload()
    assert [r.name for r in engine.rule_set.rules] == ["error-rate", "crash"]  # still in force
    assert f"{rules_file}:5" in watcher.last_error  # file and line of the bad value
    assert value(metrics, "rollback_agent_rules_last_reload_success", model="m") == 0
    assert value(metrics, "rollback_agent_rule_reloads_total", model="m", outcome="failed") == 1

    records = await store.records()
    assert [r.rules_reloaded.error == "" for r in records] == [True, False]
    assert records[-1].rules_reloaded.rules == 2
    await store.close()


async def test_watcher_notices_a_changed_file(tmp_path: Path):
    rules_file, _engine, store, _metrics, watcher = await watched(tmp_path, GOOD)
    assert watcher._stamp() == watcher._seen
    # A ConfigMap update replaces the file (new inode) rather than editing it in place.
    replacement = tmp_path / "rules.yaml.new"
    replacement.write_text(TWO)
    replacement.replace(rules_file)
    assert watcher._stamp() != watcher._seen
    await store.close()


DEEP = "rules:\n  - name: error-rate\n    kind: error_rate\n    window: " + "[" * 3000 + "]" * 3000 + "\n"
ALIAS_BOMB = (
    "a0: &a0 ["
    + ", ".join(["lol"] * 10)
    + "]\n"
    + "".join(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 9))
    + "rules: []\n"
)


def replace_file(path: Path, text: str) -> None:
    """As a ConfigMap update does: a new file (new inode) renamed over the old one."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(text)
    fresh.replace(path)


async def test_running_watcher_keeps_the_last_good_rules_through_deep_and_alias_bomb_files(tmp_path: Path):
    rules_file, engine, store, metrics, watcher = await watched(tmp_path, TWO, interval_s=0.01)
    task = asyncio.create_task(watcher.run())

    def failed() -> float:
        return value(metrics, "rollback_agent_rule_reloads_total", model="m", outcome="failed") or 0

    try:
        replace_file(rules_file, DEEP)
        await async_wait_until(lambda: failed() == 1, 10, what="reload refused (failed() == 1)")
        assert f"{rules_file}:4: nested deeper than 64 levels" in watcher.last_error

        replace_file(rules_file, ALIAS_BOMB)
        await async_wait_until(lambda: failed() == 2, 10, what="reload refused (failed() == 2)")
        assert "takes the document past 100000 nodes" in watcher.last_error

        rules_file.unlink()  # a file that disappears is a refused reload too
        await async_wait_until(lambda: failed() == 3, 10, what="reload refused (failed() == 3)")
        assert "cannot read rule file" in watcher.last_error

        assert not task.done()
        assert [r.name for r in engine.rule_set.rules] == ["error-rate", "crash"]
        replace_file(rules_file, GOOD)
        await async_wait_until(
            lambda: watcher.last_error == "" and len(engine.rule_set.rules) == 1, 10, what="the good file accepted"
        )

        async def four_records() -> list[audit_pb2.AuditRecord] | None:
            found = await store.records()  # the audit record follows the swap
            return found if len(found) >= 4 else None

        records = await async_wait_until(four_records, 10, what="four RulesReloaded records")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [r.rules_reloaded.rules for r in records] == [2, 2, 2, 1]
    assert [bool(r.rules_reloaded.error) for r in records] == [True, True, True, False]
    await store.close()


async def test_any_loader_failure_is_a_refused_reload(tmp_path: Path, monkeypatch):
    _rules_file, engine, store, metrics, watcher = await watched(tmp_path, GOOD)

    def explode(*args: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr("agent.engine.rules_watch.reload_rule_set", explode)
    assert not await watcher.reload()
    assert [r.name for r in engine.rule_set.rules] == ["error-rate"]
    assert "RecursionError" in watcher.last_error
    assert value(metrics, "rollback_agent_rule_reloads_total", model="m", outcome="failed") == 1
    (record,) = await store.records()
    assert "RecursionError" in record.rules_reloaded.error
    await store.close()


async def test_a_directory_in_place_of_the_file_is_a_refused_reload(tmp_path: Path):
    rules_file, engine, store, _metrics, watcher = await watched(tmp_path, GOOD)
    rules_file.unlink()
    rules_file.mkdir()
    assert not await watcher.reload()
    assert "cannot read rule file" in watcher.last_error and len(engine.rule_set.rules) == 1
    await store.close()
