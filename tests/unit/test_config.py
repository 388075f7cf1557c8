import re
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import ConfigError, load_config, parse_config

GOOD = """
model: {name: credit, tier: critical}
versions:
  - {tag: v1, endpoint: "127.0.0.1:8001"}
  - {tag: v2, endpoint: "127.0.0.1:8002"}
stable: v1
candidate: v2
state_dir: ./state
control: {token_file: token}
"""


def test_good_config_and_paths_relative_to_the_file(tmp_path: Path):
    path = tmp_path / "agent.yaml"
    path.write_text(GOOD)
    config = load_config(path)
    assert config.tags == ["v1", "v2"]
    assert config.state_dir == tmp_path / "state"
    assert config.control.token_file == tmp_path / "token"
    assert config.starting_weights() == {"v1": 100, "v2": 0}


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (("127.0.0.1:8002", "model_v2:8002"), "versions.1.endpoint: endpoint must be HOST:PORT"),
        (("127.0.0.1:8002", "127.0.0.1:99999"), "versions.1.endpoint"),
        (("stable: v1", "stable: v7"), "stable: 'v7' is not one of the versions"),
        (("candidate: v2", "candidate: v1"), "candidate: must differ from stable"),
        (("tier: critical", "tier: important"), "model.tier: Input should be 'critical' or 'experimental'"),
        (("tag: v2", "tag: v1"), "duplicate tag"),
        (("state_dir", "stat_dir"), "stat_dir: Extra inputs are not permitted"),
    ],
)
def test_errors_name_the_file_and_the_field(patch, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(GOOD.replace(*patch), "agent.yaml")
    assert re.match(r"agent\.yaml:\d+: ", str(err.value))  # the file and the line
    assert expected in str(err.value)


def test_initial_weights_must_name_known_versions_and_sum_positive():
    with pytest.raises(ConfigError, match="unknown version"):
        parse_config(GOOD + "initial_weights: {v3: 1}\n", "a.yaml")
    with pytest.raises(ConfigError, match="more than 0"):
        parse_config(GOOD + "initial_weights: {v1: 0}\n", "a.yaml")


def test_yaml_syntax_error():
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config("model: [", "a.yaml")


def test_cli_invalid_config_exits_non_zero_with_the_error(tmp_path: Path, capsys):
    path = tmp_path / "agent.yaml"
    path.write_text(GOOD.replace("stable: v1", "stable: nope"))
    assert main(["check-config", str(path)]) == 2
    assert f"{path}:6: stable" in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_status_text_shows_rule_verdicts_holds_and_escalations():
    from agent.cli import format_status

    text = format_status(
        {
            "model": "m",
            "ready": True,
            "rules": [{"rule": "error-rate", "version": "v2", "state": "firing", "for_s": 3, "reason": "12% > 5%"}],
            "holds": {"v3": "alert ModelVersionHighLatency"},
            "escalations": ["no eligible rollback target: v1: incompatible"],
            "rules_file": "r.yaml",
            "rules_error": "r.yaml:4: bad",
        }
    )
    assert "error-rate" in text and "firing" in text and "12% > 5%" in text
    assert "HOLD v3: alert ModelVersionHighLatency" in text
    assert "ESCALATION: no eligible rollback target" in text
    assert "rule file r.yaml REFUSED (previous rules in force): r.yaml:4: bad" in text


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (("127.0.0.1:8002", "model_v2:8002"), "agent.yaml:5: versions.1.endpoint: endpoint must be HOST:PORT"),
        (("tier: critical", "tier: important"), "agent.yaml:2: model.tier: Input should be"),
        (("stable: v1", "stable: v7"), "agent.yaml:6: stable: 'v7' is not one of the versions"),
        (("state_dir", "stat_dir"), "agent.yaml:8: stat_dir: Extra inputs are not permitted"),
        (("control: {token_file: token}", "control: {listen: {port: 18000}}"), "agent.yaml:9: control.listen: port"),
    ],
)
def test_errors_name_the_line_of_the_field(patch, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(GOOD.replace(*patch), "agent.yaml")
    assert str(err.value).startswith(expected)


HOSTILE = {
    "deep": ("model: {name: m}\nversions: " + "[" * 3000 + "]" * 3000 + "\n").encode(),
    "alias bomb": "".join(
        f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}" if i else "lol"] * 10) + "]\n" for i in range(9)
    ).encode(),
    "invalid UTF-8": GOOD.replace("stable: v1", "stable: v\xe9").encode("latin-1"),
    "NUL byte": GOOD.encode().replace(b"candidate: v2", b"candidate: v2\x00"),
    "impossible date": GOOD.replace("stable: v1", "stable: 2024-02-30").encode(),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_files_are_refused_with_the_file_and_line(tmp_path: Path, capsys, name: str):
    path = tmp_path / "agent.yaml"
    path.write_bytes(HOSTILE[name])
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:[1-9]\d*: "):
        load_config(path)
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:") and "Traceback" not in err


def test_bytes_with_a_bom_load_like_text():
    assert parse_config(b"\xef\xbb\xbf" + GOOD.encode(), "a.yaml") == parse_config(GOOD, "a.yaml")
