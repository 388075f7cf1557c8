"""Fixtures for integration tests: real Envoy / Prometheus / Alertmanager / refserver processes.

Every test in this directory is marked `integration`. A missing binary skips the test with the reason, except
when the `CI` environment variable is set: in CI a missing binary is a failure.

Fixtures (all function-scoped; every process started through them is stopped at teardown, and the test fails
at teardown if one is still alive afterwards):

- `tmp_logs`: Path of a directory for process logs; when the test fails, the tail of every log file in it is
  attached to the failure report ("process logs" section).
- `envoy_factory`: (bootstrap, *, name="envoy", concurrency=1, log_level="warning", extra_args=(),
  timeout_s=15) -> EnvoyProcess, started (admin answering; call `.ready()` for LIVE).
- `prometheus_factory`: (**PrometheusProcess kwargs) -> PrometheusProcess, started (/-/ready 200).
- `alertmanager_factory`: (**AlertmanagerProcess kwargs) -> AlertmanagerProcess, started (/-/ready 200).
- `refserver_factory`: (model, version, port=None, extra_args=(), **RefServer kwargs) -> RefServer, started
  (/v2/health/ready 200).
- `agent_factory`: (config_path, env=None, **start_agent kwargs) -> ManagedProcess running
  `python -m agent run --config PATH` (not waited for).
- `postgres_factory`: (name="postgres") -> PostgresServer, started (accepting connections on 127.0.0.1; `.dsn`;
  `.stop()` / `.kill()` then `.start()` again on the same data; the temp dir is removed at teardown).

A SIGTERM or SIGHUP to pytest (a `timeout`, a CI cancel) stops every process the fixtures started and ends the
session with exit code 128 + signum (`_stop_processes_on_signal`).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TypeVar

import pytest

from harness.agent import start_agent
from harness.alertmanager import AlertmanagerProcess, alertmanager_binary
from harness.binaries import MissingBinaryError
from harness.envoy import EnvoyProcess, envoy_binary
from harness.postgres import PostgresServer, postgres_bin_dir
from harness.process import STOP_SIGNALS, ManagedProcess, tail_file, terminate_all
from harness.prometheus import PrometheusProcess, prometheus_binary
from harness.refserver import RefServer, refserver_available

_HERE = Path(__file__).resolve().parent
_LOGS_KEY = pytest.StashKey[Path]()
_LOG_TAIL_LINES = 60


def _in_ci() -> bool:
    return bool(os.environ.get("CI"))


def unavailable(reason: str) -> None:
    """Skip the test with `reason`, or fail it when the `CI` environment variable is set."""
    if _in_ci():
        pytest.fail(f"{reason} (CI is set: integration prerequisites must be installed)", pytrace=False)
    pytest.skip(reason)


def require(available: bool, what: str) -> None:
    """Skip (outside CI) or fail (in CI) when `what` is not available."""
    if not available:
        unavailable(f"{what} is missing")


def _require_binary(locate: Callable[[], str]) -> None:
    try:
        locate()
    except MissingBinaryError as err:
        unavailable(str(err))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    logs = item.stash.get(_LOGS_KEY, None)
    if logs is not None and report.failed and report.when in ("call", "setup"):
        chunks = []
        for path in sorted(logs.rglob("*.log")):
            tail = tail_file(path, _LOG_TAIL_LINES).rstrip()
            chunks.append(f"----- {path.name} (last {_LOG_TAIL_LINES} lines) -----\n{tail or '(empty)'}")
        if chunks:
            report.sections.append(("process logs", "\n".join(chunks)))
    return report


def _end_session_on_signal(signum: int, frame: FrameType | None) -> None:
    terminate_all()
    name = signal.Signals(signum).name
    pytest.exit(f"{name} received: stopped every process the fixtures started", returncode=128 + signum)


@pytest.fixture(scope="session", autouse=True)
def _stop_processes_on_signal() -> Iterator[None]:
    """A signal skips atexit hooks, and the harness's own handler ends the process with SystemExit, which pytest
    would record as one failed test before going on to start the next test's processes: stop everything and end
    the whole session instead. A session fixture rather than pytest_sessionstart, which a conftest below the
    rootdir does not get when pytest is started on a parent directory."""
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig, handler in previous.items():
        if handler != signal.SIG_IGN:
            signal.signal(sig, _end_session_on_signal)
    yield
    for sig, handler in previous.items():
        if handler is not None:  # None: installed outside Python, cannot be put back
            signal.signal(sig, handler)


@pytest.fixture
def tmp_logs(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A directory for process logs, shown (tails) in the report when the test fails."""
    logs = tmp_path / "logs"
    logs.mkdir()
    request.node.stash[_LOGS_KEY] = logs
    return logs


class _Stoppable(Protocol):
    @property
    def alive(self) -> bool: ...
    def stop(self, timeout_s: float = ...) -> int | None: ...
    def kill(self) -> int | None: ...


S = TypeVar("S", bound=_Stoppable)


class _Stopper:
    """Stops everything it was given, newest first, and fails the test if something survives."""

    def __init__(self) -> None:
        self.items: list[_Stoppable] = []

    def add(self, item: S) -> S:
        self.items.append(item)
        return item

    def close(self) -> None:
        survivors = []
        for item in reversed(self.items):
            try:
                item.stop()
            finally:
                if item.alive:
                    item.kill()
                    survivors.append(repr(item))
        if survivors:
            pytest.fail(f"processes survived stop(): {survivors}", pytrace=False)


@pytest.fixture
def envoy_factory(tmp_path: Path, tmp_logs: Path) -> Iterator[Callable[..., EnvoyProcess]]:
    _require_binary(envoy_binary)
    stopper = _Stopper()

    def make(
        bootstrap: dict[str, Any],
        *,
        name: str = "envoy",
        concurrency: int = 1,
        log_level: str = "warning",
        extra_args: tuple[str, ...] = (),
        timeout_s: float = 15.0,
    ) -> EnvoyProcess:
        envoy = EnvoyProcess(
            bootstrap,
            work_dir=tmp_path / "envoy",
            log_dir=tmp_logs,
            name=name,
            concurrency=concurrency,
            log_level=log_level,
            extra_args=extra_args,
        )
        stopper.add(envoy)
        return envoy.start(timeout_s)

    yield make
    stopper.close()


@pytest.fixture
def prometheus_factory(tmp_path: Path, tmp_logs: Path) -> Iterator[Callable[..., PrometheusProcess]]:
    _require_binary(prometheus_binary)
    stopper = _Stopper()

    def make(**kwargs: Any) -> PrometheusProcess:
        kwargs.setdefault("log_dir", tmp_logs)
        timeout_s = kwargs.pop("timeout_s", 15.0)
        prom = stopper.add(PrometheusProcess(tmp_path / "prometheus", **kwargs))
        return prom.start(timeout_s)

    yield make
    stopper.close()


@pytest.fixture
def alertmanager_factory(tmp_path: Path, tmp_logs: Path) -> Iterator[Callable[..., AlertmanagerProcess]]:
    _require_binary(alertmanager_binary)
    stopper = _Stopper()

    def make(**kwargs: Any) -> AlertmanagerProcess:
        kwargs.setdefault("log_dir", tmp_logs)
        timeout_s = kwargs.pop("timeout_s", 15.0)
        am = stopper.add(AlertmanagerProcess(tmp_path / "alertmanager", **kwargs))
        return am.start(timeout_s)

    yield make
    stopper.close()


@pytest.fixture
def refserver_factory(tmp_logs: Path) -> Iterator[Callable[..., RefServer]]:
    require(refserver_available(), "refserver/__main__.py (the reference model server)")
    stopper = _Stopper()

    def make(
        model: str, version: str, port: int | None = None, extra_args: tuple[str, ...] = (), **kwargs: Any
    ) -> RefServer:
        timeout_s = kwargs.pop("timeout_s", 30.0)
        server = stopper.add(RefServer(model, version, port, tmp_logs, extra_args, **kwargs))
        return server.start(timeout_s)

    yield make
    stopper.close()


@pytest.fixture
def agent_factory(tmp_logs: Path) -> Iterator[Callable[..., ManagedProcess]]:
    stopper = _Stopper()

    def make(config_path: str | os.PathLike[str], env: dict[str, str] | None = None, **kwargs: Any) -> ManagedProcess:
        return stopper.add(start_agent(config_path, tmp_logs, env, **kwargs))

    yield make
    stopper.close()


@pytest.fixture
def postgres_factory(tmp_logs: Path) -> Iterator[Callable[..., PostgresServer]]:
    _require_binary(postgres_bin_dir)
    stopper = _Stopper()
    servers: list[PostgresServer] = []

    def make(name: str = "postgres", timeout_s: float = 15.0) -> PostgresServer:
        server = stopper.add(PostgresServer(tmp_logs, name=name))
        servers.append(server)
        return server.start(timeout_s)

    yield make
    try:
        stopper.close()
    finally:
        for server in servers:
            server.remove()
