"""The `drills` section of agent.yaml: a bad schedule or fault is refused naming the file, the line and the field."""

from __future__ import annotations

import pytest

from agent.config import ConfigError, parse_config

BASE = """\
model: {name: credit}
versions:
  - {tag: v1, endpoint: "127.0.0.1:8001"}
  - {tag: v2, endpoint: "127.0.0.1:8002"}
stable: v1
candidate: v2
"""


def test_defaults_and_a_monthly_schedule():
    assert parse_config(BASE).drills.schedule is None
    drills = parse_config(BASE + 'drills: {schedule: "0 3 1 * *", fault: latency}\n').drills
    assert (drills.schedule, drills.fault, drills.settle_timeout_s) == ("0 3 1 * *", "latency", 300.0)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('drills: {schedule: "0 3 1 *"}', "agent.yaml:7: drills: Value error, drills.schedule: schedule '0 3 1 *'"),
        ('drills: {schedule: "0 25 * * *"}', "drills.schedule: hour: '25' is outside 0-23"),
        ("drills: {fault: explode}", "agent.yaml:7: drills.fault: Input should be"),
        ("drills: {fault: hook}", "a hook command is needed exactly when drills.fault is hook"),
        ("drills: {detect_timeout_s: 0}", "drills.detect_timeout_s"),
        ("drills: {schedul: x}", "drills.schedul: Extra inputs are not permitted"),
    ],
)
def test_bad_drills_sections_are_refused_with_file_line_and_field(section: str, message: str):
    with pytest.raises(ConfigError) as refused:
        parse_config(BASE + section + "\n", "agent.yaml")
    assert message.replace("Value error, ", "") in str(refused.value)


def test_a_hook_drill():
    drills = parse_config(BASE + 'drills: {fault: hook, hook: "/opt/drill/fault.sh --model credit"}\n').drills
    assert drills.hook == "/opt/drill/fault.sh --model credit"
