"""Metric names stay plain (`latency_ms`, not `latency_ms[acquirer]`): where a probe measures
one figure per subject (endpoint, interface), it keeps the worst one and names its subject in
a field beside it, so every bundle, history line and page reads the same keys."""

from __future__ import annotations

from probes.contract.records import MetricValue


def keep_worst(
    metrics: dict[str, MetricValue], name: str, value: float, subject_key: str, subject: str, *, lowest: bool = False
) -> None:
    """Record `value` under `name` (and `subject` under `subject_key`) when it is worse than
    what is there: higher, or lower with `lowest` (signal level, days left)."""
    current = metrics.get(name)
    if isinstance(current, int | float) and (value >= current if lowest else value <= current):
        return
    metrics[name] = value
    metrics[subject_key] = subject
