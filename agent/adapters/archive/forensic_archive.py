"""The forensic archive: a directory per rollback with everything needed to explain it later.

Contents: manifest.json (every file with its SHA-256 and size), trigger.json (the rule verdict or alert that
decided it, with measured values), evidence.json (rule evaluations and metric windows of the failing version),
config and rules in force, registry entries, Envoy's config dump, the agent's log tail. Each file and the whole
bundle are capped; old bundles are deleted beyond the retention count or total size. Names are generated, never
taken from input, and every write is checked to stay inside the archive directory.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from agent.ports.rollback import ArchiveResult, ForensicInputs

log = logging.getLogger(__name__)

Provider = Callable[[ForensicInputs], Awaitable[Mapping[str, str | bytes]]]


class ForensicArchiver:
    def __init__(
        self,
        root: Path,
        providers: Mapping[str, Provider],
        *,
        max_file_bytes: int = 2 * 1024 * 1024,
        max_bundle_bytes: int = 16 * 1024 * 1024,
        keep: int = 50,
        max_total_bytes: int = 512 * 1024 * 1024,
        provider_timeout_s: float = 5.0,
    ) -> None:
        self.root = root.resolve()
        self._providers = dict(providers)
        self._max_file = max_file_bytes
        self._max_bundle = max_bundle_bytes
        self._keep = keep
        self._max_total = max_total_bytes
        self._timeout = provider_timeout_s

    async def archive(self, inputs: ForensicInputs) -> ArchiveResult:
        files: dict[str, bytes] = {
            "trigger.json": _json(
                {
                    "rollback_id": inputs.rollback_id,
                    "model": inputs.model,
                    "failing_version": inputs.failing_version,
                    "summary": inputs.trigger_summary,
                    "trigger": inputs.trigger,
                }
            )
        }
        names = list(self._providers)
        gathered = await asyncio.gather(
            *(asyncio.wait_for(self._providers[n](inputs), self._timeout) for n in names), return_exceptions=True
        )
        errors: dict[str, str] = {}
        for name, produced in zip(names, gathered, strict=True):
            if isinstance(produced, BaseException):
                errors[name] = repr(produced)
                continue
            for filename, content in produced.items():
                files[f"{name}/{filename}" if filename else name] = (
                    content.encode() if isinstance(content, str) else content
                )
        if errors:
            files["errors.json"] = _json(errors)
        return await asyncio.to_thread(self._write, inputs, files)

    def _write(self, inputs: ForensicInputs, files: Mapping[str, bytes]) -> ArchiveResult:
        # Microseconds in the name: retention orders bundles by name, so bundles made within one second must
        # still sort by creation time, not by their (random) rollback ids.
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1_000_000):06d}Z"
        bundle = self._inside(self.root / f"{stamp}-{_safe(inputs.rollback_id)}")
        bundle.mkdir(parents=True, exist_ok=False)
        manifest: dict[str, Any] = {"rollback_id": inputs.rollback_id, "model": inputs.model, "files": {}}
        written = 0
        # The manifest names each file by the path it was written to (names from input are made safe first), so
        # it can be checked against the bundle as it is.
        safe_files = {"/".join(_safe(part) for part in name.split("/")): content for name, content in files.items()}
        for name in sorted(safe_files):
            content = safe_files[name]
            truncated = False
            if len(content) > self._max_file:
                content, truncated = content[-self._max_file :], True  # the newest part matters most (logs)
            if written + len(content) > self._max_bundle:
                manifest["files"][name] = {"omitted": f"bundle cap of {self._max_bundle} bytes reached"}
                continue
            path = self._inside(bundle / name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            written += len(content)
            manifest["files"][name] = {
                "sha256": hashlib.sha256(content).hexdigest(),
                "bytes": len(content),
                **({"truncated_to_last_bytes": self._max_file} if truncated else {}),
            }
        manifest_bytes = _json(manifest)
        (bundle / "manifest.json").write_bytes(manifest_bytes)
        self._enforce_retention(bundle)
        return ArchiveResult(
            path=str(bundle),
            sha256=hashlib.sha256(manifest_bytes).hexdigest(),
            bytes=written + len(manifest_bytes),
            files=len(manifest["files"]) + 1,
        )

    def _inside(self, path: Path) -> Path:
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise ValueError(f"refusing to write {resolved} outside the archive directory {self.root}")
        return resolved

    def _enforce_retention(self, newest: Path) -> None:
        bundles = sorted((p for p in self.root.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True)
        total = 0
        for index, bundle in enumerate(bundles):
            size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())
            total += size
            if bundle != newest and (index >= self._keep or total > self._max_total):
                shutil.rmtree(bundle, ignore_errors=True)
                log.info("forensic archive %s removed by retention", bundle.name)


def _json(data: object) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode()


def _safe(part: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in part).strip(".")
    return cleaned or "_"
