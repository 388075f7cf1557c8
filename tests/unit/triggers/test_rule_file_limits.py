"""Rule files and tier profiles that are hostile or broken below the YAML level: every one is refused with the
file and the line, quickly, never with a traceback; ordinary anchors, aliases and merge keys keep working."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.domain.safe_yaml import YamlError, YamlLimits, parse_bounded
from agent.triggers import RuleError, RuleFileError, check_rule_files, load_rule_file, load_rules
from agent.triggers.tiers import parse_tier_profile


def only_error(data: str | bytes, name: str = "rules.yaml") -> RuleError:
    with pytest.raises(RuleFileError) as raised:
        load_rules(data, name)
    (error,) = raised.value.errors
    return error


def deep(levels: int) -> str:
    return "rules:\n  - name: e\n    kind: error_rate\n    window: " + "[" * levels + "]" * levels + "\n"


def alias_bomb(levels: int = 9, fan_out: int = 10) -> str:
    """The "billion laughs": each level is a list of `fan_out` aliases of the previous one."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * fan_out) + "]"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * fan_out) + "]")
    return "\n".join(lines) + "\nrules: []\n"


def test_deep_nesting_is_refused_at_its_line_not_a_recursion_error(tmp_path: Path) -> None:
    error = only_error(deep(3000))
    assert error.line == 4 and error.message == "nested deeper than 64 levels"
    path = tmp_path / "deep.yaml"
    path.write_text(deep(3000))
    assert [str(e) for e in check_rule_files([path])] == [f"{path}:4: nested deeper than 64 levels"]


def test_nesting_up_to_the_limit_still_reads() -> None:
    parsed = parse_bounded("a: " + "[" * 63 + "]" * 63 + "\n", "x.yaml")  # the mapping + 63 lists = 64 levels
    innermost = parsed.data["a"]
    for _ in range(62):
        (innermost,) = innermost
    assert innermost == []
    with pytest.raises(YamlError, match=r"x\.yaml:1: nested deeper than 64 levels"):
        parse_bounded("a: " + "[" * 64 + "]" * 64 + "\n", "x.yaml")


def test_an_alias_bomb_is_refused_quickly_at_the_alias_that_crosses_the_limit() -> None:
    bomb = alias_bomb()
    assert len(bomb) < 4096
    started = time.perf_counter()
    error = only_error(bomb)
    assert time.perf_counter() - started < 0.5
    # *a3 stands for 11,111 nodes: the 9th of them on a4's line takes the total past 100,000.
    assert error.line == 5
    assert error.message == "alias *a3 takes the document past 100000 nodes (aliases expanded)"


def test_too_many_aliases_and_self_containing_aliases_are_refused() -> None:
    many = "a: &a 1\nb: [" + ", ".join(["*a"] * 1001) + "]\n"
    assert only_error(many).message == "more than 1000 aliases"
    assert only_error("rules: &r [*r]\n").message == "alias *r refers to a node that contains it"


def test_anchors_aliases_and_merge_keys_keep_working() -> None:
    text = """\
base: &base {kind: error_rate, window: 1m, max_rate: 2%}
rules:
  - <<: *base
    name: errors
  - <<: *base
    name: errors-fast
    window: 10s
"""
    with pytest.raises(RuleFileError) as raised:  # `base` is not a rule-file field; the merge itself worked
        load_rules(text, "rules.yaml")
    assert [(e.line, e.message) for e in raised.value.errors] == [(1, "base: Extra inputs are not permitted")]
    parsed = parse_bounded(text, "rules.yaml")
    assert parsed.data["rules"][1] == {"kind": "error_rate", "window": "10s", "max_rate": "2%", "name": "errors-fast"}


def test_a_merge_override_is_not_a_duplicate_key_but_a_repeated_key_is() -> None:
    rules = load_rules("rules:\n  - &e {name: a, kind: error_rate}\n  - {<<: *e, name: b}\n", "r.yaml")
    assert [r.name for r in rules.rules] == ["a", "b"]
    error = only_error("rules:\n  - name: a\n    kind: error_rate\n    name: b\n")
    assert (error.line, error.message) == (4, "duplicate key 'name'")


@pytest.mark.parametrize(
    ("data", "line", "message"),
    [
        (b"rules:\n  - name: \xff\n", 2, "not UTF-8 text: byte 0xff cannot be decoded"),
        (b"rules:\n\n  - name: a\x00\n", 3, "character U+0000 is not allowed in YAML"),
        (b"\xff\xfer\x00u\x00", 1, "the file is UTF-16 text; save it as UTF-8"),
        ("rules:\n  - name: a\n    kind: error_rate\n    at: 2024-02-30\n", 4, "cannot read '2024-02-30' as timestamp"),
        ("rules:\n  - name: !!int abc\n", 2, "cannot read 'abc' as int"),
        ("rules:\n  - name: " + "9" * 5000 + "\n", 2, "Exceeds the limit (4300 digits)"),
        ("rules:\n  - ? [a]\n    : b\n", 2, "found unhashable key"),
        ("rules: *nowhere\n", 1, "found undefined alias 'nowhere'"),
        ("rules: []\n---\nrules: []\n", 2, "expected a single document"),
    ],
)
def test_undecodable_or_unreadable_values_name_their_line(data: str | bytes, line: int, message: str) -> None:
    error = only_error(data)
    assert error.line == line and message in error.message and error.source == "rules.yaml"


def test_a_bom_is_fine_and_bytes_load_like_text() -> None:
    text = "rules:\n  - name: e\n    kind: error_rate\n"
    assert load_rules(b"\xef\xbb\xbf" + text.encode(), "r.yaml").rules == load_rules(text, "r.yaml").rules


def test_an_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# padding\n" * 110_000)
    with pytest.raises(RuleFileError) as raised:
        load_rule_file(path)
    assert str(raised.value) == f"{path}: the file is larger than 1048576 bytes, the limit for a YAML file"
    with pytest.raises(YamlError, match="larger than 10 bytes"):
        parse_bounded("a: 12345678", "x.yaml", YamlLimits(max_bytes=10))


def test_tier_profiles_get_the_same_protection(tmp_path: Path) -> None:
    with pytest.raises(RuleFileError) as raised:
        parse_tier_profile("tier: t\ncommon: " + "{a: " * 100 + "}" * 100 + "\n", "t.yaml")
    assert str(raised.value) == "t.yaml:2: nested deeper than 64 levels"
    profile = tmp_path / "profile.yaml"  # recognised as a profile only after it parsed; refused as YAML here
    profile.write_bytes(b"tier: t\ndefaults: {}\ncommon: \x00\n")
    assert [e.line for e in check_rule_files([profile])] == [3]


def test_a_file_with_thousands_of_errors_reports_the_first_twenty_quickly() -> None:
    text = "rules: []\n" + "".join(f"extra{i}: 1\n" for i in range(20_000))
    started = time.perf_counter()
    with pytest.raises(RuleFileError) as raised:
        load_rules(text, "r.yaml")
    assert time.perf_counter() - started < 5
    errors = raised.value.errors
    assert len(errors) == 21 and errors[0] == RuleError("r.yaml", 2, "extra0: Extra inputs are not permitted")
    assert errors[-1] == RuleError("r.yaml", 0, "and 19980 more errors")


def test_rules_check_reports_hostile_files_by_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main

    files = {"deep.yaml": deep(3000).encode(), "bomb.yaml": alias_bomb().encode(), "nul.yaml": b"rules:\n\x00\n"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    assert main(["rules", "check", *(str(tmp_path / name) for name in files)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{tmp_path / 'deep.yaml'}:4: nested deeper than 64 levels",
        f"{tmp_path / 'bomb.yaml'}:5: alias *a3 takes the document past 100000 nodes (aliases expanded)",
        f"{tmp_path / 'nul.yaml'}:2: character U+0000 is not allowed in YAML",
    ]
