"""Server-rendered pages for support staff: Jinja2 with autoescape; the only script turns
UTC times into the viewer's zone.

Everything on a page that came from a terminal is escaped by the template engine, and its
control, bidi and zero-width characters are written as escapes (`_visible`). Every
form carries a CSRF token (see auth.py); the session cookie is HttpOnly and SameSite=Lax.
A page speaks one language (its words: the catalogue's `pages` area): the user's choice,
remembered in the database, else the browser's Accept-Language, else English.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import jinja2
import markupsafe
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import pass_context

import probes
from probes.contract import catalogue
from remote import wire
from remote.server import chart, db, fleet_panels, outcome_form, signin, store, titles
from remote.server.fleet import incidents as fleet_incidents, inventory as fleet_inventory, triage
from remote.server.api import SESSION_COOKIE
from remote.server.ingest import clean
from remote.server.logs import redacted_path
from remote.server.service import Service, User

CSRF_COOKIE = "posdiag_csrf"
FILTERS = ("terminal", "code", "cause", "category", "model", "firmware", "verdict", "held", "since", "until")
VERDICTS = ("none", "merchant", "remote", "onsite", "hold")
TEMPLATES = Path(__file__).parent / "templates"
WORDS = catalogue.area("pages")



def probe_names() -> tuple[str, ...]:
    """Every probe the agent has, from the probe registry (the modules of probes/)."""
    return tuple(probes.probe_modules())


def _visible(value: Any) -> Any:
    """Every value a template writes, before it is escaped: control, bidi and zero-width
    characters become visible escapes (wire.visible). HTML escaping leaves a U+202E alone,
    and one in a label would reverse the text after it on every page (the outage banner)."""
    return wire.visible(value) if isinstance(value, str) and not isinstance(value, markupsafe.Markup) else value


templates = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, finalize=_visible)


def lang_of(request: Request) -> str:
    """The language of this request's page: set by page_user from the user's choice, else
    the browser's first zh/en preference, else English."""
    chosen = getattr(request.state, "lang", None)
    if chosen in WORDS:
        return chosen
    for part in request.headers.get("accept-language", "").split(","):
        tag = part.split(";")[0].strip().lower()[:2]
        if tag in WORDS:
            return tag
    return "en"


def _pick(value: dict[str, Any], lang: str) -> str:
    """One language of a {zh, en} text; the other when it lacks this one."""
    for key in (lang, "en", "zh"):
        if value.get(key):
            return str(value[key])
    return ""


@pass_context
def _show(context: Any, value: Any) -> str:
    """One evidence item, action or bilingual text, whatever shape the agent gave it, as
    plain text in the page's language."""
    lang = context.get("lang", "en")
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if "en" in value or "zh" in value:
            return _pick(value, lang)
        key = value.get("id") or value.get("finding")
        if key:
            title = value.get("title")
            text = str(key) + (f" {_pick(title, lang)}" if isinstance(title, dict) else "")
            text += f": {value['detail']}" if value.get("detail") else ""
            weight = _finite(value.get("weight"))
            return text + (f" ({WORDS[lang]['weight']} {weight:+g})" if weight is not None else "")
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


@pass_context
def _cause_title(context: Any, cause_id: Any) -> str:
    title = titles.cause_titles().get(str(cause_id or ""))
    return _pick(title, context.get("lang", "en")) if title else ""


@pass_context
def _counts_text(context: Any, value: Any) -> str:
    """The redaction counts {"pan": 3, "track": 1} as "card numbers 3 · track data 1"."""
    if not isinstance(value, dict):
        return ""
    kinds = WORDS[context.get("lang", "en")]["redaction_kinds"]
    return " · ".join(f"{kinds.get(k, k)} {v}" for k, v in sorted(value.items()) if isinstance(v, int) and v)


@pass_context
def _category_title(context: Any, category: Any) -> str:
    """A cause category by its knowledge-base title in the page's language; one the knowledge
    base does not know (a terminal may send any) as it came."""
    title = titles.category_titles().get(str(category or ""))
    return _pick(title, context.get("lang", "en")) if title else str(category or "")


@pass_context
def _probe_status(context: Any, status: Any) -> str:
    """A probe's status (ok, warn, fail ...) in the page's language, as the terminal's shell says it."""
    return str(probe_statuses[context.get("lang", "en")].get(str(status), status))


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
templates.filters["cause_title"] = _cause_title
templates.filters["counts"] = _counts_text
probe_statuses = {lang: words["status"] for lang, words in catalogue.area("cli").items()}
templates.filters["category"] = _category_title
templates.filters["probe_status"] = _probe_status
templates.globals["qs"] = lambda **kw: urlencode({k: v for k, v in kw.items() if v})

router = APIRouter(include_in_schema=False)


def service(request: Request) -> Service:
    return request.app.state.service


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    srv = service(request)
    binding, new_cookie = csrf_binding(request)
    if binding is None:
        new_cookie = srv.signer.new_presession()
        binding = "n:" + str(srv.signer.presession(new_cookie))
    lang = lang_of(request)
    if context.get("user") is not None:
        context.setdefault("open_outages", getattr(request.state, "open_outages", []))
    html = templates.get_template(name).render(
        csrf=srv.signer.csrf_token(binding), path=request.url.path, user=context.pop("user", None),
        lang=lang, t=WORDS[lang], here=_here(request), **context,
    )  # fmt: skip
    response = HTMLResponse(html, status_code=status)
    if new_cookie:
        response.set_cookie(CSRF_COOKIE, new_cookie, httponly=True, samesite="lax", secure=_https(request))
    return response


def _here(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def csrf_binding(request: Request) -> tuple[str | None, str | None]:
    """What this browser's form tokens are bound to: its session (signed in), else the nonce
    of a `posdiag_csrf` cookie this server issued. Never a value the client picked."""
    signer = service(request).signer
    session = signer.read_session(request.cookies.get(SESSION_COOKIE))
    if session is not None:
        return "s:" + session.sid, None
    nonce = signer.presession(request.cookies.get(CSRF_COOKIE))
    return ("n:" + nonce, None) if nonce else (None, None)


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


async def page_user(request: Request) -> User | None:
    """The signed-in user (None when nobody is); remembers the user's page language and the
    open outages for the banner (read here, in the thread pool: render runs on the event loop)."""
    srv = service(request)
    user = await run_in_threadpool(srv.user_by_session, request.cookies.get(SESSION_COOKIE))
    if user is not None:
        request.state.lang = await run_in_threadpool(store.user_lang, srv.engine, user.name)
        request.state.open_outages = await run_in_threadpool(fleet_panels.open_outages, srv)
    return user


class PageAnswer(Exception):
    """A page's answer decided before its handler runs (sign in first, a role refused);
    app.py answers it."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


async def signed_in(request: Request) -> User:
    """Dependency of every page: the signed-in user; anyone else is sent to sign in."""
    user = await page_user(request)
    if user is None:
        raise PageAnswer(to_login(request))
    return user


SignedIn = Annotated[User, Depends(signed_in)]


def page_role(*roles: str, refusal: str, area: str = "pages") -> Any:
    """Dependency: the signed-in user if their role is one of `roles`, else a 403 page
    saying `refusal` (a key of the catalogue's `area`, config/catalogue/AREA.toml)."""
    said = catalogue.area(area)

    async def check(request: Request, user: SignedIn) -> User:
        if user.role not in roles:
            raise PageAnswer(render(request, "error.html", status=403, user=user, message=said[lang_of(request)][refusal]))
        return user

    return check


def to_login(request: Request) -> RedirectResponse:
    # A search for a PAN must not travel on in the redirect, the sign-in form or the history.
    target = redacted_path(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    return RedirectResponse(f"/login?next={quote(target)}", status_code=303)


async def form_checked(request: Request) -> dict[str, Any] | None:
    """The posted form if its CSRF token matches this browser's cookie, else None."""
    form = await request.form()
    ok = service(request).signer.check_csrf(csrf_binding(request)[0], str(form.get("csrf", "")))
    return {k: form.getlist(k) for k in form} if ok else None


def _safe_next(target: str) -> str:
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


# -- sign-in --------------------------------------------------------------------------------


@router.get("/login")
async def login_page(request: Request, next: str = "/") -> Response:
    return render(request, "login.html", next=_safe_next(redacted_path(next)), error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await form_checked(request)
    if form is None:
        return render(request, "login.html", status=403, next="/", error=WORDS[lang_of(request)]["form_expired"])
    name, password = clean(form.get("name", [""])[0]), form.get("password", [""])[0]
    target = _safe_next(form.get("next", ["/"])[0])
    srv = service(request)
    try:
        user = await signin.sign_in(srv, name, password, request.client.host if request.client else None)
    except signin.Refused as exc:
        response = render(request, "login.html", status=exc.status, next=target, error=exc.detail.capitalize() + ".")
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    if user is None:
        return render(request, "login.html", status=401, next=target, error=WORDS[lang_of(request)]["wrong_login"])
    return _start_session(request, RedirectResponse(target, status_code=303), user)


def _start_session(request: Request, response: Response, user: User) -> Response:
    """`response` with a new session cookie for `user` as it is now."""
    srv = service(request)
    lifetime = srv.settings.session_hours * 3600
    response.set_cookie(
        SESSION_COOKIE,
        srv.session_cookie(user),
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
    await run_in_threadpool(service(request).sign_out, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


# -- pages ----------------------------------------------------------------------------------


@router.get("/overview")
async def overview(request: Request, user: SignedIn) -> Response:
    srv = service(request)
    days = srv.settings.stats_days
    stats = await run_in_threadpool(store.stats, srv.engine, days)
    first_day = db.parse_time(stats["since"]).date()
    recent, _ = await run_in_threadpool(store.list_bundles, srv.engine, store.BundleFilter(), 10)
    held = await run_in_threadpool(triage.held_by_verdict, srv.engine, stats["since"])
    return render(
        request, "overview.html", user=user, stats=stats, days=days, recent=await with_holds(srv, recent), held=held,
        chart=chart.build(stats["per_day"], first_day, days),
    )  # fmt: skip


async def with_holds(srv: Service, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows, each with `hold`: its fleet_dispatch when an incident holds it (one query)."""
    holds = await run_in_threadpool(fleet_incidents.dispatch_for, srv.engine, [r["id"] for r in rows])
    return [dict(r, hold=holds.get(r["id"])) for r in rows]


@router.get("/bundles")
async def bundle_list(request: Request, user: SignedIn) -> Response:
    srv = service(request)
    params = {k: request.query_params.get(k, "").strip() for k in FILTERS}
    error = None
    try:
        flt = store.BundleFilter(
            **{k: params[k] or None for k in FILTERS if k not in ("since", "until", "verdict", "held")},
            verdict=params["verdict"] if params["verdict"] in VERDICTS else None,
            held={"yes": True, "no": False}.get(params["held"]),
            since=_day(params["since"]),
            until=_day(params["until"], next_day=True),
        )
        rows, next_cursor = await run_in_threadpool(
            store.list_bundles, srv.engine, flt, srv.settings.page_size, request.query_params.get("cursor") or None
        )
    except (ValueError, store.StoreError) as exc:
        rows, next_cursor, error = [], None, str(getattr(exc, "detail", exc))
    return render(
        request, "bundles.html", user=user, rows=await with_holds(srv, rows), params=params, next_cursor=next_cursor,
        error=error, verdicts=VERDICTS,
    )  # fmt: skip


def _day(text: str, next_day: bool = False) -> str | None:
    """A filter date (YYYY-MM-DD, UTC) as a stored time, `until` including its whole day;
    or a time with its zone (the home page's links: the last 24 hours), as it is."""
    if not text:
        return None
    if "T" in text:
        try:
            return db.stamp(db.parse_time(text))
        except (ValueError, OverflowError):
            raise ValueError(f"not a time (ISO-8601 with zone): {text[:40]}") from None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        return db.stamp(day + timedelta(days=1) if next_day else day)
    except (ValueError, OverflowError):
        raise ValueError(f"not a date (YYYY-MM-DD): {text[:40]}") from None


@router.get("/bundles/{bundle_id}")
async def bundle_page(request: Request, user: SignedIn, bundle_id: str) -> Response:
    srv = service(request)
    record = await run_in_threadpool(store.get_bundle, srv.engine, bundle_id[:64])
    if record is None:
        return render(request, "error.html", status=404, user=user, message="No bundle with this id.")
    detail = await run_in_threadpool(srv.detail, record)
    probes = detail["probes"]
    if isinstance(probes, dict):
        probes = probes.get("probes", [])
    fleet = await run_in_threadpool(fleet_panels.bundle_fleet, srv, record["id"])
    return render(
        request, "bundle.html", user=user, r=record, d=detail["diagnosis"], manifest=detail["manifest"],
        probes=probes if isinstance(probes, list) else [], logs=detail["logs"], fleet=fleet,
        outcome=await run_in_threadpool(outcome_form.bundle_outcome, srv, record, detail["diagnosis"]),
    )  # fmt: skip


@router.get("/terminals")
async def terminal_list(request: Request, user: SignedIn) -> Response:
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
async def terminal_page(request: Request, user: SignedIn, terminal_id: str, requested: str = "") -> Response:
    srv = service(request)
    terminal = await run_in_threadpool(store.get_terminal, srv.engine, terminal_id)
    if terminal is None:
        return render(request, "error.html", status=404, user=user, message="No terminal with this id.")
    rows, _ = await run_in_threadpool(
        store.list_bundles, srv.engine, store.BundleFilter(terminal=terminal_id), srv.settings.page_size
    )
    commands = await run_in_threadpool(store.list_commands, srv.engine, terminal_id)
    fleet = await run_in_threadpool(fleet_panels.terminal_health, srv, terminal_id)
    return render(
        request, "terminal.html", user=user, term=terminal, rows=await with_holds(srv, rows), commands=commands,
        probe_names=probe_names(), requested=requested, **fleet,
    )  # fmt: skip


@router.post("/terminals/{terminal_id}/probes")
async def request_probes(request: Request, user: SignedIn, terminal_id: str) -> Response:
    form = await form_checked(request)
    if form is None:
        return render(request, "error.html", status=403, user=user, message="The form expired; please try again.")
    chosen = [p for p in form.get("probe", []) if p in probe_names()]
    code = clean(form.get("code", [""])[0] or "").strip()[:64] or None
    srv = service(request)
    try:
        command = await run_in_threadpool(
            store.add_command, srv.engine, terminal_id, chosen or None, code, user.name
        )
    except store.StoreError as exc:
        return render(request, "error.html", status=404, user=user, message=exc.detail)
    return RedirectResponse(f"/terminals/{quote(terminal_id, safe='')}?requested={command['id']}", status_code=303)


@router.post("/lang")
async def choose_language(request: Request, user: SignedIn) -> Response:
    """The language switch in the page header: remembered for the user."""
    form = await form_checked(request)
    if form is None:
        return render(request, "error.html", status=403, user=user, message=WORDS[lang_of(request)]["form_expired"])
    lang = form.get("lang", [""])[0]
    if lang in WORDS:
        await run_in_threadpool(store.set_user_lang, service(request).engine, user.name, lang)
    return RedirectResponse(_safe_next(form.get("next", ["/"])[0]), status_code=303)


async def not_found_page(request: Request, status: int) -> Response:
    """What a browser gets for an address that is no page (the API answers JSON)."""
    user = await page_user(request)
    return render(request, "error.html", status=status, user=user, message=WORDS[lang_of(request)]["no_page"])


@router.get("/static/local-time.js")
async def local_time_script() -> Response:
    return Response((TEMPLATES / "local-time.js").read_bytes(), media_type="text/javascript")

