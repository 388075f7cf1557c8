"""The version registry read from an MLflow tracking server (REST API 2.0, aiohttp; MLflow itself is not imported).

What each registered model version becomes (see docs/registry.md, "MLflow"):

* tag: the value of the version's tag `settings.tag_key` when set, else `tag_format` with its number ("v3");
* declared status: the version's tag `rollback_agent.status` (as the agent writes it, or CI sets it), else the
  champion alias -> stable, the challenger alias -> canary, the legacy stages Production / Staging / Archived ->
  stable / canary / retired, a failed registration -> failed, anything else -> candidate;
* created: the version's creation time; description: its description, plus what the registry could not map;
* provenance: the version's source (artifact URI) and the source run's git commit (`mlflow.source.git.commit`),
  training dataset input (its source URI) and parameters (hyperparameters); digests and the image, which MLflow
  does not hold, from version tags of the same names as the registry file's fields. Incomplete provenance is
  kept out (with the missing fields named in the description), a malformed field is an error;
* requirements: version tags `requirements.memory_mb|cpu|gpu|runtime|features|schema_hash`;
* baseline: the source run's metrics `latency_p99_ms`, `error_rate`, `mean_confidence`, `throughput_rps_mean` +
  `throughput_rps_std`, `missing_rate.<feature>` and the primary metric (`settings.primary_metric`);
* evidence: the version's tag `rollback_agent.evidence` (a JSON list of checks, as in the registry file).

Runtime statuses and evidence live in the state store's overlay exactly as with the registry file (the file
registry's tables; the overlay wins over what MLflow declares), and are mirrored to MLflow as version tags
(`rollback_agent.status`, `.status_reason`, `.status_actor`, `.status_at`, `.verification`). A mirror write that
fails is logged and retried after the next successful read: the decision never waits for MLflow. With
`move_champion`, the champion alias moves to a version that passed its post-rollback verification while the
alias names a failed or quarantined version.

Reads: every version at open (an unreachable or unusable server is an error then: no silent fresh registry), then
in the background every `refresh_s`; a failed refresh keeps the last versions read and is logged (`last_error`),
so a rollback never waits for MLflow nor loses its registry when MLflow is down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import BaseModel, ValidationError

from agent.adapters.registry.file_registry import STATE_DB, FileRegistry
from agent.config import AgentConfig, MlflowRegistrySection
from agent.ports.registry import VersionStatus
from agent.registry.loader import RegistrySource
from agent.registry.model import (
    BaselineMetrics,
    EvidenceCheck,
    Provenance,
    Requirements,
    Version,
    VersionSpec,
)

log = logging.getLogger(__name__)

API = "/api/2.0/mlflow"
PREFIX = "rollback_agent."
STATUS_TAG = PREFIX + "status"
EVIDENCE_TAG = PREFIX + "evidence"
VERIFICATION_TAG = PREFIX + "verification"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
MAX_PAGES = 100  # of 1000 versions each
TAG_VALUE_LIMIT = 5000  # MLflow's limit on a model version tag's value
PROVENANCE_TAGS = (
    "artifact_uri",
    "artifact_digest",
    "training_data_uri",
    "training_data_hash",
    "feature_code_commit",
    "image",
    "base_image_digest",
)
LEGACY_STAGES = {"Production": VersionStatus.STABLE, "Staging": VersionStatus.CANARY, "Archived": VersionStatus.RETIRED}
BASELINE_METRICS = ("latency_p99_ms", "error_rate", "mean_confidence")


class MlflowRegistryError(Exception):
    """MLflow could not be read, or what it holds cannot be used; the message names the server, the version and the
    field."""


@dataclass(frozen=True, slots=True)
class MlflowVersion:
    """One registered model version as the agent maps it."""

    number: str  # MLflow's version number
    spec: VersionSpec
    aliases: tuple[str, ...]


# --- mapping (pure: the unit tests feed it plain data) ---------------------------------------------------------


def _obj(value: object) -> dict[str, Any]:
    """A JSON object of an answer, or {} for anything else (an answer of the wrong shape holds nothing usable)."""
    return value if isinstance(value, dict) else {}


def _pairs(items: object) -> dict[str, str]:
    """MLflow's [{key, value}] lists as a dict."""
    if not isinstance(items, list):
        return {}
    return {str(i["key"]): str(i.get("value", "")) for i in items if isinstance(i, dict) and "key" in i}


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _field_errors(error: ValidationError, prefix: str) -> str:
    parts = []
    for item in error.errors()[:10]:
        path = ".".join(str(p) for p in (prefix, *item["loc"]) if p != "")
        parts.append(f"{path}: {str(item['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts)


def _validated(model: type[BaseModel], data: object, where: str, field: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise MlflowRegistryError(f"{where}: {_field_errors(exc, field)}") from None


def _dataset_uri(run: Mapping[str, Any]) -> str | None:
    inputs = _obj(run.get("inputs")).get("dataset_inputs")
    inputs = inputs if isinstance(inputs, list) else []
    ranked = sorted(
        (i for i in inputs if isinstance(i, dict)),
        key=lambda i: _pairs(i.get("tags")).get("mlflow.data.context") != "training",
    )
    for item in ranked:
        source = str(_obj(item.get("dataset")).get("source", ""))
        parsed = _json_value(source)
        if isinstance(parsed, dict):
            for key in ("uri", "url", "path"):
                if isinstance(parsed.get(key), str) and "://" in parsed[key]:
                    return str(parsed[key])
        elif "://" in source:
            return source
    return None


def _artifact_uri(source: str) -> str | None:
    if "://" in source:
        return source
    return f"file://{source}" if source.startswith("/") else None


def _provenance(
    version: Mapping[str, Any], run: Mapping[str, Any] | None, tags: Mapping[str, str], where: str
) -> tuple[Provenance | None, list[str]]:
    """The provenance (None when incomplete) and notes on what is missing or where it came from."""
    run = _obj(run)
    run_tags = _pairs(_obj(run.get("data")).get("tags"))
    params = _pairs(_obj(run.get("data")).get("params"))
    found: dict[str, Any] = {
        "artifact_uri": _artifact_uri(str(version.get("source", ""))),
        "training_data_uri": _dataset_uri(run),
        "feature_code_commit": run_tags.get(GIT_COMMIT_TAG),
        "training_data_hash": run_tags.get("training_data_hash"),
    }
    found.update({key: tags[key] for key in PROVENANCE_TAGS if tags.get(key)})
    missing = [key for key in PROVENANCE_TAGS if not found.get(key)]
    notes = []
    if found.get("feature_code_commit"):
        notes.append(f"git commit {found['feature_code_commit']}")
    if params:
        notes.append("params " + ", ".join(f"{k}={v}" for k, v in sorted(params.items())))
    if missing:
        notes.insert(0, f"provenance incomplete in MLflow (missing {', '.join(missing)})")
        return None, notes
    found["hyperparameters"] = {k: _json_value(v) for k, v in params.items()}
    provenance: Provenance = _validated(Provenance, found, where, "provenance")
    return provenance, notes


def _requirements(tags: Mapping[str, str], where: str) -> Requirements | None:
    prefix = "requirements."
    given = {k.removeprefix(prefix): v for k, v in tags.items() if k.startswith(prefix)}
    if not given:
        return None
    data: dict[str, Any] = {k: v for k, v in given.items() if k not in ("features", "schema_hash")}
    if "features" in given or "schema_hash" in given:
        features = [f.strip() for f in given.get("features", "").split(",") if f.strip()]
        data["input_schema"] = {"features": features, "schema_hash": given.get("schema_hash")}
    requirements: Requirements = _validated(Requirements, data, where, "requirements")
    return requirements


def _baseline(run: Mapping[str, Any] | None, primary: str, where: str) -> BaselineMetrics | None:
    metrics = _metrics(run)
    data: dict[str, Any] = {k: metrics[k] for k in BASELINE_METRICS if k in metrics}
    if primary in metrics:
        data["primary_metric"] = {"name": primary, "value": metrics[primary]}
    if "throughput_rps_mean" in metrics and "throughput_rps_std" in metrics:
        data["throughput_rps"] = {"mean": metrics["throughput_rps_mean"], "std": metrics["throughput_rps_std"]}
    missing = {k.removeprefix("missing_rate."): v for k, v in metrics.items() if k.startswith("missing_rate.")}
    if missing:
        data["missing_rates"] = missing
    if not data:
        return None
    baseline: BaselineMetrics = _validated(BaselineMetrics, data, where, "baseline")
    return baseline


def _metrics(run: Mapping[str, Any] | None) -> dict[str, float]:
    """The run's latest value of each metric (MLflow's runs/get gives the latest per key)."""
    items = _obj(_obj(run).get("data")).get("metrics")
    items = items if isinstance(items, list) else []
    found: dict[str, float] = {}
    for m in items:
        if isinstance(m, dict) and "key" in m and isinstance(m.get("value"), int | float):
            found[str(m["key"])] = float(m["value"])
    return found


def _declared_status(
    version: Mapping[str, Any], tags: Mapping[str, str], aliases: Sequence[str], settings: MlflowRegistrySection
) -> VersionStatus:
    if version.get("status") == "FAILED_REGISTRATION":
        return VersionStatus.FAILED
    if STATUS_TAG in tags:
        return VersionStatus(tags[STATUS_TAG])  # checked by the caller
    if settings.champion_alias in aliases:
        return VersionStatus.STABLE
    if settings.challenger_alias is not None and settings.challenger_alias in aliases:
        return VersionStatus.CANARY
    return LEGACY_STAGES.get(str(version.get("current_stage", "")), VersionStatus.CANDIDATE)


def version_from_mlflow(
    settings: MlflowRegistrySection,
    model_name: str,
    version: Mapping[str, Any],
    run: Mapping[str, Any] | None,
    aliases: Sequence[str],
) -> MlflowVersion:
    """Map one MLflow model version (and its source run, None when it has none or it is gone) to a VersionSpec.

    Raises MlflowRegistryError naming the version and the field of anything malformed.
    """
    number = str(version.get("version", ""))
    tags = _pairs(version.get("tags"))
    tag = tags.get(settings.tag_key) if settings.tag_key else None
    tag = tag or settings.tag_format.replace("{version}", number)
    where = f"MLflow model {model_name!r} version {number} (tag {tag})"
    if STATUS_TAG in tags and tags[STATUS_TAG] not in set(VersionStatus):
        raise MlflowRegistryError(
            f"{where}: tag {STATUS_TAG}: {tags[STATUS_TAG]!r} is not one of {', '.join(VersionStatus)}"
        )
    evidence_text = tags.get(EVIDENCE_TAG)
    evidence: list[EvidenceCheck] = []
    if evidence_text:
        parsed = _json_value(evidence_text)
        if not isinstance(parsed, list):
            raise MlflowRegistryError(f"{where}: tag {EVIDENCE_TAG}: expected a JSON list of evidence checks")
        evidence = [_validated(EvidenceCheck, item, where, f"{EVIDENCE_TAG}.{i}") for i, item in enumerate(parsed)]
    provenance, notes = _provenance(version, run, tags, where)
    if version.get("run_id") and run is None:
        notes.append(f"source run {version['run_id']} not found")
    created_ms = version.get("creation_timestamp")
    try:
        if isinstance(created_ms, bool) or not str(created_ms).isdigit():
            raise ValueError
        created = datetime.fromtimestamp(int(str(created_ms)) / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        raise MlflowRegistryError(f"{where}: creation_timestamp: not a time in milliseconds: {created_ms!r}") from None
    description = str(version.get("description") or "")
    spec_data = {
        "tag": tag,
        "status": _declared_status(version, tags, aliases, settings),
        "created": created,
        "description": "; ".join(p for p in (description, *notes) if p),
        "provenance": provenance,
        "requirements": _requirements(tags, where),
        "baseline": _baseline(run, settings.primary_metric, where),
        "evidence": tuple(evidence),
    }
    spec: VersionSpec = _validated(VersionSpec, spec_data, where, "")
    return MlflowVersion(number=number, spec=spec, aliases=tuple(aliases))


def versions_from_mlflow(
    settings: MlflowRegistrySection,
    model_name: str,
    registered_model: Mapping[str, Any],
    versions: Sequence[Mapping[str, Any]],
    runs: Mapping[str, Mapping[str, Any] | None],
) -> list[MlflowVersion]:
    """Every version, oldest first (MLflow numbers them in creation order). Tags must be unique."""
    aliases: dict[str, list[str]] = {}
    entries = registered_model.get("aliases")
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict):
            aliases.setdefault(str(entry.get("version")), []).append(str(entry.get("alias")))
    ordered = sorted(versions, key=lambda v: int(v["version"]) if str(v.get("version", "")).isdigit() else 0)
    mapped = [
        version_from_mlflow(
            settings, model_name, v, runs.get(str(v.get("run_id") or "")), aliases.get(str(v.get("version")), [])
        )
        for v in ordered
    ]
    tags = [m.spec.tag for m in mapped]
    duplicates = sorted({t for t in tags if tags.count(t) > 1})
    if duplicates:
        raise MlflowRegistryError(f"MLflow model {model_name!r}: several versions map to the tag(s) {duplicates}")
    return mapped


def status_tags(version: Version) -> dict[str, str]:
    """The tags that mirror a version's runtime status to MLflow."""
    change = version.status_change
    tags = {STATUS_TAG: str(version.status)}
    if change is not None:
        tags[PREFIX + "status_reason"] = change.reason[:TAG_VALUE_LIMIT]
        tags[PREFIX + "status_actor"] = change.actor[:TAG_VALUE_LIMIT]
        tags[PREFIX + "status_at"] = change.at.isoformat()
    return tags


# --- the REST client --------------------------------------------------------------------------------------------


class MlflowApi:
    def __init__(self, settings: MlflowRegistrySection, session: aiohttp.ClientSession) -> None:
        self.url = settings.url
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)

    async def call(self, method: str, endpoint: str, payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
        url = f"{self.url}{API}/{endpoint}"
        kwargs: dict[str, Any] = {"params": payload} if method == "GET" else {"json": payload}
        try:
            async with self._session.request(method, url, timeout=self._timeout, **kwargs) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise MlflowRegistryError(f"MLflow {self.url} unreachable ({method} {endpoint}): {exc!r}") from None
        body = _json_value(text) if text else {}
        if status >= 300 or not isinstance(body, dict):
            detail = body.get("message", text[:300]) if isinstance(body, dict) else text[:300]
            raise MlflowRegistryError(f"MLflow {self.url} answered HTTP {status} to {method} {endpoint}: {detail}")
        return body

    async def read(self, settings: MlflowRegistrySection, model_name: str) -> list[MlflowVersion]:
        registered = (await self.call("GET", "registered-models/get", {"name": model_name})).get("registered_model")
        versions: list[dict[str, Any]] = []
        token: str | None = None
        quoted = f'"{model_name}"' if "'" in model_name else f"'{model_name}'"
        for _ in range(MAX_PAGES):
            query = {"filter": f"name={quoted}", "max_results": "1000"}
            if token:
                query["page_token"] = token
            page = await self.call("GET", "model-versions/search", query)
            found = page.get("model_versions")
            versions += [v for v in found if isinstance(v, dict)] if isinstance(found, list) else []
            token = page.get("next_page_token") if isinstance(page.get("next_page_token"), str) else None
            if not token:
                break
        else:
            raise MlflowRegistryError(f"MLflow {self.url}: more than {MAX_PAGES * 1000} versions of {model_name!r}")
        run_ids = sorted({str(v["run_id"]) for v in versions if v.get("run_id")})
        fetched = await asyncio.gather(*(self._run(run_id) for run_id in run_ids))
        runs = dict(zip(run_ids, fetched, strict=True))
        return versions_from_mlflow(settings, model_name, _obj(registered), versions, runs)

    async def _run(self, run_id: str) -> dict[str, Any] | None:
        try:
            run = (await self.call("GET", "runs/get", {"run_id": run_id})).get("run")
        except MlflowRegistryError as exc:
            if "HTTP 404" in str(exc):
                return None  # a deleted run: the version keeps what the registry itself holds
            raise
        return run if isinstance(run, dict) else None

    async def set_tags(self, model_name: str, number: str, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            await self.call(
                "POST", "model-versions/set-tag", {"name": model_name, "version": number, "key": key, "value": value}
            )

    async def set_alias(self, model_name: str, alias: str, number: str) -> None:
        await self.call("POST", "registered-models/alias", {"name": model_name, "alias": alias, "version": number})


def _session(settings: MlflowRegistrySection) -> aiohttp.ClientSession:
    headers = {}
    if settings.token_env is not None:
        token = os.environ.get(settings.token_env, "").strip()
        if not token:
            raise MlflowRegistryError(
                f"registry.mlflow.token_env: the environment variable {settings.token_env} is empty"
            )
        headers["Authorization"] = f"Bearer {token}"
    return aiohttp.ClientSession(headers=headers)


async def _read_checked(
    settings: MlflowRegistrySection, api: MlflowApi, model_name: str, required: Sequence[str]
) -> list[MlflowVersion]:
    versions = await api.read(settings, model_name)
    missing = [tag for tag in required if tag not in {v.spec.tag for v in versions}]
    if missing:
        found = ", ".join(f"{v.spec.tag} (version {v.number})" for v in versions) or "no versions"
        raise MlflowRegistryError(
            f"MLflow {settings.url} model {model_name!r}: no version for {', '.join(missing)} (in the agent "
            f"config); found {found}. Every version the agent routes to must be registered"
        )
    return versions


async def declared_statuses(config: AgentConfig, settings: MlflowRegistrySection) -> dict[str, str]:
    """The statuses MLflow declares, before any runtime change (what a new state store must respect); read before
    the state store is opened, so an unusable MLflow refuses the start without touching the state dir.
    Raises MlflowRegistryError."""
    async with _session(settings) as session:
        model_name = settings.model_name or config.model.name
        versions = await _read_checked(settings, MlflowApi(settings, session), model_name, config.tags)
    return {v.spec.tag: str(v.spec.status) for v in versions}


# --- the registry ------------------------------------------------------------------------------------------------


class MlflowRegistry(FileRegistry):
    """Implements agent.ports.registry.VersionRegistry[Version, EvidenceCheck] on MLflow plus the state overlay."""

    def __init__(
        self,
        settings: MlflowRegistrySection,
        model: str,
        versions: Sequence[MlflowVersion],
        api: MlflowApi,
        session: aiohttp.ClientSession,
        state_db: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.model_name = settings.model_name or model
        self._api = api
        self._session = session
        super().__init__(self._source_of(model, versions), state_db, clock)
        self._numbers = {v.spec.tag: v.number for v in versions}
        self._aliases = {alias: v.spec.tag for v in versions for alias in v.aliases}
        self._read_at = self._tried_at = time.monotonic()
        self._refreshing: asyncio.Task[None] | None = None
        self._unsynced: set[str] = set()  # tags whose runtime status MLflow does not show yet
        self._writes: set[asyncio.Task[None]] = set()
        self._write_lock = asyncio.Lock()  # one write at a time, in order: MLflow ends with the latest status
        self.required: tuple[str, ...] = ()  # tags a read must hold (the versions the agent routes to)
        self.last_error = ""

    def _source_of(self, model: str, versions: Sequence[MlflowVersion]) -> RegistrySource:
        origin = f"MLflow {self.settings.url} model {self.model_name!r}"
        return RegistrySource(model=model, versions=tuple(v.spec for v in versions), origin=origin)

    @classmethod
    async def connect(
        cls, config: AgentConfig, settings: MlflowRegistrySection, *, clock: Callable[[], float] = time.time
    ) -> MlflowRegistry:
        """Read every version; raises MlflowRegistryError when MLflow cannot be read, holds unusable data, or lacks
        a version the agent config routes to."""
        session = _session(settings)
        try:
            api = MlflowApi(settings, session)
            model_name = settings.model_name or config.model.name
            versions = await _read_checked(settings, api, model_name, config.tags)
            registry = cls(settings, config.model.name, versions, api, session, config.state_dir / STATE_DB, clock)
            registry.required = tuple(config.tags)
            await registry._run(registry._open)
        except BaseException:
            await session.close()
            raise
        return registry

    # --- reads: the last versions read; a refresh in the background when due

    async def refresh(self) -> None:
        """Read MLflow now; raises MlflowRegistryError (the versions read before stay)."""
        versions = await _read_checked(self.settings, self._api, self.model_name, self.required)
        self._source = self._source_of(self.model, versions)
        self._specs = {v.spec.tag: v.spec for v in versions}
        self._numbers = {v.spec.tag: v.number for v in versions}
        self._aliases = {alias: v.spec.tag for v in versions for alias in v.aliases}
        self._read_at = time.monotonic()
        for tag in sorted(self._unsynced):
            self._in_background(self._mirror_status(tag))

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except MlflowRegistryError as exc:
            if str(exc) != self.last_error:
                log.error("the registry keeps the versions read %.0fs ago: %s", time.monotonic() - self._read_at, exc)
            self.last_error = str(exc)
            return
        if self.last_error:
            log.info("MLflow %s readable again", self.settings.url)
        self.last_error = ""

    def _refresh_if_due(self) -> None:
        due = time.monotonic() - self._tried_at >= self.settings.refresh_s
        if due and (self._refreshing is None or self._refreshing.done()):
            self._tried_at = time.monotonic()
            self._refreshing = asyncio.create_task(self._refresh_quietly(), name="mlflow-registry-refresh")

    async def list_versions(self) -> list[Version]:
        self._refresh_if_due()
        return await super().list_versions()

    async def get(self, tag: str) -> Version:
        self._refresh_if_due()
        return await super().get(tag)

    # --- writes: the overlay first (the decision's record), then the mirror in MLflow

    async def set_status(self, tag: str, status: VersionStatus, reason: str, actor: str) -> VersionStatus:
        previous = await super().set_status(tag, status, reason, actor)
        self._in_background(self._mirror_status(tag))
        return previous

    async def clear_quarantine(self, tag: str, actor: str, reason: str = "") -> VersionStatus:
        restored = await super().clear_quarantine(tag, actor, reason)
        self._in_background(self._mirror_status(tag))
        return restored

    async def add_evidence(self, tag: str, evidence: EvidenceCheck) -> None:
        await super().add_evidence(tag, evidence)
        self._in_background(self._mirror_evidence(tag, evidence))

    def _in_background(self, write: Coroutine[Any, Any, None]) -> None:
        """Writes to MLflow run beside the decision, never in its way; `flush` waits for them."""
        task = asyncio.create_task(self._serialized(write), name="mlflow-registry-write")
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _serialized(self, write: Coroutine[Any, Any, None]) -> None:
        async with self._write_lock:
            try:
                await write
            except Exception:
                log.exception("writing to MLflow %s failed", self.settings.url)

    async def flush(self) -> None:
        """Wait until the writes to MLflow under way are done (or failed and logged)."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    async def _mirror_evidence(self, tag: str, evidence: EvidenceCheck) -> None:
        try:
            await self._api.set_tags(
                self.model_name, self._numbers[tag], {VERIFICATION_TAG: evidence.model_dump_json()[:TAG_VALUE_LIMIT]}
            )
        except MlflowRegistryError as exc:
            log.error("the evidence of %s is recorded, but not in MLflow: %s", tag, exc)
        if self.settings.move_champion and evidence.passed and evidence.approved_by == "agent:verification":
            await self._move_champion(tag)

    async def _mirror_status(self, tag: str) -> None:
        number = self._numbers.get(tag)
        if number is None:
            return
        version = await super().get(tag)
        try:
            await self._api.set_tags(self.model_name, number, status_tags(version))
        except MlflowRegistryError as exc:
            self._unsynced.add(tag)
            log.error(
                "%s is %s on record, not yet in MLflow (retried after the next read): %s", tag, version.status, exc
            )
            return
        self._unsynced.discard(tag)

    async def _move_champion(self, tag: str) -> None:
        alias = self.settings.champion_alias
        holder = self._aliases.get(alias)
        if holder == tag:
            return
        if holder is not None and holder in self._specs:
            status = (await super().get(holder)).status
            if status not in (VersionStatus.FAILED, VersionStatus.QUARANTINED):
                return  # the champion is still good: only an operator moves it
        try:
            await self._api.set_alias(self.model_name, alias, self._numbers[tag])
        except MlflowRegistryError as exc:
            log.error("could not move the %s alias from %s to %s: %s", alias, holder, tag, exc)
            return
        self._aliases[alias] = tag
        log.warning("MLflow alias %s moved from %s to %s (verified after the rollback)", alias, holder, tag)

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            await asyncio.gather(self._refreshing, return_exceptions=True)
        try:
            await asyncio.wait_for(self.flush(), self.settings.timeout_s)
        except TimeoutError:
            log.error("writes to MLflow still under way at shutdown were abandoned; the state store has them")
        for task in list(self._writes):
            task.cancel()
        await asyncio.gather(*list(self._writes), return_exceptions=True)
        await self._session.close()
        await super().close()
