"""The Debian `prometheus-alertmanager` binary on a free 127.0.0.1 port, no cluster port, temp storage."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml

from harness.binaries import APT_HINT, require_binary
from harness.http_util import get_json, post_json
from harness.ports import free_port
from harness.service import HttpService
from harness.wait import NotYet, wait_until

__all__ = [
    "AlertmanagerProcess",
    "alertmanager_binary",
    "make_alert",
    "start_alertmanager",
    "webhook_config",
]


def alertmanager_binary() -> str:
    """Path of `prometheus-alertmanager` ($HARNESS_ALERTMANAGER_BIN overrides); MissingBinaryError with the
    apt hint."""
    return require_binary("prometheus-alertmanager", APT_HINT, env_var="HARNESS_ALERTMANAGER_BIN")


def webhook_config(
    url: str | None = None,
    *,
    group_by: Sequence[str] = ("alertname",),
    group_wait: str = "0s",
    group_interval: str = "1s",
    repeat_interval: str = "1h",
    send_resolved: bool = True,
) -> dict[str, Any]:
    """An Alertmanager config routing everything to one webhook `url` (or to a receiver with no integrations
    when url is None), with short grouping times for tests."""
    receiver: dict[str, Any] = {"name": "default"}
    if url is not None:
        receiver["webhook_configs"] = [{"url": url, "send_resolved": send_resolved}]
    return {
        "route": {
            "receiver": "default",
            "group_by": list(group_by),
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        },
        "receivers": [receiver],
    }


def make_alert(
    alertname: str,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    *,
    starts_at: dt.datetime | None = None,
    ends_at: dt.datetime | None = None,
    generator_url: str | None = None,
) -> dict[str, Any]:
    """One alert in API v2 form (POST /api/v2/alerts takes a list of these)."""
    alert: dict[str, Any] = {"labels": {"alertname": alertname, **(labels or {})}}
    if annotations:
        alert["annotations"] = dict(annotations)
    if starts_at is not None:
        alert["startsAt"] = starts_at.astimezone(dt.UTC).isoformat()
    if ends_at is not None:
        alert["endsAt"] = ends_at.astimezone(dt.UTC).isoformat()
    if generator_url is not None:
        alert["generatorURL"] = generator_url
    return alert


class AlertmanagerProcess(HttpService):
    """One Alertmanager. `config` defaults to `webhook_config(None)` (accepts alerts, notifies nobody)."""

    def __init__(
        self,
        work_dir: str | os.PathLike[str],
        *,
        config: Mapping[str, Any] | None = None,
        port: int | None = None,
        external_url: str | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        name: str = "alertmanager",
        log_level: str = "info",
        extra_args: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        binary = binary or alertmanager_binary()
        self.work_dir = Path(work_dir)
        port = port or free_port()
        data_dir = self.work_dir / f"{name}-data"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.config: dict[str, Any] = dict(config) if config is not None else webhook_config(None)
        self.config_path = self.work_dir / f"{name}.yml"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        argv = [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.path={data_dir}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            f"--log.level={log_level}",
        ]
        if external_url:
            argv.append(f"--web.external-url={external_url}")
        argv.extend(extra_args)
        super().__init__(argv, name=name, host="127.0.0.1", port=port, log_dir=log_dir or self.work_dir)

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """POST /api/v2/alerts (see `make_alert`)."""
        post_json(f"{self.url}/api/v2/alerts", [dict(a) for a in alerts], timeout_s=5.0)

    def alerts(
        self,
        filter: Mapping[str, str] | Sequence[str] | None = None,
        *,
        active: bool | None = None,
        silenced: bool | None = None,
        inhibited: bool | None = None,
    ) -> list[dict[str, Any]]:
        """GET /api/v2/alerts. `filter` is {label: value} (exact match) or matcher strings like
        'severity=~"p.*"'."""
        params: list[tuple[str, str]] = []
        if isinstance(filter, Mapping):
            params += [("filter", f'{k}="{v}"') for k, v in filter.items()]
        elif filter is not None:
            params += [("filter", m) for m in filter]
        for key, flag in (("active", active), ("silenced", silenced), ("inhibited", inhibited)):
            if flag is not None:
                params.append((key, "true" if flag else "false"))
        query = ("?" + urlencode(params)) if params else ""
        result: list[dict[str, Any]] = get_json(f"{self.url}/api/v2/alerts{query}", timeout_s=5.0)
        return result

    def wait_for_alerts(
        self, filter: Mapping[str, str] | Sequence[str] | None = None, timeout_s: float = 10.0
    ) -> list[dict[str, Any]]:
        """Poll `alerts(filter)` until it is non-empty; returns it."""

        def probe() -> list[dict[str, Any]] | NotYet:
            self.process.check_alive()
            return self.alerts(filter) or NotYet([])

        result: list[dict[str, Any]] = wait_until(
            probe, timeout_s, interval_s=0.05, what=f"alertmanager alerts matching {filter!r}"
        )
        return result


def start_alertmanager(work_dir: str | os.PathLike[str], timeout_s: float = 15.0, **kwargs: Any) -> AlertmanagerProcess:
    """`AlertmanagerProcess(work_dir, **kwargs).start(timeout_s)`."""
    return AlertmanagerProcess(work_dir, **kwargs).start(timeout_s)
