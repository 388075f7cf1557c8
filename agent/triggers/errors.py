"""Rule-file problems located by file and line, and mapping pydantic errors back to YAML lines."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode


@dataclass(frozen=True, slots=True)
class RuleError:
    source: str  # file path (or the name given to load_rules)
    line: int  # 1-based; 0 when the problem is not tied to a line
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}" if self.line else f"{self.source}: {self.message}"


class RuleFileError(Exception):
    """A rule file or tier profile that cannot be used; `errors` says where and why."""

    def __init__(self, errors: Sequence[RuleError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


@dataclass(frozen=True, slots=True)
class ParsedYaml:
    data: Any
    root: Node


def parse_yaml(text: str, source: str) -> ParsedYaml:
    """Parse YAML keeping the node tree (for line numbers); syntax errors and duplicate keys are RuleErrors."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        raise RuleFileError([RuleError(source, mark.line + 1 if mark else 0, f"YAML syntax error: {what}")]) from None
    except yaml.YAMLError as exc:
        raise RuleFileError([RuleError(source, 0, f"YAML error: {exc}")]) from None
    if root is None:
        raise RuleFileError([RuleError(source, 1, "the file is empty")])
    duplicates = list(_duplicate_keys(root, source))
    if duplicates:
        raise RuleFileError(duplicates)
    constructor = yaml.SafeLoader("")
    try:
        data = constructor.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise RuleFileError([RuleError(source, mark.line + 1 if mark else 0, f"YAML error: {exc.problem}")]) from None
    return ParsedYaml(data, root)


def _duplicate_keys(node: Node, source: str) -> Any:
    if isinstance(node, MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, ScalarNode):
                if key.value in seen:
                    yield RuleError(source, key.start_mark.line + 1, f"duplicate key '{key.value}'")
                seen.add(key.value)
            yield from _duplicate_keys(value, source)
    elif isinstance(node, SequenceNode):
        for item in node.value:
            yield from _duplicate_keys(item, source)


def line_of(root: Node, loc: Sequence[str | int]) -> int:
    """1-based line of the node a pydantic error location points to.

    Location parts that are not keys (union tags such as the rule kind, validator names) are skipped; for a
    missing key the line of the mapping that should hold it is returned.
    """
    node = root
    line = root.start_mark.line
    for part in loc:
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if isinstance(key, ScalarNode) and key.value == str(part):
                    line = key.start_mark.line
                    node = value
                    break
            else:
                line = node.start_mark.line
        elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line
    return line + 1


def node_at(root: Node, loc: Sequence[str | int]) -> Node | None:
    node: Node | None = root
    for part in loc:
        if isinstance(node, MappingNode):
            node = next((v for k, v in node.value if isinstance(k, ScalarNode) and k.value == str(part)), None)
        elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
        else:
            return None
    return node


def located_errors(
    exc: ValidationError, source: str, root: Node, prefix: Sequence[str | int] = (), label: str = ""
) -> list[RuleError]:
    """Pydantic errors as RuleErrors with the YAML line of each offending key."""
    errors: list[RuleError] = []
    for error in exc.errors(include_url=False):
        loc = list(prefix) + list(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "union_tag_invalid":
            loc.append("kind")
            expected = error.get("ctx", {}).get("expected_tags", "")
            message = f"unknown kind {error['input'].get('kind')!r}; expected one of {expected}"
        elif error["type"] == "union_tag_not_found":
            message = "missing `kind`"
        path = _path(root, loc)
        where = f"{label}{path}: " if (label or path) else ""
        errors.append(RuleError(source, line_of(root, loc), f"{where}{message}"))
    return sorted(errors, key=lambda e: e.line)


def _path(root: Node, loc: Sequence[str | int]) -> str:
    """The location as the user wrote it: rule names after list indexes; union tags and validator names, which
    pydantic puts in locations but are not keys, are left out."""
    parts: list[str] = []
    node: Node | None = root
    for index, part in enumerate(loc):
        if isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            name = node_at(node, ["name"])
            parts.append(f"[{part}]" + (f" '{name.value}'" if isinstance(name, ScalarNode) else ""))
        elif isinstance(node, MappingNode):
            child = node_at(node, [part])
            kind = node_at(node, ["kind"])
            is_tag = isinstance(kind, ScalarNode) and kind.value == part
            if child is not None or (index == len(loc) - 1 and not is_tag):  # a missing key is the last part
                parts.append(("." if parts else "") + str(part))
                node = child
    return "".join(parts)
