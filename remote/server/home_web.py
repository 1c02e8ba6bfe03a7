"""The home page: the fleet today. Open incidents first, then what each count asks of
support (each a link to its list), then terminals failing per hour against the expected
band, and a line of what visits found (/outcomes). The 14-day overview is at /overview
(web.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from datetime import timedelta

from remote.server import db
from remote.server.fleet import charts, triage
from remote.server.outcomes import measures
from remote.server.outcomes_api import knowledge_of
from remote.server.web import SignedIn, render, service

router = APIRouter(include_in_schema=False)


@router.get("/")
async def home(request: Request, user: SignedIn) -> Response:
    srv = service(request)
    now = db.now()
    found = await run_in_threadpool(triage.open_incidents, srv.engine)
    counts = await run_in_threadpool(triage.counts, srv.engine, srv.settings.fleet, now)
    hours = await run_in_threadpool(triage.failing_per_hour, srv.engine, now)
    days = srv.settings.outcomes.measures_days
    window = measures.Window(db.stamp(db.parse_time(now) - timedelta(days=days)), now)
    visits = await run_in_threadpool(measures.measure, srv.engine, knowledge_of(srv), window)
    return render(
        request, "home.html", user=user, incidents=found, counts=counts, since=triage.since_24h(now),
        chart=charts.band_chart(hours), visits=visits["total"], visit_days=days,
    )  # fmt: skip
