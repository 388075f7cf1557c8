"""The agent's log: JSON lines with context fields, level and format settings, and tokens that never appear."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.domain.audit_events import wrap
from agent.log_setup import (
    LogSettingsError,
    audit_record_fields,
    configure_logging,
    log_context,
    parse_level,
    redact,
)
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.runtime import log_audit_record
from tests.unit.http.test_control_app import make_client

TOKEN = "tok-3f9a8c1d2e7b6a5f4c3d2e1f0a9b8c7d"


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    stream = io.StringIO()
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved:
        root.addHandler(handler)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_level_logger_message_and_the_context_fields(output: io.StringIO) -> None:
    configure_logging("INFO", "json", output)
    log = logging.getLogger("agent.engine.orchestrator")
    with log_context(model="credit-scorer", rollback_id="ab12"):
        log.warning("rollback %s: %s -> %s", "ab12", "v2", "v1", extra={"version": "v2"})
    log.debug("not at INFO")
    (line,) = lines(output)
    assert line["level"] == "WARNING" and line["logger"] == "agent.engine.orchestrator"
    assert line["message"] == "rollback ab12: v2 -> v1"
    assert (line["model"], line["rollback_id"], line["version"]) == ("credit-scorer", "ab12", "v2")
    assert "time" in line


def test_every_audit_record_line_names_its_model_rollback_and_version(output: io.StringIO) -> None:
    configure_logging("INFO", "json", output)
    record = wrap(audit_pb2.Rollback(rollback_id="ab12", from_version="v2", to_version="v1", outcome="switched"))
    record.seq, record.model = 9, "credit-scorer"
    assert audit_record_fields(record) == {"model": "credit-scorer", "rollback_id": "ab12", "version": "v2"}
    log_audit_record(record)
    (line,) = lines(output)
    assert (line["model"], line["rollback_id"], line["version"]) == ("credit-scorer", "ab12", "v2")
    assert json.loads(str(line["message"]).removeprefix("audit_record "))["seq"] == 9


def test_text_format_is_one_plain_line(output: io.StringIO) -> None:
    configure_logging("debug", "text", output)
    logging.getLogger("agent").info("hello %s", "there")
    assert output.getvalue().endswith(" INFO agent: hello there\n")


@pytest.mark.parametrize(("level", "fmt"), [("LOUD", "text"), ("INFO", "yaml")])
def test_a_bad_level_or_format_names_the_setting_and_the_choices(level: str, fmt: str) -> None:
    with pytest.raises(LogSettingsError, match="use one of"):
        configure_logging(level, fmt, io.StringIO())
    with pytest.raises(LogSettingsError, match="ROLLBACK_AGENT_LOG_LEVEL: 'verbose' is not a log level"):
        parse_level("verbose", "ROLLBACK_AGENT_LOG_LEVEL")


async def test_a_token_in_a_request_never_appears_in_the_logs(tmp_path: Path, output: io.StringIO) -> None:
    configure_logging("DEBUG", "json", output)
    redact(TOKEN)  # as the agent does for the token it read
    client, _sink, store, _procedure = await make_client(tmp_path, credentials=TOKEN)
    async with client:
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert (await client.post("/v1/pause", json={"reason": "maintenance"}, headers=good)).status == 200
        assert (await client.get("/v1/status", headers=good)).status == 200
        bad = {"Authorization": f"Bearer {TOKEN}x"}  # a near miss is refused, and not logged either
        assert (await client.post("/v1/resume", json={"reason": "x"}, headers=bad)).status == 401
    await store.close()
    assert output.getvalue(), "the requests logged nothing at DEBUG: the test would prove nothing"
    log = logging.getLogger("agent.http")
    log.error("refused header %s", f"Authorization: Bearer {TOKEN}x")  # a careless line still says nothing
    log.error("token was %s", TOKEN)
    text = output.getvalue()
    assert TOKEN not in text
    assert "[redacted]" in text
