"""JSON from untrusted bytes: one error type with a message that says what and where, never a crash.

`json.loads` alone lets through what breaks the code behind it: lone surrogates ("\\ud800" is valid JSON but not
text that UTF-8 or protobuf can hold), NaN and Infinity (not JSON at all), integers too long for `int()`, and
nesting deep enough to raise RecursionError. `loads_bounded` refuses each of these with a JsonInputError naming
the position (undecodable bytes, syntax) or the JSON path (bad text, too deep), e.g. `alerts.0.labels.team`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

DEFAULT_MAX_DEPTH = 32
_SEGMENT_MAX = 64
_PATH_MAX = 12  # segments shown before the path is elided
_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonInputError(ValueError):
    """The bytes are not JSON this program can take; the message says what is wrong and where."""


def first_surrogate(text: str) -> int | None:
    """The index of the first lone surrogate in `text` (not a Unicode scalar value), or None."""
    found = _SURROGATE.search(text)
    return None if found is None else found.start()


def path_segment(key: object) -> str:
    """A key or index as a path segment, safe to log and to show: escaped when not plain printable, shortened."""
    text = str(key)
    if not text.isprintable() or "." in text or text == "":
        text = ascii(text)
    if len(text) > _SEGMENT_MAX:
        text = text[: _SEGMENT_MAX - 3] + "..."
    return text


def format_path(parts: tuple[object, ...] | list[object]) -> str:
    """Dotted path (`alerts.0.labels`), `body` for the document itself; long paths keep their ends."""
    if not parts:
        return "body"
    segments = [path_segment(p) for p in parts]
    if len(segments) > _PATH_MAX:
        head, tail = segments[: _PATH_MAX // 2], segments[-2:]
        segments = [*head, f"({len(segments) - len(head) - len(tail)} more)", *tail]
    return ".".join(segments)


def _position(data: bytes | str, offset: int) -> str:
    newline: Any = b"\n" if isinstance(data, bytes) else "\n"
    line = data.count(newline, 0, offset) + 1
    column = offset - (data.rfind(newline, 0, offset) + 1) + 1
    return f"line {line} column {column}"


def _refuse_constant(name: str) -> Any:
    raise JsonInputError(f"body is not valid JSON: {name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonInputError(f"body is not valid JSON: the number {text[:40]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # more digits than sys.get_int_max_str_digits()
        raise JsonInputError(f"body is not valid JSON: an integer with {len(text)} digits is too long") from None


def loads_bounded(raw: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH, max_bytes: int | None = None) -> Any:
    """Parse UTF-8 JSON `raw`; raise JsonInputError when it is too large, not UTF-8, not JSON, nests more than
    `max_depth` arrays/objects, holds NaN/Infinity or an out-of-range number, or has a string or key that is not
    valid Unicode text (a lone surrogate)."""
    if max_bytes is not None and len(raw) > max_bytes:
        raise JsonInputError(f"body is {len(raw)} bytes, more than the limit of {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonInputError(
            f"body is not UTF-8: byte 0x{raw[exc.start]:02x} at {_position(raw, exc.start)} (offset {exc.start})"
        ) from None
    if not text.strip():
        raise JsonInputError("body is empty")
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        raise JsonInputError(f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise JsonInputError(f"body is nested too deeply (more than {max_depth} levels of arrays/objects)") from None
    check_value(value, max_depth=max_depth)
    return value


def check_value(value: Any, *, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    """Walk a parsed JSON value without recursion: refuse nesting beyond `max_depth` and invalid Unicode text."""
    stack: list[tuple[Any, tuple[object, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            _check_text(node, path, "string")
            continue
        if not isinstance(node, dict | list):
            continue
        if len(path) >= max_depth:
            raise JsonInputError(f"{format_path(path)}: nested deeper than {max_depth} levels of arrays/objects")
        if isinstance(node, dict):
            for key, item in node.items():
                _check_text(key, path, "key")
                stack.append((item, (*path, key)))
        else:
            stack.extend((item, (*path, index)) for index, item in enumerate(node))


def _check_text(text: str, path: tuple[object, ...], what: str) -> None:
    at = first_surrogate(text)
    if at is not None:
        where = format_path(path)
        shown = f" {path_segment(text)}" if what == "key" else ""
        raise JsonInputError(
            f"{where}: {what}{shown} is not valid Unicode text (lone surrogate U+{ord(text[at]):04X} at character {at})"
        )
