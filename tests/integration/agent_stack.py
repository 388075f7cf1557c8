"""A real sidecar stack for integration tests: reference model servers, the agent process, a real Envoy."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from harness.agent import wait_http_ready
from harness.bootstraps import agent_bootstrap
from harness.envoy import EnvoyProcess
from harness.process import ManagedProcess
from harness.pyproc import REPO_ROOT
from harness.sidecar import agent_config, sidecar_ports
from harness.wait import async_wait_until, wait_until
from refserver.client import sample_request

ROOT = REPO_ROOT
TOKEN = "integration-token"
MODEL = "cancer"


@dataclass
class AgentStack:
    tmp: Path
    agent_factory: Any
    envoy_factory: Any
    refserver_factory: Any
    versions: tuple[str, ...] = ("v1", "v2")
    extra_config: dict[str, Any] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    upstreams: dict[str, Any] = field(default_factory=dict)
    agent: ManagedProcess | None = None
    envoys: list[EnvoyProcess] = field(default_factory=list)
    config_path: Path | None = None

    def start_upstreams(self) -> None:
        for version in self.versions:
            self.upstreams[version] = self.refserver_factory(MODEL, version)

    def write_config(self, **overrides: Any) -> Path:
        if not self.ports:
            self.ports = sidecar_ports()
        config = agent_config(
            model=MODEL,
            upstreams={v: self.upstreams[v].port for v in self.versions},
            ports=self.ports,
            state_dir=self.tmp / "state",
            stable=self.versions[0],
            candidate=self.versions[1],
            ack_timeout_s=5,
        )
        config.update(self.extra_config)  # a test may replace any key, `stable` and `versions` included
        config.update(overrides)
        self.config_path = self.tmp / "agent.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        return self.config_path

    def start_agent(self, **overrides: Any) -> ManagedProcess:
        path = self.write_config(**overrides)
        self.agent = self.agent_factory(path, env={"ROLLBACK_AGENT_TOKEN": TOKEN})
        wait_http_ready(f"{self.http_url}/healthz", 15, process=self.agent)
        return self.agent

    def start_envoy(self, node_id: str = "envoy-1", admin_port: int | None = None) -> EnvoyProcess:
        bootstrap = agent_bootstrap(
            xds_port=self.ports["xds"],
            node_id=node_id,
            node_cluster=MODEL,
            xds_host="127.0.0.1",
            admin_port=admin_port or self.ports["admin"],
            admin_host="127.0.0.1",
        )
        envoy = self.envoy_factory(bootstrap, name=node_id)
        self.envoys.append(envoy)
        return envoy

    def wait_ready(self, timeout_s: float = 15) -> None:
        wait_until(lambda: _http_status(f"{self.http_url}/readyz") == 200, timeout_s, what="agent /readyz 200")

    async def wait_ready_async(self, timeout_s: float = 15) -> None:
        async def ready() -> bool:
            return await self.get_status_code("/readyz") == 200

        await async_wait_until(ready, timeout_s, what="agent /readyz 200")

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['control']}"

    @property
    def traffic_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['listener']}/v2/models/{MODEL}/infer"

    @staticmethod
    def http_session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    async def get_status_code(self, path: str) -> int:
        try:
            async with aiohttp.ClientSession() as s, s.get(self.http_url + path) as r:
                return r.status
        except aiohttp.ClientError:
            return 0

    async def cli(self, *args: str, timeout_s: float = 30.0) -> tuple[int, str, str]:
        """`python -m agent ARGS --config <this stack's config>` with the stack's token: (exit code, stdout, stderr)."""
        assert self.config_path is not None
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent",
            *args,
            "--config",
            str(self.config_path),
            cwd=ROOT,
            env={**os.environ, "ROLLBACK_AGENT_TOKEN": TOKEN},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout_s)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    async def control(
        self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = TOKEN
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with (
            aiohttp.ClientSession() as s,
            s.request(method, self.control_url + path, json=body, headers=headers) as r,
        ):
            return r.status, json.loads(await r.text() or "{}")

    async def set_weights(self, **weights: int) -> dict[str, Any]:
        status, body = await self.control(
            "POST", "/v1/traffic", {"weights": [{"version": v, "weight": w} for v, w in weights.items()]}
        )
        assert status == 200, body
        return body


_BODIES = [json.dumps(sample_request(1, seed=i)).encode() for i in range(64)]


def body_factory(i: int) -> bytes:
    return _BODIES[i % len(_BODIES)]


def _http_status(url: str) -> int | None:
    from harness.wait import http_status

    return http_status(url, timeout_s=0.5)
