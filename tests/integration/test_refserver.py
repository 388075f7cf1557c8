"""The reference model server as a real subprocess: OIP v2 endpoints, metrics, outcomes and every fault switch.

Statistical checks use a tolerance of about 5 binomial standard deviations (sqrt(p(1-p)/n)), so they fail
by chance less than once in a million runs; the server's RNG is seeded, so in practice they are stable.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.wait import wait_until as harness_wait_until
from refserver import client

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MODEL = "cancer"
VERSION = "v7"
START_DEADLINE_S = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Response:
    def __init__(self, status: int, headers: http.client.HTTPMessage, raw: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = raw

    def json(self) -> Any:
        return json.loads(self.raw)


class RefServer:
    """One `python -m refserver` process and a keep-alive HTTP connection to it."""

    def __init__(self, *extra: str, version: str = VERSION, seed: int = 1) -> None:
        self.port = free_port()
        self.version = version
        self.log = tempfile.TemporaryFile()  # noqa: SIM115  # outlives __init__; closed in stop()
        args = ["--model", MODEL, "--version", version, "--port", str(self.port), "--seed", str(seed), *extra]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "refserver", *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._conn: http.client.HTTPConnection | None = None

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Response:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            try:
                self._conn.request(method, path, body=payload, headers=headers)
                resp = self._conn.getresponse()
                return Response(resp.status, resp.headers, resp.read())
            except (ConnectionError, http.client.HTTPException, OSError):
                self._conn.close()
                self._conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def wait_until(self, path: str, status: int = 200, deadline_s: float = START_DEADLINE_S) -> None:
        def answered() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"refserver exited with {self.proc.returncode}:\n{self.stderr()}")
            try:
                return self.request("GET", path, timeout=1.0).status == status
            except OSError:
                return False

        harness_wait_until(answered, deadline_s, interval_s=0.05, what=f"{path} to answer {status}")

    def infer(self, body: dict[str, Any]) -> Response:
        return self.request("POST", f"/v2/models/{MODEL}/infer", body)

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        resp = self.request("POST", "/faults", faults)
        assert resp.status == 200, resp.raw
        result: dict[str, Any] = resp.json()
        return result

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        resp = self.request("GET", "/metrics")
        assert resp.status == 200
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(resp.raw.decode())
            for s in family.samples
        }

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def metric(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, /, **labels: str) -> float:
    wanted = {"model": MODEL, "version": VERSION, **labels}
    matches = [v for (n, ls), v in samples.items() if n == name and all((k, v) in ls for k, v in wanted.items())]
    assert len(matches) == 1, f"{name}{labels}: {len(matches)} samples"
    return matches[0]


@pytest.fixture(scope="module")
def server() -> Iterator[RefServer]:
    srv = RefServer()
    try:
        srv.wait_until("/v2/health/ready")
        yield srv
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def _clear_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "server" in request.fixturenames:
        srv: RefServer = request.getfixturevalue("server")
        if srv.proc.poll() is None:
            assert srv.request("DELETE", "/faults").status == 200


def test_health_metadata_and_version_header(server: RefServer) -> None:
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}/ready", f"/v2/models/{MODEL}"):
        resp = server.request("GET", path)
        assert resp.status == 200, path
        assert resp.headers["x-model-version"] == VERSION
    meta = server.request("GET", f"/v2/models/{MODEL}").json()
    assert meta["name"] == MODEL
    assert meta["versions"] == [VERSION]
    assert meta["inputs"][0]["shape"] == [-1, len(client.feature_names())]
    assert meta["parameters"]["feature_names"] == client.feature_names()
    assert len(client.feature_names()) >= 5
    missing = server.request("GET", "/v2/models/other/ready")
    assert missing.status == 404
    assert missing.headers["x-model-version"] == VERSION
    assert "error" in missing.json()


def test_infer_answers_with_version_and_real_predictions(server: RefServer) -> None:
    _, truth = client.sample_rows(200, seed=11)
    resp = server.infer(client.sample_request(200, seed=11))
    assert resp.status == 200
    assert resp.headers["x-model-version"] == VERSION
    body = resp.json()
    assert body["model_name"] == MODEL
    assert body["model_version"] == VERSION
    assert body["id"]
    predict, confidence = body["outputs"]
    assert (predict["name"], predict["datatype"], predict["shape"]) == ("predict", "INT64", [200])
    assert (confidence["name"], confidence["datatype"], confidence["shape"]) == ("confidence", "FP32", [200])
    assert all(0.5 <= c <= 1.0 for c in confidence["data"])
    accuracy = sum(p == y for p, y in zip(predict["data"], truth, strict=True)) / len(truth)
    assert accuracy >= 0.9  # hold-out accuracy of the model is ~0.97-0.99


def test_bad_requests_are_400_and_not_errors(server: RefServer) -> None:
    before = server.metrics()
    bad_bodies: list[dict[str, Any]] = [
        {"inputs": []},
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
    ]
    for body in bad_bodies:
        resp = server.infer(body)
        assert resp.status == 400
        assert "error" in resp.json()
    after = server.metrics()
    assert metric(after, "model_inference_requests_total") - metric(before, "model_inference_requests_total") == 2
    assert metric(after, "model_inference_errors_total") == metric(before, "model_inference_errors_total")


def test_null_features_count_as_missing(server: RefServer) -> None:
    body = client.sample_request(1, seed=3)
    body["inputs"][0]["data"][0] = None
    before = server.metrics()
    resp = server.infer(body)
    assert resp.status == 200, resp.raw
    after = server.metrics()
    first, second = client.feature_names()[:2]

    def delta(name: str, feature: str) -> float:
        return metric(after, name, feature=feature) - metric(before, name, feature=feature)

    assert delta("model_feature_missing_total", first) == 1
    assert delta("model_feature_observations_total", first) == 1
    assert delta("model_feature_value_count", first) == 0
    assert delta("model_feature_missing_total", second) == 0
    assert delta("model_feature_value_count", second) == 1


def test_metrics_expose_per_feature_reference_buckets_and_process(server: RefServer) -> None:
    samples = server.metrics()
    edges = server.request("GET", f"/v2/models/{MODEL}").json()["parameters"]["reference_edges"]
    for feature in client.feature_names():
        les = sorted(
            float(dict(labels)["le"])
            for (name, labels), _ in samples.items()
            if name == "model_feature_value_bucket" and ("feature", feature) in labels
        )
        assert les == [*edges[feature], math.inf]
        assert len(les) >= 5
    assert metric(samples, "model_loaded") == 1
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)
    assert 0.0 <= metric(samples, "model_business_metric", name="positive_rate") <= 1.0


def test_error_rate_fault(server: RefServer) -> None:
    n, rate = 400, 0.3
    tolerance = 5 * math.sqrt(rate * (1 - rate) / n)  # ~0.115
    server.set_faults(error_rate=rate)
    before = server.metrics()
    body = client.sample_request(1, seed=5)
    statuses = [server.infer(body).status for _ in range(n)]
    after = server.metrics()
    failed = statuses.count(500)
    assert failed + statuses.count(200) == n
    assert abs(failed / n - rate) <= tolerance, failed / n
    assert metric(after, "model_inference_errors_total") - metric(before, "model_inference_errors_total") == failed
    assert metric(after, "model_inference_requests_total") - metric(before, "model_inference_requests_total") == n

    server.set_faults(error_rate=1.0)
    resp = server.infer(body)
    assert resp.status == 500
    assert "error" in resp.json()
    assert resp.headers["x-model-version"] == VERSION


def test_latency_fault(server: RefServer) -> None:
    body = client.sample_request(1, seed=6)
    server.set_faults(latency_ms=150.0, latency_jitter_ms=20.0)
    before = server.metrics()
    for _ in range(4):
        start = time.perf_counter()
        assert server.infer(body).status == 200
        assert time.perf_counter() - start >= 0.13
    after = server.metrics()

    def delta(le: str) -> float:
        name = "model_inference_latency_seconds_bucket"
        return metric(after, name, le=le) - metric(before, name, le=le)

    assert delta("0.1") == 0  # every one of the 4 requests took >= 130 ms in the server's own histogram
    assert delta("0.25") == 4


def test_confidence_shift_visible_in_response_and_metrics(server: RefServer) -> None:
    server.set_faults(confidence_shift=0.6)
    before = server.metrics()
    resp = server.infer(client.sample_request(50, seed=7))
    after = server.metrics()
    confidence = resp.json()["outputs"][1]["data"]
    assert all(0.0 <= c <= 0.4 for c in confidence)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("model_prediction_confidence_count") == 50
    assert delta("model_prediction_confidence_bucket", le="0.4") == 50
    assert delta("model_prediction_confidence_sum") <= 50 * 0.4


def test_drift_fault_moves_feature_values_out_of_reference_bins(server: RefServer) -> None:
    feature = client.feature_names()[0]
    edges = server.request("GET", f"/v2/models/{MODEL}").json()["parameters"]["reference_edges"][feature]
    top = repr(edges[-1])
    server.set_faults(drift=4.0)
    before = server.metrics()
    assert server.infer(client.sample_request(100, seed=8)).status == 200
    after = server.metrics()

    def delta(le: str) -> float:
        name = "model_feature_value_bucket"
        return metric(after, name, feature=feature, le=le) - metric(before, name, feature=feature, le=le)

    beyond_top = delta("+Inf") - delta(top)
    assert delta("+Inf") == 100
    assert beyond_top >= 90  # without drift ~10 % of values lie above the top decile edge


def test_missing_rate_fault(server: RefServer) -> None:
    rows, rate = 100, 0.5
    cells = rows * len(client.feature_names())
    tolerance = 5 * math.sqrt(rate * (1 - rate) / cells)  # ~0.08
    server.set_faults(missing_rate=rate)
    before = server.metrics()
    assert server.infer(client.sample_request(rows, seed=9)).status == 200  # imputed, still answers
    after = server.metrics()
    missing = sum(
        metric(after, "model_feature_missing_total", feature=f)
        - metric(before, "model_feature_missing_total", feature=f)
        for f in client.feature_names()
    )
    assert abs(missing / cells - rate) <= tolerance


def test_accuracy_drop_fault_with_inline_labels(server: RefServer) -> None:
    def accuracy_of_labelled_batch(seed: int) -> float:
        before = server.metrics()
        assert server.infer(client.sample_request(200, seed=seed, with_labels=True)).status == 200
        after = server.metrics()
        correct = metric(after, "model_outcomes_total", result="correct") - metric(
            before, "model_outcomes_total", result="correct"
        )
        incorrect = metric(after, "model_outcomes_total", result="incorrect") - metric(
            before, "model_outcomes_total", result="incorrect"
        )
        assert correct + incorrect == 200
        return correct / 200

    assert accuracy_of_labelled_batch(seed=10) >= 0.9
    server.set_faults(accuracy_drop=0.5)
    # accuracy ~ 0.98 * 0.5 + 0.02 * 0.5 = 0.5; 5 sigma over 200 rows ~ 0.18
    assert abs(accuracy_of_labelled_batch(seed=10) - 0.5) <= 0.18
    server.set_faults(accuracy_drop=1.0)
    assert accuracy_of_labelled_batch(seed=10) <= 0.1


def test_late_outcomes_by_response_id(server: RefServer) -> None:
    _, labels = client.sample_rows(20, seed=12)
    body = server.infer(client.sample_request(20, seed=12, request_id="late-1")).json()
    assert body["id"] == "late-1"
    predictions = body["outputs"][0]["data"]
    expected_correct = sum(p == y for p, y in zip(predictions, labels, strict=True))
    path = f"/v2/models/{MODEL}/outcomes"
    before = server.metrics()
    result = server.request("POST", path, client.outcome_body("late-1", labels)).json()
    assert result == {"correct": expected_correct, "incorrect": 20 - expected_correct, "unmatched": [], "rejected": []}
    again = server.request("POST", path, client.outcome_body("late-1", labels)).json()
    assert again["unmatched"] == ["late-1"]  # each id resolves once
    generated_id = server.infer(client.sample_request(2, seed=13)).json()["id"]
    mismatch = server.request("POST", path, {"outcomes": [{"id": generated_id, "labels": [1]}]}).json()
    assert mismatch["rejected"] == [generated_id]
    counts = server.request("POST", path, {"correct": 3, "incorrect": 1}).json()
    assert (counts["correct"], counts["incorrect"]) == (3, 1)
    assert server.request("POST", path, {"id": "x", "labels": [2]}).status == 400
    after = server.metrics()
    added = metric(after, "model_outcomes_total", result="correct") - metric(
        before, "model_outcomes_total", result="correct"
    )
    assert added == expected_correct + 3


def test_unready_fault(server: RefServer) -> None:
    server.set_faults(unready=True)
    assert server.request("GET", "/v2/health/ready").status == 503
    assert server.request("GET", f"/v2/models/{MODEL}/ready").status == 503
    assert server.request("GET", "/v2/health/live").status == 200
    assert server.infer(client.sample_request(1, seed=1)).status == 200  # unready, not broken
    server.request("DELETE", "/faults")
    assert server.request("GET", "/v2/health/ready").status == 200


def test_faults_merge_get_validate_and_clear(server: RefServer) -> None:
    server.set_faults(error_rate=0.2)
    merged = server.set_faults(latency_ms=5.0)
    assert (merged["error_rate"], merged["latency_ms"]) == (0.2, 5.0)
    assert server.request("GET", "/faults").json() == merged
    for bad in ({"error_rate": 1.5}, {"nonsense": 1}, {"crash": "yes"}, {"missing_rate": "0.1"}):
        resp = server.request("POST", "/faults", bad)
        assert resp.status == 400, bad
        assert "error" in resp.json()
    cleared = server.request("DELETE", "/faults").json()
    assert not any(cleared.values())
    assert set(cleared) == {
        "error_rate",
        "latency_ms",
        "latency_jitter_ms",
        "crash",
        "confidence_shift",
        "drift",
        "missing_rate",
        "accuracy_drop",
        "wrong_answer_rate",
        "unready",
        "leak_mb_per_s",
    }


def test_unload_and_load(server: RefServer) -> None:
    repo = f"/v2/repository/models/{MODEL}"
    assert server.request("POST", f"{repo}/unload").status == 200
    try:
        assert server.request("GET", "/v2/health/ready").status == 503
        assert server.request("GET", f"/v2/models/{MODEL}/ready").status == 503
        before = server.metrics()
        assert metric(before, "model_loaded") == 0
        assert server.infer(client.sample_request(1, seed=1)).status == 503
        after = server.metrics()
        assert metric(after, "model_inference_errors_total") - metric(before, "model_inference_errors_total") == 1
        index = server.request("POST", "/v2/repository/index").json()
        assert index == [{"name": MODEL, "version": VERSION, "state": "UNAVAILABLE"}]
        assert server.request("POST", "/v2/repository/models/other/load").status == 404
    finally:
        assert server.request("POST", f"{repo}/load").status == 200
    assert server.request("GET", "/v2/health/ready").status == 200
    assert metric(server.metrics(), "model_loaded") == 1
    assert server.infer(client.sample_request(1, seed=1)).status == 200


def test_start_unloaded_load_delay_startup_faults_and_sigterm() -> None:
    srv = RefServer("--start-unloaded", "--load-delay-s", "0.5", "--faults", '{"latency_ms": 1.5}', version="v8")
    try:
        srv.wait_until("/v2/health/live")
        assert srv.request("GET", "/v2/health/ready").status == 503
        assert srv.request("POST", f"/v2/models/{MODEL}/infer", client.sample_request(1)).status == 503
        assert srv.request("GET", "/faults").json()["latency_ms"] == 1.5
        start = time.perf_counter()
        assert srv.request("POST", f"/v2/repository/models/{MODEL}/load").status == 200
        assert time.perf_counter() - start >= 0.5
        resp = srv.request("GET", f"/v2/models/{MODEL}/ready")
        assert (resp.status, resp.headers["x-model-version"]) == (200, "v8")
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=10) == 0
        assert "shutting down" in srv.stderr()
    finally:
        srv.stop()


def test_crash_fault_exits_137_after_replying() -> None:
    srv = RefServer(version="v9")
    try:
        srv.wait_until("/v2/health/ready")
        resp = srv.request("POST", "/faults", {"crash": True})
        assert resp.status == 200
        assert resp.json()["crash"] is True
        assert srv.proc.wait(timeout=10) == 137
    finally:
        srv.stop()
