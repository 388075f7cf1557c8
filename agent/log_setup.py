"""The agent's own log: level and format (text, or JSON with one event per line), context fields, redaction.

Context fields (model, version, rollback_id, trace_id) come from `extra=` on a call or from `log_context`, a
contextvar that any part may set around work it does (e.g. a rollback procedure); JSON lines carry them as
keys, text lines leave them out. Secrets never reach a line: bearer and basic credentials, and any value
registered with `redact`, are replaced by `[redacted]` in every message, whatever the format.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import IO, Final

from agent.pb.rollback_agent.v1 import audit_pb2

LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS: Final = ("text", "json")
CONTEXT_FIELDS: Final = ("model", "version", "rollback_id", "trace_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "log_context", default=MappingProxyType({})
)
_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic)(\s+)([A-Za-z0-9._~+/=-]{4,})")
_secrets: set[str] = set()


class LogSettingsError(ValueError):
    """A log level or format that does not exist; the message names the setting and the accepted values."""


def parse_level(value: str, setting: str = "log level") -> str:
    level = value.strip().upper()
    if level not in LEVELS:
        raise LogSettingsError(f"{setting}: {value!r} is not a log level; use one of {', '.join(LEVELS)}")
    return level


def parse_format(value: str, setting: str = "log format") -> str:
    fmt = value.strip().lower()
    if fmt not in FORMATS:
        raise LogSettingsError(f"{setting}: {value!r} is not a log format; use one of {', '.join(FORMATS)}")
    return fmt


@contextlib.contextmanager
def log_context(**fields: str) -> Iterator[None]:
    """Within the block (and tasks started in it), every log line carries these fields."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v}})
    try:
        yield
    finally:
        _context.reset(token)


def set_log_context(**fields: str) -> None:
    """Fields for the rest of this context (the agent's model, set once at start)."""
    _context.set({**_context.get(), **{k: v for k, v in fields.items() if v}})


def redact(secret: str) -> None:
    """Never let this value (a token the agent read) appear in a log line."""
    if len(secret) >= 4:
        _secrets.add(secret)


def scrub(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    return _CREDENTIAL.sub(r"\1\2[redacted]", text)


class ContextFilter(logging.Filter):
    """Adds the context fields to every record and redacts credentials from its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter  # only when asked for: one module less in every pod otherwise

    return JsonFormatter(
        "{asctime}{levelname}{name}{message}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        json_ensure_ascii=False,
    )


def configure_logging(level: str = "INFO", fmt: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """Replace the root logger's handlers with one on `stream` (default stderr) in `fmt`; returns it."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(json_formatter() if parse_format(fmt) == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(parse_level(level))
    return handler


def audit_record_fields(record: audit_pb2.AuditRecord) -> dict[str, str]:
    """The context fields an audit record names (model, rollback id, version), for the line that logs it."""
    which = record.WhichOneof("event")
    event = getattr(record, which) if which else None
    fields = {
        "model": record.model,
        "rollback_id": str(getattr(event, "rollback_id", "")),
        "version": str(getattr(event, "version", "") or getattr(event, "from_version", "")),
    }
    return {k: v for k, v in fields.items() if v}
