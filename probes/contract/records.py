"""What a probe returns; the runner wraps it into agent.model.ProbeResult."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
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
