"""/api/v1 of visit outcomes and learning (docs/outcomes.md, docs/api.md).

Terminals send outcome records (`posdiag visit close`) and fetch their model's learned table
with their token; support users and technicians record and read outcomes, read measures and
tables; an admin switches learning and reverts tables. `install(app)` adds the routes and
the outcome gauges of /metrics.
"""

from __future__ import annotations

import hmac
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from remote.outcome_wire import MAX_OUTCOME_BYTES, record_signature
from remote.server import db, store
from remote.server.api import (
    Admin,
    ApiError,
    BundleId,
    Reader,
    Requester,
    bearer_scheme,
    errors,
    label_params,
    read_capped,
    service,
    terminal_auth,
    time_param,
)
from remote.server.outcomes import knowledge, measures, records, tables
from remote.server.outcomes.learning import FLEET, Params
from remote.server.outcomes.models import (
    BundleOutcomes,
    LearnedHistory,
    LearnedTable,
    LearningModelRef,
    LearningRevert,
    LearningStatus,
    LearningSwitch,
    Measures,
    Outcome,
    OutcomeIn,
    OutcomeRecord,
    Rebuilt,
)
from remote.server.service import Service
from remote.wire import LABEL_KEY

log = logging.getLogger("posdiag.support")
router = APIRouter(prefix="/api/v1")


def knowledge_of(srv: Service) -> knowledge.KnowledgeView:
    return knowledge.load(tuple(srv.settings.outcomes.knowledge_extra_paths))


def rebuild(srv: Service, by: str) -> dict[str, int]:
    s = srv.settings.outcomes
    return tables.rebuild(srv.engine, knowledge_of(srv), Params.of(s), s.learning_window_days, by)


def record_and_learn(srv: Service, bundle: dict[str, Any], say: records.Said) -> tuple[dict[str, Any], bool]:
    """Store the outcome, then rebuild the learned tables from it (a failed rebuild costs no
    outcome: the next one, or `posdiag-support learning rebuild`, rebuilds). Every way in
    (the API, a terminal's record, the bundle page's form) records through this."""
    diagnosis = srv.detail(bundle)["diagnosis"]
    stored, new = records.record(srv.engine, bundle, diagnosis if isinstance(diagnosis, dict) else {}, say)
    if new:
        try:
            rebuild(srv, say.by or bundle["terminal_id"])
        except sa.exc.SQLAlchemyError:
            log.exception("learned tables not rebuilt after outcome %s", say.outcome_id)
    return stored, new


def _refused(exc: records.OutcomeError | tables.TableError, status: int | None = None) -> ApiError:
    return ApiError(status or getattr(exc, "status", 422), exc.code, exc.detail)


# -- outcomes -------------------------------------------------------------------------------


@router.post(
    "/bundles/{bundle_id}/outcome",
    status_code=201,
    response_model=Outcome,
    tags=["outcomes"],
    summary="Record what a visit found for a bundle (support, technician, admin)",
    responses={200: {"model": Outcome, "description": "this outcome id was recorded before; the stored outcome"}, **errors(401, 403, 404, 409, 422)},
)
async def record_outcome(request: Request, bundle_id: BundleId, body: OutcomeIn, user: Requester) -> Any:
    srv = service(request)
    bundle = await run_in_threadpool(store.get_bundle, srv.engine, bundle_id)
    if bundle is None:
        raise ApiError(404, "no_bundle", "no bundle with this id")
    try:
        say = records.said(knowledge_of(srv), body.found, body.fixed, body.note, user.name, "api", body.visited_at, body.outcome_id)
        stored, new = await run_in_threadpool(record_and_learn, srv, bundle, say)
    except records.OutcomeError as exc:
        raise _refused(exc) from None
    return JSONResponse(Outcome(**stored).model_dump(), status_code=201 if new else 200)


@router.get(
    "/bundles/{bundle_id}/outcome",
    response_model=BundleOutcomes,
    tags=["outcomes"],
    summary="A bundle's current outcome and every earlier one",
    responses=errors(401, 404, 422),
)
async def bundle_outcome(request: Request, bundle_id: BundleId, user: Reader) -> Any:
    srv = service(request)
    if await run_in_threadpool(store.get_bundle, srv.engine, bundle_id) is None:
        raise ApiError(404, "no_bundle", "no bundle with this id")
    return await run_in_threadpool(records.of_bundle, srv.engine, bundle_id.lower())


OUTCOME_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OutcomeRecord"}}},
        "description": "a posdiag.outcome/1 record, signed with the terminal's token",
    }
}


@router.post(
    "/outcomes",
    status_code=201,
    response_model=Outcome,
    tags=["terminal"],
    summary="An outcome record from a terminal (posdiag visit close; terminal token)",
    openapi_extra=OUTCOME_BODY,
    responses={200: {"model": Outcome, "description": "this outcome id was recorded before; the stored outcome"}, **errors(400, 401, 403, 409, 413, 422)},
)
async def terminal_outcome(
    request: Request,
    terminal: Annotated[dict[str, Any], Depends(terminal_auth)],
    _: Annotated[Any, Depends(bearer_scheme)],
    idempotency_key: Annotated[str | None, Header(max_length=64, description="the outcome_id")] = None,
) -> Any:
    srv = service(request)
    raw = _record_json(await read_capped(request, MAX_OUTCOME_BYTES))
    try:
        sent = OutcomeRecord.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ApiError(422, "bad_record", f"outcome record: {'.'.join(map(str, first['loc']))}: {first['msg']}"[:300]) from None
    if idempotency_key and idempotency_key.strip().lower() != sent.outcome_id.lower():
        raise ApiError(422, "idempotency_key_mismatch", "Idempotency-Key differs from the record's outcome_id")
    if sent.terminal_id != terminal["id"]:
        raise ApiError(403, "wrong_terminal", "the record names another terminal than the token's")
    if not hmac.compare_digest(sent.signature, record_signature(bytes.fromhex(terminal["token_sha256"]), raw)):
        raise ApiError(422, "bad_signature", "the record's signature does not match it and the terminal's token")
    try:
        say = records.said(knowledge_of(srv), sent.found, sent.fixed, sent.note, sent.by, "terminal", sent.visited_at, sent.outcome_id)
        bundle = await run_in_threadpool(_bundle_of_record, srv, terminal["id"], sent.bundle_id, say.visited_at)
        stored, new = await run_in_threadpool(record_and_learn, srv, bundle, say)
    except records.OutcomeError as exc:
        raise _refused(exc) from None
    return JSONResponse(Outcome(**stored).model_dump(), status_code=201 if new else 200)


def _record_json(body: bytes) -> dict[str, Any]:
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "bad_record", "the outcome record is not JSON") from None
    if not isinstance(raw, dict):
        raise ApiError(400, "bad_record", "the outcome record is a JSON object")
    return raw


def _bundle_of_record(srv: Service, terminal_id: str, bundle_id: str | None, visited_at: str) -> dict[str, Any]:
    """The bundle a terminal's record is about: named, or its newest dispatched one.
    Refusals are 4xx a terminal does not retry (404 would tell it the server is not there)."""
    if bundle_id is None:
        found = records.dispatched_bundle(srv.engine, terminal_id, visited_at)
        if found is None:
            raise records.OutcomeError(422, "no_dispatched_bundle", "this terminal has no bundle dispatched onsite or remote before the visit; name one")
        return found
    found = store.get_bundle(srv.engine, bundle_id)
    if found is None:
        raise records.OutcomeError(422, "no_bundle", f"no bundle {bundle_id} on the server")
    if found["terminal_id"] != terminal_id:
        raise records.OutcomeError(403, "wrong_terminal", "the bundle belongs to another terminal")
    return found


# -- measures -------------------------------------------------------------------------------


@router.get(
    "/outcomes/measures",
    response_model=Measures,
    tags=["outcomes"],
    summary="Dispatch precision, no-fault-found and first-time fix over a window of visits; label.KEY=VALUE filters",
    responses=errors(401, 422),
)
async def outcome_measures(
    request: Request,
    user: Reader,
    since: Annotated[datetime | None, Query(description="visits at or after (ISO-8601 with zone); default: [server.outcomes] measures_days ago")] = None,
    until: Annotated[datetime | None, Query(description="visits before; default now")] = None,
    by: Annotated[str | None, Query(max_length=40, description="group by verdict, cause (predicted top cause), code, model, firmware or label.KEY")] = None,
    model: Annotated[str | None, Query(max_length=128)] = None,
    firmware: Annotated[str | None, Query(max_length=128)] = None,
    code: Annotated[str | None, Query(max_length=64)] = None,
    verdict: Annotated[str | None, Query(max_length=16)] = None,
    cause: Annotated[str | None, Query(max_length=128, description="the predicted top cause")] = None,
) -> Any:
    srv = service(request)
    if by is not None and by not in measures.DIMENSIONS and not (by.startswith("label.") and LABEL_KEY.fullmatch(by[6:])):
        raise ApiError(422, "invalid_request", f"by: one of {', '.join(measures.DIMENSIONS)} or label.KEY")
    end = time_param(until) or db.now()
    start = time_param(since) or db.stamp(db.parse_time(end) - timedelta(days=srv.settings.outcomes.measures_days))
    labels = tuple(sorted(label_params(request).items()))
    window = measures.Window(start, end, model, firmware, code, verdict, cause, labels)
    return await run_in_threadpool(measures.measure, srv.engine, knowledge_of(srv), window, by)


# -- learned tables -------------------------------------------------------------------------


@router.get(
    "/terminals/{terminal_id}/learned",
    response_model=LearnedTable,
    tags=["terminal"],
    summary="The learned table for this terminal's model (terminal token)",
    responses=errors(401, 403, 422),
)
async def terminal_learned(
    request: Request,
    terminal_id: Annotated[str, Path(max_length=128)],
    terminal: Annotated[dict[str, Any], Depends(terminal_auth)],
) -> Any:
    if terminal["id"] != terminal_id:
        raise ApiError(403, "wrong_terminal", "a terminal reads only its own table")
    engine = service(request).engine
    return await run_in_threadpool(lambda: tables.served(engine, tables.model_of_terminal(engine, terminal_id)))


@router.get("/learning", response_model=LearningStatus, tags=["learning"], summary="Whether learning is on; each model's table", responses=errors(401))
async def learning_status(request: Request, user: Reader) -> Any:
    return await run_in_threadpool(tables.status, service(request).engine)


@router.get(
    "/learning/table",
    response_model=LearnedHistory,
    tags=["learning"],
    summary='A model\'s table as served now and every version ("*": the fleet-wide table)',
    responses=errors(401, 422),
)
async def learned_table(request: Request, user: Reader, model: Annotated[str, Query(min_length=1, max_length=128)]) -> Any:
    engine = service(request).engine

    def read() -> dict[str, Any]:
        return {"model": model, "served": tables.served(engine, model), "versions": tables.history(engine, model)}

    return await run_in_threadpool(read)


@router.post(
    "/learning/switch",
    response_model=LearningStatus,
    tags=["learning"],
    summary="Learning on or off, for the fleet or one model (admin); the status after",
    responses=errors(401, 403, 422),
)
async def learning_switch(request: Request, body: LearningSwitch, user: Admin) -> Any:
    srv = service(request)
    await run_in_threadpool(tables.switch, srv.engine, body.model or FLEET, body.enabled, user.name)
    if body.enabled:
        await run_in_threadpool(rebuild, srv, user.name)
    return await run_in_threadpool(tables.status, srv.engine)


@router.post("/learning/revert", response_model=Rebuilt, tags=["learning"], summary="Serve an earlier version of a model's table again, pinned (admin)", responses=errors(401, 403, 404, 422))
async def learning_revert(request: Request, body: LearningRevert, user: Admin) -> Any:
    try:
        new = await run_in_threadpool(tables.revert, service(request).engine, body.model, body.version, user.name)
    except tables.TableError as exc:
        raise _refused(exc, 404) from None
    return Rebuilt(changed={body.model: new})


@router.post("/learning/resume", response_model=Rebuilt, tags=["learning"], summary="Unpin a model: learn for it again (admin)", responses=errors(401, 403, 422))
async def learning_resume(request: Request, body: LearningModelRef, user: Admin) -> Any:
    srv = service(request)
    s = srv.settings.outcomes

    def resume() -> dict[str, int]:
        return tables.resume(srv.engine, knowledge_of(srv), Params.of(s), s.learning_window_days, body.model, user.name)

    return Rebuilt(changed=await run_in_threadpool(resume))


@router.post("/learning/rebuild", response_model=Rebuilt, tags=["learning"], summary="Rebuild every table from the outcomes now (admin)", responses=errors(401, 403))
async def learning_rebuild(request: Request, user: Admin) -> Any:
    srv = service(request)
    return Rebuilt(changed=await run_in_threadpool(rebuild, srv, user.name))


# -- gauges ---------------------------------------------------------------------------------


class OutcomeGauges:
    """The outcome gauges of /metrics, per dispatch verdict over [server.outcomes]
    measures_days, read from the database at scrape time: the first gauge of a scrape
    measures, the others read the same measure."""

    def __init__(self, srv: Service) -> None:
        self.srv = srv
        self._groups: dict[str, Any] = {}

    def _measure(self) -> None:
        end = datetime.now(UTC)
        window = measures.Window(db.stamp(end - timedelta(days=self.srv.settings.outcomes.measures_days)), db.stamp(end))
        found = measures.measure(self.srv.engine, knowledge_of(self.srv), window, "verdict")
        self._groups = {g["key"] or "unknown": g for g in found["groups"]}

    def reading(self, field: str, first: bool) -> Any:
        def read() -> dict[str, float]:
            if first:
                self._measure()
            return {f'verdict="{key}"': float(g[field] or 0) for key, g in self._groups.items()}

        return read


GAUGES = (
    ("posdiag_outcome_visits", "visits", "Visits with an outcome in the measures window, by dispatch verdict."),
    ("posdiag_outcome_found_as_predicted_ratio", "found_as_predicted_rate", "Share of visits that found the predicted top cause, by verdict."),
    ("posdiag_outcome_found_in_top3_ratio", "found_in_top3_rate", "Share of visits that found one of the first three causes, by verdict."),
    ("posdiag_outcome_no_fault_found_ratio", "no_fault_found_rate", "Share of visits that found no fault, by verdict."),
    ("posdiag_outcome_fixed_first_time_ratio", "fixed_first_time_rate", "Share of bundles fixed on their first visit, by verdict."),
)


def install(app: FastAPI) -> None:
    """The routes and the gauges. A knowledge-base extra path that cannot be read stops the start."""
    srv: Service = app.state.service
    knowledge_of(srv)
    gauges = OutcomeGauges(srv)
    for i, (name, field, help_text) in enumerate(GAUGES):
        srv.metrics.gauge(name, help_text, gauges.reading(field, first=i == 0))
    app.include_router(router)
    document(app)


def document(app: FastAPI) -> None:
    """The outcome record's schema (read by hand, after the token check) into the OpenAPI components."""
    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = base()
        body = OutcomeRecord.model_json_schema(ref_template="#/components/schemas/{model}", by_alias=True)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(body.pop("$defs", {}))
        components["OutcomeRecord"] = body
        return schema

    app.openapi = openapi
