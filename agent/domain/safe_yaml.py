"""Bounded, crash-proof parsing of the YAML files people write: rule files, tier profiles, agent config, registry.

PyYAML's composer recurses once per nesting level, and aliases share nodes, so an unchecked file can exhaust the
stack (a few thousand levels) or expand exponentially when it is walked ("billion laughs"). Here the parser's event
stream is checked as the composer pulls it, before the node an event starts is built: nesting depth, the number
of aliases, and the node count with every alias expanded (each anchor's expanded size is remembered, so this is
linear). Anything past a limit, undecodable bytes and every YAML error become one YamlError naming the source,
the 1-based line and the problem.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, Event, ScalarEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import Reader


@dataclass(frozen=True, slots=True)
class YamlLimits:
    max_bytes: int = 1 << 20
    max_depth: int = 64  # nested collections
    max_aliases: int = 1_000
    max_nodes: int = 100_000  # with every alias expanded


DEFAULT_LIMITS: Final = YamlLimits()


class YamlError(Exception):
    """A YAML file that cannot be read; `line` is 1-based, 0 only when the problem has no line."""

    def __init__(self, source: str, line: int, message: str) -> None:
        self.source = source
        self.line = line
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}" if self.line else f"{self.source}: {self.message}"


@dataclass(frozen=True, slots=True)
class ParsedYaml:
    data: Any
    root: Node  # the composed node tree, for the line of any value


def parse_bounded(
    data: bytes | str,
    source: str,
    limits: YamlLimits = DEFAULT_LIMITS,
    *,
    check_nodes: Callable[[Node], None] | None = None,
) -> ParsedYaml:
    """Parse one YAML document within `limits`; raises YamlError. `check_nodes` sees the composed tree before
    it is turned into Python data (merge keys are flattened then), e.g. to refuse duplicate keys."""
    text = _decoded(data, source, limits)
    root = _compose(text, source, limits)
    if root is None:
        raise YamlError(source, 1, "the file is empty")
    if check_nodes is not None:
        check_nodes(root)
    return ParsedYaml(_construct(root, source), root)


def read_limit(limits: YamlLimits = DEFAULT_LIMITS) -> int:
    """How many bytes to read from a file: one more than allowed, so an oversized file is refused as such."""
    return limits.max_bytes + 1


def line_at_path(root: Node, loc: Sequence[int | str], message: str = "") -> int:
    """1-based line of the deepest node a validation error's location reaches (the field itself when present).

    Model-level checks name their field first ("stable: ...", "envoy.listener: ..."): when `message` starts so,
    the line is that field's.
    """
    path = list(loc)
    named = _FIELD_PREFIX.match(message)
    if named:
        path.extend(int(part) if part.isdigit() else part for part in named.group(1).split("."))
    node = root
    for part in path:
        child: Node | None = None
        if isinstance(node, MappingNode):
            child = next((v for k, v in node.value if isinstance(k, ScalarNode) and k.value == str(part)), None)
        elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node = child
    return int(node.start_mark.line) + 1


def field_path(loc: Sequence[int | str]) -> str:
    """A validation error's location as a dotted path; a key that does not print on one line is quoted."""
    return ".".join(key_text(part) for part in loc)


def key_text(key: object) -> str:
    text = str(key)
    return text if text.isprintable() else repr(text)


_FIELD_PREFIX: Final = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*): ")
# What PyYAML counts as a line break (its marks count lines the same way).
_LINE_BREAK: Final = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


def _line_at(text: str, index: int) -> int:
    return len(_LINE_BREAK.findall(text, 0, index)) + 1


def _decoded(data: bytes | str, source: str, limits: YamlLimits) -> str:
    too_big = f"the file is larger than {limits.max_bytes} bytes, the limit for a YAML file"
    if len(data) > limits.max_bytes:
        raise YamlError(source, 0, too_big)
    if isinstance(data, str):
        text = data
        if len(text.encode("utf-8", "surrogatepass")) > limits.max_bytes:
            raise YamlError(source, 0, too_big)
    else:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise YamlError(source, 1, "the file is UTF-16 text; save it as UTF-8")
        data = data.removeprefix(b"\xef\xbb\xbf")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            before = data[: exc.start].decode("utf-8")
            line = _line_at(before, len(before))
            raise YamlError(source, line, f"not UTF-8 text: byte 0x{data[exc.start]:02x} cannot be decoded") from None
    bad = Reader.NON_PRINTABLE.search(text)
    if bad:
        character = bad.group()
        raise YamlError(
            source,
            _line_at(text, bad.start()),
            f"character U+{ord(character):04X} is not allowed in YAML",
        )
    return text


class _EventGuard:
    """Refuses the event that takes the document past a limit; sees every event in order."""

    def __init__(self, source: str, limits: YamlLimits) -> None:
        self._source = source
        self._limits = limits
        self._open: list[tuple[str | None, int]] = []  # (anchor, expanded size so far) of each open collection
        self._sizes: dict[str, int] = {}  # anchor -> expanded size of its node
        self._total = 0
        self._aliases = 0

    def see(self, event: Event) -> None:
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        if isinstance(event, ScalarEvent):
            self._count(1, line, "")
            if event.anchor is not None:
                self._sizes[event.anchor] = 1
        elif isinstance(event, AliasEvent):
            self._alias(event.anchor or "", line)
        elif isinstance(event, CollectionStartEvent):
            if len(self._open) >= self._limits.max_depth:
                raise YamlError(self._source, line, f"nested deeper than {self._limits.max_depth} levels")
            self._total += 1
            self._check_total(line, "")
            self._open.append((event.anchor, 1))
        elif isinstance(event, CollectionEndEvent) and self._open:
            anchor, size = self._open.pop()
            if anchor is not None:
                self._sizes[anchor] = size
            if self._open:
                parent, parent_size = self._open[-1]
                self._open[-1] = (parent, parent_size + size)

    def _alias(self, anchor: str, line: int) -> None:
        self._aliases += 1
        if self._aliases > self._limits.max_aliases:
            raise YamlError(self._source, line, f"more than {self._limits.max_aliases} aliases")
        if any(open_anchor == anchor for open_anchor, _ in self._open):
            raise YamlError(self._source, line, f"alias *{anchor} refers to a node that contains it")
        # An undefined alias counts as one node; the composer then refuses it with its line.
        self._count(self._sizes.get(anchor, 1), line, anchor)

    def _count(self, nodes: int, line: int, alias: str) -> None:
        self._total += nodes
        if self._open:
            anchor, size = self._open[-1]
            self._open[-1] = (anchor, size + nodes)
        self._check_total(line, alias)

    def _check_total(self, line: int, alias: str) -> None:
        if self._total > self._limits.max_nodes:
            limit = self._limits.max_nodes
            message = (
                f"alias *{alias} takes the document past {limit} nodes (aliases expanded)"
                if alias
                else f"the document has more than {limit} nodes (aliases expanded)"
            )
            raise YamlError(self._source, line, message)


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, text: str, guard: _EventGuard) -> None:
        super().__init__(text)
        self._guard = guard

    def get_event(self) -> Event:
        # The composer takes every event through here, before it builds (and recurses into) the node.
        event: Event = super().get_event()  # type: ignore[no-untyped-call]  # untyped in types-PyYAML
        self._guard.see(event)
        return event


def _compose(text: str, source: str, limits: YamlLimits) -> Node | None:
    loader = _BoundedLoader(text, _EventGuard(source, limits))
    try:
        root: Node | None = loader.get_single_node()
        return root
    except yaml.MarkedYAMLError as exc:
        raise _located(exc, source) from None
    except yaml.YAMLError as exc:
        raise YamlError(source, 0, f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()


class _Constructor(SafeConstructor):
    def construct_object(self, node: Node, deep: bool = False) -> Any:
        # A value the tag resolver accepted can still fail to convert (a 30 February, a 5,000-digit integer,
        # `!!int abc`): report it at its node rather than as a traceback.
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:
            tag = str(node.tag).rsplit(":", 1)[-1]
            value = f" {str(node.value)[:40]!r}" if isinstance(node, ScalarNode) else ""
            # Python's own wording is kept only where it helps ("day is out of range for month").
            reason = f": {str(exc).split('; use ')[0]}" if isinstance(exc, ValueError | OverflowError) else ""
            raise ConstructorError(None, None, f"cannot read{value} as {tag}{reason}", node.start_mark) from None


def _construct(root: Node, source: str) -> Any:
    try:
        return _Constructor().construct_document(root)
    except yaml.MarkedYAMLError as exc:
        raise _located(exc, source) from None
    except yaml.YAMLError as exc:
        raise YamlError(source, int(root.start_mark.line) + 1, f"not valid YAML: {exc}") from None


def _located(exc: yaml.MarkedYAMLError, source: str) -> YamlError:
    mark = exc.problem_mark or exc.context_mark
    what = " ".join(part for part in (exc.context, exc.problem) if part)
    return YamlError(source, mark.line + 1 if mark is not None else 0, f"not valid YAML: {what}")
