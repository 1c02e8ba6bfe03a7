"""The runner's records: a probe's result and a whole sweep (what a probe returns is
probes/contract/records.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from probes.contract.records import Finding, MetricValue, Severity, Status


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
