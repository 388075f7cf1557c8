"""The CLI as an operator meets it: help everywhere, exit codes in --help, --json on read commands, one duration
syntax, shell completion, and clear errors (never a traceback) for a closed pipe, a bad log level or a URL that is
not the control API."""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.adapters.store.sqlite_store import SqliteStateStore
from agent.cli import _parser, main
from agent.config import parse_config
from agent.pb.rollback_agent.v1 import audit_pb2

CONFIG = """
model: {name: credit}
versions:
  - {tag: v1, endpoint: "127.0.0.1:8001"}
  - {tag: v2, endpoint: "127.0.0.1:8002"}
stable: v1
state_dir: ./state
envoy: {admin: {address: 127.0.0.1, port: 1}}
"""


def parsers(
    parser: argparse.ArgumentParser, path: str = "rollback-agent"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from parsers(child, f"{path} {name}")


def test_every_subcommand_and_option_has_help_and_every_help_lists_the_exit_codes() -> None:
    missing = []
    for path, parser in parsers(_parser()):
        assert parser.epilog and "exit codes: 0 done" in parser.epilog and "3 the agent could not" in parser.epilog, (
            path
        )
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                described = {a.dest for a in action._choices_actions if a.help}
                missing += [f"{path} {name}" for name in action.choices if name not in described]
            elif not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_help_prints_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["history", "--help"])
    assert exit_.value.code == 0
    assert "4 the state store is missing" in " ".join(capsys.readouterr().out.split())


def test_a_bad_log_level_is_a_usage_error_naming_the_levels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG)
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--config", str(config), "--log-level", "LOUD"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "'LOUD' is not a log level; use one of DEBUG, INFO, WARNING, ERROR, CRITICAL" in err
    assert "Traceback" not in err


def test_a_bad_log_level_in_the_environment_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG)
    monkeypatch.setenv("ROLLBACK_AGENT_LOG_LEVEL", "chatty")
    assert main(["run", "--config", str(config)]) == 2
    assert "ROLLBACK_AGENT_LOG_LEVEL: 'chatty' is not a log level" in capsys.readouterr().err


def test_a_closed_pipe_is_no_traceback() -> None:
    # The reader is gone before the command writes (as `... | head -1` once head has its line).
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "completion", "bash"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert err == ""


@pytest.mark.skipif(shutil.which("head") is None, reason="needs head(1)")
def test_versions_piped_into_head_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG)
    make_store(tmp_path, 3)
    cmd = f"{sys.executable} -m agent versions --config {config} | head -1"
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60, cwd=Path.cwd())
    assert len(out.stdout.splitlines()) == 1 and "Traceback" not in out.stderr


class _NotTheApi(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>a dashboard</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def other_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotTheApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_url_that_is_not_the_control_api_is_named(
    other_server: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROLLBACK_AGENT_TOKEN", "t" * 20)
    assert main(["status", "--url", other_server]) == 3
    err = capsys.readouterr().err
    assert "which is not the agent's control API" in err and "text/html" in err and "Traceback" not in err


@pytest.mark.parametrize("url", ["localhost:9091", "ftp://127.0.0.1:9091", "http://"])
def test_a_url_that_is_no_http_url_is_a_usage_error(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROLLBACK_AGENT_TOKEN", "t" * 20)
    assert main(["status", "--url", url]) == 2
    assert "is not the control API's base URL" in capsys.readouterr().err


def test_one_duration_syntax_for_options_and_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert _parser().parse_args(["status", "--timeout", "2m"]).timeout == 120.0
    assert _parser().parse_args(["status", "--timeout", "1500ms"]).timeout == 1.5
    assert _parser().parse_args(["status", "--timeout", "45"]).timeout == 45.0
    with pytest.raises(SystemExit):
        _parser().parse_args(["status", "--timeout", "soon"])
    assert "invalid duration 'soon': use e.g. 30s, 5m, 2h, 1h30m or seconds" in capsys.readouterr().err
    config = parse_config(CONFIG + "rollback: {cooldown_s: 5m, verify_window_s: 1h30m}\nack_timeout_s: 90\n")
    assert (config.rollback.cooldown_s, config.rollback.verify_window_s, config.ack_timeout_s) == (300, 5400, 90)


def make_store(tmp_path: Path, n: int) -> None:
    async def write() -> None:
        store = await SqliteStateStore.open(tmp_path / "state" / "state.db", model="credit")
        for i in range(n):
            await store.append(audit_pb2.HoldChanged(version="v2", held=bool(i % 2 == 0), reason=f"r{i}"), "operator:a")
        await store.close()

    asyncio.run(write())


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, object]:
    code = main(list(argv))
    return code, json.loads(capsys.readouterr().out)


def test_read_commands_print_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG)
    make_store(tmp_path, 3)
    code, data = run_json(capsys, "check-config", str(config), "--json")
    assert code == 0 and data == {"file": str(config), "ok": True, "model": "credit", "versions": ["v1", "v2"]}
    code, data = run_json(capsys, "versions", "--config", str(config), "--json")
    assert code == 0 and [v["tag"] for v in data] == ["v1", "v2"]  # type: ignore[union-attr, index]
    code, data = run_json(capsys, "history", "--config", str(config), "--json")
    assert code == 0 and data == []
    code, data = run_json(capsys, "audit", "verify", "--config", str(config), "--json")
    assert code == 0 and isinstance(data, dict)
    assert data["ok"] is True and data["records"] == 3 and data["head"]["seq"] == 3 and data["problems"] == []
    code, data = run_json(capsys, "state", "check", "--config", str(config), "--json")
    assert isinstance(data, dict) and data["state"] in ("ok", "refused")  # a store made without its marker
    assert code == (0 if data["state"] == "ok" else 4)
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: [{name: x, kind: no_such_kind}]\n")
    code, data = run_json(capsys, "rules", "check", str(rules), "--json")
    assert code == 1 and isinstance(data, dict) and data["ok"] is False and data["errors"]


def test_check_config_json_names_the_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG.replace("stable: v1", "stable: v1\nack_timeout_s: soon"))
    code, data = run_json(capsys, "check-config", str(config), "--json")
    assert code == 2 and isinstance(data, dict) and data["ok"] is False
    assert any("agent.yaml:7: ack_timeout_s: invalid duration 'soon'" in e for e in data["errors"])


def test_json_with_the_fleet_store_is_refused_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "--fleet-dsn", "postgresql://127.0.0.1:1/x", "--json"]) == 2
    assert "--json reads one pod's state" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_completes_commands_subcommands_options_and_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out

    def complete(*words: str) -> list[str]:
        line = " ".join(words)
        probe = (
            f"{script}\nCOMP_WORDS=(rollback-agent {line}); COMP_CWORD={len(words)}; "
            '_rollback_agent; printf "%s\\n" "${COMPREPLY[@]}"'
        )
        out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30, check=True)
        return out.stdout.split()

    assert "rollback" in complete("rol") and "rollback-agent" not in complete("rol")
    assert complete("state", "") == ["check", "backup", "init", "restore", "-h", "--help"]
    assert "--fleet-dsn" in complete("audit", "verify", "--")
    assert complete("report", "--format", "") == ["md", "html", "pdf", "json"]
    assert complete("run", "--log-format", "j") == ["json"]
