"""The administration pages (admin role only): users.

Every change is a CSRF-checked form post (web.form_checked). Errors are shown in the page's
language, keyed by the StoreError's code (templates/admin_words.toml).
"""

from __future__ import annotations

import tomllib
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from remote.server import auth, store
from remote.server.ingest import clean
from remote.server.service import User
from remote.server.web import TEMPLATES, WORDS, _start_session, form_checked, lang_of, page_user, render, service, to_login

ADMIN_WORDS = tomllib.loads((TEMPLATES / "admin_words.toml").read_text(encoding="utf-8"))

router = APIRouter(include_in_schema=False)


def words(request: Request) -> dict[str, Any]:
    return ADMIN_WORDS[lang_of(request)]


def error_text(request: Request, exc: store.StoreError, **values: Any) -> str:
    """A refusal in the page's language (its English detail when no words say it)."""
    template = words(request)["errors"].get(exc.code)
    return template.format(**values) if template else exc.detail


async def admin_or_answer(request: Request) -> User | Response:
    """The signed-in admin, or the answer for anyone else (sign-in, or 403)."""
    user = await page_user(request)
    if user is None:
        return to_login(request)
    if user.role != "admin":
        return render(request, "error.html", status=403, user=user, message=words(request)["admins_only"])
    return user


def admin_page(request: Request, name: str, user: User, status: int = 200, **context: Any) -> Response:
    return render(request, name, status=status, user=user, a=words(request), **context)


# -- users ----------------------------------------------------------------------------------


async def _users_page(request: Request, user: User, status: int = 200, done: str = "", error: str | None = None) -> Response:
    rows = await run_in_threadpool(store.list_users, service(request).engine)
    return admin_page(
        request, "users.html", user, status=status, rows=rows, roles=auth.ROLES, done=done[:200], error=error,
        min_password=service(request).settings.password_min_length,
    )  # fmt: skip


@router.get("/users")
async def users_page(request: Request, done: str = "") -> Response:
    user = await admin_or_answer(request)
    if isinstance(user, Response):
        return user
    return await _users_page(request, user, done=done)


@router.post("/users")
async def change_users(request: Request) -> Response:
    """Add a user, or change (role, password) or remove one."""
    user = await admin_or_answer(request)
    if isinstance(user, Response):
        return user
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
            done = said["user_added"].format(name=name)
        elif action == "remove":
            if name == user.name:
                raise store.StoreError("self", said["cannot_remove_self"])
            await run_in_threadpool(store.remove_user, engine, name)
            done = said["user_removed"].format(name=name)
        else:
            if field.get("role"):
                await run_in_threadpool(store.set_role, engine, name, field["role"])
            if field.get("password"):
                await run_in_threadpool(store.set_password, engine, name, field["password"], least)
            done = said["user_changed"].format(name=name)
    except store.StoreError as exc:
        return await _users_page(request, user, status=400, error=error_text(request, exc, name=name, n=least))
    response = RedirectResponse(f"/users?{urlencode({'done': done})}", status_code=303)
    if name == user.name and field.get("password"):  # the admin's other sessions end, this one goes on
        me = await run_in_threadpool(srv.user, name)
        if me is not None:
            return _start_session(request, response, me)
    return response
