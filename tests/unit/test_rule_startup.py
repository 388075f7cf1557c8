"""A broken rule file at start is refused like a broken reload: the agent runs on the last accepted copy instead of
crash-looping (before: a 3,000-deep file in place made every restart exit)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.config import parse_config
from agent.runtime import LAST_GOOD_RULES, StartupError, _rule_engine

ROOT = Path(__file__).resolve().parents[2]


def config_for(tmp_path: Path, rules: Path):
    text = (
        "model: {name: m, tier: critical}\n"
        "versions: [{tag: v1, endpoint: '127.0.0.1:8001'}, {tag: v2, endpoint: '127.0.0.1:8002'}]\n"
        f"stable: v1\nstate_dir: {tmp_path / 'state'}\nrules: {{file: {rules}}}\n"
    )
    return parse_config(text, "agent.yaml")


def test_a_broken_rule_file_at_start_runs_on_the_last_good_copy(tmp_path: Path):
    rules = tmp_path / "rules.yaml"
    shutil.copy(ROOT / "rules" / "default.yaml", rules)
    (tmp_path / "state").mkdir()
    config = config_for(tmp_path, rules)
    engine, error = _rule_engine(config)
    assert error == "" and engine.rule_set.rules
    assert (tmp_path / "state" / LAST_GOOD_RULES).read_bytes() == rules.read_bytes()
    rules.write_text("rules: " + "[" * 3000 + "]" * 3000 + "\n")
    engine, error = _rule_engine(config)
    assert engine.rule_set.rules, "the last good rules are in force"
    assert "rules.yaml" in error and "nest" in error.lower()


def test_a_broken_rule_file_without_a_good_copy_is_a_startup_error(tmp_path: Path):
    rules = tmp_path / "rules.yaml"
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(8):
        prev, name = chr(97 + i), chr(98 + i)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    rules.write_text("\n".join(lines) + "\n")  # an alias bomb: 9^9 nodes once expanded
    (tmp_path / "state").mkdir()
    with pytest.raises(StartupError, match=r"rules\.file is not usable"):
        _rule_engine(config_for(tmp_path, rules))
