"""The Debian `prometheus` binary on a free 127.0.0.1 port with a temp TSDB.

Readiness (`/-/ready`) comes in well under a second, but the first scrape lands 5-6 s after start (Prometheus
throttles target discovery updates): wait for data with `wait_for_series`, not for readiness.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml

from harness.binaries import APT_HINT, require_binary
from harness.http_util import HttpStatusError, get_json, request
from harness.ports import free_port
from harness.service import HttpService
from harness.wait import NotYet, wait_until

__all__ = ["PrometheusError", "PrometheusProcess", "prometheus_binary", "start_prometheus"]


class PrometheusError(RuntimeError):
    """The HTTP API answered with status "error"."""


def prometheus_binary() -> str:
    """Path of `prometheus` ($HARNESS_PROMETHEUS_BIN overrides); MissingBinaryError with the apt hint."""
    return require_binary("prometheus", APT_HINT, env_var="HARNESS_PROMETHEUS_BIN")


class PrometheusProcess(HttpService):
    """One Prometheus. Without `config`, it scrapes itself (job "prometheus") and every `scrape_targets` job
    (job name -> ["127.0.0.1:port", ...]) every `scrape_interval`, loads `rule_files` and sends alerts to
    `alertmanager_urls` ("http://127.0.0.1:port"). A given `config` dict is used as-is.
    `--web.enable-lifecycle` is on, so `reload()` works after rewriting `config_path`."""

    def __init__(
        self,
        work_dir: str | os.PathLike[str],
        *,
        config: Mapping[str, Any] | None = None,
        scrape_targets: Mapping[str, Sequence[str]] | None = None,
        rule_files: Sequence[str | os.PathLike[str]] = (),
        alertmanager_urls: Sequence[str] = (),
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        port: int | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        name: str = "prometheus",
        log_level: str = "info",
        extra_args: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        binary = binary or prometheus_binary()
        self.work_dir = Path(work_dir)
        port = port or free_port()
        data_dir = self.work_dir / f"{name}-data"
        data_dir.mkdir(parents=True, exist_ok=True)
        if config is None:
            config = self.default_config(
                self_target=f"127.0.0.1:{port}",
                scrape_targets=scrape_targets or {},
                rule_files=rule_files,
                alertmanager_urls=alertmanager_urls,
                scrape_interval=scrape_interval,
                evaluation_interval=evaluation_interval,
            )
        self.config: dict[str, Any] = dict(config)
        self.config_path = self.work_dir / f"{name}.yml"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        argv = [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={data_dir}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
            f"--log.level={log_level}",
            *extra_args,
        ]
        super().__init__(argv, name=name, host="127.0.0.1", port=port, log_dir=log_dir or self.work_dir)

    @staticmethod
    def default_config(
        *,
        self_target: str,
        scrape_targets: Mapping[str, Sequence[str]],
        rule_files: Sequence[str | os.PathLike[str]] = (),
        alertmanager_urls: Sequence[str] = (),
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
    ) -> dict[str, Any]:
        jobs: dict[str, Sequence[str]] = {"prometheus": [self_target], **scrape_targets}
        cfg: dict[str, Any] = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(targets)}]} for job, targets in jobs.items()
            ],
        }
        if rule_files:
            cfg["rule_files"] = [str(Path(p).resolve()) for p in rule_files]
        if alertmanager_urls:
            hosts = [u.split("://", 1)[-1].rstrip("/") for u in alertmanager_urls]
            cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": hosts}]}]}
        return cfg

    # -- API -------------------------------------------------------------------------------------------------

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        """Instant query; returns the API's `data`: {"resultType": ..., "result": ...}."""
        params = {"query": expr}
        if at is not None:
            params["time"] = repr(at)
        resp = request("GET", f"{self.url}/api/v1/query?{urlencode(params)}", timeout_s=5.0)
        body = resp.json() if resp.body else {}
        if not resp.ok or body.get("status") != "success":
            raise PrometheusError(f"query {expr!r}: HTTP {resp.status}: {resp.text[:500]}")
        data: dict[str, Any] = body["data"]
        return data

    def query_vector(self, expr: str) -> list[dict[str, Any]]:
        """Instant query expected to give a vector: [{"metric": {...}, "value": [ts, "v"]}, ...]."""
        data = self.query(expr)
        if data["resultType"] != "vector":
            raise PrometheusError(f"query {expr!r} gave a {data['resultType']}, not a vector")
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_value(self, expr: str) -> float | None:
        """The single value of a scalar or one-sample vector query; None for an empty vector."""
        data = self.query(expr)
        if data["resultType"] == "scalar":
            return float(data["result"][1])
        result = data["result"]
        if data["resultType"] != "vector" or len(result) > 1:
            raise PrometheusError(f"query {expr!r} did not give one value: {data}")
        return float(result[0]["value"][1]) if result else None

    def wait_for_series(self, expr: str, timeout_s: float = 20.0, interval_s: float = 0.2) -> list[dict[str, Any]]:
        """Poll until the instant query `expr` returns a non-empty vector; returns it."""

        def probe() -> list[dict[str, Any]] | NotYet:
            self.process.check_alive()
            return self.query_vector(expr) or NotYet([])

        result: list[dict[str, Any]] = wait_until(
            probe, timeout_s, interval_s=interval_s, what=f"prometheus series {expr!r}"
        )
        return result

    def rules(self) -> list[dict[str, Any]]:
        """`/api/v1/rules` groups."""
        groups: list[dict[str, Any]] = get_json(f"{self.url}/api/v1/rules")["data"]["groups"]
        return groups

    def active_alerts(self) -> list[dict[str, Any]]:
        """`/api/v1/alerts`: pending and firing alerts as Prometheus sees them."""
        alerts: list[dict[str, Any]] = get_json(f"{self.url}/api/v1/alerts")["data"]["alerts"]
        return alerts

    def reload(self, config: Mapping[str, Any] | None = None) -> None:
        """Optionally rewrite the config file, then POST /-/reload."""
        if config is not None:
            self.config = dict(config)
            self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        resp = request("POST", f"{self.url}/-/reload", body=b"", timeout_s=10.0)
        if not resp.ok:
            raise HttpStatusError("POST", f"{self.url}/-/reload", resp)


def start_prometheus(work_dir: str | os.PathLike[str], timeout_s: float = 15.0, **kwargs: Any) -> PrometheusProcess:
    """`PrometheusProcess(work_dir, **kwargs).start(timeout_s)`."""
    return PrometheusProcess(work_dir, **kwargs).start(timeout_s)
