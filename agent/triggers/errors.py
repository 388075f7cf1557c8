"""Rule-file problems located by file and line, and mapping pydantic errors back to YAML lines."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydantic import ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from agent.domain.safe_yaml import (
    DEFAULT_LIMITS,
    ParsedYaml,
    YamlError,
    YamlLimits,
    key_text,
    parse_bounded,
    read_limit,
)

MAX_REPORTED_ERRORS: Final = 20


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


def read_yaml_file(path: Path, what: str, limits: YamlLimits = DEFAULT_LIMITS) -> bytes:
    """The file's bytes (at most one more than `limits` allow: parse_yaml refuses an oversized file as such)."""
    try:
        with path.open("rb") as file:
            return file.read(read_limit(limits))
    except OSError as exc:
        raise RuleFileError([RuleError(str(path), 0, f"cannot read {what}: {exc.strerror or exc}")]) from None


def parse_yaml(text: str | bytes, source: str, limits: YamlLimits = DEFAULT_LIMITS) -> ParsedYaml:
    """Parse YAML within `limits`, keeping the node tree (for line numbers); every YAML problem (syntax,
    undecodable bytes, a limit, a duplicate key) is a RuleFileError with its line."""
    try:
        return parse_bounded(text, source, limits, check_nodes=lambda root: _refuse_duplicate_keys(root, source))
    except YamlError as exc:
        raise RuleFileError([RuleError(source, exc.line, exc.message)]) from None


def _refuse_duplicate_keys(root: Node, source: str) -> None:
    duplicates = list(_duplicate_keys(root, source))
    if duplicates:
        raise RuleFileError(duplicates)


def _duplicate_keys(root: Node, source: str) -> Iterator[RuleError]:
    """Every repeated key, each shared (aliased) node visited once, in document order."""
    seen_nodes: set[int] = set()
    pending = [root]
    while pending:
        node = pending.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, MappingNode):
            keys: set[str] = set()
            for key, _ in node.value:
                if isinstance(key, ScalarNode):
                    if key.value in keys:
                        yield RuleError(source, key.start_mark.line + 1, f"duplicate key '{key.value}'")
                    keys.add(key.value)
            pending.extend(reversed([value for _, value in node.value]))
        elif isinstance(node, SequenceNode):
            pending.extend(reversed(node.value))


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
    """Pydantic errors as RuleErrors with the YAML line of each offending key (the first MAX_REPORTED_ERRORS;
    locating is linear in the file, and a machine-made file can hold thousands of errors)."""
    details = exc.errors(include_url=False)
    errors: list[RuleError] = []
    for error in details[:MAX_REPORTED_ERRORS]:
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
    errors.sort(key=lambda e: e.line)
    if len(details) > MAX_REPORTED_ERRORS:
        errors.append(RuleError(source, 0, f"and {len(details) - MAX_REPORTED_ERRORS} more errors"))
    return errors


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
                parts.append(("." if parts else "") + key_text(part))
                node = child
    return "".join(parts)
