"""Pages of visit outcomes (docs/outcomes.md): the outcome form on the bundle page, and
`/outcomes`, the measures of how well diagnoses sent people.

The form records through the same checks and the same function as the API and the
terminals' records (outcomes_api.record_and_learn, `via` page). It carries an outcome id
made when the page was drawn, so a form sent twice (a double click, the back button) records
once, and the same form sent again saying something else is refused (409
outcome_id_reused). The pages' words are the catalogue's `outcomes` area.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from remote.server import db, store
from remote.server.outcome_form import RECORDERS, WORDS
from remote.server.outcomes import measures, records
from remote.server.outcomes_api import knowledge_of, record_and_learn
from remote.server.service import Service, User
from remote.server.web import VERDICTS, SignedIn, form_checked, lang_of, page_role, render, service

router = APIRouter(include_in_schema=False)
Recorder = Annotated[User, Depends(page_role(*RECORDERS, refusal="not_allowed", area="outcomes"))]
WINDOW_DAYS = (7, 30, 90, 365)
FIXED = {"true": True, "false": False}


@router.post("/bundles/{bundle_id}/outcome")
async def record_outcome_page(request: Request, user: Recorder, bundle_id: str) -> Response:
    words = WORDS[lang_of(request)]
    form = await form_checked(request)
    if form is None:
        return render(request, "error.html", status=403, user=user, message=words["form_expired"])
    srv = service(request)
    bundle = await run_in_threadpool(store.get_bundle, srv.engine, bundle_id[:64])
    if bundle is None:
        return render(request, "error.html", status=404, user=user, message=words["no_bundle"])

    def said(name: str) -> str:
        return (form.get(name) or [""])[0]

    outcome_id = said("outcome_id").strip().lower() or None
    visited_at = await run_in_threadpool(_first_sent_at, srv, bundle["id"], outcome_id)
    try:
        say = records.said(knowledge_of(srv), said("found"), FIXED.get(said("fixed")), said("note"), user.name, "page", visited_at, outcome_id)
        await run_in_threadpool(record_and_learn, srv, bundle, say)
    except records.OutcomeError as exc:
        message = words["refused"].format(detail=exc.detail, code=exc.code)
        return render(request, "error.html", status=exc.status, user=user, message=message)
    return RedirectResponse(f"/bundles/{quote(bundle['id'], safe='')}#outcome", status_code=303)


def _first_sent_at(srv: Service, bundle_id: str, outcome_id: str | None) -> str | None:
    """The visit time a form sent again was first recorded with (the visit ends when the form
    is first sent), so that the same form says the same thing twice."""
    if outcome_id is None:
        return None
    return next((o["visited_at"] for o in records.of_bundle(srv.engine, bundle_id)["history"] if o["outcome_id"] == outcome_id), None)


@router.get("/outcomes")
async def outcomes_page(request: Request, user: SignedIn) -> Response:
    srv = service(request)
    q = request.query_params
    days = int(q["days"]) if q.get("days", "").isdigit() and int(q["days"]) in WINDOW_DAYS else srv.settings.outcomes.measures_days
    by = q.get("by") if q.get("by") in measures.DIMENSIONS else "verdict"
    chosen = {name: (q.get(name) or "").strip()[:128] or None for name in ("model", "code", "verdict")}
    if chosen["verdict"] not in (None, *VERDICTS):
        chosen["verdict"] = None
    end = db.now()
    start = db.stamp(db.parse_time(end) - timedelta(days=days))
    window = measures.Window(start, end, model=chosen["model"], code=chosen["code"], verdict=chosen["verdict"])
    found = await run_in_threadpool(measures.measure, srv.engine, knowledge_of(srv), window, by)
    return render(
        request, "outcomes.html", user=user, m=found, by=by, days=days, windows=sorted({*WINDOW_DAYS, days}),
        dimensions=measures.DIMENSIONS, chosen=chosen, verdicts=VERDICTS, ow=WORDS[lang_of(request)],
    )  # fmt: skip
