"""agent.yaml: `registry.mlflow` and `signals.promql`; every error names the file, the line and the field."""

from __future__ import annotations

import pytest

from agent.config import ConfigError, parse_config

BASE = """model: {name: credit}
versions: [{tag: v1, endpoint: "127.0.0.1:8001"}, {tag: v2, endpoint: "127.0.0.1:8002"}]
stable: v1
"""


def test_mlflow_registry_defaults() -> None:
    config = parse_config(BASE + "registry: {mlflow: {url: 'http://127.0.0.1:5000/'}}\n")
    mlflow = config.registry.mlflow
    assert mlflow is not None
    assert mlflow.url == "http://127.0.0.1:5000"
    assert (mlflow.champion_alias, mlflow.challenger_alias, mlflow.move_champion) == ("champion", "challenger", False)
    assert mlflow.tag_format == "v{version}"
    assert parse_config(BASE).registry.mlflow is None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("registry: {mlflow: {url: 'mlflow.local:5000'}}", "agent.yaml:4: registry.mlflow.url: url must be an http"),
        ("registry: {mlflow: {url: 'http://127.0.0.1:5000', tag_format: 'v'}}", "registry.mlflow.tag_format"),
        ("registry: {mlflow: {url: 'http://127.0.0.1:5000', champion_alias: 'a b'}}", "registry.mlflow.champion_alias"),
        ("registry: {mlflow: {url: 'http://127.0.0.1:5000', token: x}}", "registry.mlflow.token: Extra inputs"),
        (
            "registry_file: r.yaml\nregistry: {mlflow: {url: 'http://127.0.0.1:5000'}}",
            "registry: set registry.mlflow or registry_file, not both",
        ),
    ],
)
def test_mlflow_registry_errors_name_the_field(section: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_config(BASE + section + "\n", "agent.yaml")


def test_promql_signals() -> None:
    config = parse_config(
        BASE
        + """signals:
  promql:
    url: http://127.0.0.1:9090
    signals:
      - {signal: model.business.accuracy, query: 'label_accuracy{version="{version}"}', max_staleness_s: 900}
      - {signal: promql.labels_correct, query: 'sum by (version) (labels_correct_total)', version_label: version,
         type: counter}
"""
    )
    promql = config.signals.promql
    assert promql is not None
    assert [s.signal for s in promql.signals] == ["model.business.accuracy", "promql.labels_correct"]
    assert promql.signals[1].type == "counter" and promql.signals[0].max_staleness_s == 900


@pytest.mark.parametrize(
    ("signal", "message"),
    [
        ("{signal: model.business.accuracy, query: 'label_accuracy'}", "put {version} in the query"),
        (
            "{signal: model.business.accuracy, query: 'a{v=\"{version}\"}', version_label: version}",
            "exactly one of the two",
        ),
        ("{signal: Accuracy, query: 'a{v=\"{version}\"}'}", "signals.promql.signals.0.signal: String should match"),
        ("{signal: model.business.a, query: 'a{v=\"{version}\"}', max_staleness_s: 0}", "max_staleness_s"),
        ("{signal: model.business.a, query: 'a{v=\"{version}\"}', type: histogram}", "signals.0.type"),
    ],
)
def test_promql_errors_name_the_field(signal: str, message: str) -> None:
    text = BASE + f"signals:\n  promql:\n    url: http://127.0.0.1:9090\n    signals:\n      - {signal}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "agent.yaml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("agent.yaml:")


def test_duplicate_promql_signals_are_refused() -> None:
    one = "{signal: model.business.a, query: 'a{v=\"{version}\"}'}"
    text = BASE + f"signals:\n  promql:\n    url: http://127.0.0.1:9090\n    signals: [{one}, {one}]\n"
    with pytest.raises(ConfigError, match=r"duplicate signal\(s\) \['model.business.a'\]"):
        parse_config(text, "agent.yaml")
