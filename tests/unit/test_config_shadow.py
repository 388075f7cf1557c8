"""rollout.shadow: the shadow capture's settings; a bad value names the file, the line and the field."""

from __future__ import annotations

import pytest

from agent.config import ConfigError, parse_config

CONFIG = """
model: {{name: iris}}
versions:
  - {{tag: v1, endpoint: "127.0.0.1:8001"}}
  - {{tag: v2, endpoint: "127.0.0.1:8002"}}
stable: v1
state_dir: ./state
rollout:
  shadow:
{shadow}
"""


def test_capture_is_off_unless_asked_and_redacted_fields_are_read() -> None:
    shadow = parse_config(CONFIG.format(shadow="    redact_fields: [ssn]"), "agent.yaml").rollout.shadow
    assert not shadow.capture and shadow.redact_fields == ["ssn"] and shadow.listener.port == 10001
    on = parse_config(CONFIG.format(shadow="    capture: true\n    listener: {port: 10501}"), "agent.yaml")
    assert on.rollout.shadow.capture and on.rollout.shadow.listener.port == 10501


@pytest.mark.parametrize(
    ("shadow", "field"),
    [
        ("    sample_rate: 1.5", "sample_rate"),
        ("    max_body_bytes: 10", "max_body_bytes"),
        ("    task: ranking", "task"),
        ("    listener: {address: 10.0.0.1.2, port: 1}", "address"),
        ("    redact_field: [ssn]", "redact_field"),
    ],
)
def test_a_bad_value_names_file_line_and_field(shadow: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(CONFIG.format(shadow=shadow), "agent.yaml")
    message = str(caught.value)
    assert "agent.yaml:10" in message and field in message
