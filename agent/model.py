"""The typed records that travel between probes, runner, correlation and bundle."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

MetricValue = int | float | str


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    ABSENT = "absent"
    ERROR = "error"
    TIMEOUT = "timeout"
    SKIPPED = "skipped"


class Severity(enum.StrEnum):
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Finding:
    id: str
    severity: Severity
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def warn(cls, id: str, detail: str, **data: Any) -> Finding:
        return cls(id, Severity.WARN, detail, data)

    @classmethod
    def fail(cls, id: str, detail: str, **data: Any) -> Finding:
        return cls(id, Severity.FAIL, detail, data)


@dataclass(frozen=True)
class Observation:
    """What a probe function returns; the runner adds its name and duration.

    `status` is derived from the findings (fail > warn > ok) unless the probe
    sets it, as it must for absent or skipped.
    """

    findings: list[Finding] = field(default_factory=list)
    metrics: dict[str, MetricValue] = field(default_factory=dict)
    status: Status | None = None

    def derived_status(self) -> Status:
        if self.status is not None:
            return self.status
        severities = {f.severity for f in self.findings}
        if Severity.FAIL in severities:
            return Status.FAIL
        if Severity.WARN in severities:
            return Status.WARN
        return Status.OK


@dataclass(frozen=True)
class ProbeResult:
    name: str
    status: Status
    findings: list[Finding]
    metrics: dict[str, MetricValue]
    duration_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ProbeResult:
        return cls(
            name=raw["name"],
            status=Status(raw["status"]),
            findings=[
                Finding(f["id"], Severity(f["severity"]), f["detail"], f.get("data", {}))
                for f in raw.get("findings", [])
            ],
            metrics=dict(raw.get("metrics", {})),
            duration_ms=float(raw.get("duration_ms", 0.0)),
        )


@dataclass(frozen=True)
class Sweep:
    results: list[ProbeResult]
    started_at: str
    wall_ms: float

    def findings(self) -> list[Finding]:
        return [f for r in self.results for f in r.findings]

    def has_failure(self) -> bool:
        return any(f.severity is Severity.FAIL for f in self.findings())

    def to_dict(self) -> dict[str, Any]:
        return {
            "probes": [r.to_dict() for r in self.results],
            "sweep": {"started_at": self.started_at, "wall_ms": round(self.wall_ms, 1)},
        }
