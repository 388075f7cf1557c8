"""The control API: JSON over HTTP, each body the proto3 JSON mapping of a message in proto/ (control.proto).

Every request needs `Authorization: Bearer <token>`; a missing or wrong token is refused with 401 and changes nothing.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from agent.engine.decisions import Action, Cause, DecisionHandler, DecisionOutcome, TriggerEvent
from agent.engine.traffic import ChangeResult, TrafficChangeError, TrafficController
from agent.http.status_view import StatusView
from agent.pb.rollback_agent.v1 import audit_pb2, control_pb2

CONTROLLER = web.AppKey("controller", TrafficController)
STATUS = web.AppKey("status", StatusView)
TOKEN = web.AppKey("token", str)
DECISIONS = web.AppKey("decisions", DecisionHandler)
MAX_BODY_BYTES = 64 * 1024

M = TypeVar("M", bound=Message)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ERROR_STATUS = {"invalid_argument": 400, "rejected": 409, "ack_timeout": 504}


def proto_response(message: Message, status: int = 200) -> web.Response:
    body = json_format.MessageToJson(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True, indent=None
    )
    return web.Response(text=body, status=status, content_type="application/json")


def error_response(status: int, code: str, message: str) -> web.Response:
    return proto_response(control_pb2.ErrorResponse(code=code, message=message), status)


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    expected = request.app[TOKEN]
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), expected.encode()):
        return error_response(401, "unauthenticated", "missing or wrong bearer token")
    return await handler(request)


async def parse_body(request: web.Request, message_type: type[M]) -> M:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise TrafficChangeError("invalid_argument", f"body larger than {MAX_BODY_BYTES} bytes")
    raw = await request.read()
    try:
        return json_format.Parse(raw.decode() if raw else "{}", message_type())
    except (json_format.ParseError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrafficChangeError(
            "invalid_argument", f"body is not a valid {message_type.DESCRIPTOR.name}: {exc}"
        ) from None


def _change_response(result: ChangeResult, status_view: StatusView) -> web.Response:
    message = control_pb2.TrafficChange(
        policy=status_view.policy_pb(result.policy),
        route_version=result.route_version,
        acks=[status_view.node_ack_pb(c.node, result.route_version, c.at) for c in result.confirmations],
        decision_to_ack_ms=result.decision_to_ack_ms,
        changed=result.changed,
    )
    return proto_response(message)


def _actor(request: web.Request, given: str) -> str:
    return given or f"operator:{request.remote or 'unknown'}"


async def get_status(request: web.Request) -> web.Response:
    return proto_response(request.app[STATUS].status())


async def set_weights(request: web.Request) -> web.Response:
    entered = time.perf_counter()
    try:
        body = await parse_body(request, control_pb2.SetWeightsRequest)
        weights: dict[str, int] = {}
        for item in body.weights:
            if item.version in weights:
                raise TrafficChangeError("invalid_argument", f"version {item.version} named twice")
            weights[item.version] = item.weight
        if not weights:
            raise TrafficChangeError("invalid_argument", "no weights given")
        result = await request.app[CONTROLLER].set_weights(
            weights, reason=body.reason or "set by operator", actor=_actor(request, body.actor), entered_at=entered
        )
    except TrafficChangeError as exc:
        return error_response(_ERROR_STATUS.get(exc.code, 500), exc.code, str(exc))
    return _change_response(result, request.app[STATUS])


async def rollback(request: web.Request) -> web.Response:
    entered = time.perf_counter()
    try:
        body = await parse_body(request, control_pb2.RollbackRequest)
        if not body.reason:
            raise TrafficChangeError("invalid_argument", "a rollback needs a reason")
        controller = request.app[CONTROLLER]
        target = body.to_version or None
        if target is not None and target not in controller.versions:
            raise TrafficChangeError(
                "invalid_argument", f"unknown version {target!r}; this model has {', '.join(controller.versions)}"
            )
        actor = _actor(request, body.actor)
        decisions = request.app.get(DECISIONS)
        if decisions is None:
            result = await controller.rollback(to=target, reason=body.reason, actor=actor, entered_at=entered)
            return _change_response(result, request.app[STATUS])
    except TrafficChangeError as exc:
        return error_response(_ERROR_STATUS.get(exc.code, 500), exc.code, str(exc))
    identity = actor.removeprefix("operator:")
    event = TriggerEvent(
        cause=Cause.OPERATOR,
        action=Action.ROLLBACK,
        version=None,
        summary=f"operator {identity}: {body.reason}",
        record=audit_pb2.Trigger(operator=audit_pb2.OperatorTrigger(identity=identity, reason=body.reason)),
        target=target,
    )
    decision = await decisions.handle(event)
    status_view = request.app[STATUS]
    message = control_pb2.TrafficChange(
        policy=status_view.policy_pb(controller.desired),
        rollback_id=decision.rollback_id,
        outcome=decision.outcome.value,
        detail=decision.detail,
        changed=decision.outcome is DecisionOutcome.ROLLED_BACK,
        decision_to_ack_ms=(time.perf_counter() - entered) * 1000.0,
    )
    if decision.outcome is DecisionOutcome.FAILED:
        return proto_response(message, 409)
    return proto_response(message)


def _pause_handler(paused: bool) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        try:
            body = await parse_body(request, control_pb2.PauseRequest)
        except TrafficChangeError as exc:
            return error_response(400, exc.code, str(exc))
        await request.app[CONTROLLER].set_paused(paused, reason=body.reason, actor=_actor(request, body.actor))
        return proto_response(request.app[STATUS].status())

    return handle


def make_control_app(
    controller: TrafficController, status_view: StatusView, token: str, *, decisions: DecisionHandler | None = None
) -> web.Application:
    if not token:
        raise ValueError("the control API needs a non-empty bearer token")
    app = web.Application(middlewares=[bearer_auth], client_max_size=MAX_BODY_BYTES)
    app[CONTROLLER] = controller
    app[STATUS] = status_view
    app[TOKEN] = token
    if decisions is not None:
        app[DECISIONS] = decisions
    app.router.add_get("/v1/status", get_status)
    app.router.add_post("/v1/traffic", set_weights)
    app.router.add_post("/v1/rollback", rollback)
    app.router.add_post("/v1/pause", _pause_handler(True))
    app.router.add_post("/v1/resume", _pause_handler(False))
    return app
