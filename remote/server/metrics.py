"""Prometheus metrics through prometheus_client, one view for every worker of a server.

`posdiag-support serve` sets PROMETHEUS_MULTIPROC_DIR to a fresh directory before any
worker starts: each process then writes its samples to files there, and /metrics, in
whichever worker answers, sums every process's files (prometheus_client's multiprocess
mode). Without that variable (tests, `posdiag demo`) the samples stay in the process.
Each Metrics has its own registry, so several servers in one process do not collide.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

disable_created_metrics()  # no `_created` twin per series: nothing here reads it

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BLOB_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


Reading = Callable[[], dict[str, float]]


class ReadAtScrape:
    """Gauges read when /metrics is asked (from the database, so every worker reports the same
    value: they are not per-process samples to be summed). `read` answers {'label="value"': n},
    or {"": n} for a gauge without labels."""

    def __init__(self) -> None:
        self.gauges: list[tuple[str, str, Reading]] = []

    def collect(self) -> Iterator[Metric]:
        for name, help_text, read in self.gauges:
            readings = read()
            if list(readings) == [""]:  # a gauge without labels
                yield GaugeMetricFamily(name, help_text, value=readings[""])
                continue
            label_names = sorted({text.split("=", 1)[0] for text in readings})
            family = GaugeMetricFamily(name, help_text, labels=label_names)
            for text, value in sorted(readings.items()):
                family.add_metric([text.split("=", 1)[1].strip('"')], value)
            yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.scraped = ReadAtScrape()
        reg = self.registry
        self.received = Counter(
            "posdiag_bundles_received", "Bundles accepted, by outcome (new or duplicate).", ["outcome"], registry=reg
        )
        self.rejected = Counter("posdiag_bundles_rejected", "Uploads refused, by reason.", ["reason"], registry=reg)
        self.ingest = Histogram(
            "posdiag_ingest_seconds",
            "Time to answer an upload, from first byte read to answer.",
            buckets=BUCKETS,
            registry=reg,
        )
        self.retained = Counter(
            "posdiag_retention_removed", "Removed by retention, by kind (rows or blobs).", ["kind"], registry=reg
        )
        self.blob_errors = Counter(
            "posdiag_blob_errors", "Blob store operations that failed, by operation.", ["op"], registry=reg
        )
        self.blob_refusals = Counter(
            "posdiag_blob_refused",
            "Blob store operations answered at once, without asking the store, while its circuit breaker is open.",
            ["op"],
            registry=reg,
        )
        self.blob_latency = Histogram(
            "posdiag_blob_seconds", "Blob store operation time, by operation.", ["op"], buckets=BLOB_BUCKETS, registry=reg
        )
        self.quota_refusals = Counter(
            "posdiag_quota_refused", "Uploads refused with 429 over a terminal's quota, by quota.", ["quota"], registry=reg
        )
        self.webhook_attempts = Counter(
            "posdiag_webhook_attempts", "Webhook deliveries tried, by outcome (delivered, failed, refused).", ["outcome"], registry=reg
        )
        self.webhook_dropped = Counter(
            "posdiag_webhook_dropped",
            "Webhook deliveries dropped unsent, oldest first, because more than max_queued_deliveries waited.",
            registry=reg,
        )
        self.fleet_queue_dropped = Counter(
            "posdiag_fleet_queue_dropped",
            "Queued arrivals the fleet could not count (an error, logged with the entry), dropped so the rest are counted.",
            registry=reg,
        )
        self.ingest_transactions = Counter(
            "posdiag_ingest_transactions",
            "Transactions that wrote uploads or heartbeats (group commit), by kind.",
            ["kind"],
            registry=reg,
        )
        self.ingest_written = Counter(
            "posdiag_ingest_written",
            "Uploads or heartbeats written, by kind (over posdiag_ingest_transactions_total: how many one transaction wrote).",
            ["kind"],
            registry=reg,
        )
        for outcome in ("new", "duplicate"):
            self.received.labels(outcome)
        for kind in ("rows", "blobs"):
            self.retained.labels(kind)

    def gauge(self, name: str, help_text: str, read: Reading) -> None:
        """A gauge read at scrape time: `read` answers {label text: value}, e.g. {'kind="outage"': 2}."""
        self.scraped.gauges.append((name, help_text, read))

    def accepted(self, new: bool, seconds: float) -> None:
        self.received.labels("new" if new else "duplicate").inc()
        self.ingest.observe(seconds)

    def group_committed(self, kind: str, transactions: int, items: int) -> None:
        self.ingest_transactions.labels(kind).inc(transactions)
        self.ingest_written.labels(kind).inc(items)

    def reject(self, reason: str, seconds: float) -> None:
        self.rejected.labels(reason).inc()
        self.ingest.observe(seconds)

    def removed(self, rows: int, blobs: int) -> None:
        self.retained.labels("rows").inc(rows)
        self.retained.labels("blobs").inc(blobs)

    def blob_seconds(self, op: str, seconds: float) -> None:
        self.blob_latency.labels(op).observe(seconds)

    def blob_error(self, op: str) -> None:
        self.blob_errors.labels(op).inc()

    def blob_refused(self, op: str) -> None:
        self.blob_refusals.labels(op).inc()

    def quota_refused(self, quota: str) -> None:
        self.quota_refusals.labels(quota).inc()

    def webhook_attempt(self, outcome: str) -> None:
        self.webhook_attempts.labels(outcome).inc()

    def render(self) -> str:
        path = os.environ.get(MULTIPROC_ENV)
        if not path or values.ValueClass is values.MutexValue:  # the variable came after import
            return generate_latest(self.registry).decode() + generate_latest(self._scraped_registry()).decode()
        merged = self._scraped_registry()
        MultiProcessCollector(merged, path)
        return generate_latest(merged).decode()

    def _scraped_registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.scraped)
        return registry
