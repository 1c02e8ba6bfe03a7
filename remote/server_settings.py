"""The [server] section of posdiag.toml, read by the support server; terminals check it
with the rest of the file but ignore it. Beside remote/server/, not in it: the terminal's
config check imports it, and the terminal executable leaves remote/server/ out
(packaging/posdiag.spec)."""

from __future__ import annotations

from dataclasses import dataclass

from probes.contract.settings import bounded


@dataclass(frozen=True)
class BlobSettings:
    """Where bundle files live. Empty strings: the directory DATA/blobs, and boto3's own
    sources (AWS_* variables, ~/.aws) for whatever an S3 store needs."""

    url: str
    endpoint_url: str
    region: str
    access_key_id: str
    secret_access_key: str


@dataclass(frozen=True)
class RetentionSettings:
    """How long bundles are kept; 0 turns a limit off."""

    days: int = bounded(0, 36500)
    max_per_terminal: int = bounded(0, 10_000_000)
    interval_minutes: float = bounded(0.05, 10080)
    batch: int = bounded(1, 100000)


@dataclass(frozen=True)
class TrendRule:
    """A health metric whose fitted trend flags a terminal at risk when it will cross `threshold`."""

    metric: str
    title_en: str
    title_zh: str
    direction: str = bounded(choices=("above", "below"))
    threshold: float = bounded()
    min_points: int = bounded(2, 10000)


@dataclass(frozen=True)
class FleetSettings:
    """Fleet layer of the support server: inventory, problems, incident detectors (event time
    is clamped by [server] clock_ahead_seconds)."""

    missing_after_hours: float = bounded(0.1, 24 * 365)
    at_risk_horizon_days: float = bounded(0.1, 3650)
    trend_history: int = bounded(2, 10000)
    trends: list[TrendRule]
    signature_fields: list[str]
    outage_categories: list[str]
    outage_scopes: list[list[str]]
    outage_window_minutes: float = bounded(1, 1440)
    outage_baseline_days: float = bounded(0.1, 365)
    outage_baseline_floor_per_terminal_hour: float = bounded(0, 1)
    outage_min_terminals: int = bounded(2, 100000)
    outage_min_ratio: float = bounded(1, 1e6)
    outage_p_value: float = bounded(0, 1)
    outage_close_p_value: float = bounded(0, 1)
    outage_close_after_minutes: float = bounded(1, 10080)
    outage_explain_fraction: float = bounded(0.5, 1)
    regression_window_days: float = bounded(0.1, 365)
    regression_min_terminals: int = bounded(2, 100000)
    regression_min_affected: int = bounded(1, 100000)
    regression_min_ratio: float = bounded(1, 1e6)
    regression_p_value: float = bounded(0, 1)
    sweep_seconds: float = bounded(0.1, 86400)


@dataclass(frozen=True)
class WebhookSettings:
    """Alerts: JSON POSTed to `url`, signed with HMAC-SHA256 of `secret`; empty url: none."""

    url: str
    events: list[str]
    secret: str
    timeout_seconds: float = bounded(0.1, 120)
    retry_min_seconds: float = bounded(0.01, 3600)
    retry_max_seconds: float = bounded(0.01, 86400)


@dataclass(frozen=True)
class OutcomeSettings:
    """Visit outcomes: the measures and the learned tables (docs/outcomes.md)."""

    knowledge_extra_paths: list[str]
    measures_days: int = bounded(1, 3660)
    learning_window_days: int = bounded(0, 36500)
    prior_strength: float = bounded(0.1, 1e6)
    model_strength: float = bounded(0.1, 1e6)
    max_factor: float = bounded(1.0, 1000)
    min_visits: int = bounded(1, 1_000_000)
    min_change: float = bounded(0, 10)
    max_visits_per_terminal: int = bounded(1, 1_000_000)
    max_codes: int = bounded(1, 1000)
    max_table_bytes: int = bounded(256, 4096)


@dataclass(frozen=True)
class ServerSettings:
    """The support server (posdiag-support); terminals ignore this section."""

    max_bundle_bytes: int = bounded(1024, 1 << 30)
    max_members: int = bounded(3, 10000)
    max_unpacked_bytes: int = bounded(1024, 1 << 32)
    session_hours: float = bounded(0.1, 24 * 30)
    command_redeliver_seconds: float = bounded(10, 86400)
    page_size: int = bounded(1, 500)
    stats_days: int = bounded(1, 366)
    # hostile clients (docs/server-security.md)
    max_manifest_bytes: int = bounded(1024, 1 << 26)
    max_json_member_bytes: int = bounded(1024, 1 << 28)
    log_view_kib: int = bounded(1, 1 << 20)
    ingest_memory_mib: int = bounded(16, 1 << 20)
    ingest_wait_seconds: float = bounded(0, 600)
    clock_ahead_seconds: float = bounded(0, 1e9)
    clock_behind_days: float = bounded(0, 36500)
    header_timeout_seconds: float = bounded(0.1, 3600)
    body_timeout_seconds: float = bounded(0.1, 3600)
    max_connections: int = bounded(0, 1 << 20)
    max_connections_per_client: int = bounded(0, 1 << 20)
    signin_window_seconds: float = bounded(1, 86400)
    signin_max_failures_per_user: int = bounded(1, 1 << 20)
    signin_max_failures_per_address: int = bounded(1, 1 << 20)
    password_hash_workers: int = bounded(1, 64)
    password_hash_queue: int = bounded(1, 10000)
    blobs: BlobSettings
    retention: RetentionSettings
    fleet: FleetSettings
    webhooks: WebhookSettings
    outcomes: OutcomeSettings
