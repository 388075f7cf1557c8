"""Rule files: loading, and every error naming the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.triggers import (
    RULE_TYPES,
    RuleError,
    RuleFileError,
    RuleSet,
    check_rule_files,
    load_rule_set,
    load_rules,
    reload_rule_set,
)
from agent.triggers.units import format_duration, parse_duration, parse_ratio

REPO = Path(__file__).resolve().parents[3]

GOOD = """\
model: fraud
tier: critical
rules:
  - name: errors
    kind: error_rate
    max_rate: 2%
    for: 1m30s
  - name: latency
    kind: latency_p99
    sla_ms: 300
"""


def errors_of(text: str, name: str = "rules.yaml") -> list[RuleError]:
    with pytest.raises(RuleFileError) as raised:
        load_rules(text, name)
    return raised.value.errors


def test_good_file_loads_with_durations_and_ratios() -> None:
    rule_file = load_rules(GOOD, "good.yaml")
    assert (rule_file.model, rule_file.tier) == ("fraud", "critical")
    errors = rule_file.rules[0].model_dump()
    assert errors["max_rate"] == 0.02 and errors["for_"] == 90
    assert rule_file.line_of("latency") == 8


def test_shipped_rule_files_and_tier_profiles_check_clean() -> None:
    tiers = [p for p in sorted((REPO / "rules" / "tiers").glob("*.yaml")) if not p.name.startswith("rollout-")]
    shipped = [REPO / "rules" / "default.yaml", *tiers]
    assert len(shipped) == 3
    assert check_rule_files(shipped) == []
    assert check_rule_files([REPO / "rules" / "default.yaml"], tier="experimental") == []
    kinds = {rule.kind for rule in load_rule_set(REPO / "rules" / "default.yaml").rules}
    assert kinds == set(RULE_TYPES)  # the shipped file shows every kind


def test_yaml_syntax_error_has_its_line() -> None:
    (error,) = errors_of("rules:\n  - name: a\n    kind: [error_rate\n  - name: b\n")
    assert error.line == 4 and "not valid YAML" in error.message


def test_unknown_field_points_at_the_field() -> None:
    (error,) = errors_of(GOOD.replace("    sla_ms: 300\n", "    sla_ms: 300\n    treshold: 4\n"))
    assert error.line == 11
    assert error.message == "rules[1] 'latency'.treshold: Extra inputs are not permitted"
    assert str(error) == f"rules.yaml:11: {error.message}"


def test_unknown_kind_points_at_kind() -> None:
    (error,) = errors_of(GOOD.replace("kind: latency_p99", "kind: latency_p95"))
    assert error.line == 9
    assert "unknown kind 'latency_p95'" in error.message


def test_invalid_duration_and_missing_required_field() -> None:
    errors = errors_of(GOOD.replace("for: 1m30s", "for: soon").replace("    sla_ms: 300\n", ""))
    assert [(e.line, e.message) for e in errors] == [
        (7, "rules[0] 'errors'.for: invalid duration 'soon': use e.g. 30s, 5m, 2h, 1h30m or seconds"),
        (8, "rules[1] 'latency'.sla_ms: Field required"),
    ]


def test_duplicate_rule_name_and_duplicate_key() -> None:
    (error,) = errors_of(GOOD.replace("name: latency", "name: errors"))
    assert error.line == 8 and "duplicate rule name 'errors' (first at line 4)" in error.message
    (error,) = errors_of(GOOD.replace("    sla_ms: 300\n", "    sla_ms: 300\n    sla_ms: 400\n"))
    assert error.line == 11 and "duplicate key 'sla_ms'" in error.message


def test_bare_list_file_is_accepted_and_located() -> None:
    assert len(load_rules("- name: e\n  kind: error_rate\n", "list.yaml").rules) == 1
    (error,) = errors_of("- name: e\n  kind: error_rate\n  window: -5s\n")
    assert error.line == 3 and "window" in error.message


def test_empty_and_wrong_shape_files() -> None:
    assert errors_of("")[0].message == "the file is empty"
    assert "expected a mapping" in errors_of("just text")[0].message


def test_check_reports_tier_dependent_problems_at_the_line(tmp_path: Path) -> None:
    path = tmp_path / "hysteresis.yaml"
    path.write_text("tier: critical\nrules:\n  - name: e\n    kind: error_rate\n    clear_threshold: 8%\n")
    (error,) = check_rule_files([path])
    assert (error.source, error.line) == (str(path), 5)
    assert "rule 'e' with tier 'critical': clear_threshold: must be <= the threshold 0.05" in error.message


def test_check_validates_tier_profiles_as_profiles(tmp_path: Path) -> None:
    path = tmp_path / "profile.yaml"
    path.write_text("tier: custom\ndefaults:\n  error_rate:\n    max_rat: 5%\n")
    (error,) = check_rule_files([path])
    assert error.line == 4 and "defaults.error_rate.max_rat: Extra inputs are not permitted" in error.message


def test_check_reports_unknown_tier_and_unreadable_files(tmp_path: Path) -> None:
    path = tmp_path / "tier.yaml"
    path.write_text("rules:\n  - name: e\n    kind: error_rate\ntier: platinum\n")
    (error,) = check_rule_files([path])
    assert error.line == 4 and "no tier profile 'platinum'" in error.message
    (missing,) = check_rule_files([tmp_path / "nope.yaml"])
    assert missing.line == 0 and "cannot read rule file" in missing.message


def test_reload_keeps_the_last_good_rule_set(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD)
    current = load_rule_set(path)
    path.write_text(GOOD.replace("max_rate: 2%", "max_rate: lots"))
    kept, errors = reload_rule_set(path, current)
    assert kept is current and errors and errors[0].line == 6
    path.write_text(GOOD.replace("max_rate: 2%", "max_rate: 3%"))
    fresh, errors = reload_rule_set(path, current)
    assert errors == [] and isinstance(fresh, RuleSet) and fresh.fingerprint != current.fingerprint


def test_duration_and_ratio_parsing() -> None:
    assert parse_duration("1h30m") == 5400 and parse_duration("250ms") == 0.25 and parse_duration(12) == 12
    assert parse_ratio("5%") == pytest.approx(0.05) and parse_ratio(0.2) == 0.2
    assert [format_duration(s) for s in (30, 300, 5400, 0.5)] == ["30s", "5m", "1h30m", "500ms"]
