"""Incident pages: the list, one incident (what happened, to whom, what was done), and the
forms that acknowledge, note, resolve or dismiss it (support and admin roles, CSRF)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from remote.server.fleet import charts, incident_actions, incident_view, incidents
from remote.server.service import User
from remote.server.web import WORDS, SignedIn, form_checked, lang_of, page_role, render, service

router = APIRouter(include_in_schema=False)
ACTS = ("ack", "note", "resolve", "dismiss")
ACTORS = ("support", "admin")
Actor = Annotated[User, Depends(page_role(*ACTORS, refusal="support_only"))]


@router.get("/incidents")
async def incidents_page(request: Request, user: SignedIn, status: str = "all") -> Response:
    shown = status if status in ("open", "closed", "dismissed") else "all"
    items = await run_in_threadpool(incidents.list_incidents, service(request).engine, shown)
    return render(request, "incidents.html", user=user, items=items, shown=shown)


@router.get("/incidents/{incident_id}")
async def incident_page(request: Request, user: SignedIn, incident_id: str, done: str = "") -> Response:
    srv = service(request)
    found = await run_in_threadpool(incident_view.page, srv.engine, incident_id[:36], srv.settings.fleet)
    if found is None:
        return render(request, "error.html", status=404, user=user, message=WORDS[lang_of(request)]["no_incident"])
    return render(
        request, "incident.html", user=user, chart=charts.band_chart(found.pop("slots")), may_act=user.role in ACTORS,
        done=done if done in ACTS else "", **found,
    )  # fmt: skip


@router.post("/incidents/{incident_id}/{act}")
async def incident_act(request: Request, user: Actor, incident_id: str, act: str) -> Response:
    words = WORDS[lang_of(request)]
    if act not in ACTS:
        return render(request, "error.html", status=404, user=user, message=words["no_page"])
    form = await form_checked(request)
    if form is None:
        return render(request, "error.html", status=403, user=user, message=words["form_expired"])
    note = (form.get("note") or [""])[0]
    srv = service(request)
    hooks, engine, who, key = srv.settings.webhooks, srv.engine, user.name, incident_id[:36]
    try:
        if act == "note":
            await run_in_threadpool(incident_actions.add_note, engine, key, who, note, "web")
        else:
            action = {"ack": incident_actions.acknowledge, "resolve": incident_actions.resolve, "dismiss": incident_actions.dismiss}[act]
            await run_in_threadpool(action, engine, hooks, key, who, note, "web")
    except incident_actions.Refused as exc:
        message = words.get("refused_" + exc.code, exc.detail)
        return render(request, "error.html", status=exc.status, user=user, message=message)
    return RedirectResponse(f"/incidents/{quote(key, safe='')}?done={act}", status_code=303)
