"""Shapes of the JSON the API answers with; they are what the OpenAPI document shows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

# Dispatch verdicts a bundle can carry: the agent's four (agent.knowledge.VERDICTS, none <
# merchant < remote < onsite) and the server's fleet verdict `hold`.
Verdict = Literal["none", "merchant", "remote", "onsite", "hold"]
from remote.server.fleet.models import FleetDispatch


class ErrorBody(BaseModel):
    error: str = Field(description="short machine code, e.g. bad_signature")
    detail: str = Field(description="what was wrong, for a person")


class BundleRecord(BaseModel):
    id: str
    terminal_id: str
    serial: str
    model: str
    firmware: str
    app_version: str
    agent_version: str
    trigger_kind: str
    code: str | None
    scheme: str | None
    command_id: str | None
    top_cause: str | None
    top_category: str | None
    top_confidence: float | None
    verdict: str | None
    created_at: str
    received_at: str
    sha256: str
    size: int
    clock_flag: str | None = Field(
        default=None, description="ahead | behind: created_at was implausible at receipt (the terminal's clock)"
    )
    fleet_dispatch: FleetDispatch | None = Field(
        default=None, description="hold: inside a fleet outage's scope and span; the terminal's own verdict stays in verdict"
    )


class BundleList(BaseModel):
    items: list[BundleRecord]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last")


class BundleDetail(BaseModel):
    record: BundleRecord
    manifest: dict[str, Any]
    diagnosis: dict[str, Any]
    probes: Any
    system: Any
    logs: dict[str, str]


class Count(BaseModel):
    key: str | None
    count: int


class DayCount(BaseModel):
    day: str
    category: str | None
    count: int


class Stats(BaseModel):
    since: str
    until: str
    total: int
    by_code: list[Count]
    by_cause: list[Count]
    by_category: list[Count]
    by_model: list[Count]
    by_firmware: list[Count]
    by_verdict: list[Count]
    top_terminals: list[Count]
    per_day: list[DayCount]


ProbeName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class CommandRequest(BaseModel):
    probes: list[ProbeName] | None = Field(
        default=None, max_length=32, description="probe names to run; null or absent: all probes"
    )
    code: str | None = Field(
        default=None, max_length=64, pattern=r"^[^\x00-\x1f]*$", description="error code to diagnose with"
    )


class Command(BaseModel):
    id: str
    terminal_id: str
    probes: list[str] | None
    code: str | None
    status: Literal["queued", "delivered", "done"]
    requested_by: str
    created_at: str
    delivered_at: str | None
    done_at: str | None
    bundle_id: str | None


class NextCommand(BaseModel):
    command_id: str
    probes: list[str] | None
    code: str | None


class TerminalCreate(BaseModel):
    id: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f/]+$")
    labels: dict[str, str] | None = Field(
        default=None, max_length=32,
        description="the operator's labels (acquirer, region, merchant, site...): trusted, outages are cut by them (docs/fleet.md)",
    )  # fmt: skip


class TerminalEnrolled(BaseModel):
    id: str
    token: str = Field(description="shown once; the server keeps only its SHA-256")


class Health(BaseModel):
    status: Literal["ok"]
    database: str
    blob_store: Literal["ok", "failing"] = Field(
        description="failing: the store's circuit breaker is open and uploads are answered 503 (known without asking the store)"
    )
