"""The control API: JSON over HTTP, each body the proto3 JSON mapping of a message in proto/ (control.proto).

Every request needs `Authorization: Bearer <token>`; a missing or unknown token is refused with 401 and changes
nothing. Each token is a named identity with a role (agent.http.identities): reading (GET) needs `read-only` or
above, every change needs `operator` or above, and forcing traffic onto a version the agent would refuse needs
`admin`; too low a role is refused with 403 naming the role needed and the identity's role, and changes nothing.
The audit trail records the authenticated identity (`operator:<name>`) as the actor; an `actor` in a request
body is only the caller's claimed name, kept beside it and never trusted. A storage fault answers 503 naming it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from agent.domain.safe_json import JsonInputError, loads_bounded
from agent.engine.admission import Admission
from agent.engine.decisions import Action, Cause, DecisionHandler, DecisionOutcome, TriggerEvent
from agent.engine.traffic import ChangeResult, TrafficChangeError, TrafficController
from agent.http.identities import Identities, Identity, Role
from agent.http.status_view import StatusView
from agent.pb.rollback_agent.v1 import audit_pb2, control_pb2
from agent.ports.store import StoreUnavailableError

CONTROLLER = web.AppKey("controller", TrafficController)
STATUS = web.AppKey("status", StatusView)
IDENTITIES = web.AppKey("identities", Identities)
IDENTITY = web.RequestKey("identity", Identity)
DECISIONS = web.AppKey("decisions", DecisionHandler)
ADMISSION = web.AppKey("admission", Admission)
# Paths served without a token: the status page's own files, which hold no data (agent.http.status_page).
PUBLIC_PATHS = web.AppKey("public_paths", frozenset[str])
MAX_BODY_BYTES = 64 * 1024

_READS = frozenset({"GET", "HEAD", "OPTIONS"})

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ERROR_STATUS = {"invalid_argument": 400, "refused": 409, "rejected": 409, "ack_timeout": 504, "unavailable": 503}


def proto_response(message: Message, status: int = 200) -> web.Response:
    body = json_format.MessageToJson(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True, indent=None
    )
    return web.Response(text=body, status=status, content_type="application/json")


def error_response(status: int, code: str, message: str) -> web.Response:
    return proto_response(control_pb2.ErrorResponse(code=code, message=message), status)


_HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed", 413: "invalid_argument"}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own answers (no such route, a method the route lacks, a body too large) as the API's JSON errors,
    so every answer of the control API is one ErrorResponse shape."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.status not in _HTTP_ERROR_CODES:
            raise
        what = {404: f"no such endpoint: {request.method} {request.path}", 405: f"{request.method} is not allowed on "
                f"{request.path}", 413: "request body too large"}[exc.status]  # fmt: skip
        response = error_response(exc.status, _HTTP_ERROR_CODES[exc.status], what)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method in ("GET", "HEAD") and request.path in request.app.get(PUBLIC_PATHS, frozenset()):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    # aiohttp keeps header bytes that are not UTF-8 as surrogate escapes: compare the bytes as sent.
    identity = request.app[IDENTITIES].authenticate(presented.encode("utf-8", "surrogateescape"))
    if scheme.lower() != "bearer" or identity is None:
        return error_response(401, "unauthenticated", "missing or wrong bearer token")
    needed = Role.READ_ONLY if request.method in _READS else Role.OPERATOR
    if not identity.role.allows(needed):
        return _forbidden(request, identity, needed, f"{request.method} {request.path}")
    request[IDENTITY] = identity
    return await handler(request)


def _forbidden(request: web.Request, identity: Identity, needed: Role, what: str) -> web.Response:
    log.warning(
        "control API: refused %s to %s (role %s; needs %s)", what, identity.name, identity.role.value, needed.value
    )
    return error_response(
        403,
        "permission_denied",
        f"{what} needs role {needed.value} or above; identity {identity.name!r} has role {identity.role.value}",
    )


async def parse_body(request: web.Request, message_type: type[M]) -> M:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise TrafficChangeError("invalid_argument", f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:  # a chunked body (no Content-Length)
        raise TrafficChangeError("invalid_argument", f"body larger than {MAX_BODY_BYTES} bytes") from None
    try:
        data = loads_bounded(raw) if raw.strip() else {}
        if not isinstance(data, dict):
            raise JsonInputError(f"expected a JSON object, got {type(data).__name__}")
        return json_format.ParseDict(data, message_type())
    except (json_format.ParseError, JsonInputError, ValueError, TypeError, RecursionError) as exc:
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


def _identity(request: web.Request) -> str:
    """The authenticated identity: the name of the token the request presented."""
    return request[IDENTITY].name


def _actor(request: web.Request) -> str:
    return f"operator:{_identity(request)}"


def _with_claim(reason: str, claimed: str) -> str:
    return f"{reason} (requested as {claimed!r}, unverified)" if claimed else reason


def _operator_trigger(request: web.Request, reason: str, claimed: str) -> audit_pb2.Trigger:
    return audit_pb2.Trigger(
        operator=audit_pb2.OperatorTrigger(identity=_identity(request), reason=reason, claimed_name=claimed)
    )


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
        if body.force and not request[IDENTITY].role.allows(Role.ADMIN):
            return _forbidden(request, request[IDENTITY], Role.ADMIN, "forcing traffic (force: true)")
        reason = body.reason or "set by operator"
        result = await request.app[CONTROLLER].set_weights(
            weights,
            reason=reason,
            actor=_actor(request),
            entered_at=entered,
            force=body.force,
            trigger=_operator_trigger(request, reason, body.actor),
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
        if body.force and not body.to_version:
            raise TrafficChangeError("invalid_argument", "force needs a named target (to_version)")
        if body.force and not request[IDENTITY].role.allows(Role.ADMIN):
            return _forbidden(request, request[IDENTITY], Role.ADMIN, "forcing a rollback target (force: true)")
        controller = request.app[CONTROLLER]
        target = body.to_version or None
        if target is not None and target not in controller.versions:
            raise TrafficChangeError(
                "invalid_argument", f"unknown version {target!r}; this model has {', '.join(controller.versions)}"
            )
        decisions = request.app.get(DECISIONS)
        if decisions is None:
            result = await controller.rollback(to=target, reason=body.reason, actor=_actor(request), entered_at=entered)
            return _change_response(result, request.app[STATUS])
    except TrafficChangeError as exc:
        return error_response(_ERROR_STATUS.get(exc.code, 500), exc.code, str(exc))
    identity = _identity(request)
    event = TriggerEvent(
        cause=Cause.OPERATOR,
        action=Action.ROLLBACK,
        version=None,
        summary=f"operator {identity}: {body.reason}",
        record=_operator_trigger(request, body.reason, body.actor),
        target=target,
        force=body.force,
    )
    try:
        decision = await decisions.handle(event)
    except StoreUnavailableError as exc:
        return error_response(503, "unavailable", str(exc))
    status_view = request.app[STATUS]
    message = control_pb2.TrafficChange(
        policy=status_view.policy_pb(controller.desired),
        rollback_id=decision.rollback_id,
        outcome=decision.outcome.value,
        detail=decision.detail,
        changed=decision.outcome is DecisionOutcome.ROLLED_BACK,
        decision_to_ack_ms=(time.perf_counter() - entered) * 1000.0,
    )
    if decision.outcome is DecisionOutcome.ROLLED_BACK:
        status = status_view.status()
        message.route_version = status.route_version
        for envoy in status.envoys:
            for state in envoy.types:
                if state.type_url.endswith("RouteConfiguration") and state.acked_version == status.route_version:
                    message.acks.append(
                        control_pb2.NodeAck(
                            node_id=envoy.node_id, xds_version=state.acked_version, acked_at=state.acked_at
                        )
                    )
    if decision.outcome is DecisionOutcome.FAILED:
        return proto_response(message, 409)
    return proto_response(message)


def _pause_handler(paused: bool) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        try:
            body = await parse_body(request, control_pb2.PauseRequest)
            await request.app[CONTROLLER].set_paused(
                paused, reason=_with_claim(body.reason, body.actor), actor=_actor(request)
            )
        except TrafficChangeError as exc:
            return error_response(_ERROR_STATUS.get(exc.code, 500), exc.code, str(exc))
        return proto_response(request.app[STATUS].status())

    return handle


def _hold_handler(held: bool) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        admission = request.app.get(ADMISSION)
        if admission is None:
            return error_response(404, "not_found", "holds need the decision engine (not in this mode)")
        try:
            body = await parse_body(request, control_pb2.HoldRequest)
            if not body.version:
                raise TrafficChangeError("invalid_argument", "a hold names a version")
            if held and not body.reason:
                raise TrafficChangeError("invalid_argument", "a hold needs a reason")
            await admission.set_hold(
                body.version, held, reason=_with_claim(body.reason, body.actor), actor=_actor(request)
            )
        except TrafficChangeError as exc:
            return error_response(_ERROR_STATUS.get(exc.code, 500), exc.code, str(exc))
        return proto_response(request.app[STATUS].status())

    return handle


def make_control_app(
    controller: TrafficController,
    status_view: StatusView,
    credentials: str | Identities,
    *,
    identity: str = "control-token",
    decisions: DecisionHandler | None = None,
    admission: Admission | None = None,
) -> web.Application:
    """`credentials`: the identities allowed in, or one token standing for the admin `identity`."""
    if isinstance(credentials, str):
        if not credentials:
            raise ValueError("the control API needs a non-empty bearer token")
        credentials = Identities.single(credentials, identity)
    app = web.Application(middlewares=[json_errors, bearer_auth], client_max_size=MAX_BODY_BYTES)
    app[CONTROLLER] = controller
    app[STATUS] = status_view
    app[IDENTITIES] = credentials
    if decisions is not None:
        app[DECISIONS] = decisions
    if admission is not None:
        app[ADMISSION] = admission
    app.router.add_get("/v1/status", get_status)
    app.router.add_post("/v1/traffic", set_weights)
    app.router.add_post("/v1/rollback", rollback)
    app.router.add_post("/v1/pause", _pause_handler(True))
    app.router.add_post("/v1/resume", _pause_handler(False))
    app.router.add_post("/v1/hold", _hold_handler(True))
    app.router.add_post("/v1/release", _hold_handler(False))
    return app
