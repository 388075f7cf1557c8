"""The control API's batch-job leases and operator pins (docs/leases.md). Same authentication and roles as the rest
of the control API; forcing (a lease on a failed, quarantined or held version, renewing one on a quarantined
version, revoking live leases) needs role admin. The actor on every record is the authenticated identity.

GET  /v1/leases                      LeaseList (live, then recently ended)
POST /v1/leases                      LeaseRequest (version, holder, ttl_s, reason, force) -> Lease
POST /v1/leases/{lease_id}/renew     LeaseRequest (ttl_s, reason, force) -> Lease
POST /v1/leases/{lease_id}/release   LeaseRequest (reason) -> Lease
POST /v1/leases/revoke               LeaseRequest (version, reason, force: true; admin) -> LeaseList (the revoked)
POST /v1/pin, /v1/unpin              PinRequest -> Status
"""

from __future__ import annotations

import time

from aiohttp import web

from agent.domain.lease import LEASE_HEADER, Lease, LeaseError
from agent.engine.admission import Admission
from agent.engine.leases import LeaseManager
from agent.engine.traffic import TrafficChangeError
from agent.http.control_app import (
    _ERROR_STATUS,
    ADMISSION,
    IDENTITY,
    STATUS,
    Handler,
    _actor,
    _forbidden,
    _with_claim,
    error_response,
    parse_body,
    proto_response,
)
from agent.http.identities import Role
from agent.pb.rollback_agent.v1 import control_pb2

LEASES = web.AppKey("leases", LeaseManager)


def lease_pb(lease: Lease, now: float) -> control_pb2.Lease:
    state = lease.state if lease.state != "active" or lease.live(now) else "expired"
    return control_pb2.Lease(
        lease_id=lease.lease_id,
        version=lease.version,
        holder=lease.holder,
        state=state,
        acquired_at=lease.acquired_at,
        expires_at=lease.expires_at,
        ended_at=lease.ended_at,
        reason=lease.reason,
        end_reason=lease.end_reason,
        actor=lease.actor,
        header=LEASE_HEADER,
    )


def _admin_needed(request: web.Request, what: str) -> web.Response | None:
    if request[IDENTITY].role.allows(Role.ADMIN):
        return None
    return _forbidden(request, request[IDENTITY], Role.ADMIN, what)


def _failed(exc: LeaseError | TrafficChangeError) -> web.Response:
    return error_response({**_ERROR_STATUS, "not_found": 404}.get(exc.code, 500), exc.code, str(exc))


async def list_leases(request: web.Request) -> web.Response:
    now = time.time()
    leases = request.app[LEASES].leases()
    return proto_response(control_pb2.LeaseList(leases=[lease_pb(x, now) for x in leases], header=LEASE_HEADER))


async def acquire(request: web.Request) -> web.Response:
    try:
        body = await parse_body(request, control_pb2.LeaseRequest)
        if not body.version or not body.holder:
            raise LeaseError("invalid_argument", "a lease names a version and a holder")
        if body.force and (denied := _admin_needed(request, "forcing a lease (force: true)")) is not None:
            return denied
        lease = await request.app[LEASES].acquire(
            version=body.version,
            holder=body.holder,
            ttl_s=body.ttl_s,
            reason=_with_claim(body.reason, body.actor),
            actor=_actor(request),
            force=body.force,
        )
    except (LeaseError, TrafficChangeError) as exc:
        return _failed(exc)
    return proto_response(lease_pb(lease, time.time()))


async def renew(request: web.Request) -> web.Response:
    try:
        body = await parse_body(request, control_pb2.LeaseRequest)
        if body.force and (denied := _admin_needed(request, "forcing a lease renewal (force: true)")) is not None:
            return denied
        lease = await request.app[LEASES].renew(
            request.match_info["lease_id"],
            ttl_s=body.ttl_s,
            reason=_with_claim(body.reason, body.actor),
            actor=_actor(request),
            force=body.force,
        )
    except (LeaseError, TrafficChangeError) as exc:
        return _failed(exc)
    return proto_response(lease_pb(lease, time.time()))


async def release(request: web.Request) -> web.Response:
    try:
        body = await parse_body(request, control_pb2.LeaseRequest)
        lease = await request.app[LEASES].release(
            request.match_info["lease_id"], reason=_with_claim(body.reason, body.actor), actor=_actor(request)
        )
    except (LeaseError, TrafficChangeError) as exc:
        return _failed(exc)
    return proto_response(lease_pb(lease, time.time()))


async def revoke(request: web.Request) -> web.Response:
    try:
        body = await parse_body(request, control_pb2.LeaseRequest)
        if not body.version or not body.reason:
            raise LeaseError("invalid_argument", "revoking leases names a version and a reason")
        if not body.force:
            raise LeaseError("invalid_argument", "revoking live leases breaks their batches: it needs force: true")
        if (denied := _admin_needed(request, "revoking leases (force: true)")) is not None:
            return denied
        ended = await request.app[LEASES].revoke(
            body.version, reason=_with_claim(body.reason, body.actor), actor=_actor(request)
        )
    except (LeaseError, TrafficChangeError) as exc:
        return _failed(exc)
    now = time.time()
    return proto_response(control_pb2.LeaseList(leases=[lease_pb(x, now) for x in ended], header=LEASE_HEADER))


def _pin_handler(pinned: bool) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        admission: Admission | None = request.app.get(ADMISSION)
        if admission is None:
            return error_response(404, "not_found", "pins need the decision engine (not in this mode)")
        try:
            body = await parse_body(request, control_pb2.PinRequest)
            if not body.version:
                raise TrafficChangeError("invalid_argument", "a pin names a version")
            if pinned and not body.reason:
                raise TrafficChangeError("invalid_argument", "a pin needs a reason")
            await admission.set_pin(
                body.version, pinned, reason=_with_claim(body.reason, body.actor), actor=_actor(request)
            )
        except TrafficChangeError as exc:
            return error_response(_ERROR_STATUS.get(exc.code, 500), exc.code, str(exc))
        return proto_response(request.app[STATUS].status())

    return handle


def add_lease_api(app: web.Application, leases: LeaseManager) -> None:
    """Serve leases and pins on the control app, and show leases in its status."""
    app[LEASES] = leases
    app[STATUS].leases = lambda: [lease_pb(x, time.time()) for x in leases.leases()]
    app.router.add_get("/v1/leases", list_leases)
    app.router.add_post("/v1/leases", acquire)
    app.router.add_post("/v1/leases/revoke", revoke)
    app.router.add_post("/v1/leases/{lease_id:[^/]+}/renew", renew)
    app.router.add_post("/v1/leases/{lease_id:[^/]+}/release", release)
    app.router.add_post("/v1/pin", _pin_handler(True))
    app.router.add_post("/v1/unpin", _pin_handler(False))
