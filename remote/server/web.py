"""Server-rendered pages for support staff: Jinja2 with autoescape, no JavaScript.

Everything on a page that came from a terminal is escaped by the template engine. Every
form carries a CSRF token (see auth.py); the session cookie is HttpOnly and SameSite=Lax.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from remote.server import auth, chart, db, store
from remote.server.fleet import inventory as fleet_inventory
from remote.server.api import SESSION_COOKIE
from remote.server.ingest import clean
from remote.server.service import Service, User

CSRF_COOKIE = "posdiag_csrf"
FILTERS = ("terminal", "code", "cause", "category", "model", "firmware", "since", "until")
# The server does not import the terminal's probe code; these are the probes DESIGN.md names.
PROBE_NAMES = ("card_reader", "printer", "power", "storage", "network", "system")

templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
)


def _show(value: Any) -> str:
    """One evidence item or action, whatever shape the agent gave it, as plain text."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if "en" in value or "zh" in value:
            return " / ".join(str(value[k]) for k in ("en", "zh") if value.get(k))
        key = value.get("id") or value.get("finding")
        if key:
            text = f"{key}: {value['detail']}" if value.get("detail") else str(key)
            weight = _finite(value.get("weight"))
            return text + (f" (weight {weight:g})" if weight is not None else "")
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _finite(value: Any) -> float | None:
    """A JSON number as a float; None for anything else, and for integers too big for one."""
    if not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _percent(value: Any) -> str:
    number = _finite(value)
    return "" if number is None or not math.isfinite(number * 100) else f"{number * 100:.0f}%"


def _items(value: Any) -> list[Any]:
    """What a page loops over: a JSON list, or nothing (a terminal may send any shape)."""
    return value if isinstance(value, list) else []


templates.filters["show"] = _show
templates.filters["percent"] = _percent
templates.filters["items"] = _items
templates.globals["qs"] = lambda **kw: urlencode({k: v for k, v in kw.items() if v})

router = APIRouter(include_in_schema=False)


def service(request: Request) -> Service:
    return request.app.state.service


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    srv = service(request)
    nonce = request.cookies.get(CSRF_COOKIE) or auth.new_nonce()
    if context.get("user") is not None:
        context.setdefault("open_outages", fleet_web.open_outages(srv))
    html = templates.get_template(name).render(
        csrf=srv.signer.csrf_token(nonce), path=request.url.path, user=context.pop("user", None), **context
    )
    response = HTMLResponse(html, status_code=status)
    if request.cookies.get(CSRF_COOKIE) != nonce:
        response.set_cookie(CSRF_COOKIE, nonce, httponly=True, samesite="lax", secure=_https(request))
    return response


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


async def page_user(request: Request) -> User | None:
    return await run_in_threadpool(service(request).user_by_session, request.cookies.get(SESSION_COOKIE))


def to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target)}", status_code=303)


async def form_checked(request: Request) -> dict[str, Any] | None:
    """The posted form if its CSRF token matches this browser's cookie, else None."""
    form = await request.form()
    ok = service(request).signer.check_csrf(request.cookies.get(CSRF_COOKIE), str(form.get("csrf", "")))
    return {k: form.getlist(k) for k in form} if ok else None


def _safe_next(target: str) -> str:
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


# -- sign-in --------------------------------------------------------------------------------


@router.get("/login")
async def login_page(request: Request, next: str = "/") -> Response:
    return render(request, "login.html", next=_safe_next(next), error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await form_checked(request)
    if form is None:
        return render(request, "login.html", status=403, next="/", error="The form expired; please try again.")
    name, password = clean(form.get("name", [""])[0]), form.get("password", [""])[0]
    target = _safe_next(form.get("next", ["/"])[0])
    srv = service(request)
    user = await run_in_threadpool(srv.user_by_password, name, password)
    if user is None:
        return render(request, "login.html", status=401, next=target, error="Wrong name or password.")
    response = RedirectResponse(target, status_code=303)
    lifetime = srv.settings.session_hours * 3600
    response.set_cookie(
        SESSION_COOKIE,
        srv.signer.session_cookie(user.name, lifetime),
        max_age=int(lifetime),
        httponly=True,
        samesite="lax",
        secure=_https(request),
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    if await form_checked(request) is None:
        return Response("bad form", status_code=403)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


# -- pages ----------------------------------------------------------------------------------


@router.get("/")
async def overview(request: Request) -> Response:
    user = await page_user(request)
    if user is None:
        return to_login(request)
    srv = service(request)
    days = srv.settings.stats_days
    end = datetime.now(UTC)
    first_day = (end - timedelta(days=days - 1)).date()
    since = datetime.combine(first_day, datetime.min.time(), UTC)
    stats = await run_in_threadpool(store.stats, srv.engine, db.stamp(since), db.stamp(end))
    recent, _ = await run_in_threadpool(store.list_bundles, srv.engine, store.BundleFilter(), 10)
    return render(
        request, "overview.html", user=user, stats=stats, days=days, recent=recent,
        chart=chart.build(stats["per_day"], first_day, days),
    )  # fmt: skip


@router.get("/bundles")
async def bundle_list(request: Request) -> Response:
    user = await page_user(request)
    if user is None:
        return to_login(request)
    srv = service(request)
    params = {k: request.query_params.get(k, "").strip() for k in FILTERS}
    error = None
    try:
        flt = store.BundleFilter(
            **{k: params[k] or None for k in FILTERS if k not in ("since", "until")},
            since=_day(params["since"]),
            until=_day(params["until"], next_day=True),
        )
        rows, next_cursor = await run_in_threadpool(
            store.list_bundles, srv.engine, flt, srv.settings.page_size, request.query_params.get("cursor") or None
        )
    except (ValueError, store.StoreError) as exc:
        rows, next_cursor, error = [], None, str(getattr(exc, "detail", exc))
    return render(request, "bundles.html", user=user, rows=rows, params=params, next_cursor=next_cursor, error=error)


def _day(text: str, next_day: bool = False) -> str | None:
    """A filter date (YYYY-MM-DD, UTC) as a stored time; `until` includes its whole day."""
    if not text:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        return db.stamp(day + timedelta(days=1) if next_day else day)
    except (ValueError, OverflowError):
        raise ValueError(f"not a date (YYYY-MM-DD): {text[:40]}") from None


@router.get("/bundles/{bundle_id}")
async def bundle_page(request: Request, bundle_id: str) -> Response:
    user = await page_user(request)
    if user is None:
        return to_login(request)
    srv = service(request)
    record = await run_in_threadpool(store.get_bundle, srv.engine, bundle_id[:64])
    if record is None:
        return render(request, "error.html", status=404, user=user, message="No bundle with this id.")
    detail = await run_in_threadpool(srv.detail, record)
    probes = detail["probes"]
    if isinstance(probes, dict):
        probes = probes.get("probes", [])
    fleet = await run_in_threadpool(fleet_web.bundle_fleet, srv, record["id"])
    return render(
        request, "bundle.html", user=user, r=record, d=detail["diagnosis"], manifest=detail["manifest"],
        probes=probes if isinstance(probes, list) else [], logs=detail["logs"], fleet=fleet,
    )  # fmt: skip


@router.get("/terminals")
async def terminal_list(request: Request) -> Response:
    user = await page_user(request)
    if user is None:
        return to_login(request)
    srv = service(request)
    status = request.query_params.get("status") or None
    status = status if status in ("ok", "missing", "at_risk") else None
    try:
        rows, next_cursor = await run_in_threadpool(
            fleet_inventory.list_terminals, srv.engine, srv.settings.fleet, db.now(), status, {},
            srv.settings.page_size, request.query_params.get("cursor") or None,
        )  # fmt: skip
    except ValueError:
        rows, next_cursor = [], None
    counts = await run_in_threadpool(fleet_inventory.status_counts, srv.engine, srv.settings.fleet, db.now())
    return render(request, "terminals.html", user=user, rows=rows, shown=status, counts=counts, next_cursor=next_cursor)


@router.get("/terminals/{terminal_id}")
async def terminal_page(request: Request, terminal_id: str, requested: str = "") -> Response:
    user = await page_user(request)
    if user is None:
        return to_login(request)
    srv = service(request)
    terminal = await run_in_threadpool(store.get_terminal, srv.engine, terminal_id)
    if terminal is None:
        return render(request, "error.html", status=404, user=user, message="No terminal with this id.")
    rows, _ = await run_in_threadpool(
        store.list_bundles, srv.engine, store.BundleFilter(terminal=terminal_id), srv.settings.page_size
    )
    commands = await run_in_threadpool(store.list_commands, srv.engine, terminal_id)
    fleet = await run_in_threadpool(fleet_web.terminal_health, srv, terminal_id)
    return render(
        request, "terminal.html", user=user, t=terminal, rows=rows, commands=commands,
        probe_names=PROBE_NAMES, requested=requested, **fleet,
    )  # fmt: skip


@router.post("/terminals/{terminal_id}/probes")
async def request_probes(request: Request, terminal_id: str) -> Response:
    user = await page_user(request)
    if user is None:
        return to_login(request)
    form = await form_checked(request)
    if form is None:
        return render(request, "error.html", status=403, user=user, message="The form expired; please try again.")
    chosen = [p for p in form.get("probe", []) if p in PROBE_NAMES]
    code = clean(form.get("code", [""])[0] or "").strip()[:64] or None
    srv = service(request)
    try:
        command = await run_in_threadpool(
            store.add_command, srv.engine, terminal_id, chosen or None, code, user.name
        )
    except store.StoreError as exc:
        return render(request, "error.html", status=404, user=user, message=exc.detail)
    return RedirectResponse(f"/terminals/{quote(terminal_id, safe='')}?requested={command['id']}", status_code=303)


from remote.server import fleet_web  # noqa: E402  (fleet_web builds on this module's helpers)
