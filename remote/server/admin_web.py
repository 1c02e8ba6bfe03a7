"""The administration pages (admin role only): users, terminal enrolment, the effective
settings (read only, secrets masked) and the audit log.

Every change is a CSRF-checked form post (web.form_checked) and an audit log entry
(audit.record, source "web"). Errors are shown in the page's language, keyed by the
StoreError's code (the catalogue's `admin` area).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from probes.contract import catalogue
from remote.server import audit, auth, store
from remote.server.ingest import clean
from remote.server.service import User
from remote.server.web import WORDS, _start_session, form_checked, lang_of, page_role, render, service

ADMIN_WORDS = catalogue.area("admin")
# Settings shown masked on the settings page (the last part of the key); URLs lose any
# user:password and query string too.
SECRET_KEYS = frozenset({"secret", "secret_access_key", "access_key_id", "token", "password"})

router = APIRouter(include_in_schema=False)


def words(request: Request) -> dict[str, Any]:
    return ADMIN_WORDS[lang_of(request)]


def error_text(request: Request, exc: store.StoreError, **values: Any) -> str:
    """A refusal in the page's language (its English detail when no words say it)."""
    template = words(request)["errors"].get(exc.code)
    return template.format(**values) if template else exc.detail


Admin = Annotated[User, Depends(page_role("admin", refusal="admins_only", area="admin"))]


def admin_page(request: Request, name: str, user: User, status: int = 200, **context: Any) -> Response:
    return render(request, name, status=status, user=user, a=words(request), **context)


async def record(
    request: Request, user: User, action: str, kind: str, object_id: str, detail: dict[str, Any] | None = None
) -> None:
    """An audit log entry for a change this admin made on a page."""
    await run_in_threadpool(audit.record, service(request).engine, user.name, "web", action, kind, object_id, detail)


# -- users ----------------------------------------------------------------------------------


async def _users_page(request: Request, user: User, status: int = 200, done: str = "", error: str | None = None) -> Response:
    rows = await run_in_threadpool(store.list_users, service(request).engine)
    return admin_page(
        request, "users.html", user, status=status, rows=rows, roles=auth.ROLES, done=done[:200], error=error,
        min_password=service(request).settings.password_min_length,
    )  # fmt: skip


@router.get("/users")
async def users_page(request: Request, user: Admin, done: str = "") -> Response:
    return await _users_page(request, user, done=done)


@router.post("/users")
async def change_users(request: Request, user: Admin) -> Response:
    """Add a user, or change (role, password) or remove one."""
    said = WORDS[lang_of(request)]
    form = await form_checked(request)
    if form is None:
        return render(request, "error.html", status=403, user=user, message=said["form_expired"])
    field = {k: (v[0] if v else "") for k, v in form.items()}
    name, action = clean(field.get("name", "")).strip(), field.get("action", "")
    srv = service(request)
    engine, least = srv.engine, srv.settings.password_min_length
    try:
        if action == "add":
            await run_in_threadpool(store.add_user, engine, name, field.get("role", ""), field.get("password", ""), least)
            await record(request, user, "user.add", "user", name, {"role": field["role"]})
            done = said["user_added"].format(name=name)
        elif action == "remove":
            if name == user.name:
                raise store.StoreError("self", said["cannot_remove_self"])
            await run_in_threadpool(store.remove_user, engine, name)
            await record(request, user, "user.remove", "user", name)
            done = said["user_removed"].format(name=name)
        else:
            if field.get("role") and await run_in_threadpool(store.set_role, engine, name, field["role"]):
                await record(request, user, "user.role", "user", name, {"role": field["role"]})
            if field.get("password"):
                await run_in_threadpool(store.set_password, engine, name, field["password"], least)
                await record(request, user, "user.password", "user", name)
            done = said["user_changed"].format(name=name)
    except store.StoreError as exc:
        return await _users_page(request, user, status=400, error=error_text(request, exc, name=name, n=least))
    response = RedirectResponse(f"/users?{urlencode({'done': done})}", status_code=303)
    if name == user.name and field.get("password"):  # the admin's other sessions end, this one goes on
        me = await run_in_threadpool(srv.user, name)
        if me is not None:
            return _start_session(request, response, me)
    return response


# -- terminal enrolment -------------------------------------------------------------------


async def _enrolment_page(request: Request, user: User, status: int = 200, error: str | None = None) -> Response:
    srv = service(request)
    prefix = request.query_params.get("q", "").strip()[:64]
    after = request.query_params.get("after", "")[:128]
    size = srv.settings.page_size
    rows = await run_in_threadpool(store.enrolled_terminals, srv.engine, prefix, after, size + 1)
    more = rows[size - 1]["id"] if len(rows) > size else None
    return admin_page(
        request, "admin_enrolment.html", user, status=status, rows=rows[:size], q=prefix, more=more,
        done=request.query_params.get("done", "")[:200], error=error,
    )  # fmt: skip


@router.get("/enrolment")
async def enrolment_page(request: Request, user: Admin) -> Response:
    return await _enrolment_page(request, user)


@router.post("/enrolment")
async def change_enrolment(request: Request, user: Admin) -> Response:
    """Enrol a terminal (its token shown once, on the answer to this post) or revoke one."""
    form = await form_checked(request)
    if form is None:
        return render(request, "error.html", status=403, user=user, message=WORDS[lang_of(request)]["form_expired"])
    terminal_id, action = clean(form.get("id", [""])[0]).strip(), form.get("action", [""])[0]
    if action not in ("enrol", "revoke"):
        return await _enrolment_page(request, user, status=400, error=None)
    engine = service(request).engine
    try:
        if action == "revoke":
            await run_in_threadpool(store.revoke_terminal, engine, terminal_id)
            await record(request, user, "terminal.revoke", "terminal", terminal_id)
            done = words(request)["terminal_revoked"].format(id=terminal_id)
            return RedirectResponse(f"/enrolment?{urlencode({'done': done})}", status_code=303)
        token = await run_in_threadpool(store.add_terminal, engine, terminal_id)
    except store.StoreError as exc:
        return await _enrolment_page(request, user, status=400, error=error_text(request, exc))
    await record(request, user, "terminal.enrol", "terminal", terminal_id)
    response = admin_page(
        request, "admin_enrolled.html", user, terminal_id=terminal_id, token=token,
        snippet=agent_snippet(terminal_id, token, str(request.base_url).rstrip("/")),
    )  # fmt: skip
    response.headers["Cache-Control"] = "no-store"  # the token is in this page, nowhere else
    return response


def agent_snippet(terminal_id: str, token: str, server_url: str) -> list[str]:
    """The lines of posdiag.toml that make a terminal upload here as `terminal_id` (the
    template writes them one a line: a newline inside a value would be shown escaped)."""
    return [
        "[terminal]", f"id = {json.dumps(terminal_id)}", "",
        "[upload]", f"server_url = {json.dumps(server_url)}", f"token = {json.dumps(token)}",
    ]  # fmt: skip


# -- settings -------------------------------------------------------------------------------


def settings_rows(settings: Any, prefix: str = "server") -> list[tuple[str, str, bool]]:
    """(key, value as TOML would write it, masked) for every setting, tables flattened."""
    rows = []
    for f in dataclasses.fields(settings):
        value, key = getattr(settings, f.name), f"{prefix}.{f.name}"
        if dataclasses.is_dataclass(value):
            rows.extend(settings_rows(value, key))
        elif f.name in SECRET_KEYS:
            rows.append((key, "", bool(value)))
        else:
            rows.append((key, json.dumps(_without_credentials(value), ensure_ascii=False), False))
    return rows


def _without_credentials(value: Any) -> Any:
    """A URL without user:password and query (where a token may ride), in lists and tables
    too; anything else as is."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)  # type: ignore[arg-type]
    if isinstance(value, dict):
        return {k: _without_credentials(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_credentials(v) for v in value]
    if not isinstance(value, str) or "://" not in value:
        return value
    parts = urlsplit(value)
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    masked = "•••@" if parts.username or parts.password else ""
    return urlunsplit((parts.scheme, masked + host, parts.path, "•••" if parts.query else "", ""))


@router.get("/settings")
async def settings_page(request: Request, user: Admin) -> Response:
    srv = service(request)
    database = srv.engine.url.render_as_string(hide_password=True)
    return admin_page(request, "admin_settings.html", user, rows=settings_rows(srv.settings), database=database)


# -- audit log ------------------------------------------------------------------------------


@router.get("/audit")
async def audit_page(request: Request, user: Admin) -> Response:
    srv = service(request)
    filters = {k: request.query_params.get(k, "").strip()[:128] for k in audit.FILTERS}
    error = None
    try:
        rows, next_cursor = await run_in_threadpool(
            audit.entries, srv.engine, {k: v for k, v in filters.items() if v}, srv.settings.page_size,
            request.query_params.get("cursor") or None,
        )  # fmt: skip
    except ValueError as exc:
        rows, next_cursor, error = [], None, str(exc)
    older = f"/audit?{urlencode({**{k: v for k, v in filters.items() if v}, 'cursor': next_cursor})}" if next_cursor else None
    return admin_page(request, "admin_audit.html", user, rows=rows, filters=filters, older=older, error=error)
