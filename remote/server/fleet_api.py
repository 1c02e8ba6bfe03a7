"""/api/v1 of the fleet layer: heartbeats from terminals; problems and incidents for support."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from remote.server import db, fleet_queue, inputs, store
from remote.server.api import ApiError, Reader, bearer_scheme, errors, label_params, read_capped, role, service, terminal_auth, time_param
from remote.server.fleet import incident_actions, incidents, problems
from remote.server.fleet.models import (
    Heartbeat, HeartbeatAccepted, IncidentChange, IncidentDetail, IncidentList, IncidentNote, Problem, ProblemList,
)  # fmt: skip
from remote.server.service import User
from remote.server.ingest import IngestError
from remote.server.models import NextCommand
from remote.server.outcomes import tables

router = APIRouter(prefix="/api/v1")
Support = Annotated[User, Depends(role("support", "admin"))]
IncidentId = Annotated[str, Path(max_length=36)]
MAX_HEARTBEAT_BYTES = 16384

HEARTBEAT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Heartbeat"}}},
        "description": "the terminal's health report; any health or counter key may be missing or null",
    }
}


@router.post(
    "/heartbeats",
    status_code=202,
    response_model=HeartbeatAccepted,
    tags=["terminal"],
    summary="A terminal's heartbeat (terminal token); the answer lists open incidents covering it",
    openapi_extra=HEARTBEAT_BODY,
    responses=errors(400, 401, 403, 413, 422, 503),
)
async def heartbeat(
    request: Request,
    terminal: Annotated[dict[str, Any], Depends(terminal_auth)],
    _: Annotated[Any, Depends(bearer_scheme)],
    poll: Annotated[bool, Query(description="also take the next probe request, as commands/next would")] = False,
) -> Any:
    srv = service(request)
    try:
        body = await read_capped(request, MAX_HEARTBEAT_BYTES)
    except IngestError as exc:
        raise ApiError(exc.status, exc.code, exc.detail.replace("bundle", "heartbeat")) from None
    try:
        beat = Heartbeat.model_validate(json.loads(body))
        sent = db.parse_time(beat.sent_at)
        sent_at = db.stamp(sent)
    except (ValueError, OverflowError, ValidationError) as exc:
        raise ApiError(422, "bad_heartbeat", _short(exc)) from None
    refused = inputs.heartbeat_problem(beat, sent)
    if refused:
        raise ApiError(400, *refused)
    if beat.terminal_id != terminal["id"]:
        raise ApiError(403, "wrong_terminal", "the heartbeat names another terminal than the token's")
    received = db.now()
    event_at, clamped = srv.fleet.clamp(sent_at, received)
    try:
        srv.shed_when_behind()
        # Acknowledged once durably queued (with the heartbeats gathered meanwhile, group_commit.py);
        # folded into the inventory and trends by the fleet queue's worker.
        await srv.heartbeats.submit(fleet_queue.heartbeat_entry(beat, event_at, clamped, received))
        srv.fleet_queue.nudge()
        async with srv.gate.turn():
            notices, command, learned = await srv.for_terminal(_answer, srv, terminal["id"], beat, poll)
    except IngestError as exc:  # shed (shedding.py)
        raise ApiError(exc.status, exc.code, exc.detail, {"Retry-After": str(exc.retry_after)}) from None
    answer = HeartbeatAccepted(status="accepted", event_at=event_at, clock_clamped=clamped, incidents=notices, command=command, learned=learned)
    return JSONResponse(answer.model_dump(), status_code=202)


def _answer(srv: Any, terminal_id: str, beat: Heartbeat, poll: bool) -> tuple[Any, Any, Any]:
    """A queued heartbeat's answer: the open incidents covering the terminal, its next probe
    request (poll), the learned table it should hold. One thread hop for all of it (each hop
    cost a heartbeat a thread handover)."""
    notices = srv.fleet.notices(terminal_id)
    command = None
    if poll:
        found = store.next_command(srv.engine, terminal_id, srv.settings.command_redeliver_seconds)
        command = None if found is None else NextCommand(command_id=found["id"], probes=found["probes"], code=found["code"]).model_dump()
    return notices, command, tables.for_heartbeat(srv.engine, terminal_id, beat.learned_hash, beat.model)


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"heartbeat: {where or 'document'}: {first.get('msg', 'invalid')}"[:300]
    return f"heartbeat: {exc}"[:300]


@router.get("/problems", response_model=ProblemList, tags=["fleet"], summary="Problems ranked by terminals affected; label.KEY=VALUE filters", responses=errors(400, 401, 422))
async def list_problems(
    request: Request,
    user: Reader,
    since: Annotated[datetime | None, Query(description="from this UTC day on (ISO-8601 with zone)")] = None,
    until: Annotated[datetime | None, Query(description="up to and including this UTC day")] = None,
    model: Annotated[str | None, Query(max_length=128)] = None,
    firmware: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int | None, Query(ge=1, le=500)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    kind: Annotated[Literal["all", "faults", "outcomes"], Query(description="faults: highest verdict above none; outcomes: business and issuer answers (none)")] = "all",
    verdict: Annotated[Literal["none", "merchant", "remote", "onsite"] | None, Query(description="only problems whose highest verdict is this")] = None,
) -> Any:
    srv = service(request)
    verdicts = problems.verdicts_of(kind, verdict)
    try:
        items, next_cursor = await run_in_threadpool(
            lambda: problems.list_problems(
                srv.engine, since=time_param(since), until=time_param(until), labels=label_params(request),
                model=model, firmware=firmware, limit=limit or srv.settings.page_size, cursor=cursor, verdicts=verdicts,
            )
        )  # fmt: skip
    except ValueError as exc:
        raise ApiError(400, "bad_cursor", str(exc)) from None
    return ProblemList(items=items, next_cursor=next_cursor)


@router.get("/problems/{problem_id}", response_model=Problem, tags=["fleet"], responses=errors(401, 404, 422))
async def problem(request: Request, problem_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")], user: Reader) -> Any:
    found = await run_in_threadpool(problems.get_problem, service(request).engine, problem_id)
    if found is None:
        raise ApiError(404, "no_problem", "no problem with this id")
    return found


@router.get("/incidents", response_model=IncidentList, tags=["fleet"], summary="Fleet incidents, newest first", responses=errors(401, 422))
async def list_incidents(
    request: Request,
    user: Reader,
    status: Annotated[Literal["open", "closed", "dismissed", "all"], Query()] = "all",
    since: Annotated[datetime | None, Query(description="incidents still going on at or after this")] = None,
    until: Annotated[datetime | None, Query(description="incidents started before this")] = None,
) -> Any:
    items = await run_in_threadpool(incidents.list_incidents, service(request).engine, status, time_param(since), time_param(until))
    return IncidentList(items=items)


@router.get("/incidents/{incident_id}", response_model=IncidentDetail, tags=["fleet"], summary="An incident with its notes and actions", responses=errors(401, 404, 422))
async def incident(request: Request, incident_id: IncidentId, user: Reader) -> Any:
    return await _act(incident_actions.detail, service(request).engine, incident_id)


@router.post("/incidents/{incident_id}/ack", response_model=IncidentDetail, tags=["fleet"], summary="Acknowledge: someone is on it (once; again changes nothing)", responses=errors(401, 403, 404, 422))
async def acknowledge(request: Request, incident_id: IncidentId, user: Support, body: IncidentChange | None = None) -> Any:
    srv = service(request)
    return await _act(incident_actions.acknowledge, srv.engine, srv.settings.webhooks, incident_id, user.name, body.note if body else None)


@router.post("/incidents/{incident_id}/notes", response_model=IncidentDetail, tags=["fleet"], summary="Add a note", responses=errors(401, 403, 404, 422))
async def add_note(request: Request, incident_id: IncidentId, user: Support, body: IncidentNote) -> Any:
    return await _act(incident_actions.add_note, service(request).engine, incident_id, user.name, body.note)


@router.post("/incidents/{incident_id}/resolve", response_model=IncidentDetail, tags=["fleet"], summary="Close an open incident: fixed", responses=errors(401, 403, 404, 409, 422))
async def resolve(request: Request, incident_id: IncidentId, user: Support, body: IncidentChange | None = None) -> Any:
    srv = service(request)
    return await _act(incident_actions.resolve, srv.engine, srv.settings.webhooks, incident_id, user.name, body.note if body else None)


@router.post("/incidents/{incident_id}/dismiss", response_model=IncidentDetail, tags=["fleet"], summary="Not an outage: status dismissed, its holds released", responses=errors(401, 403, 404, 409, 422))
async def dismiss(request: Request, incident_id: IncidentId, user: Support, body: IncidentChange | None = None) -> Any:
    srv = service(request)
    return await _act(incident_actions.dismiss, srv.engine, srv.settings.webhooks, incident_id, user.name, body.note if body else None)


async def _act(action: Any, *args: Any) -> Any:
    try:
        return await run_in_threadpool(action, *args)
    except incident_actions.Refused as exc:
        raise ApiError(exc.status, exc.code, exc.detail) from None


def document(app: Any) -> None:
    """Put the heartbeat's schema (read by hand, after the token check) into the OpenAPI components."""
    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = base()
        body = Heartbeat.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(body.pop("$defs", {}))
        components["Heartbeat"] = body
        return schema

    app.openapi = openapi
