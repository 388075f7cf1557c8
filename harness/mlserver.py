"""A real MLServer 1.7.1 (pip `mlserver`, `mlserver-sklearn`) as a subprocess, with fault-switchable models.

MLServer runs from its own venv, `.venv-mlserver` at the repo root (`make mlserver` creates it; $HARNESS_MLSERVER_BIN
overrides the `mlserver` executable), never the agent's interpreter. One server, one process
(`parallel_workers: 0`), free 127.0.0.1 ports for HTTP (OIP v2 REST), gRPC and metrics, a temp model repository:

    models = [MLServerModel("cancer", "v1"), MLServerModel("cancer", "v2", faults={"errors": 0.5})]
    server = MLServerProcess(models, work_dir=tmp_path / "mlserver", log_dir=tmp_logs).start()
    server.url                       # http://127.0.0.1:<http_port>, OIP v2 REST
    server.metrics_url               # http://127.0.0.1:<metrics_port>/metrics (not on the HTTP port)
    server.infer_path("cancer", "v2")  # /v2/models/cancer/versions/v2/infer
    server.infer("cancer", body, version="v2")  -> HttpResponse (any status)
    server.set_faults("cancer", "v2", {"wrong": True})   # takes effect on the next request
    server.clear_faults("cancer", "v2")
    server.unload("cancer"); server.load("cancer"); server.repository_index()
    server.stop()                    # SIGTERM to the process group, SIGKILL after the timeout

`MLServerModel(name, version=None, faults=None, seed=0, load_delay_s=0.0)` is one model folder. Several entries with
one `name` and different `version`s are versions of one model in one server (`parameters.version`), addressed by
`/v2/models/{name}/versions/{version}/...`; the unversioned path answers with one of them. Load and unload work by
name only (all versions of the name; MLServer has no per-version repository call).

Each model is the custom runtime `harness/mlserver_models/fault_model.py` (`FaultModel`): the reference server's
model shape (breast-cancer data, ten features, input `[N, 10]` as `refserver.client.sample_request` builds it,
outputs `predict` and `confidence`, header `x-model-version`), trained at load. Its faults, read per request from
`<model dir>/faults.json`: `errors` (fraction answered HTTP 400, MLServer's `InferenceError`), `server_errors`
(fraction answered HTTP 500), `wrong` (inverted predictions with HTTP 200), `slow_ms` (extra latency).

`start()` polls `/v2/health/ready` and every model's versioned ready path with a deadline; a process that exits
while starting raises with its log tail. Cleanup is `ManagedProcess`'s: own process group, stopped at interpreter
exit and on SIGTERM/SIGHUP. `mlserver_available()` says whether the venv is installed; `mlserver_binary()` raises
`MissingBinaryError` (with the install hint) when it is not, so fixtures skip outside CI and fail under CI=true.
Start to ready measures about 2-4 s on two cores.

In an integration test (fails under CI=true, skips otherwise when MLServer is missing; stopped at teardown):

    from tests.integration.conftest import unavailable

    @pytest.fixture
    def mlserver_factory(tmp_path, tmp_logs):
        try:
            mlserver_binary()
        except MissingBinaryError as err:
            unavailable(str(err))
        servers = []
        def make(models, **kwargs):
            server = MLServerProcess(models, log_dir=tmp_logs, work_dir=tmp_path / f"mlserver{len(servers)}", **kwargs)
            servers.append(server)
            return server.start()
        yield make
        for server in reversed(servers):
            server.stop()
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from harness.binaries import MissingBinaryError
from harness.http_util import HttpResponse, HttpStatusError, request
from harness.ports import free_ports
from harness.pyproc import REPO_ROOT
from harness.service import HttpService
from harness.wait import NotYet, http_status, wait_until

__all__ = [
    "MLSERVER_HINT",
    "MLSERVER_VENV",
    "MLServerModel",
    "MLServerProcess",
    "mlserver_available",
    "mlserver_binary",
    "start_mlserver",
]

MLSERVER_VENV = REPO_ROOT / ".venv-mlserver"
MLSERVER_HINT = "install with: make mlserver (creates .venv-mlserver with mlserver==1.7.1 mlserver-sklearn==1.7.1)"
MODELS_SOURCE = Path(__file__).resolve().parent / "mlserver_models"
READY_PATH = "/v2/health/ready"
FAULTS_FILE = "faults.json"


def mlserver_binary() -> str:
    """Path of `mlserver` ($HARNESS_MLSERVER_BIN, else .venv-mlserver/bin/mlserver); MissingBinaryError if absent."""
    path = os.environ.get("HARNESS_MLSERVER_BIN") or str(MLSERVER_VENV / "bin" / "mlserver")
    if not os.access(path, os.X_OK):
        raise MissingBinaryError(f"`mlserver` not found at {path}; {MLSERVER_HINT}")
    return path


def mlserver_available() -> bool:
    try:
        mlserver_binary()
    except MissingBinaryError:
        return False
    return True


@dataclass(frozen=True)
class MLServerModel:
    """One model folder: `name`, optional `version` (parameters.version), initial `faults`, training `seed`, and a
    `load_delay_s` that slows every load (warm-up tests)."""

    name: str
    version: str | None = None
    faults: Mapping[str, Any] | None = None
    seed: int = 0
    load_delay_s: float = 0.0

    @property
    def folder(self) -> str:
        return f"{self.name}-{self.version}" if self.version else self.name


class MLServerProcess(HttpService):
    """One MLServer; see the module docstring."""

    ready_path = READY_PATH

    def __init__(
        self,
        models: Sequence[MLServerModel],
        *,
        log_dir: str | os.PathLike[str],
        work_dir: str | os.PathLike[str] | None = None,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        name: str = "mlserver",
        binary: str | None = None,
    ) -> None:
        if not models:
            raise ValueError("at least one model")
        folders = [m.folder for m in models]
        if len(set(folders)) != len(folders):
            raise ValueError(f"duplicate model name/version: {folders}")
        binary = binary or mlserver_binary()
        self.models = list(models)
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="mlserver-"))
        self.repo_dir = self.work_dir / f"{name}-models"
        self.repo_dir.mkdir(parents=True, exist_ok=True)
        spare = iter(free_ports(3))
        http_port = http_port or next(spare)
        grpc_port = grpc_port or next(spare)
        metrics_port = metrics_port or next(spare)
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        settings = {
            "debug": False,
            "parallel_workers": 0,
            "host": "127.0.0.1",
            "http_port": http_port,
            "grpc_port": grpc_port,
            "metrics_port": metrics_port,
            "load_models_at_startup": True,
            "metrics_dir": str(self.work_dir / f"{name}-metrics"),
        }
        (self.repo_dir / "settings.json").write_text(json.dumps(settings, indent=2))
        for model in self.models:
            self._write_model(model)
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = str(MODELS_SOURCE)  # the agent's PYTHONPATH means nothing to MLServer's interpreter
        env.pop("VIRTUAL_ENV", None)
        super().__init__(
            [binary, "start", str(self.repo_dir)],
            name=name,
            host="127.0.0.1",
            port=http_port,
            log_dir=log_dir,
            cwd=self.repo_dir,
            env=env,
        )

    # -- model repository on disk -----------------------------------------------------------------------------

    def _write_model(self, model: MLServerModel) -> None:
        folder = self.repo_dir / model.folder
        folder.mkdir(parents=True, exist_ok=True)
        parameters: dict[str, Any] = {
            "extra": {
                "faults_file": str(folder / FAULTS_FILE),
                "seed": model.seed,
                "load_delay_s": model.load_delay_s,
            }
        }
        if model.version:
            parameters["version"] = model.version
        settings = {"name": model.name, "implementation": "fault_model.FaultModel", "parameters": parameters}
        (folder / "model-settings.json").write_text(json.dumps(settings, indent=2))
        self._write_faults(folder, model.faults or {})

    def _model(self, name: str, version: str | None) -> MLServerModel:
        for model in self.models:
            if model.name == name and (version is None or model.version == version):
                return model
        raise KeyError(f"no model {name!r} version {version!r} in this server")

    @staticmethod
    def _write_faults(folder: Path, faults: Mapping[str, Any]) -> None:
        tmp = folder / f".{FAULTS_FILE}.tmp"
        tmp.write_text(json.dumps(dict(faults)))
        tmp.replace(folder / FAULTS_FILE)  # atomic: a request never reads half a file

    def model_dir(self, name: str, version: str | None = None) -> Path:
        return self.repo_dir / self._model(name, version).folder

    def set_faults(self, name: str, version: str | None, faults: Mapping[str, Any]) -> None:
        """Replace the faults of one model folder; the next request sees them."""
        self._write_faults(self.model_dir(name, version), faults)

    def clear_faults(self, name: str, version: str | None = None) -> None:
        self.set_faults(name, version, {})

    async def set_faults_async(self, name: str, version: str | None, faults: Mapping[str, Any]) -> None:
        await asyncio.to_thread(self.set_faults, name, version, faults)

    # -- URLs and calls -------------------------------------------------------------------------------------

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @staticmethod
    def model_path(name: str, version: str | None = None) -> str:
        """`/v2/models/{name}` or `/v2/models/{name}/versions/{version}`."""
        return f"/v2/models/{name}" + (f"/versions/{version}" if version else "")

    def infer_path(self, name: str, version: str | None = None) -> str:
        return self.model_path(name, version) + "/infer"

    def infer(
        self, name: str, body: Mapping[str, Any], version: str | None = None, timeout_s: float = 5.0
    ) -> HttpResponse:
        """POST an OIP v2 infer body; returns the answer whatever its status."""
        return request("POST", self.url + self.infer_path(name, version), json_body=dict(body), timeout_s=timeout_s)

    def model_ready_status(self, name: str, version: str | None = None) -> int | None:
        """Status of GET /v2/models/{name}[/versions/{v}]/ready (200 ready, 400 not ready, 404 unknown)."""
        return http_status(self.url + self.model_path(name, version) + "/ready", timeout_s=1.0)

    def load(self, name: str, timeout_s: float = 30.0) -> None:
        """POST /v2/repository/models/{name}/load (every version of `name`)."""
        self._repository(f"models/{name}/load", timeout_s)

    def unload(self, name: str, timeout_s: float = 30.0) -> None:
        """POST /v2/repository/models/{name}/unload (every version of `name`)."""
        self._repository(f"models/{name}/unload", timeout_s)

    def repository_index(self) -> list[dict[str, Any]]:
        """POST /v2/repository/index: [{"name", "version", "state": READY / UNAVAILABLE, "reason"}]."""
        resp = self._repository("index", 5.0, body={})
        index: list[dict[str, Any]] = resp.json()
        return index

    def _repository(self, path: str, timeout_s: float, body: Any = None) -> HttpResponse:
        url = f"{self.url}/v2/repository/{path}"
        resp = request("POST", url, json_body=body, body=None if body is not None else b"", timeout_s=timeout_s)
        if not resp.ok:
            raise HttpStatusError("POST", url, resp)
        return resp

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self, timeout_s: float = 60.0) -> Self:
        return super().start(timeout_s)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """/v2/health/ready 200, then every model's versioned ready path 200."""
        super().wait_ready(timeout_s)
        pending = {(m.name, m.version) for m in self.models}

        def probe() -> bool | NotYet:
            self.process.check_alive()
            for key in list(pending):
                if self.model_ready_status(*key) == 200:
                    pending.discard(key)
            return not pending or NotYet(sorted(pending, key=str))

        wait_until(probe, timeout_s, interval_s=0.05, what=f"{self.process.name} models ready")

    def stop(self, timeout_s: float = 10.0) -> int | None:
        code = super().stop(timeout_s)
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        return code


def start_mlserver(
    models: Sequence[MLServerModel], log_dir: str | os.PathLike[str], timeout_s: float = 60.0, **kwargs: Any
) -> MLServerProcess:
    """`MLServerProcess(models, log_dir=log_dir, **kwargs).start(timeout_s)`."""
    return MLServerProcess(models, log_dir=log_dir, **kwargs).start(timeout_s)
