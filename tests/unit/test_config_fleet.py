"""audit.fleet in agent.yaml: one DSN source (a Secret file or an environment variable), never the DSN itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agent.adapters.fleet import postgres_store
from agent.adapters.fleet.postgres_store import FleetError, read_dsn
from agent.cli import main as cli_main
from agent.config import ConfigError, FleetSection, load_config, parse_config

BASE = {
    "model": {"name": "credit"},
    "versions": [{"tag": "v1", "endpoint": "127.0.0.1:18001"}],
    "stable": "v1",
}


def config_with(fleet: object) -> str:
    return yaml.safe_dump({**BASE, "audit": {"fleet": fleet}})


def test_defaults_and_pod_from_hostname(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOSTNAME", "credit-rollback-agent-2")
    fleet = parse_config(config_with({"dsn_env": "FLEET_DSN"})).audit.fleet
    assert fleet is not None
    assert (fleet.pod, fleet.batch, fleet.interval_s) == ("credit-rollback-agent-2", 500, 1.0)
    assert parse_config(yaml.safe_dump(BASE)).audit.fleet is None


@pytest.mark.parametrize(
    ("fleet", "message"),
    [
        ({}, "set exactly one of dsn_file"),
        ({"dsn_env": "A", "dsn_file": "/x"}, "set exactly one of dsn_file"),
        ({"dsn_env": "A", "batch": 0}, "audit.fleet.batch"),
        ({"dsn_env": "A", "interval_s": -1}, "audit.fleet.interval_s"),
        ({"dsn": "postgresql://u:secret@db/x"}, "audit.fleet.dsn"),
    ],
)
def test_bad_fleet_section_is_named_with_its_line(fleet: object, message: str):
    with pytest.raises(ConfigError, match=message) as err:
        parse_config(config_with(fleet), "agent.yaml")
    assert "agent.yaml:" in str(err.value)


def test_dsn_file_is_relative_to_the_config_file(tmp_path: Path):
    (tmp_path / "agent.yaml").write_text(config_with({"dsn_file": "secrets/fleet-dsn"}))
    fleet = load_config(tmp_path / "agent.yaml").audit.fleet
    assert fleet is not None and fleet.dsn_file == tmp_path / "secrets/fleet-dsn"


def test_read_dsn_names_what_is_unusable(tmp_path: Path):
    with pytest.raises(FleetError, match=r"dsn_file .*cannot read"):
        read_dsn(FleetSection(dsn_file=tmp_path / "missing"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(FleetError, match="is empty"):
        read_dsn(FleetSection(dsn_file=tmp_path / "empty"))
    with pytest.raises(FleetError, match="FLEET_DSN is not set"):
        read_dsn(FleetSection(dsn_env="FLEET_DSN"), {})
    (tmp_path / "dsn").write_text("postgresql://127.0.0.1/fleet\n")
    assert read_dsn(FleetSection(dsn_file=tmp_path / "dsn")) == "postgresql://127.0.0.1/fleet"


def test_missing_driver_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch):
    def no_module(name: str) -> object:
        raise ImportError(name)

    monkeypatch.setattr(postgres_store.importlib, "import_module", no_module)
    with pytest.raises(FleetError, match=r"model-rollback-agent\[fleet\]"):
        postgres_store.driver()


def test_fleet_commands_need_a_reachable_store_or_a_config(capsys: pytest.CaptureFixture[str]):
    assert cli_main(["history", "--at", "1h"]) == 2
    assert "--config is required (or --fleet-dsn" in capsys.readouterr().err
    assert cli_main(["audit", "verify", "--fleet-dsn", "postgresql://127.0.0.1:1/x?connect_timeout=2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: fleet store: cannot connect") and "Traceback" not in err
