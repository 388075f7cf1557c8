"""A real MLflow tracking server (pip `mlflow==3.17.2`) as a subprocess, and a small REST client to fill it.

MLflow runs from its own venv, `.venv-mlflow` at the repo root (`make mlflow` creates it; $HARNESS_MLFLOW_BIN
overrides the `mlflow` executable), never the agent's interpreter: the agent talks to MLflow over REST only.
One server with a SQLite backend store and a local artifact root in a temp dir, one worker, background jobs off
(`MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`: otherwise it starts seven job consumers of ~200 MB each), on a free
127.0.0.1 port, in its own process group (ManagedProcess), stopped by SIGTERM to the group:

    server = MlflowServer(work_dir=tmp_path / "mlflow", log_dir=tmp_logs).start()   # polls GET /health
    client = server.client()                      # MlflowClient: the REST calls tests need
    run = client.create_run(experiment_id, tags={"mlflow.source.git.commit": "ab12..."})
    client.log_params(run["info"]["run_id"], {"max_depth": 4}); client.log_dataset(run_id, ...)
    client.create_model("credit-scorer"); version = client.create_version("credit-scorer", run)
    client.set_alias("credit-scorer", "champion", version["version"])
    server.stop()

Start to ready measures 5-6 s on two cores (~490 MB resident). `mlflow_available()` says whether the venv is
installed; `mlflow_binary()` raises MissingBinaryError with the install hint, so fixtures skip outside CI and fail
under CI=true.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from harness.binaries import MissingBinaryError
from harness.http_util import HttpStatusError, request
from harness.ports import free_port
from harness.pyproc import REPO_ROOT
from harness.service import HttpService

__all__ = ["MLFLOW_HINT", "MLFLOW_VENV", "MlflowClient", "MlflowServer", "mlflow_available", "mlflow_binary"]

MLFLOW_VENV = REPO_ROOT / ".venv-mlflow"
MLFLOW_HINT = "install with: make mlflow (creates .venv-mlflow with mlflow==3.17.2)"
API = "/api/2.0/mlflow"


def mlflow_binary() -> str:
    """Path of `mlflow` ($HARNESS_MLFLOW_BIN, else .venv-mlflow/bin/mlflow); MissingBinaryError if absent."""
    path = os.environ.get("HARNESS_MLFLOW_BIN") or str(MLFLOW_VENV / "bin" / "mlflow")
    if not os.access(path, os.X_OK):
        raise MissingBinaryError(f"`mlflow` not found at {path}; {MLFLOW_HINT}")
    return path


def mlflow_available() -> bool:
    try:
        mlflow_binary()
    except MissingBinaryError:
        return False
    return True


class MlflowServer(HttpService):
    """One `mlflow server`; see the module docstring."""

    ready_path = "/health"

    def __init__(
        self,
        *,
        work_dir: str | os.PathLike[str],
        log_dir: str | os.PathLike[str],
        port: int | None = None,
        name: str = "mlflow",
        binary: str | None = None,
    ) -> None:
        binary = binary or mlflow_binary()
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.artifact_root = self.work_dir / "artifacts"
        port = port or free_port()
        argv = [
            binary,
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.work_dir / 'mlflow.db'}",
            "--default-artifact-root",
            str(self.artifact_root),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        super().__init__(argv, name=name, host="127.0.0.1", port=port, log_dir=log_dir, cwd=self.work_dir, env=env)

    def start(self, timeout_s: float = 60.0) -> MlflowServer:
        super().start(timeout_s)
        return self

    def client(self) -> MlflowClient:
        return MlflowClient(self.url)


class MlflowClient:
    """The REST calls the tests make (JSON bodies; a non-2xx answer raises HttpStatusError)."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def call(self, method: str, endpoint: str, payload: Mapping[str, Any] | None = None) -> Any:
        url = f"{self.url}{API}/{endpoint}"
        if method == "GET" and payload:
            url += "?" + urlencode(payload)
            payload = None
        resp = request(method, url, json_body=payload, timeout_s=self.timeout_s)
        if not resp.ok:
            raise HttpStatusError(method, url, resp)
        return resp.json() if resp.body else {}

    def create_experiment(self, name: str) -> str:
        experiment_id: str = self.call("POST", "experiments/create", {"name": name})["experiment_id"]
        return experiment_id

    def create_run(self, experiment_id: str, tags: Mapping[str, str] | None = None) -> dict[str, Any]:
        body = {"experiment_id": experiment_id, "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
        run: dict[str, Any] = self.call("POST", "runs/create", body)["run"]
        return run

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        items = [{"key": k, "value": str(v)} for k, v in params.items()]
        self.call("POST", "runs/log-batch", {"run_id": run_id, "params": items})

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], timestamp_ms: int = 0, step: int = 0) -> None:
        items = [{"key": k, "value": v, "timestamp": timestamp_ms, "step": step} for k, v in metrics.items()]
        self.call("POST", "runs/log-batch", {"run_id": run_id, "metrics": items})

    def log_dataset(self, run_id: str, name: str, digest: str, source: str, context: str = "training") -> None:
        dataset = {"name": name, "digest": digest, "source_type": "local", "source": source}
        inputs = {"dataset": dataset, "tags": [{"key": "mlflow.data.context", "value": context}]}
        self.call("POST", "runs/log-inputs", {"run_id": run_id, "datasets": [inputs]})

    def create_model(self, name: str) -> None:
        self.call("POST", "registered-models/create", {"name": name})

    def create_version(
        self, name: str, run: Mapping[str, Any], tags: Mapping[str, str] | None = None, description: str = ""
    ) -> dict[str, Any]:
        """A version whose source lies under the run's artifact URI (MLflow refuses other sources for a run)."""
        info = run["info"]
        body = {
            "name": name,
            "source": f"{info['artifact_uri']}/model",
            "run_id": info["run_id"],
            "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
            "description": description,
        }
        version: dict[str, Any] = self.call("POST", "model-versions/create", body)["model_version"]
        return version

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.call("POST", "registered-models/alias", {"name": name, "alias": alias, "version": version})

    def alias(self, name: str, alias: str) -> dict[str, Any]:
        version: dict[str, Any] = self.call("GET", "registered-models/alias", {"name": name, "alias": alias})[
            "model_version"
        ]
        return version

    def version(self, name: str, version: str) -> dict[str, Any]:
        found: dict[str, Any] = self.call("GET", "model-versions/get", {"name": name, "version": version})[
            "model_version"
        ]
        return found

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        return {t["key"]: t["value"] for t in self.version(name, version).get("tags", [])}
