"""/api/v1/audit: the audit log for admins (remote/server/audit.py), newest first."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from remote.server import audit
from remote.server.api import Admin, ApiError, errors, service

router = APIRouter(prefix="/api/v1")


class AuditEntry(BaseModel):
    id: str = Field(description="unique in the log (entries of other sources, such as incident actions, have their own)")
    at: str = Field(description="UTC, ISO-8601")
    actor: str = Field(description="the user (web, API), or the system account that ran the command line")
    source: str = Field(description="web | api | cli, or the source an entry came from (e.g. incident)")
    action: str = Field(description="user.add, user.role, user.password, user.remove, terminal.enrol, terminal.revoke, ...")
    object_kind: str = Field(description="user | terminal | incident ...")
    object_id: str
    detail: dict[str, Any] = Field(description="what changed (a role, ...); never a secret")


class AuditList(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None = Field(description="pass as cursor= for the next (older) page; null: no more")


Text = Annotated[str | None, Query(max_length=128)]


@router.get(
    "/audit",
    response_model=AuditList,
    tags=["admin"],
    summary="The audit log (admin): every administration and incident action, newest first",
    responses=errors(400, 401, 403, 422),
)
async def audit_log(
    request: Request,
    user: Admin,
    actor: Text = None,
    action: Text = None,
    object_kind: Text = None,
    object_id: Text = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Any:
    given = {"actor": actor, "action": action, "object_kind": object_kind, "object_id": object_id}
    filters = {k: v for k, v in given.items() if v}
    try:
        items, next_cursor = await run_in_threadpool(audit.entries, service(request).engine, filters, limit, cursor)
    except ValueError as exc:
        raise ApiError(400, "bad_cursor", str(exc)) from None
    return AuditList(items=[AuditEntry(**e) for e in items], next_cursor=next_cursor)
