"""The control API's tokens file (`control.tokens_file`, YAML, typically mounted from a Secret).

    tokens:
      - name: ana              # audit records name her `operator:ana`
        role: operator         # read-only | operator | admin
        sha256: 9f86d081...    # hex SHA-256 of her token: `printf %s "$TOKEN" | rollback-agent token hash`

Only hashes are kept, so the file does not let its reader in. Every error names the file and the line; a value
under `sha256` is never repeated in an error (a token pasted there by mistake stays out of logs).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from yaml.nodes import Node

from agent.domain.safe_yaml import field_path, line_at_path, read_limit
from agent.http.identities import EMPTY_TOKEN_SHA256, Identities, Identity, Role
from agent.triggers.errors import RuleFileError, parse_yaml

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_MAX_REPORTED_ERRORS = 20


class TokensFileError(Exception):
    """The tokens file cannot be used; the message names the file, the line and what is wrong."""


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"a name is 1-63 letters, digits, '.', '_', '@' or '-', starting with a letter or digit; got {value!r}"
        )
    return value


def _sha256(value: str) -> str:
    if not _SHA256.match(value):
        raise ValueError(
            f"sha256 must be the 64 hex digits of the token's SHA-256 (not the token itself), got {len(value)} "
            'characters; make it with `rollback-agent token hash` or `printf %s "$TOKEN" | sha256sum`'
        )
    if value.lower() == EMPTY_TOKEN_SHA256:
        raise ValueError("sha256 is the hash of an empty token")
    return value.lower()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenEntry(_Strict):
    name: Annotated[str, AfterValidator(_name)]
    role: Role
    sha256: Annotated[str, AfterValidator(_sha256)]


class TokensFile(_Strict):
    tokens: Annotated[list[TokenEntry], Field(min_length=1)]


def parse_tokens_file(data: str | bytes, source: str) -> Identities:
    try:
        parsed = parse_yaml(data, source)
    except RuleFileError as exc:  # YAML syntax, limits, duplicate keys: each with its line
        raise TokensFileError(str(exc)) from None
    if not isinstance(parsed.data, dict):
        raise TokensFileError(f"{source}:{parsed.root.start_mark.line + 1}: expected a mapping with `tokens:`")
    try:
        document = TokensFile.model_validate(parsed.data)
    except ValidationError as exc:
        raise TokensFileError(_errors(source, parsed.root, exc)) from None
    problems: list[str] = []
    first: dict[tuple[str, str], int] = {}
    for index, entry in enumerate(document.tokens):
        for field in ("name", "sha256"):
            value = getattr(entry, field)
            if (field, value) in first:
                line = line_at_path(parsed.root, ("tokens", index, field))
                same = "name" if field == "name" else "token"
                problems.append(
                    f"{source}:{line}: tokens.{index}.{field}: the same {same} as tokens.{first[field, value]}"
                    + (f" ({value!r})" if field == "name" else "")
                )
            else:
                first[field, value] = index
    if problems:
        raise TokensFileError("\n".join(problems))
    return Identities(Identity(e.name, e.role, e.sha256) for e in document.tokens)


def load_tokens_file(path: Path) -> Identities:
    try:
        with path.open("rb") as file:
            data = file.read(read_limit())
    except OSError as exc:
        raise TokensFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_tokens_file(data, str(path))


def _errors(source: str, root: Node, error: ValidationError) -> str:
    details = error.errors()
    lines = []
    for item in details[:_MAX_REPORTED_ERRORS]:
        path = field_path(item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        where = f"{source}:{line_at_path(root, item['loc'])}"
        lines.append(f"{where}: {path}: {message}" if path else f"{where}: {message}")
    if len(details) > _MAX_REPORTED_ERRORS:
        lines.append(f"{source}: and {len(details) - _MAX_REPORTED_ERRORS} more errors")
    return "\n".join(lines)
