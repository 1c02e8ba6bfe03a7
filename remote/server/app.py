"""create_app(): one FastAPI app serving the API, the pages, /healthz and /metrics."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from remote.server import admin_api, admin_web, api, budgets, fleet_api, fleet_web, home_web, incidents_web, outcomes_api, outcomes_web, web
from remote.server.blobs import BlobError
from remote.server.ingest import IngestError
from remote.server.models import ErrorBody, Health
from remote.server.service import Service
from remote.server_settings import ServerSettings

log = logging.getLogger("posdiag.support")
HEALTH_SECONDS = 2.0  # a database that takes longer than this to answer SELECT 1 is reported down


class RefuseNul:
    """PostgreSQL cannot store or compare a NUL character: a URL that carries one (%00 in
    the path or the query) is refused before any handler sees it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (b"%00" in (scope.get("raw_path") or b"") or b"%00" in scope["query_string"]):
            await api.error_response(422, "invalid_request", "a NUL character in the URL")(scope, receive, send)
            return
        await self.app(scope, receive, send)


def wants_page(request: Request) -> bool:
    """A browser asking for a page, not a client of the API."""
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


def create_app(db_url: str, data_dir: Path, settings: ServerSettings) -> FastAPI:
    service = Service(db_url, Path(data_dir), settings)
    app = FastAPI(
        title="posdiag support server",
        version="1",
        description="Bundle ingest from terminals, search for support, probe requests. "
        "Errors are JSON {error, detail}.",
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN; the document itself is served
        redoc_url=None,
    )
    app.state.service = service
    app.router.add_event_handler("startup", service.fleet.start)
    app.router.add_event_handler("startup", service.fleet_queue.start)
    app.router.add_event_handler("shutdown", service.close)

    @app.exception_handler(api.ApiError)
    async def _api_error(_: Request, exc: api.ApiError) -> JSONResponse:
        return api.error_response(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(web.PageAnswer)
    async def _page_answer(_: Request, exc: web.PageAnswer) -> Response:
        return exc.response

    @app.exception_handler(IngestError)
    async def _ingest_error(_: Request, exc: IngestError) -> JSONResponse:
        return api.error_response(exc.status, exc.code, exc.detail)

    @app.exception_handler(BlobError)
    async def _blob_error(_: Request, exc: BlobError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)}
        return api.error_response(503, "blob_store_unavailable", "the blob store failed; try again", headers)

    @app.exception_handler(sa.exc.OperationalError)
    async def _statement_timeout(_: Request, exc: sa.exc.OperationalError) -> JSONResponse:
        if not budgets.timed_out(exc):
            raise exc
        detail = f"the query took longer than {settings.statement_timeout_seconds:g} s; narrow the filters"
        return api.error_response(503, "query_timeout", detail, {"Retry-After": "10"})

    @app.exception_handler(budgets.ReadsBusy)
    async def _reads_busy(_: Request, exc: budgets.ReadsBusy) -> JSONResponse:
        return api.error_response(503, "busy", f"{exc}; try again shortly", {"Retry-After": "2"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return api.error_response(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}"[:300])

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, _: ClientDisconnect) -> Response:
        # Nobody is left to answer; one line, no traceback.
        where = request.client.host if request.client else "?"
        log.info("%s %s: the client went away before its request body was complete", where, request.url.path)
        return Response(status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        if exc.status_code in (404, 405) and wants_page(request):
            return await web.not_found_page(request, exc.status_code)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return api.error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.get("/healthz", response_model=Health, tags=["ops"], responses={503: {"model": ErrorBody}})
    async def healthz() -> object:
        """The database is pinged in threads of its own (uploads waiting on a slow blob store
        fill the shared pool); the blob store is never asked: its breaker says how it is."""
        try:
            await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(service.health_pool, service.ping), HEALTH_SECONDS)
        except (sa.exc.SQLAlchemyError, TimeoutError):
            return api.error_response(503, "database_unavailable", f"the database does not answer within {HEALTH_SECONDS:g} s")
        failing = service.blobs.breaker.failing
        return Health(status="ok", database=service.engine.dialect.name, blob_store="failing" if failing else "ok")

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format 0.0.4"}},
    )
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")

    app.add_middleware(budgets.QueryBudget, settings=settings)
    app.add_middleware(RefuseNul)
    app.include_router(api.router)
    app.include_router(fleet_api.router)
    app.include_router(admin_api.router)
    app.include_router(home_web.router)
    app.include_router(web.router)
    app.include_router(fleet_web.router)
    app.include_router(incidents_web.router)
    app.include_router(admin_web.router)
    app.include_router(outcomes_web.router)
    outcomes_api.install(app)
    fleet_api.document(app)
    return app
