"""Load the registry file (YAML): every error names the file, the line, and the dotted path of the bad field,
e.g. `registry.yaml:31: versions.1.provenance.artifact_digest: a sha256 digest needs 64 lowercase hex digits`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from agent.registry.model import RegistryFile, VersionSpec


class RegistryFileError(Exception):
    """The registry file could not be loaded; the message names the file, and the line and field of every error."""


@dataclass(frozen=True, slots=True)
class RegistrySource:
    """What a registry is built from: the declared versions and where they were declared."""

    model: str
    versions: tuple[VersionSpec, ...]
    origin: str  # the registry file's path, or a description of the fallback


_FIELD_PREFIX = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*): ")


def _line_of(root: yaml.Node | None, loc: Sequence[int | str], message: str) -> int | None:
    """1-based line of the deepest node the error path reaches (the field itself when it is present)."""
    node = root
    if node is None:
        return None
    path = list(loc)
    named = _FIELD_PREFIX.match(message)
    if named:  # model-level checks name their field first ("evidence: ..."): point at it when present
        path.append(named.group(1))
    for part in path:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if getattr(k, "value", None) == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node = child
    return node.start_mark.line + 1


def _format_errors(source: str, root: yaml.Node | None, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        line = _line_of(root, item["loc"], message)
        where = f"{source}:{line}" if line is not None else source
        lines.append(f"{where}: {path}: {message}" if path else f"{where}: {message}")
    return "\n".join(lines)


def parse_registry(text: str, source: str = "<registry>") -> RegistrySource:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistryFileError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise RegistryFileError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        document = RegistryFile.model_validate(raw)
    except ValidationError as exc:
        raise RegistryFileError(_format_errors(source, root, exc)) from None
    return RegistrySource(model=document.model, versions=tuple(document.versions), origin=source)


def load_registry(path: Path) -> RegistrySource:
    try:
        text = path.read_text()
    except OSError as exc:
        raise RegistryFileError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_registry(text, str(path))
