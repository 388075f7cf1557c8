"""Rule files: YAML with an optional `model` and `tier` and a list of `rules` (a bare list is accepted too).

Every problem is reported with the file and the line: YAML syntax, duplicate keys, unknown fields or kinds,
invalid values, duplicate rule names, and (in `check_rule_files`) inconsistencies that appear only once the rule
is completed with its tier's defaults.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode

from agent.domain.safe_yaml import ParsedYaml
from agent.triggers.errors import (
    RuleError,
    RuleFileError,
    line_of,
    located_errors,
    parse_yaml,
    read_yaml_file,
)
from agent.triggers.kinds import Rule
from agent.triggers.rule import RuleBase
from agent.triggers.tiers import (
    SHIPPED_TIERS,
    TIER_NAME_PATTERN,
    RuleResolutionError,
    resolve_rule,
    tier_profile,
    validate_tier_profile,
)


class _RuleFileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, min_length=1)
    tier: str | None = Field(default=None, pattern=TIER_NAME_PATTERN)
    rules: list[Rule]


@dataclass(frozen=True, slots=True)
class RuleFile:
    """A validated rule file, not yet completed with tier defaults."""

    source: str
    rules: tuple[RuleBase, ...]
    model: str | None = None
    tier: str | None = None
    fingerprint: str = ""  # sha256 of the text, to tell whether a reload changed anything
    # Rule name -> (line of the rule, field name -> line of the field), for errors found after loading.
    lines: Mapping[str, tuple[int, Mapping[str, int]]] = field(default_factory=dict)
    tier_line: int = 0

    def line_of(self, rule: str, field_name: str | None = None) -> int:
        rule_line, field_lines = self.lines.get(rule, (0, {}))
        if field_name is not None:
            return field_lines.get(field_name.split(".")[0], rule_line)
        return rule_line


def load_rules(text: str | bytes, source_name: str) -> RuleFile:
    """Parse and validate rule-file text (bytes are decoded as UTF-8); raises RuleFileError listing every
    problem with its line."""
    return _rule_file(parse_yaml(text, source_name), source_name, _fingerprint(text))


def load_rule_file(path: str | Path) -> RuleFile:
    return load_rules(read_yaml_file(Path(path), "rule file"), str(path))


def _fingerprint(text: str | bytes) -> str:
    return hashlib.sha256(text if isinstance(text, bytes) else text.encode()).hexdigest()


def _rule_file(parsed: ParsedYaml, source_name: str, fingerprint: str) -> RuleFile:
    data: Any = parsed.data
    prefix: tuple[str | int, ...] = ()
    if isinstance(data, list):
        data, prefix = {"rules": data}, ("rules",)
    if not isinstance(data, dict):
        raise RuleFileError(
            [
                RuleError(
                    source_name,
                    parsed.root.start_mark.line + 1,
                    "expected a mapping with `rules:` (or a list of rules)",
                )
            ]
        )
    try:
        model = _RuleFileModel.model_validate(data)
    except ValidationError as exc:
        located = [_strip_prefix(e, prefix) for e in located_errors(exc, source_name, _rooted(parsed.root, prefix))]
        raise RuleFileError(located) from None
    rules_node = parsed.root if prefix else _child(parsed.root, "rules")
    lines: dict[str, tuple[int, Mapping[str, int]]] = {}
    errors: list[RuleError] = []
    for index, rule in enumerate(model.rules):
        rule_node = rules_node.value[index] if rules_node is not None else parsed.root
        line = rule_node.start_mark.line + 1
        if rule.name in lines:
            errors.append(
                RuleError(
                    source_name,
                    line_of(rule_node, ["name"]),
                    f"duplicate rule name '{rule.name}' (first at line {lines[rule.name][0]})",
                )
            )
            continue
        field_lines = {str(k.value): k.start_mark.line + 1 for k, _ in getattr(rule_node, "value", [])}
        lines[rule.name] = (line, field_lines)
    if errors:
        raise RuleFileError(errors)
    return RuleFile(
        source=source_name,
        rules=tuple(model.rules),
        model=model.model,
        tier=model.tier,
        fingerprint=fingerprint,
        lines=lines,
        tier_line=line_of(parsed.root, ["tier"]) if not prefix else 0,
    )


def resolution_errors(rule_file: RuleFile, tier: str, tiers_dir: str | Path | None = None) -> list[RuleError]:
    """Problems of the file's rules once completed with the tier's defaults (empty when all resolve)."""
    try:
        profile = tier_profile(tier, tiers_dir)
    except RuleFileError as exc:
        return [RuleError(rule_file.source, rule_file.tier_line, e.message) for e in exc.errors]
    errors: list[RuleError] = []
    for rule in rule_file.rules:
        try:
            resolve_rule(rule, profile)
        except RuleResolutionError as exc:
            for field_name, message in exc.problems:
                errors.append(
                    RuleError(
                        rule_file.source,
                        rule_file.line_of(rule.name, field_name),
                        f"rule '{rule.name}' with tier '{tier}': {field_name}: {message}",
                    )
                )
    return errors


def check_rule_files(
    paths: Iterable[str | Path], tier: str | None = None, tiers_dir: str | Path | None = None
) -> list[RuleError]:
    """Validate rule files as `rollback-agent rules check` does: each file is loaded and its rules resolved
    against `tier`, else the file's own `tier`, else every shipped tier. Tier profiles (a mapping with `defaults`
    or `common` and no `rules`) are validated as profiles. Empty list: all good."""
    errors: list[RuleError] = []
    for path in paths:
        source = str(path)
        try:
            text = read_yaml_file(Path(path), "rule file")
            parsed = parse_yaml(text, source)
            if _is_tier_profile(parsed.data):
                validate_tier_profile(parsed, source)
                continue
            rule_file = _rule_file(parsed, source, _fingerprint(text))
        except RuleFileError as exc:
            errors.extend(exc.errors)
            continue
        tiers = (tier,) if tier else (rule_file.tier,) if rule_file.tier else SHIPPED_TIERS
        for name in tiers:
            errors.extend(resolution_errors(rule_file, name, tiers_dir))
    return errors


def _is_tier_profile(data: Any) -> bool:
    """A mapping with `defaults` or `common` and no `rules`: checked as a tier profile."""
    return isinstance(data, dict) and "rules" not in data and ("defaults" in data or "common" in data)


def _child(node: Node, key: str) -> Any:
    for k, v in getattr(node, "value", []):
        if getattr(k, "value", None) == key:
            return v
    return None


def _rooted(root: Node, prefix: tuple[str | int, ...]) -> Node:
    """For a bare-list file, a synthetic mapping `{rules: <list>}` so locations map the same way."""
    if not prefix:
        return root
    key = ScalarNode("tag:yaml.org,2002:str", "rules", root.start_mark, root.start_mark)
    return MappingNode("tag:yaml.org,2002:map", [(key, root)], root.start_mark, root.end_mark)


def _strip_prefix(error: RuleError, prefix: tuple[str | int, ...]) -> RuleError:
    if not prefix:
        return error
    return RuleError(error.source, error.line, error.message.removeprefix("rules"))
