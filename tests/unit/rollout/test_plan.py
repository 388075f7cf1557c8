"""Rollout plans: validated at load, every error with its file and line."""

from __future__ import annotations

import pytest

from agent.rollout.plan import JudgeGate, RelativeGate, RuleGate, parse_plan
from agent.triggers import RuleFileError

PLAN = """\
rollout:
  on_breach: previous_stage
  stages:
    - name: shadow
      mirror: 10%
      min_duration: 5m
      gates:
        - {kind: judge, signal: latency_ms, confidence: 0.98, min_points: 50}
    - name: canary-5
      weight: 5
      min_duration: 10m
      gates:
        - rule: error-rate
        - {kind: relative, signal: error_rate, relative: 0.5, absolute: 0.01}
    - name: full
      weight: 100
      min_duration: 30m
      gates: [{rule: error-rate}]
"""


def test_a_plan_loads_with_its_stages_and_gates() -> None:
    plan = parse_plan(PLAN, "plan.yaml")
    assert [s.name for s in plan.stages] == ["shadow", "canary-5", "full"]
    shadow, canary, full = plan.stages
    assert shadow.is_shadow and shadow.mirror == pytest.approx(0.1) and shadow.min_duration == 300
    assert isinstance(shadow.gates[0], JudgeGate)
    assert isinstance(canary.gates[0], RuleGate) and canary.gates[0].name == "rule:error-rate"
    assert isinstance(canary.gates[1], RelativeGate) and canary.gates[1].name == "relative:error_rate"
    assert full.weight == 100 and plan.max_breaches == 3


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (PLAN.replace("weight: 100", "weight: 50"), 3, "the last stage (full) must send 100 %"),
        (PLAN.replace("gates: [{rule: error-rate}]", "gates: [{kind: judge, signal: error}]"), 15, "could never pass"),
        (PLAN.replace("signal: latency_ms", "signal: vibes"), 8, "signal"),
        (PLAN.replace("min_duration: 10m", "min_duration: soon"), 11, "invalid duration 'soon'"),
        (PLAN.replace("mirror: 10%", "mirror: 0"), 4, "give the stage a weight"),
        (PLAN.replace("name: full", "name: shadow"), 3, "duplicate stage name"),
        (PLAN.replace("min_duration: 10m", "min_duration: 10m\n      warmup: 10m"), 9, "warmup (600s) must be shorter"),
    ],
)
def test_bad_plans_are_refused_with_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(RuleFileError) as raised:
        parse_plan(text, "plan.yaml")
    rendered = str(raised.value)
    assert message in rendered
    assert f"plan.yaml:{line}" in rendered, rendered


def test_weights_that_go_down_are_refused() -> None:
    ok = "stages:\n  - {name: a, mirror: 5%}\n  - {name: b, weight: 60}\n  - {name: c, weight: 100}\n"
    assert [s.weight for s in parse_plan(ok, "p.yaml").stages] == [0, 60, 100]
    down = "stages:\n  - {name: a, weight: 50}\n  - {name: b, weight: 20}\n  - {name: c, weight: 100}\n"
    with pytest.raises(RuleFileError, match=r"p.yaml:1: stages: weights must not decrease .* \[50, 20, 100\]"):
        parse_plan(down, "p.yaml")


def test_unknown_and_missing_gate_kinds_name_the_gate() -> None:
    text = "stages:\n  - name: a\n    weight: 100\n    gates:\n      - {kind: vibes}\n      - {signal: error}\n"
    with pytest.raises(RuleFileError) as raised:
        parse_plan(text, "p.yaml")
    rendered = str(raised.value)
    assert "p.yaml:5: stages[0] 'a'.gates[0].kind: unknown kind 'vibes'" in rendered
    assert "p.yaml:6: stages[0] 'a'.gates[1]: missing `kind`" in rendered


def test_not_yaml_and_not_a_mapping_are_clear_errors() -> None:
    with pytest.raises(RuleFileError, match=r"p\.yaml:1"):
        parse_plan("- a\n- b\n", "p.yaml")
    with pytest.raises(RuleFileError, match=r"p\.yaml"):
        parse_plan(b"\xff\xfe", "p.yaml")


def test_shipped_tier_plans_load_and_rules_check_checks_plans_as_plans(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    from agent.cli import main
    from agent.rollout.plan import load_plan, rule_gates, shipped_plan
    from agent.triggers import load_rule_set

    repo = Path(__file__).resolve().parents[3]
    shipped_rules = {rule.name for rule in load_rule_set(repo / "rules" / "default.yaml").rules}
    for tier in ("critical", "experimental"):
        plan = load_plan(shipped_plan(tier))
        assert (repo / "rules" / "tiers" / f"rollout-{tier}.yaml").resolve() == shipped_plan(tier).resolve()
        assert rule_gates(plan) <= shipped_rules  # every rule gate names a rule of the shipped rule file
    assert (
        main(
            [
                "rules",
                "check",
                str(repo / "rules" / "default.yaml"),
                *map(str, (repo / "rules" / "tiers").glob("*.yaml")),
            ]
        )
        == 0
    )
    bad = tmp_path / "plan.yaml"
    bad.write_text("stages:\n  - {name: a, weight: 50}\n")
    assert main(["rules", "check", str(bad)]) == 1
    assert f"{bad}:1: stages: the last stage (a) must send 100 %" in capsys.readouterr().err
