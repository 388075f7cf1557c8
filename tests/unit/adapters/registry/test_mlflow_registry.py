"""Mapping MLflow's registered model versions (plain REST payloads) to the registry's versions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from agent.adapters.registry.mlflow_registry import (
    EVIDENCE_TAG,
    STATUS_TAG,
    MlflowRegistryError,
    status_tags,
    version_from_mlflow,
    versions_from_mlflow,
)
from agent.config import MlflowRegistrySection
from agent.ports.registry import VersionStatus
from agent.registry.model import StatusChange, Version

SETTINGS = MlflowRegistrySection(url="http://127.0.0.1:5000")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "a" * 64
FULL_PROVENANCE_TAGS = {"artifact_digest": DIGEST, "image": "reg/m@" + DIGEST, "base_image_digest": DIGEST}


def mv(number: str = "1", tags: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "name": "credit",
        "version": number,
        "creation_timestamp": 1_700_000_000_000 + int(number) * 1000,
        "description": "",
        "source": f"/srv/artifacts/1/run{number}/artifacts/model",
        "run_id": f"run{number}",
        "status": "READY",
        "current_stage": "None",
        "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
        **extra,
    }


def run(
    metrics: dict[str, float] | None = None,
    params: dict[str, str] | None = None,
    commit: str | None = COMMIT,
    dataset_source: str | None = '{"uri": "s3://bucket/train.parquet"}',
    run_tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    tags = dict(run_tags or {})
    if commit:
        tags["mlflow.source.git.commit"] = commit
    inputs = []
    if dataset_source is not None:
        inputs.append(
            {
                "tags": [{"key": "mlflow.data.context", "value": "training"}],
                "dataset": {"name": "train", "digest": "d" * 32, "source_type": "s3", "source": dataset_source},
            }
        )
    return {
        "info": {"run_id": "run1"},
        "data": {
            "metrics": [{"key": k, "value": v, "timestamp": 0, "step": 0} for k, v in (metrics or {}).items()],
            "params": [{"key": k, "value": v} for k, v in (params or {}).items()],
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
        },
        "inputs": {"dataset_inputs": inputs},
    }


def test_tag_creation_time_and_default_status() -> None:
    mapped = version_from_mlflow(SETTINGS, "credit", mv("3"), run(), [])
    assert mapped.number == "3"
    assert mapped.spec.tag == "v3"
    assert mapped.spec.status is VersionStatus.CANDIDATE
    assert mapped.spec.created == datetime.fromtimestamp(1_700_000_003, UTC)


def test_tag_key_names_the_agent_tag() -> None:
    settings = SETTINGS.model_copy(update={"tag_key": "deploy_tag"})
    assert version_from_mlflow(settings, "credit", mv("3", {"deploy_tag": "blue"}), None, []).spec.tag == "blue"
    assert version_from_mlflow(settings, "credit", mv("4"), None, []).spec.tag == "v4"


@pytest.mark.parametrize(
    ("tags", "aliases", "extra", "expected"),
    [
        ({}, ["champion"], {}, VersionStatus.STABLE),
        ({}, ["challenger"], {}, VersionStatus.CANARY),
        ({}, ["champion", "challenger"], {}, VersionStatus.STABLE),
        ({STATUS_TAG: "failed"}, ["champion"], {}, VersionStatus.FAILED),  # the agent's verdict wins over the alias
        ({STATUS_TAG: "verified"}, [], {}, VersionStatus.VERIFIED),
        ({}, [], {"current_stage": "Archived"}, VersionStatus.RETIRED),
        ({}, [], {"current_stage": "Production"}, VersionStatus.STABLE),
        ({}, ["champion"], {"status": "FAILED_REGISTRATION"}, VersionStatus.FAILED),
    ],
)
def test_declared_status(
    tags: dict[str, str], aliases: list[str], extra: dict[str, str], expected: VersionStatus
) -> None:
    assert version_from_mlflow(SETTINGS, "credit", mv("1", tags, **extra), run(), aliases).spec.status is expected


def test_an_unknown_status_tag_is_an_error_naming_version_and_tag() -> None:
    with pytest.raises(MlflowRegistryError, match=r"version 2 \(tag v2\): tag rollback_agent.status: 'great'"):
        version_from_mlflow(SETTINGS, "credit", mv("2", {STATUS_TAG: "great"}), run(), [])


def test_full_provenance_from_version_source_run_and_tags() -> None:
    mapped = version_from_mlflow(
        SETTINGS,
        "credit",
        mv("1", FULL_PROVENANCE_TAGS),
        run(params={"max_depth": "4", "kernel": "rbf"}, run_tags={"training_data_hash": DIGEST}),
        [],
    )
    provenance = mapped.spec.provenance
    assert provenance is not None
    assert provenance.artifact_uri == "file:///srv/artifacts/1/run1/artifacts/model"
    assert provenance.feature_code_commit == COMMIT
    assert provenance.training_data_uri == "s3://bucket/train.parquet"
    assert provenance.training_data_hash == DIGEST  # a run tag: MLflow's dataset digest holds at most 36 characters
    assert provenance.image == "reg/m@" + DIGEST
    assert provenance.hyperparameters == {"max_depth": 4, "kernel": "rbf"}


def test_incomplete_provenance_is_left_out_and_named() -> None:
    mapped = version_from_mlflow(SETTINGS, "credit", mv("1"), run(params={"max_depth": "4"}), [])
    assert mapped.spec.provenance is None
    description = mapped.spec.description
    assert "provenance incomplete in MLflow (missing artifact_digest, training_data_hash, image" in description
    assert f"git commit {COMMIT}" in description
    assert "params max_depth=4" in description


def test_a_malformed_provenance_field_is_an_error_naming_it() -> None:
    tags = {**FULL_PROVENANCE_TAGS, "training_data_hash": DIGEST, "artifact_digest": "sha256:abc"}
    with pytest.raises(MlflowRegistryError, match=r"version 1 \(tag v1\): provenance.artifact_digest: a sha256"):
        version_from_mlflow(SETTINGS, "credit", mv("1", tags), run(), [])


def test_an_abbreviated_git_commit_is_refused() -> None:
    tags = {**FULL_PROVENANCE_TAGS, "training_data_hash": DIGEST}
    with pytest.raises(MlflowRegistryError, match=r"provenance.feature_code_commit"):
        version_from_mlflow(SETTINGS, "credit", mv("1", tags), run(commit="abc1234"), [])


def test_baseline_from_the_run_metrics() -> None:
    metrics = {
        "accuracy": 0.91,
        "latency_p99_ms": 12.5,
        "error_rate": 0.002,
        "mean_confidence": 0.8,
        "throughput_rps_mean": 40.0,
        "throughput_rps_std": 4.0,
        "missing_rate.income": 0.01,
        "train_loss": 0.3,
    }
    baseline = version_from_mlflow(SETTINGS, "credit", mv("1"), run(metrics=metrics), []).spec.baseline
    assert baseline is not None
    domain = baseline.to_domain().numbers
    assert domain["primary_metric"] == 0.91
    assert domain["latency_p99_ms"] == 12.5
    assert domain["error_rate"] == 0.002
    assert domain["confidence_mean"] == 0.8
    assert domain["throughput_rps_mean"] == 40.0 and domain["throughput_rps_std"] == 4.0
    assert domain["missing_rate.income"] == 0.01
    assert "train_loss" not in domain


def test_the_primary_metric_is_configurable_and_a_run_without_metrics_has_no_baseline() -> None:
    settings = SETTINGS.model_copy(update={"primary_metric": "auc"})
    baseline = version_from_mlflow(settings, "credit", mv("1"), run(metrics={"auc": 0.7, "accuracy": 0.9}), [])
    assert baseline.spec.baseline is not None and baseline.spec.baseline.primary_metric is not None
    assert baseline.spec.baseline.primary_metric.name == "auc"
    assert version_from_mlflow(SETTINGS, "credit", mv("1"), run(), []).spec.baseline is None
    assert version_from_mlflow(SETTINGS, "credit", mv("1"), None, []).spec.baseline is None


def test_an_impossible_baseline_is_an_error_naming_the_field() -> None:
    with pytest.raises(MlflowRegistryError, match=r"baseline.error_rate"):
        version_from_mlflow(SETTINGS, "credit", mv("1"), run(metrics={"error_rate": 1.5}), [])


def test_requirements_from_version_tags() -> None:
    tags = {
        "requirements.memory_mb": "2048",
        "requirements.cpu": "1.5",
        "requirements.runtime": "sklearn-1.4/python-3.11",
        "requirements.features": "income, age",
    }
    requirements = version_from_mlflow(SETTINGS, "credit", mv("1", tags), None, []).spec.requirements
    assert requirements is not None
    assert (requirements.memory_mb, requirements.cpu, requirements.runtime) == (2048, 1.5, "sklearn-1.4/python-3.11")
    assert requirements.input_schema is not None and requirements.input_schema.features == ("income", "age")
    with pytest.raises(MlflowRegistryError, match=r"requirements.runtime"):
        version_from_mlflow(
            SETTINGS, "credit", mv("1", {"requirements.memory_mb": "2048", "requirements.cpu": "1"}), None, []
        )


def test_declared_evidence_from_a_tag() -> None:
    check = {"name": "holdout auc", "value": 0.9, "threshold": 0.8, "comparison": ">=", "passed": True,
             "at": "2026-01-01T00:00:00Z", "approved_by": "risk-team"}  # fmt: skip
    mapped = version_from_mlflow(SETTINGS, "credit", mv("1", {EVIDENCE_TAG: json.dumps([check])}), None, [])
    assert [e.name for e in mapped.spec.evidence] == ["holdout auc"]
    bad = {**check, "passed": False}
    with pytest.raises(MlflowRegistryError, match=r"rollback_agent.evidence.0: passed: is false"):
        version_from_mlflow(SETTINGS, "credit", mv("1", {EVIDENCE_TAG: json.dumps([bad])}), None, [])
    with pytest.raises(MlflowRegistryError, match="expected a JSON list"):
        version_from_mlflow(SETTINGS, "credit", mv("1", {EVIDENCE_TAG: "{"}), None, [])


def test_a_missing_run_is_noted_not_fatal() -> None:
    mapped = version_from_mlflow(SETTINGS, "credit", mv("1"), None, [])
    assert "source run run1 not found" in mapped.spec.description


def test_versions_are_ordered_by_number_with_their_aliases() -> None:
    registered = {"name": "credit", "aliases": [{"alias": "champion", "version": "2"}]}
    runs = {"run10": run(), "run2": run()}
    mapped = versions_from_mlflow(SETTINGS, "credit", registered, [mv("10"), mv("2")], runs)
    assert [m.spec.tag for m in mapped] == ["v2", "v10"]
    assert mapped[0].aliases == ("champion",) and mapped[0].spec.status is VersionStatus.STABLE


def test_two_versions_with_one_tag_are_refused() -> None:
    settings = SETTINGS.model_copy(update={"tag_key": "deploy_tag"})
    with pytest.raises(MlflowRegistryError, match=r"several versions map to the tag\(s\) \['blue'\]"):
        versions_from_mlflow(
            settings, "credit", {}, [mv("1", {"deploy_tag": "blue"}), mv("2", {"deploy_tag": "blue"})], {}
        )


def test_status_tags_mirror_the_runtime_change() -> None:
    spec = version_from_mlflow(SETTINGS, "credit", mv("2"), None, ["challenger"]).spec
    at = datetime(2026, 1, 1, tzinfo=UTC)
    change = StatusChange(status=VersionStatus.FAILED, reason="rollback r1: error rate 40%", actor="rule:err", at=at)
    tags = status_tags(Version.from_spec(spec, change))
    assert tags == {
        "rollback_agent.status": "failed",
        "rollback_agent.status_reason": "rollback r1: error rate 40%",
        "rollback_agent.status_actor": "rule:err",
        "rollback_agent.status_at": "2026-01-01T00:00:00+00:00",
    }
