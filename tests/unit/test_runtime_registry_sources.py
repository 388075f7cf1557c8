"""build_agent with an MLflow registry and PromQL signals: wired as sources, a clear refusal when unusable."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.adapters.signals.promql_source import PromqlSource
from agent.config import parse_config
from agent.runtime import StartupError, build_agent
from tests.unit.test_config import GOOD
from tests.unit.test_runtime import unused_port


def _config(tmp_path: Path, extra: str) -> str:
    return GOOD + f"envoy: {{admin: {{address: 127.0.0.1, port: {unused_port()}}}}}\n" + extra


async def test_an_unreachable_mlflow_refuses_the_start(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    config = parse_config(_config(tmp_path, f"registry: {{mlflow: {{url: '{url}'}}}}\n"), "agent.yaml", tmp_path)
    with pytest.raises(StartupError, match=rf"registry.mlflow is not usable: MLflow {url} unreachable"):
        await build_agent(config, token="s3cret", dry_run=True)
    assert not config.state_dir.exists(), "MLflow is read before the state store is opened: nothing was created"


async def test_promql_signals_are_a_signal_source(tmp_path: Path) -> None:
    promql = f"""signals:
  promql:
    url: http://127.0.0.1:{unused_port()}
    signals: [{{signal: model.business.accuracy, query: 'label_accuracy{{version="{{version}}"}}'}}]
"""
    config = parse_config(_config(tmp_path, promql), "agent.yaml", tmp_path)
    parts = await build_agent(config, token="s3cret", dry_run=True)
    try:
        sources = [s for s in parts.monitor._sources if isinstance(s, PromqlSource)]
        assert len(sources) == 1
        await sources[0].refresh()
        assert set(sources[0].problems) == {("model.business.accuracy", "v1"), ("model.business.accuracy", "v2")}
        exported = parts.metrics.registry.get_sample_value(
            "rollback_agent_promql_signal_usable",
            {
                "model": config.model.name,
                "signal": "model.business.accuracy",
                "version": "v1",
                "problem": "unreachable",
            },
        )
        assert exported == 0.0
    finally:
        await parts.close()
