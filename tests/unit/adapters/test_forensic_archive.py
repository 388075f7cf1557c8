"""The forensic archive on a real directory: manifest, caps, retention, provider failures, names from input.

Plain (sync) tests: each archive runs in its own event loop, so the checks on the directory may block."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from agent.adapters.archive.forensic_archive import ForensicArchiver, Provider
from agent.ports.rollback import ArchiveResult, ForensicInputs


def inputs(rollback_id: str = "abc123", **extra: object) -> ForensicInputs:
    return ForensicInputs(
        rollback_id=rollback_id,
        model="credit",
        failing_version="v3",
        target_version="v2",
        trigger_summary="error-rate of v3 31% > 5% over 30s",
        trigger={"rule": {"rule": "error-rate", "value": 0.31, "threshold": 0.05}},
        extra=extra,
    )


def static(files: Mapping[str, str | bytes]) -> Provider:
    async def provide(_: ForensicInputs) -> Mapping[str, str | bytes]:
        return files

    return provide


def archive(archiver: ForensicArchiver, what: ForensicInputs) -> ArchiveResult:
    return asyncio.run(asyncio.wait_for(archiver.archive(what), 10))


def manifest_of(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "state" / "archive"


def test_manifest_lists_every_file_with_its_checksum(root: Path):
    archiver = ForensicArchiver(
        root,
        {
            "config": static({"agent.json": '{"model": "credit"}\n'}),
            "logs": static({"agent.log": "line 1\nline 2\n"}),
            "envoy": static({"config_dump.json": b'{"configs": []}'}),
        },
    )
    result = archive(archiver, inputs())
    bundle = Path(result.path)
    assert bundle.parent == root.resolve()
    assert bundle.name.endswith("-abc123")
    manifest = manifest_of(bundle)
    assert manifest["rollback_id"] == "abc123" and manifest["model"] == "credit"
    listed = manifest["files"]
    assert set(listed) == {"trigger.json", "config/agent.json", "logs/agent.log", "envoy/config_dump.json"}
    # Every file on disk is in the manifest (and the manifest itself), with the right checksum and size.
    assert files_under(bundle) == set(listed) | {"manifest.json"}
    for name, entry in listed.items():
        content = (bundle / name).read_bytes()
        assert entry["sha256"] == hashlib.sha256(content).hexdigest(), name
        assert entry["bytes"] == len(content), name
    # The result's checksum is the manifest's: it seals the whole bundle.
    assert result.sha256 == hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
    assert result.files == len(listed) + 1
    assert result.bytes == sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    trigger = json.loads((bundle / "trigger.json").read_text())
    assert trigger["failing_version"] == "v3"
    assert trigger["trigger"]["rule"]["value"] == 0.31


def test_per_file_cap_keeps_the_newest_bytes(root: Path):
    log = "".join(f"line {i:05d}\n" for i in range(1000)).encode()  # 11,000 bytes
    archiver = ForensicArchiver(root, {"logs": static({"agent.log": log})}, max_file_bytes=1100)
    bundle = Path(archive(archiver, inputs()).path)
    kept = (bundle / "logs" / "agent.log").read_bytes()
    assert kept == log[-1100:]
    assert kept.endswith(b"line 00999\n")
    entry = manifest_of(bundle)["files"]["logs/agent.log"]
    assert entry["truncated_to_last_bytes"] == 1100
    assert entry["bytes"] == 1100 and entry["sha256"] == hashlib.sha256(kept).hexdigest()


def test_bundle_cap_omits_what_does_not_fit_and_says_so(root: Path):
    providers = {
        "a": static({"one.bin": b"1" * 400}),
        "b": static({"two.bin": b"2" * 400}),
        "c": static({"three.bin": b"3" * 400}),
    }
    archiver = ForensicArchiver(root, providers, max_file_bytes=1000, max_bundle_bytes=1000)
    result = archive(archiver, inputs())
    bundle = Path(result.path)
    listed = manifest_of(bundle)["files"]
    written = [n for n, e in listed.items() if "sha256" in e]
    omitted = [n for n, e in listed.items() if "omitted" in e]
    assert omitted, listed
    assert all("bundle cap of 1000 bytes" in listed[n]["omitted"] for n in omitted)
    assert sum(listed[n]["bytes"] for n in written) <= 1000
    for name in omitted:
        assert not (bundle / name).exists()
    assert files_under(bundle) == set(written) | {"manifest.json"}


def test_retention_keeps_the_newest_bundles(root: Path):
    archiver = ForensicArchiver(root, {"logs": static({"agent.log": "x" * 100})}, keep=3)
    # Ids deliberately in reverse alphabetical order, and several bundles within the same second: the newest
    # bundles must be the ones kept, whatever their ids.
    paths = [Path(archive(archiver, inputs(rollback_id)).path) for rollback_id in "zyxwvu"]
    remaining = sorted(p.name for p in root.iterdir())
    assert remaining == sorted(p.name for p in paths[-3:]), remaining
    assert paths[-1].exists()


def test_retention_by_total_size(root: Path):
    archiver = ForensicArchiver(root, {"blob": static({"data.bin": b"d" * 10_000})}, keep=100)
    first = Path(archive(archiver, inputs("first")).path)
    size = sum(p.stat().st_size for p in first.rglob("*") if p.is_file())
    archiver = ForensicArchiver(
        root, {"blob": static({"data.bin": b"d" * 10_000})}, keep=100, max_total_bytes=int(size * 2.5)
    )
    paths = [first] + [Path(archive(archiver, inputs(f"n{i}")).path) for i in range(4)]
    remaining = sorted(root.iterdir())
    assert len(remaining) == 2, [p.name for p in remaining]
    assert set(remaining) == set(paths[-2:])


def test_a_bundle_larger_than_the_total_cap_is_still_kept(root: Path):
    archiver = ForensicArchiver(root, {"blob": static({"data.bin": b"d" * 5_000})}, max_total_bytes=100)
    older = Path(archive(archiver, inputs("older")).path)
    newest = Path(archive(archiver, inputs("newest")).path)
    assert newest.exists() and not older.exists()


def test_provider_failures_are_recorded_in_errors_json_without_failing_the_bundle(root: Path):
    async def broken(_: ForensicInputs) -> Mapping[str, str]:
        raise ConnectionRefusedError("envoy admin unreachable")

    async def hanging(_: ForensicInputs) -> Mapping[str, str]:
        await asyncio.Event().wait()  # never set: the provider hangs until the archiver's timeout cancels it
        return {"never.txt": ""}

    archiver = ForensicArchiver(
        root,
        {"envoy": broken, "registry": hanging, "logs": static({"agent.log": "fine\n"})},
        provider_timeout_s=0.2,
    )
    result = archive(archiver, inputs())
    bundle = Path(result.path)
    errors = json.loads((bundle / "errors.json").read_text())
    assert set(errors) == {"envoy", "registry"}
    assert "envoy admin unreachable" in errors["envoy"]
    assert "Timeout" in errors["registry"]
    listed = manifest_of(bundle)["files"]
    assert {"errors.json", "logs/agent.log", "trigger.json"} <= set(listed)
    assert listed["errors.json"]["sha256"] == hashlib.sha256((bundle / "errors.json").read_bytes()).hexdigest()
    assert (bundle / "logs" / "agent.log").read_text() == "fine\n"


@pytest.mark.parametrize(
    "rollback_id",
    ["../../escaped", "../../../../../../tmp/escaped", "/tmp/escaped", "..", ".", "", "a/../../b", "..\\..\\x"],
)
def test_rollback_id_cannot_escape_the_archive_dir(tmp_path: Path, root: Path, rollback_id: str):
    archiver = ForensicArchiver(root, {"logs": static({"agent.log": "x\n"})})
    result = archive(archiver, inputs(rollback_id))
    bundle = Path(result.path)
    assert bundle.parent == root.resolve(), bundle
    assert files_under(tmp_path) == {f"state/archive/{bundle.name}/{n}" for n in files_under(bundle)}
    assert not Path("/tmp/escaped").exists()


@pytest.mark.parametrize(
    "filename",
    ["../../../escaped.txt", "/tmp/escaped.txt", "..", "a/../../../escaped.txt", "./../escaped.txt", "\x00evil"],
)
def test_provider_filenames_cannot_escape_the_bundle(tmp_path: Path, root: Path, filename: str):
    archiver = ForensicArchiver(root, {"logs": static({filename: "payload\n"}), "../..": static({"x": "y"})})
    result = archive(archiver, inputs())
    bundle = Path(result.path)
    inside = files_under(bundle)
    # Everything written is inside this bundle, and nothing anywhere else under the test's directory.
    assert files_under(tmp_path) == {f"state/archive/{bundle.name}/{n}" for n in inside}
    assert not Path("/tmp/escaped.txt").exists()
    # And the manifest still describes exactly what is on disk.
    listed = manifest_of(bundle)["files"]
    assert set(listed) | {"manifest.json"} == inside
    for name, entry in listed.items():
        assert entry["sha256"] == hashlib.sha256((bundle / name).read_bytes()).hexdigest(), name
