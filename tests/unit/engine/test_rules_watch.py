"""Hot reload of the rule file: a good change is swapped in, a broken one is refused and the last good set stays."""

from pathlib import Path

from agent.adapters.store.sqlite_store import SqliteStateStore
from agent.engine.rules_watch import RulesWatcher
from agent.telemetry import AgentMetrics
from agent.triggers.engine import RuleEngine
from agent.triggers.ruleset import load_rule_set

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


async def test_good_reload_swaps_and_broken_reload_keeps_the_last_good_rules(tmp_path: Path):
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(GOOD)
    engine = RuleEngine(load_rule_set(rules_file, "critical"))
    store = await SqliteStateStore.open(tmp_path / "state.db")
    metrics = AgentMetrics("m")
    watcher = RulesWatcher(
        path=rules_file, tier="critical", tiers_dir=None, engine=engine, store=store, metrics=metrics, model="m"
    )

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

    records = await store.audit_records()
    assert [r.rules_reloaded.error == "" for r in records] == [True, False]
    assert records[-1].rules_reloaded.rules == 2
    await store.close()


async def test_watcher_notices_a_changed_file(tmp_path: Path):
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(GOOD)
    engine = RuleEngine(load_rule_set(rules_file, "critical"))
    store = await SqliteStateStore.open(tmp_path / "state.db")
    watcher = RulesWatcher(
        path=rules_file,
        tier="critical",
        tiers_dir=None,
        engine=engine,
        store=store,
        metrics=AgentMetrics("m"),
        model="m",
    )
    assert watcher._stamp() == watcher._seen
    # A ConfigMap update replaces the file (new inode) rather than editing it in place.
    replacement = tmp_path / "rules.yaml.new"
    replacement.write_text(TWO)
    replacement.replace(rules_file)
    assert watcher._stamp() != watcher._seen
    await store.close()
