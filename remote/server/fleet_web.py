"""Problems pages: faults ranked by terminals affected, business and issuer outcomes, one
problem."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from remote.server import db
from remote.server.fleet import charts, problems, triage
from remote.server.web import WORDS, SignedIn, lang_of, render, service

router = APIRouter(include_in_schema=False)
KINDS = ("faults", "outcomes", "all")  # the Problems tabs; faults (verdict above none) first


@router.get("/problems")
async def problems_page(request: Request, user: SignedIn) -> Response:
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
async def problem_page(request: Request, user: SignedIn, problem_id: str) -> Response:
    found = await run_in_threadpool(problems.get_problem, service(request).engine, problem_id[:32])
    if found is None:
        return render(request, "error.html", status=404, user=user, message=WORDS[lang_of(request)]["no_problem"])
    found["spark"] = charts.sparkline(found["daily"], datetime.now(UTC).date())
    params = {"label_key": "", "label_value": "", "model": "", "firmware": "", "new": "", "kind": "all", "verdict": ""}
    return render(
        request, "problems.html", user=user, items=[found], next_cursor=None, params=params, error=None, kinds=KINDS,
        verdicts=problems.VERDICT_ORDER, one=True,
    )  # fmt: skip
