"""Prometheus text exposition (format 0.0.4), written by hand: three series need no library.

Counters live in the process; with several uvicorn workers each worker reports its own,
which Prometheus sums when every worker is scraped (or use one worker per port).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received = Counter[str]()  # by outcome: new | duplicate
        self.rejected = Counter[str]()  # by reason: the error code
        self._bucket_counts = [0] * len(BUCKETS)
        self._sum = 0.0
        self._count = 0
        self._gauges: list[tuple[str, str, Callable[[], dict[str, float]]]] = []

    def gauge(self, name: str, help_text: str, read: Callable[[], dict[str, float]]) -> None:
        """A gauge read at scrape time: `read` answers {label text: value}, e.g. {'kind="outage"': 2}."""
        self._gauges.append((name, help_text, read))

    def accepted(self, new: bool, seconds: float) -> None:
        with self._lock:
            self.received["new" if new else "duplicate"] += 1
            self._observe(seconds)

    def reject(self, reason: str, seconds: float) -> None:
        with self._lock:
            self.rejected[reason] += 1
            self._observe(seconds)

    def _observe(self, seconds: float) -> None:
        self._sum += seconds
        self._count += 1
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self._bucket_counts[i] += 1

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP posdiag_bundles_received_total Bundles accepted, by outcome (new or duplicate).",
                "# TYPE posdiag_bundles_received_total counter",
            ]
            for outcome in ("new", "duplicate"):
                lines.append(f'posdiag_bundles_received_total{{outcome="{outcome}"}} {self.received[outcome]}')
            lines += [
                "# HELP posdiag_bundles_rejected_total Uploads refused, by reason.",
                "# TYPE posdiag_bundles_rejected_total counter",
            ]
            for reason in sorted(self.rejected):
                lines.append(f'posdiag_bundles_rejected_total{{reason="{reason}"}} {self.rejected[reason]}')
            lines += [
                "# HELP posdiag_ingest_seconds Time to answer an upload, from first byte read to answer.",
                "# TYPE posdiag_ingest_seconds histogram",
            ]
            for bound, count in zip(BUCKETS, self._bucket_counts, strict=True):
                lines.append(f'posdiag_ingest_seconds_bucket{{le="{bound}"}} {count}')
            lines.append(f'posdiag_ingest_seconds_bucket{{le="+Inf"}} {self._count}')
            lines.append(f"posdiag_ingest_seconds_sum {self._sum:.6f}")
            lines.append(f"posdiag_ingest_seconds_count {self._count}")
        for name, help_text, read in self._gauges:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            lines += [f"{name}{{{labels}}} {value:g}" for labels, value in sorted(read().items())]
        return "\n".join(lines) + "\n"
