from pathlib import Path

import pytest

from agent.domain.signals import BaselineKey
from agent.ports.registry import VersionStatus
from agent.registry import RegistryFileError, load_registry, parse_registry

EXAMPLE = Path(__file__).parents[3] / "rules" / "registry.example.yaml"

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
COMMIT = "c" * 40

GOOD = f"""\
model: credit-scorer
versions:
  - tag: v1
    status: verified
    created: 2024-03-04T09:12:00Z
    provenance:
      artifact_uri: s3://models/v1/model.joblib
      artifact_digest: {D1}
      training_data_uri: s3://data/2024-02/
      training_data_hash: {D2}
      feature_code_commit: {COMMIT}
      image: registry.local/scorer@{D1}
      base_image_digest: {D2}
    requirements: {{memory_mb: 1024, cpu: 1, runtime: sklearn-1.4/python-3.11}}
    baseline:
      reference_bins:
        income: {{edges: [10, 20, .inf], probabilities: [0.2, 0.5, 0.3]}}
    evidence:
      - {{name: holdout_auc, value: 0.81, threshold: 0.75, comparison: ">=", passed: true,
         at: 2024-03-01T16:40:00Z, approved_by: model-risk}}
  - tag: v2
    status: candidate
    created: 2024-05-20T14:30:00+02:00
    provenance:
      artifact_uri: s3://models/v2/model.joblib
      artifact_digest: {D1}
      training_data_uri: s3://data/2024-04/
      training_data_hash: {D2}
      feature_code_commit: {COMMIT}
      image: registry.local/scorer@{D1}
      base_image_digest: {D2}
    requirements: {{memory_mb: 2048, cpu: 2, runtime: sklearn-1.4/python-3.11}}
"""


def test_the_example_registry_loads_with_three_versions():
    source = load_registry(EXAMPLE)
    assert source.model == "credit-scorer"
    assert [(v.tag, v.status) for v in source.versions] == [
        ("v1", VersionStatus.VERIFIED),
        ("v2", VersionStatus.VERIFIED),
        ("v3", VersionStatus.CANDIDATE),
    ]
    v2 = source.versions[1]
    assert v2.provenance is not None and v2.provenance.hyperparameters["calibration"] == "isotonic"
    assert all(check.passed for check in v2.evidence)
    assert source.origin == str(EXAMPLE)


def test_the_baseline_becomes_what_the_triggers_read():
    source = parse_registry(GOOD, "registry.yaml")
    baseline = source.versions[0].baseline
    assert baseline is not None
    domain = baseline.to_domain()
    assert domain.reference_bins["income"].bounds == (10, 20, float("inf"))
    assert domain.reference_bins["income"].fractions == (0.2, 0.5, 0.3)
    assert BaselineKey.CONFIDENCE_MEAN not in domain.numbers


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (
            (f"v2/model.joblib\n      artifact_digest: {D1}", "v2/model.joblib\n      artifact_digest: sha256:abc"),
            "registry.yaml:26: versions.1.provenance.artifact_digest: a sha256 digest needs 64 lowercase hex digits",
        ),
        (
            ("created: 2024-05-20T14:30:00+02:00", "created: 2024-05-20T14:30:00"),
            "registry.yaml:23: versions.1.created: Input should have timezone info",
        ),
        (
            ("status: candidate", "status: promoted"),
            "registry.yaml:22: versions.1.status: Input should be 'candidate', 'canary', 'verified'",
        ),
        (
            ("probabilities: [0.2, 0.5, 0.3]", "probabilities: [0.2, 0.5]"),
            "registry.yaml:17: versions.0.baseline.reference_bins.income: probabilities: 2 values for 3 edges",
        ),
        (
            ("probabilities: [0.2, 0.5, 0.3]", "probabilities: [0.2, 0.5, 0.1]"),
            "versions.0.baseline.reference_bins.income: probabilities: must sum to 1",
        ),
        (
            ("value: 0.81", "value: 0.70"),
            "registry.yaml:19: versions.0.evidence.0: passed: is true, but 0.7 >= 0.75 is false",
        ),
        (
            ("feature_code_commit: " + COMMIT, "feature_code_commit: abc123"),
            "versions.0.provenance.feature_code_commit: a full git commit hash is 40",
        ),
        (("tag: v2", "tag: v1"), "registry.yaml:3: versions: duplicate tag(s) ['v1']"),
        (("    requirements: {memory_mb: 2048", "    requirement: {memory_mb: 2048"), "versions.1.requirement: Extra"),
        (("memory_mb: 2048", "memory_mb: 0"), "registry.yaml:32: versions.1.requirements.memory_mb: Input should be"),
    ],
)
def test_errors_name_the_file_the_line_and_the_field(patch: tuple[str, str], expected: str):
    assert patch[0] in GOOD
    with pytest.raises(RegistryFileError) as err:
        parse_registry(GOOD.replace(*patch), "registry.yaml")
    assert expected in str(err.value)


def test_missing_provenance_is_reported_at_the_version():
    text = GOOD.split("    provenance:\n", 1)[0] + "    requirements: {memory_mb: 1, cpu: 1, runtime: x}\n"
    with pytest.raises(RegistryFileError, match=r"registry.yaml:\d+: versions.0.provenance: Field required"):
        parse_registry(text.replace("status: verified", "status: candidate"), "registry.yaml")


def test_a_verified_version_needs_passed_evidence():
    text = GOOD.replace("passed: true", "passed: false").replace("value: 0.81", "value: 0.70")
    with pytest.raises(RegistryFileError) as err:
        parse_registry(text, "registry.yaml")
    assert "registry.yaml:19: versions.0: evidence: a version marked verified needs at least one passed" in str(
        err.value
    )


def test_not_yaml_or_not_a_mapping_or_unreadable(tmp_path: Path):
    with pytest.raises(RegistryFileError, match=r"registry\.yaml:1: not valid YAML"):
        parse_registry("model: [", "registry.yaml")
    with pytest.raises(RegistryFileError, match=r"registry\.yaml:1: expected a mapping at the top level, got list"):
        parse_registry("- v1", "registry.yaml")
    with pytest.raises(RegistryFileError, match="cannot read"):
        load_registry(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (("model: m\nversions: " + "[" * 3000 + "]" * 3000 + "\n").encode(), "registry.yaml:2: nested deeper than 64"),
        (
            (
                "x0: &x0 ["
                + ", ".join(["lol"] * 10)
                + "]\n"
                + "".join(f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 10) + "]\n" for i in range(1, 9))
            ).encode(),
            "registry.yaml:5: alias *x3 takes the document past 100000 nodes",
        ),
        (GOOD.encode().replace(b"tag: v2", b"tag: v\xe92"), "registry.yaml:21: not UTF-8 text: byte 0xe9"),
        (GOOD.encode().replace(b"tag: v2", b"tag: v2\x00"), "registry.yaml:21: character U+0000 is not allowed"),
        (GOOD.replace("2024-05-20T14:30:00+02:00", "2024-02-30").encode(), "registry.yaml:23: not valid YAML: cannot"),
    ],
    ids=["deep", "alias bomb", "invalid UTF-8", "NUL byte", "impossible date"],
)
def test_hostile_files_are_refused_with_the_file_and_line(tmp_path: Path, data: bytes, expected: str):
    path = tmp_path / "registry.yaml"
    path.write_bytes(data)
    with pytest.raises(RegistryFileError) as err:
        parse_registry(data, "registry.yaml")
    assert str(err.value).startswith(expected)
    with pytest.raises(RegistryFileError, match=f"^{path}:"):
        load_registry(path)


def test_merge_keys_share_provenance_between_versions():
    text = GOOD.replace("    provenance:\n", "    provenance: &prov\n", 1)
    second = text.index("    provenance:\n", text.index("tag: v2"))
    end = text.index("    requirements:", second)
    text = text[:second] + "    provenance: {<<: *prov, artifact_uri: s3://models/v2/model.joblib}\n" + text[end:]
    source = parse_registry(text, "registry.yaml")
    v1, v2 = (v.provenance for v in source.versions)
    assert v1 is not None and v2 is not None
    assert v2.artifact_uri == "s3://models/v2/model.joblib" and v2.training_data_uri == v1.training_data_uri
