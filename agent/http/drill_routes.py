"""The control API's drill endpoints (docs/drills.md); the same tokens and roles as the rest of the control API.

POST /v1/drill/start   register a drill (operator or above): 200 with its DrillState, 409 naming every failed
                       precondition (nothing recorded but the refusal's metric)
POST /v1/drill/finish  end it with its result (DrillFinished in the audit trail, the drill metrics)
GET  /v1/drill         the registered (or last) drill and the rollbacks it caused
"""

from __future__ import annotations

from aiohttp import web
from google.protobuf import json_format

from agent.domain.drill import DrillPhase, DrillSituation, drilled_version
from agent.domain.records import policy_to_pb, timestamp
from agent.engine.drill import DEFAULT_TTL_S, ActiveDrill, DrillDesk, DrillRefusedError
from agent.engine.traffic import TrafficChangeError
from agent.http.control_app import IDENTITY, STATUS, error_response, parse_body, proto_response
from agent.pb.rollback_agent.v1 import control_pb2
from agent.ports.store import StoreUnavailableError

DRILLS = web.AppKey("drills", DrillDesk)
_MAX_TTL_S = 86400.0


def drill_state_pb(drill: ActiveDrill | None, active: bool) -> control_pb2.DrillState:
    if drill is None:
        return control_pb2.DrillState()
    message = control_pb2.DrillState(
        drill_id=drill.drill_id,
        version=drill.version,
        fault=drill.fault,
        active=active,
        started_at=timestamp(drill.started_at),
        expires_at=timestamp(drill.expires_at),
        policy=policy_to_pb(drill.policy),
        outcome=drill.outcome,
        actor=drill.actor,
    )
    message.rollbacks.extend(drill.rollbacks.values())
    return message


def _state(desk: DrillDesk) -> web.Response:
    drill = desk.current
    return proto_response(drill_state_pb(drill, drill is not None and desk.active is drill))


async def get_drill(request: web.Request) -> web.Response:
    desk = request.app[DRILLS]
    await desk.expire()
    return _state(desk)


async def start_drill(request: web.Request) -> web.Response:
    desk = request.app[DRILLS]
    try:
        body = await parse_body(request, control_pb2.DrillStartRequest)
        if not body.fault:
            raise TrafficChangeError("invalid_argument", "fault: a drill names its fault (e.g. errors, or hook)")
        ttl_s = body.ttl_s or DEFAULT_TTL_S
        if not 0 < ttl_s <= _MAX_TTL_S:
            raise TrafficChangeError("invalid_argument", f"ttl_s: must be within (0, {_MAX_TTL_S:.0f}], got {ttl_s}")
        status = json_format.MessageToDict(request.app[STATUS].status(), preserving_proto_field_name=True)
        situation = DrillSituation.from_status(status)
        identity = request[IDENTITY].name
        reason = body.reason or "rollback drill"
        if body.actor:
            reason += f" (requested as {body.actor!r}, unverified)"
        await desk.start(
            situation,
            version=body.version or drilled_version(situation),
            fault=body.fault,
            reason=reason,
            actor=f"operator:{identity}",
            ttl_s=ttl_s,
            schedule=body.schedule,
        )
    except TrafficChangeError as exc:
        return error_response(400 if exc.code == "invalid_argument" else 409, exc.code, str(exc))
    except DrillRefusedError as exc:
        return error_response(409, "refused", str(exc))
    except StoreUnavailableError as exc:
        return error_response(503, "unavailable", f"{exc}; no drill registered")
    return _state(desk)


async def finish_drill(request: web.Request) -> web.Response:
    desk = request.app[DRILLS]
    try:
        body = await parse_body(request, control_pb2.DrillFinishRequest)
        if body.outcome not in ("passed", "failed"):
            raise TrafficChangeError("invalid_argument", f"outcome: must be passed or failed, got {body.outcome!r}")
        phases = [
            DrillPhase(
                p.name, p.duration_ms / 1000.0 if p.duration_ms or p.outcome == "ok" else None, p.outcome, p.detail
            )
            for p in body.phases
        ]
        await desk.finish(
            body.drill_id,
            outcome=body.outcome,
            detail=body.detail,
            phases=phases,
            rollback_id=body.rollback_id,
            actor=f"operator:{request[IDENTITY].name}",
        )
    except TrafficChangeError as exc:
        return error_response(400, exc.code, str(exc))
    except LookupError as exc:
        return error_response(409, "refused", str(exc))
    except StoreUnavailableError as exc:
        return error_response(503, "unavailable", str(exc))
    return _state(desk)


def add_drill_routes(app: web.Application, desk: DrillDesk) -> None:
    app[DRILLS] = desk
    app.router.add_get("/v1/drill", get_drill)
    app.router.add_post("/v1/drill/start", start_drill)
    app.router.add_post("/v1/drill/finish", finish_drill)
