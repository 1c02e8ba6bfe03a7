"""JSON shapes of the outcome and learning API; they are what the OpenAPI document shows."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from remote.outcome_wire import MAX_BY_CHARS, MAX_NOTE_CHARS

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
NoNul = r"^[^\x00]*$"
Found = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=NoNul)]
Note = Annotated[str, StringConstraints(max_length=MAX_NOTE_CHARS, pattern=NoNul)]
Stamp = Annotated[str, StringConstraints(max_length=40, pattern=NoNul)]
Model = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=NoNul)]
FOUND_DOC = "a knowledge-base cause id (e.g. printer.mechanism_fault), `nothing` (no fault found) or `other` (say what in the note)"


class OutcomeIn(BaseModel):
    """What a visit found, said by a support user or technician."""

    model_config = ConfigDict(extra="forbid")
    found: Found = Field(description=FOUND_DOC)
    fixed: bool | None = Field(default=None, description="whether the visit fixed it; required unless found is nothing")
    note: Note = Field(default="", description="free text; required with found other; card data is masked")
    visited_at: Stamp | None = Field(default=None, description="when the visit ended (ISO-8601 with zone); default now")
    outcome_id: Annotated[str, StringConstraints(pattern=UUID_PATTERN)] | None = Field(
        default=None, description="a UUID the client chooses: sending the same outcome again stores it once"
    )


class OutcomeRecord(BaseModel):
    """posdiag.outcome/1, as a terminal sends it (`posdiag visit close`); docs/outcomes.md."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    schema_name: Literal["posdiag.outcome/1"] = Field(alias="schema")
    outcome_id: Annotated[str, StringConstraints(pattern=UUID_PATTERN)]
    terminal_id: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=NoNul)]
    bundle_id: Annotated[str, StringConstraints(pattern=UUID_PATTERN)] | None = Field(
        description="null: the terminal's newest bundle dispatched onsite or remote before visited_at"
    )
    found: Found = Field(description=FOUND_DOC)
    fixed: bool | None
    note: Note
    by: Annotated[str, StringConstraints(max_length=MAX_BY_CHARS, pattern=NoNul)]
    visited_at: Stamp
    signature: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class Outcome(BaseModel):
    outcome_id: str
    bundle_id: str
    found: str
    fixed: bool | None
    note: str
    by: str = Field(description="the user who recorded it, or the name given at the terminal")
    via: Literal["api", "terminal", "page"]
    visited_at: str
    recorded_at: str
    current: bool = Field(description="this is the bundle's current outcome (of its latest visit)")


class BundleOutcomes(BaseModel):
    bundle_id: str
    current: Outcome | None
    history: list[Outcome] = Field(description="every outcome recorded for the bundle, latest visit first")
    predicted: list[str] | None = Field(description="the bundle's first three causes, as copied when recorded")
    learned_hash: str | None = Field(description="the learned table the bundle's diagnosis applied, if any")


class MeasureGroup(BaseModel):
    key: str | None
    visits: int
    found_as_predicted: int
    found_in_top3: int
    no_fault_found: int
    below_verdict: int
    above_verdict: int
    fixed_first_time: int
    found_as_predicted_rate: float | None
    found_in_top3_rate: float | None
    no_fault_found_rate: float | None
    below_verdict_rate: float | None
    above_verdict_rate: float | None
    fixed_first_time_rate: float | None


class Measures(BaseModel):
    since: str
    until: str
    by: str | None
    total: MeasureGroup
    groups: list[MeasureGroup]


class LearnedEntry(BaseModel):
    n: int = Field(description="visits of this code on this model")
    N: int = Field(description="visits of this code on the whole fleet")
    f: dict[str, float] = Field(description="cause id -> factor on its prior weight")


class LearnedTable(BaseModel):
    """posdiag.learned/1: what a terminal multiplies its priors by (docs/outcomes.md)."""

    model_config = ConfigDict(populate_by_name=True)
    schema_name: Literal["posdiag.learned/1"] = Field(alias="schema")
    model: str = Field(description='the table\'s model, or "*" for the fleet-wide table')
    version: int = Field(description="0: nothing learned, or learning is off")
    hash: str
    codes: dict[str, LearnedEntry] = Field(description="scheme:code (folded) -> entry")


class LearningModel(BaseModel):
    model: str
    enabled: bool
    pinned: int | None
    version: int | None
    hash: str | None
    codes: int
    visits: int
    origin: str | None
    built_at: str | None


class LearningStatus(BaseModel):
    enabled: bool
    changed_by: str | None
    changed_at: str | None
    models: list[LearningModel]


class LearnedVersion(BaseModel):
    version: int
    hash: str
    origin: str = Field(description="learned, or revert:VERSION")
    visits: int
    built_at: str
    built_by: str
    content: dict[str, LearnedEntry]


class LearnedHistory(BaseModel):
    model: str
    served: LearnedTable = Field(description="what a terminal of this model receives now")
    versions: list[LearnedVersion]


class LearningSwitch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool
    model: Model | None = Field(default=None, description="one model; absent: the whole fleet")


class LearningRevert(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Model
    version: int = Field(ge=1, le=2**31 - 1)


class LearningModelRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Model


class Rebuilt(BaseModel):
    changed: dict[str, int] = Field(description="model -> its new version")
