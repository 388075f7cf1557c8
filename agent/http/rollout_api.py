"""The control API's rollout endpoints (docs/rollouts.md). Same authentication and roles as the rest of the control
API (reading needs read-only, acting needs operator); the actor on every record is the authenticated identity.

GET  /v1/rollout                          RolloutStatus
POST /v1/rollout/start                    RolloutStartRequest -> RolloutStatus
POST /v1/rollout/{pause,resume,promote,abort}  RolloutActionRequest -> RolloutStatus
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from agent.engine.rollout import RolloutDriver, RolloutError
from agent.engine.traffic import TrafficChangeError
from agent.http.control_app import STATUS, _actor, _with_claim, error_response, parse_body, proto_response
from agent.pb.rollback_agent.v1 import control_pb2
from agent.ports.store import StoreUnavailableError
from agent.rollout.machine import Status
from agent.rollout.plan import RelativeGate, RuleGate
from agent.telemetry import RolloutSample

ROLLOUTS = web.AppKey("rollouts", RolloutDriver)
PlanSource = Callable[[], tuple[str, str]]  # the default plan: (document, where it came from)
DEFAULT_PLAN: web.AppKey[PlanSource] = web.AppKey("default_plan")

_STATUS = {"invalid_argument": 400, "refused": 409, "conflict": 409, "rejected": 409, "ack_timeout": 504}
ACTIONS = ("pause", "resume", "promote", "abort")


def rollout_status(driver: RolloutDriver) -> control_pb2.RolloutStatus:
    view = driver.view()
    message = control_pb2.RolloutStatus(model_stable=view.stable, last_move=view.last_move)
    if view.saved is None or view.plan is None:
        return message
    state = view.saved.state
    message.exists = True
    message.candidate = state.candidate
    message.stable = state.stable
    message.status = state.status.value
    message.stage = state.stage
    message.in_stage_s = state.in_stage_s
    message.breaches = state.breaches
    message.max_breaches = view.plan.max_breaches
    message.on_breach = view.plan.on_breach
    message.plan_digest = view.saved.plan_digest
    message.held = not state.status.finished and bool(driver.holds(state.candidate))  # after abort: quarantined
    for stage in view.plan.stages:
        message.stages.append(
            control_pb2.RolloutStage(
                name=stage.name,
                weight=stage.weight,
                mirror=stage.mirror,
                min_duration_s=stage.min_duration,
                gates=[_gate_text(g) for g in stage.gates],
            )
        )
    if view.progress is not None:
        message.waiting_for = view.progress.waiting_for
        for gate in view.progress.gates:
            item = control_pb2.RolloutGate(gate=gate.gate, outcome=gate.outcome.value, reason=gate.reason)
            if gate.value is not None:
                item.value = gate.value
            if gate.threshold is not None:
                item.threshold = gate.threshold
            message.gates.append(item)
    return message


def rollout_sample(driver: RolloutDriver) -> RolloutSample | None:
    """The rollout for the metrics (agent.telemetry.RolloutCollector); None before one was started."""
    view = driver.view()
    if view.saved is None or view.plan is None:
        return None
    state = view.saved.state
    stage = view.plan.stages[state.stage]
    gates = tuple((g.gate, g.outcome.value) for g in view.progress.gates) if view.progress is not None else ()
    return RolloutSample(
        candidate=state.candidate,
        stage=stage.name,
        stage_index=state.stage,
        status=state.status.value,
        candidate_weight=0 if state.status in (Status.ROLLED_BACK, Status.ABORTED) else stage.weight,
        in_stage_s=state.in_stage_s,
        gates=gates if not state.status.finished else (),
    )


def _gate_text(gate: object) -> str:
    if isinstance(gate, RuleGate):
        return gate.name
    if isinstance(gate, RelativeGate):
        return f"{gate.name} (margin max({gate.relative:g} x stable, {gate.absolute:g}) over {gate.window:g}s)"
    return getattr(gate, "name", str(gate))


def _failure(exc: Exception) -> web.Response:
    if isinstance(exc, StoreUnavailableError):
        return error_response(503, "unavailable", str(exc))
    code = getattr(exc, "code", "invalid_argument")
    return error_response(_STATUS.get(code, 503), code, str(exc))


async def get_rollout(request: web.Request) -> web.Response:
    return proto_response(rollout_status(request.app[ROLLOUTS]))


async def start_rollout(request: web.Request) -> web.Response:
    driver = request.app[ROLLOUTS]
    try:
        body = await parse_body(request, control_pb2.RolloutStartRequest)
        if not body.version:
            return error_response(400, "invalid_argument", "version is required")
        if not body.reason.strip():
            return error_response(400, "invalid_argument", "reason is required")
        plan, source = (body.plan, body.plan_source or "the plan sent") if body.plan else request.app[DEFAULT_PLAN]()
        await driver.start(
            body.version,
            plan,
            reason=_with_claim(body.reason, body.actor),
            actor=_actor(request),
            source=source,
        )
    except (RolloutError, TrafficChangeError, StoreUnavailableError) as exc:
        return _failure(exc)
    return proto_response(rollout_status(driver))


def _action(action: str) -> Callable[[web.Request], object]:
    async def handle(request: web.Request) -> web.Response:
        driver = request.app[ROLLOUTS]
        try:
            body = await parse_body(request, control_pb2.RolloutActionRequest)
            if not body.reason.strip():
                return error_response(400, "invalid_argument", "reason is required")
            await driver.act(action, reason=_with_claim(body.reason, body.actor), actor=_actor(request))
        except (RolloutError, TrafficChangeError, StoreUnavailableError) as exc:
            return _failure(exc)
        return proto_response(rollout_status(driver))

    return handle


def add_rollout_routes(
    app: web.Application, driver: RolloutDriver, default_plan: Callable[[], tuple[str, str]]
) -> None:
    app[ROLLOUTS] = driver
    app[DEFAULT_PLAN] = default_plan
    app[STATUS].rollout = lambda: rollout_status(driver) if driver.saved is not None else None
    app.router.add_get("/v1/rollout", get_rollout)
    app.router.add_post("/v1/rollout/start", start_rollout)
    for action in ACTIONS:
        app.router.add_post(f"/v1/rollout/{action}", _action(action))  # type: ignore[arg-type]
