"""Fleet pages: Problems (the support team's main view), Incidents; the pieces the other
pages add (open-outage banner, terminal health, bundle links) are built here too."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from remote.server import db, quotas
from remote.server.fleet import charts, incidents, inventory, problems, triage
from remote.server.service import Service
from remote.server.web import WORDS, lang_of, page_user, render, service, to_login

router = APIRouter(include_in_schema=False)
KINDS = ("faults", "outcomes", "all")  # the Problems tabs; faults (verdict above none) first
HEALTH_CHARTS = (
    ("battery_pct", "Battery %"), ("battery_wear_ratio", "Battery health (share of design)"),
    ("max_temp_c", "Temperature °C"), ("free_mib", "Free space MiB"), ("signal_dbm", "Signal dBm"),
    ("emmc_life_used_pct", "eMMC life used %"),
)  # fmt: skip


def open_outages(srv: Service) -> list[dict[str, Any]]:
    """For the banner on every page."""
    return [i for i in incidents.list_incidents(srv.engine, "open", limit=20) if i["kind"] == "outage"]


def terminal_health(srv: Service, terminal_id: str) -> dict[str, Any]:
    fleet = inventory.get_terminal(srv.engine, srv.settings.fleet, terminal_id, db.now())
    rows = inventory.health_series(srv.engine, terminal_id)
    lines = [line for metric, title in HEALTH_CHARTS if (line := charts.health_line(rows, metric, title))]
    usage = quotas.usage(srv.engine, terminal_id, srv.quota_limits)
    return {"fleet": fleet, "health_charts": lines, "covering": srv.fleet.notices(terminal_id), "usage": usage}


def bundle_fleet(srv: Service, bundle_id: str) -> dict[str, Any]:
    links = incidents.bundle_links(srv.engine, bundle_id) or {}
    hold = incidents.dispatch_for(srv.engine, [bundle_id]).get(bundle_id)
    return {"problem_id": links.get("problem_id"), "fleet_dispatch": hold, "clock_clamped": links.get("clock_clamped")}


@router.get("/problems")
async def problems_page(request: Request) -> Response:
    user = await page_user(request)
    if user is None:
        return to_login(request)
    srv = service(request)
    q = request.query_params
    labels = {}
    key, value = q.get("label_key", "").strip(), q.get("label_value", "").strip()
    if key and value:
        labels[key[:32]] = value[:64]
    error = None
    new = q.get("new") == "24h"
    kind = q.get("kind") if q.get("kind") in KINDS else KINDS[0]
    verdict = q.get("verdict") if q.get("verdict") in problems.VERDICT_ORDER else ""
    try:
        items, next_cursor = await run_in_threadpool(
            lambda: problems.list_problems(
                srv.engine, labels=labels, model=q.get("model") or None, firmware=q.get("firmware") or None,
                limit=srv.settings.page_size, cursor=q.get("cursor") or None,
                first_seen_since=triage.since_24h(db.now()) if new else None, verdicts=problems.verdicts_of(kind, verdict),
            )
        )  # fmt: skip
    except ValueError as exc:
        items, next_cursor, error = [], None, str(exc)
    today = datetime.now(UTC).date()
    for item in items:
        item["spark"] = charts.sparkline(item["daily"], today)
    params = {
        "label_key": key, "label_value": value, "model": q.get("model", ""), "firmware": q.get("firmware", ""),
        "new": "24h" if new else "", "kind": kind, "verdict": verdict,
    }  # fmt: skip
    return render(
        request, "problems.html", user=user, items=items, next_cursor=next_cursor, params=params, error=error, kinds=KINDS,
        verdicts=problems.VERDICT_ORDER, one=False,
    )  # fmt: skip


@router.get("/problems/{problem_id}")
async def problem_page(request: Request, problem_id: str) -> Response:
    user = await page_user(request)
    if user is None:
        return to_login(request)
    found = await run_in_threadpool(problems.get_problem, service(request).engine, problem_id[:32])
    if found is None:
        return render(request, "error.html", status=404, user=user, message=WORDS[lang_of(request)]["no_problem"])
    found["spark"] = charts.sparkline(found["daily"], datetime.now(UTC).date())
    params = {"label_key": "", "label_value": "", "model": "", "firmware": "", "new": "", "kind": "all", "verdict": ""}
    return render(
        request, "problems.html", user=user, items=[found], next_cursor=None, params=params, error=None, kinds=KINDS,
        verdicts=problems.VERDICT_ORDER, one=True,
    )  # fmt: skip
