"""JSON shapes of the fleet API; they are what the OpenAPI document shows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Labels and texts are checked after the shape (remote/server/inputs.py, wire.label_problem and
# wire.text_problem): a bad one is 400 `bad_label` or `bad_text`, as in a bundle's manifest.
Labels = Annotated[
    dict[str, str],
    Field(
        max_length=32,
        description="keys [a-z][a-z0-9_]{0,31}; values 1-64 printable characters, no '&' or '=', "
        "no control, bidi or zero-width characters (400 bad_label otherwise)",
    ),
]
Number = Annotated[float | None, Field(default=None, allow_inf_nan=False)]
Text = Annotated[
    str, Field(max_length=128, description="printable text: no control, bidi or zero-width characters (400 bad_text otherwise)")
]


class Health(BaseModel):
    model_config = ConfigDict(extra="ignore")
    battery_pct: Number = None
    battery_wear_ratio: Number = None
    battery_full_pct: Number = Field(default=None, allow_inf_nan=False, description="capacity at full charge, % of design (optional)")
    battery_cycle_count: Number = None
    emmc_life_used_pct: Number = None
    free_mib: Number = None
    signal_dbm: Number = None
    max_temp_c: Number = None
    memory_available_mib: Number = None


class Counters(BaseModel):
    model_config = ConfigDict(extra="ignore")
    errors: Number = None
    diagnoses: Number = None
    bundles_waiting: Number = None
    bundles_dead: Number = None
    uptime_s: Number = None


class Heartbeat(BaseModel):
    """What a terminal sends every heartbeat_seconds (the contract of issue 13)."""

    model_config = ConfigDict(extra="ignore")
    terminal_id: str = Field(min_length=1, max_length=128)
    sent_at: str = Field(max_length=40, description="UTC ISO 8601, the event time")
    model: Text = ""
    firmware: Text = ""
    app_version: Text = ""
    agent_version: Annotated[str, Field(max_length=64, description="printable text (400 bad_text otherwise)")] = ""
    labels: Labels = Field(default_factory=dict)
    learned_hash: str | None = Field(default=None, max_length=64, description="the hash of the learned table the terminal holds; null: none")
    health: Health = Field(default_factory=Health)
    counters: Counters = Field(default_factory=Counters)


class Bilingual(BaseModel):
    zh: str
    en: str


class IncidentNotice(BaseModel):
    """An open incident that covers a terminal, as the terminal is told."""

    id: str
    kind: Literal["outage", "regression"]
    scope: dict[str, str]
    categories: list[str]
    started_at: str
    summary: Bilingual


class HeartbeatAccepted(BaseModel):
    status: Literal["accepted"]
    event_at: str = Field(description="the event time used (sent_at, or receipt if clamped)")
    clock_clamped: bool
    incidents: list[IncidentNotice]
    command: dict[str, Any] | None = Field(
        default=None, description="with ?poll=1: the next probe request ({command_id, probes, code}, as commands/next answers), if any"
    )
    learned: dict[str, Any] | None = Field(
        default=None, description="the learned table for the terminal's model (posdiag.learned/1, as terminals/{id}/learned answers), only when its hash differs from learned_hash"
    )


class FleetDispatch(BaseModel):
    verdict: Literal["hold"]
    incident_id: str
    reason: Bilingual


class Risk(BaseModel):
    metric: str
    value: float
    threshold: float
    projected_at: str
    reason: Bilingual


class FleetTerminal(BaseModel):
    id: str
    status: Literal["ok", "missing", "at_risk"]
    created_at: str
    revoked_at: str | None
    labels: dict[str, str]
    model: str | None
    firmware: str | None
    app_version: str | None
    agent_version: str | None
    last_heartbeat_at: str | None
    last_seen_at: str | None
    health: dict[str, Any] | None
    risk: Risk | None
    clock_flagged_at: str | None


class FleetTerminalList(BaseModel):
    items: list[FleetTerminal]
    next_cursor: str | None


class KeyCount(BaseModel):
    key: str
    count: int


class Problem(BaseModel):
    id: str
    signature: str
    verdict: str | None = Field(default=None, description="the highest dispatch verdict of its bundles; above none: a fault")
    code: str | None
    scheme: str | None
    top_cause: str | None
    first_seen: str
    last_seen: str
    bundles: int
    terminals_affected: int
    by_model: list[KeyCount]
    by_firmware: list[KeyCount]
    by_label: dict[str, list[KeyCount]]
    daily: list[KeyCount]


class ProblemList(BaseModel):
    items: list[Problem]
    next_cursor: str | None


class Incident(BaseModel):
    id: str
    kind: Literal["outage", "regression"]
    status: Literal["open", "closed", "dismissed"] = Field(description="dismissed: a person said it is no outage; its holds are released")
    scope: dict[str, str]
    categories: list[str]
    codes: list[str]
    started_at: str
    detected_at: str
    ended_at: str | None
    terminals_affected: int
    terminals_in_scope: int
    bundles: int
    expected: float = Field(description="count the scope's baseline predicts for the test")
    p_value: float
    summary: Bilingual
    acknowledged_at: str | None = Field(default=None, description="when a person confirmed the outage (a large hold waits for it)")
    acknowledged_by: str | None = None


class IncidentList(BaseModel):
    items: list[Incident]


class IncidentAction(BaseModel):
    at: str
    by: str
    action: Literal["acknowledged", "note", "resolved", "dismissed"]
    note: str | None


class IncidentDetail(Incident):
    notes: list[IncidentAction] = Field(description="the notes support added, oldest first")
    actions: list[IncidentAction] = Field(description="every action on it, notes too, oldest first")


class IncidentNote(BaseModel):
    note: str = Field(min_length=1, max_length=4000)


class IncidentChange(BaseModel):
    note: str | None = Field(default=None, max_length=4000, description="why, kept with the action")
