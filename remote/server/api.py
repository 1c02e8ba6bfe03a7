"""/api/v1: JSON for terminals (upload, command polling) and support users (everything else).

Authentication
- Terminals: `Authorization: Bearer <token>`. A terminal token reaches only the upload and
  its own command queue; every other operation answers it 401.
- Users: HTTP basic (name and password), or the web session cookie for reading (GET) only:
  a cookie is sent by browsers on their own, so a cookie never authorises a change here.
Every error is JSON {"error": short code, "detail": text}.
"""

from __future__ import annotations

import base64
import binascii
import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyCookie, HTTPBasic, HTTPBearer

from remote import wire
from remote.redact import redact_text
from remote.server import admission, audit, db, signin, store
from remote.server.fleet import incidents as fleet_incidents
from remote.server.fleet import inventory
from remote.server.fleet import labels as fleet_labels
from remote.server.fleet.models import FleetTerminal, FleetTerminalList, LabelChanges
from remote.server.ingest import IngestError
from remote.server.models import (
    BundleDetail,
    BundleList,
    BundleRecord,
    Command,
    CommandRequest,
    ErrorBody,
    NextCommand,
    Stats,
    TerminalCreate,
    TerminalEnrolled,
    Verdict,
)
from remote.server.service import Service, User

SESSION_COOKIE = "posdiag_session"
BUNDLE_ID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

# Declared so that the OpenAPI document shows the schemes; the checks are ours below.
bearer_scheme = HTTPBearer(auto_error=False, description="terminal token")
basic_scheme = HTTPBasic(auto_error=False, description="support user")
cookie_scheme = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="web session (GET only)")


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # A refusal may quote what it refused (a manifest's created_at, a path): mask card data in it.
    return JSONResponse({"error": code, "detail": redact_text(detail)[0]}, status_code=status, headers=headers)


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}


def service(request: Request) -> Service:
    return request.app.state.service


# -- who is asking ------------------------------------------------------------------------


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _basic(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        name, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeError, ValueError):
        return None
    return (name, password) if sep and "\x00" not in name + password else None


async def terminal_auth(request: Request, _: Annotated[Any, Depends(bearer_scheme)]) -> dict[str, Any]:
    token = _bearer(request)
    srv = service(request)
    found = await srv.for_terminal(srv.terminal_for_token, token) if token else None
    if found is None:
        raise ApiError(401, "bad_token", "missing, unknown or revoked terminal token", {"WWW-Authenticate": "Bearer"})
    return found


async def user_auth(
    request: Request, _b: Annotated[Any, Depends(basic_scheme)], _c: Annotated[Any, Depends(cookie_scheme)]
) -> User:
    srv = service(request)
    pair = _basic(request)
    user = None
    if pair is not None:
        try:
            user = await signin.sign_in(srv, *pair, request.client.host if request.client else None)
        except signin.Refused as exc:
            raise ApiError(exc.status, exc.code, exc.detail, {"Retry-After": str(exc.retry_after)}) from None
    elif request.method in ("GET", "HEAD"):
        user = await run_in_threadpool(srv.user_by_session, request.cookies.get(SESSION_COOKIE))
    if user is None:
        raise ApiError(401, "unauthorized", "sign in as a support user (HTTP basic)", {"WWW-Authenticate": "Basic"})
    return user


def role(*allowed: str) -> Any:
    async def check(user: Annotated[User, Depends(user_auth)]) -> User:
        if user.role not in allowed:
            raise ApiError(403, "forbidden", f"role {user.role} may not do this")
        return user

    return check


Reader = Annotated[User, Depends(user_auth)]
Requester = Annotated[User, Depends(role("support", "technician", "admin"))]
Admin = Annotated[User, Depends(role("admin"))]

router = APIRouter(prefix="/api/v1")


# -- ingest -------------------------------------------------------------------------------

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        "description": "the bundle, a .tar.gz as built by the agent",
    }
}


@router.post(
    "/bundles",
    status_code=201,
    response_model=BundleRecord,
    tags=["terminal"],
    summary="Upload a bundle",
    openapi_extra=UPLOAD_BODY,
    responses={
        200: {"model": BundleRecord, "description": "this bundle id was stored before; the stored record"},
        201: {"model": BundleRecord, "description": "stored"},
        **errors(400, 401, 403, 409, 413, 422, 429, 503),
    },
)
async def upload(
    request: Request,
    _: Annotated[Any, Depends(bearer_scheme)],
    idempotency_key: Annotated[str | None, Header(max_length=64, description="the bundle_id")] = None,
) -> Response:
    srv = service(request)
    started = time.perf_counter()
    try:
        srv.shed_when_behind()  # 503 at once, before any database work (shedding.py)
        token = _bearer(request)
        if not token:
            raise IngestError(401, "bad_token", "missing, unknown or revoked terminal token")
        try:
            declared: int | None = declared_length(request, srv.settings.max_bundle_bytes)
            bad_length = None
        except IngestError as exc:  # answered after the token: an unknown token is 401 whatever it sends
            declared, bad_length = None, exc
        async with srv.gate.turn():  # 401, then 400/413, then 503 or 429, all before the body
            terminal = await srv.for_terminal(admission.admit_upload, srv, token, declared, bad_length)
        size = declared or srv.settings.max_bundle_bytes
        async with srv.ingest_budget.held(size + srv.limits.held, srv.settings.ingest_wait_seconds):
            body = await read_capped(request, srv.settings.max_bundle_bytes)
            prepared = await srv.for_terminal(srv.prepare_upload, body, terminal, idempotency_key)
        record, new = await srv.uploads.submit(prepared)  # written with the uploads gathered meanwhile (group_commit.py)
    except IngestError as exc:
        srv.metrics.reject(exc.code, time.perf_counter() - started)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if exc.retry_after:
            headers = {"Retry-After": str(exc.retry_after)}
        return error_response(exc.status, exc.code, exc.detail, headers)
    srv.metrics.accepted(new, time.perf_counter() - started)
    return JSONResponse(BundleRecord(**record).model_dump(), status_code=201 if new else 200)


def declared_length(request: Request, cap: int) -> int | None:
    """Content-Length, if given: 400 when it is not a number, 413 (unread) when over `cap`."""
    length = request.headers.get("content-length")
    if length is None:
        return None
    if not length.isdigit():
        raise IngestError(400, "bad_length", "Content-Length is not a number")
    if int(length) > cap:
        raise IngestError(413, "too_large", f"bundle over {cap} bytes")
    return int(length)


async def read_capped(request: Request, cap: int) -> bytes:
    """The body, refusing (413) by Content-Length before reading, or while streaming once
    more than `cap` bytes have come; at most one transport chunk past cap is ever read."""
    declared_length(request, cap)
    parts: list[bytes] = []
    got = 0
    async for chunk in request.stream():
        got += len(chunk)
        if got > cap:
            raise IngestError(413, "too_large", f"bundle over {cap} bytes")
        parts.append(chunk)
    return b"".join(parts)


# -- commands -------------------------------------------------------------------------------


@router.post(
    "/terminals/{terminal_id}/commands",
    status_code=201,
    response_model=Command,
    tags=["commands"],
    summary="Ask a terminal to run probes",
    responses=errors(401, 403, 404, 422),
)
async def request_probes(
    request: Request, terminal_id: Annotated[str, Path(max_length=128)], body: CommandRequest, user: Requester
) -> Any:
    try:
        return await run_in_threadpool(
            store.add_command, service(request).engine, terminal_id, body.probes, body.code, user.name
        )
    except store.StoreError as exc:
        raise ApiError(404, exc.code, exc.detail) from None


@router.get(
    "/terminals/{terminal_id}/commands/next",
    response_model=NextCommand,
    tags=["terminal"],
    summary="Take the next probe request (terminal token)",
    responses={
        204: {"description": "nothing to do", "headers": {"X-Posdiag-Incidents": fleet_incidents.HEADER_DOC}},
        200: {"headers": {"X-Posdiag-Incidents": fleet_incidents.HEADER_DOC}},
        **errors(401, 403, 422),
    },
)
async def next_command(
    request: Request,
    terminal_id: Annotated[str, Path(max_length=128)],
    terminal: Annotated[dict[str, Any], Depends(terminal_auth)],
) -> Any:
    if terminal["id"] != terminal_id:
        raise ApiError(403, "wrong_terminal", "a terminal polls only its own queue")
    srv = service(request)
    found = await srv.for_terminal(store.next_command, srv.engine, terminal_id, srv.settings.command_redeliver_seconds)
    notices = await srv.for_terminal(srv.fleet.notices, terminal_id)
    headers = {"X-Posdiag-Incidents": fleet_incidents.header(notices)}
    if found is None:
        return Response(status_code=204, headers=headers)
    answer = NextCommand(command_id=found["id"], probes=found["probes"], code=found["code"])
    return JSONResponse(answer.model_dump(), headers=headers)


@router.get(
    "/terminals/{terminal_id}/commands",
    response_model=list[Command],
    tags=["commands"],
    summary="A terminal's probe requests, newest first",
    responses=errors(401, 422),
)
async def list_commands(request: Request, terminal_id: Annotated[str, Path(max_length=128)], user: Reader) -> Any:
    return await run_in_threadpool(store.list_commands, service(request).engine, terminal_id)


# -- terminals ------------------------------------------------------------------------------


@router.get(
    "/terminals",
    response_model=FleetTerminalList,
    tags=["terminals"],
    summary="Terminal inventory; filter by status and by labels as label.KEY=VALUE (all must match)",
    responses=errors(400, 401, 422),
)
async def terminals(
    request: Request,
    user: Reader,
    status: Annotated[Literal["ok", "missing", "at_risk"] | None, Query()] = None,
    limit: Annotated[int | None, Query(ge=1, le=500)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Any:
    srv = service(request)
    labels = label_params(request)
    try:
        items, next_cursor = await run_in_threadpool(
            inventory.list_terminals, srv.engine, srv.settings.fleet, db.now(), status, labels,
            limit or srv.settings.page_size, cursor,
        )  # fmt: skip
    except ValueError as exc:
        raise ApiError(400, "bad_cursor", str(exc)) from None
    return FleetTerminalList(items=items, next_cursor=next_cursor)


def label_params(request: Request) -> dict[str, str]:
    """label.KEY=VALUE query parameters, at most [server] max_label_filters (budgets.py)."""
    most = service(request).settings.max_label_filters
    given = [(k, v) for k, v in request.query_params.multi_items() if k.startswith("label.")]
    if len(given) > most:
        raise ApiError(400, "too_many_filters", f"{len(given)} label filters: at most {most} label.KEY=VALUE per request")
    out = {}
    for key, value in given:
        name = key[len("label."):]
        if not wire.LABEL_KEY.fullmatch(name) or not 0 < len(value) <= 64:
            raise ApiError(422, "invalid_request", f"{key[:40]}: a label is label.KEY=VALUE, KEY a-z0-9_, VALUE 1-64 chars")
        out[name] = value
    return out


@router.post(
    "/terminals",
    status_code=201,
    response_model=TerminalEnrolled,
    tags=["terminals"],
    summary="Enrol a terminal (admin); the token is shown once",
    responses=errors(401, 403, 409, 422),
)
async def enrol(request: Request, body: TerminalCreate, user: Admin) -> Any:
    try:
        srv = service(request)
        token = await run_in_threadpool(store.add_terminal, srv.engine, body.id, body.labels, srv.settings.fleet)
    except store.StoreError as exc:
        raise ApiError(409 if exc.code == "terminal_exists" else 422, exc.code, exc.detail) from None
    detail = {"labels": body.labels} if body.labels else None
    await run_in_threadpool(audit.record, service(request).engine, user.name, "api", "terminal.enrol", "terminal", body.id, detail)
    return TerminalEnrolled(id=body.id, token=token)


@router.patch(
    "/terminals/{terminal_id}/labels",
    response_model=FleetTerminal,
    tags=["terminals"],
    summary="Set the operator's labels of a terminal (admin): {KEY: VALUE} sets, {KEY: null} removes",
    responses=errors(401, 403, 404, 422),
)
async def set_labels(
    request: Request, terminal_id: Annotated[str, Path(max_length=128)], body: LabelChanges, user: Admin,
) -> Any:  # fmt: skip
    srv = service(request)
    try:
        changed = await run_in_threadpool(inventory.label_terminal, srv.engine, terminal_id, body.root, "api", srv.settings.fleet)
    except LookupError as exc:
        raise ApiError(404, "no_terminal", str(exc)) from None
    except fleet_labels.LabelError as exc:
        raise ApiError(422, "bad_label", f"labels.{exc}") from None
    if changed:
        await run_in_threadpool(audit.record, srv.engine, user.name, "api", "terminal.label", "terminal", terminal_id, {"labels": body.root})
    return await run_in_threadpool(inventory.get_terminal, srv.engine, srv.settings.fleet, terminal_id, db.now())


@router.delete(
    "/terminals/{terminal_id}",
    status_code=204,
    tags=["terminals"],
    summary="Revoke a terminal's token (admin)",
    responses={204: {"description": "revoked"}, **errors(401, 403, 404, 422)},
)
async def revoke(request: Request, terminal_id: Annotated[str, Path(max_length=128)], user: Admin) -> Response:
    try:
        await run_in_threadpool(store.revoke_terminal, service(request).engine, terminal_id)
    except store.StoreError as exc:
        raise ApiError(404, exc.code, exc.detail) from None
    await run_in_threadpool(audit.record, service(request).engine, user.name, "api", "terminal.revoke", "terminal", terminal_id)
    return Response(status_code=204)


# -- bundles --------------------------------------------------------------------------------


def time_param(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ApiError(422, "invalid_request", "times need a zone, e.g. 2026-01-02T00:00:00Z")
    try:
        return db.stamp(value)
    except OverflowError:
        raise ApiError(422, "invalid_request", "time out of range") from None


@router.get("/bundles", response_model=BundleList, tags=["bundles"], responses=errors(400, 401, 422))
async def list_bundles(
    request: Request,
    user: Reader,
    terminal: Annotated[str | None, Query(max_length=128)] = None,
    code: Annotated[str | None, Query(max_length=64)] = None,
    cause: Annotated[str | None, Query(max_length=128)] = None,
    category: Annotated[str | None, Query(max_length=32)] = None,
    model: Annotated[str | None, Query(max_length=128)] = None,
    firmware: Annotated[str | None, Query(max_length=128)] = None,
    since: Annotated[datetime | None, Query(description="created at or after (ISO-8601 with zone)")] = None,
    until: Annotated[datetime | None, Query(description="created before (ISO-8601 with zone)")] = None,
    limit: Annotated[int | None, Query(ge=1, le=500)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    verdict: Annotated[Verdict | None, Query(description="dispatch verdict; hold: held by a fleet outage (fleet_dispatch)")] = None,
    held: Annotated[bool | None, Query(description="true: only bundles a fleet outage holds; false: only those none holds")] = None,
) -> Any:
    srv = service(request)
    flt = store.BundleFilter(
        terminal, code, cause, category, model, firmware, verdict, since=time_param(since), until=time_param(until), held=held
    )
    try:
        rows, next_cursor = await run_in_threadpool(
            store.list_bundles, srv.engine, flt, limit or srv.settings.page_size, cursor
        )
    except store.StoreError as exc:
        raise ApiError(400, exc.code, exc.detail) from None
    holds = await run_in_threadpool(fleet_incidents.dispatch_for, srv.engine, [r["id"] for r in rows])
    return BundleList(items=[BundleRecord(**r, fleet_dispatch=holds.get(r["id"])) for r in rows], next_cursor=next_cursor)


async def _record(request: Request, bundle_id: str) -> dict[str, Any]:
    engine = service(request).engine
    record = await run_in_threadpool(store.get_bundle, engine, bundle_id)
    if record is None:
        raise ApiError(404, "no_bundle", "no bundle with this id")
    holds = await run_in_threadpool(fleet_incidents.dispatch_for, engine, [record["id"]])
    return dict(record, fleet_dispatch=holds.get(record["id"]))


BundleId = Annotated[str, Path(pattern=BUNDLE_ID)]


@router.get("/bundles/{bundle_id}", response_model=BundleDetail, tags=["bundles"], responses=errors(401, 404, 422))
async def bundle_detail(request: Request, bundle_id: BundleId, user: Reader) -> Any:
    record = await _record(request, bundle_id)
    return await run_in_threadpool(service(request).detail, record)


@router.get(
    "/bundles/{bundle_id}/download",
    tags=["bundles"],
    response_class=Response,
    responses={200: {"content": {"application/gzip": {}}, "description": "the bundle as uploaded"}, **errors(401, 404, 422)},
)
async def download(request: Request, bundle_id: BundleId, user: Reader) -> Response:
    record = await _record(request, bundle_id)
    chunks = await run_in_threadpool(service(request).blobs.stream, record["sha256"])
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in record["terminal_id"])
    name = f"posdiag-{safe}-{record['id']}.tar.gz"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "Content-Length": str(record["size"])}
    return StreamingResponse(iterate_in_threadpool(chunks), media_type="application/gzip", headers=headers)


@router.get("/stats", response_model=Stats, tags=["bundles"], summary="Fleet counts over a window", responses=errors(401, 422))
async def fleet_stats(
    request: Request,
    user: Reader,
    days: Annotated[int | None, Query(ge=1, le=366, description="UTC days counted, today included")] = None,
    top: Annotated[int, Query(ge=1, le=100)] = 10,
) -> Any:
    srv = service(request)
    return await run_in_threadpool(store.stats, srv.engine, days or srv.settings.stats_days, top)
