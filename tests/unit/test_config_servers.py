"""versions[].server: the profile decides where model metrics are read and under which names; any can be changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from agent.config import ConfigError, parse_config

CONFIG = """
model: {{name: iris}}
versions:
  - {{tag: v1, endpoint: "127.0.0.1:8001"}}
  - {{tag: v2, endpoint: "127.0.0.1:8080"{server}}}
stable: v1
state_dir: ./state
"""


def version(server: str = ""):
    return parse_config(CONFIG.format(server=f", server: {server}" if server else ""), "agent.yaml").versions[1]


def test_the_reference_server_is_the_default_and_reads_the_inference_port_as_before() -> None:
    v2 = version()
    assert v2.server.profile == "refserver"
    assert v2.metrics_url == "http://127.0.0.1:8080/metrics"
    assert v2.metric_names.requests_failure == "model_inference_errors_total"


@pytest.mark.parametrize(
    ("server", "url"),
    [
        ("{profile: mlserver}", "http://127.0.0.1:8082/metrics"),
        ("{profile: triton}", "http://127.0.0.1:8002/metrics"),
        ("{profile: kserve}", "http://127.0.0.1:8080/metrics"),
        ("{profile: mlserver, metrics_port: 9102}", "http://127.0.0.1:9102/metrics"),
        ("{profile: custom, metrics_url: 'http://127.0.0.1:7000/stats'}", "http://127.0.0.1:7000/stats"),
    ],
)
def test_where_each_profile_reads_metrics(server: str, url: str) -> None:
    assert version(server).metrics_url == url


def test_any_name_can_be_replaced_or_emptied() -> None:
    names = version("{profile: mlserver, names: {requests_failure: my_failures_total, latency: ''}}").metric_names
    assert names.requests_failure == "my_failures_total"
    assert names.latency is None
    assert names.requests_success == "model_infer_request_success_total"


@pytest.mark.parametrize(
    ("server", "error"),
    [
        ("{profile: torchserve}", "agent.yaml:5: versions.1.server.profile: Input should be 'refserver'"),
        ("{profile: mlserver, metrics_port: 0}", "versions.1.server.metrics_port"),
        ("{metrics_url: 'ftp://host/metrics'}", "versions.1.server.metrics_url"),
        ("{names: {request_total: x}}", "versions.1.server.names.request_total: Extra inputs are not permitted"),
        ("{names: {latency_type: gauge}}", "versions.1.server.names.latency_type"),
    ],
)
def test_a_bad_server_section_names_the_line_and_field(server: str, error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        version(server)
    assert error in str(raised.value)


def test_check_config_prints_each_versions_profile_and_metrics_url(tmp_path: Path, capsys) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(CONFIG.format(server=", server: {profile: mlserver}"))
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "v1: server refserver, metrics http://127.0.0.1:8001/metrics" in out
    assert "v2: server mlserver, metrics http://127.0.0.1:8082/metrics" in out
    assert "requests_failure=model_infer_request_failure_total" in out
