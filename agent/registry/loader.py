"""Load the registry file (YAML): every error names the file, the line, and the dotted path of the bad field,
e.g. `registry.yaml:31: versions.1.provenance.artifact_digest: a sha256 digest needs 64 lowercase hex digits`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydantic import ValidationError
from yaml.nodes import Node

from agent.domain.safe_yaml import YamlError, field_path, line_at_path, parse_bounded, read_limit
from agent.registry.model import RegistryFile, VersionSpec


class RegistryFileError(Exception):
    """The registry file could not be loaded; the message names the file, and the line and field of every error."""


@dataclass(frozen=True, slots=True)
class RegistrySource:
    """What a registry is built from: the declared versions and where they were declared."""

    model: str
    versions: tuple[VersionSpec, ...]
    origin: str  # the registry file's path, or a description of the fallback


# Locating is linear in the file; a machine-made file can hold thousands of errors.
MAX_REPORTED_ERRORS: Final = 20


def _format_errors(source: str, root: Node, error: ValidationError) -> str:
    details = error.errors()
    lines = []
    for item in details[:MAX_REPORTED_ERRORS]:
        path = field_path(item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        where = f"{source}:{line_at_path(root, item['loc'], message)}"
        lines.append(f"{where}: {path}: {message}" if path else f"{where}: {message}")
    if len(details) > MAX_REPORTED_ERRORS:
        lines.append(f"{source}: and {len(details) - MAX_REPORTED_ERRORS} more errors")
    return "\n".join(lines)


def parse_registry(text: str | bytes, source: str = "<registry>") -> RegistrySource:
    try:
        parsed = parse_bounded(text, source)
    except YamlError as exc:
        raise RegistryFileError(str(exc)) from None
    if not isinstance(parsed.data, dict):
        line = parsed.root.start_mark.line + 1
        kind = type(parsed.data).__name__
        raise RegistryFileError(f"{source}:{line}: expected a mapping at the top level, got {kind}")
    try:
        document = RegistryFile.model_validate(parsed.data)
    except ValidationError as exc:
        raise RegistryFileError(_format_errors(source, parsed.root, exc)) from None
    return RegistrySource(model=document.model, versions=tuple(document.versions), origin=source)


def load_registry(path: Path) -> RegistrySource:
    try:
        with path.open("rb") as file:
            data = file.read(read_limit())
    except OSError as exc:
        raise RegistryFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_registry(data, str(path))
