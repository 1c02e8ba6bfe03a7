"""The [server] section of posdiag.toml, read by the support server; terminals check it
with the rest of the file but ignore it. Beside remote/server/, not in it: the terminal's
config check imports it, and the terminal executable leaves remote/server/ out
(packaging/posdiag.spec)."""

from __future__ import annotations

import ipaddress
import urllib.parse
from dataclasses import dataclass

from probes.contract.settings import bounded


@dataclass(frozen=True)
class BlobSettings:
    """Where bundle files live. Empty strings: the directory DATA/blobs, and boto3's own
    sources (AWS_* variables, ~/.aws) for whatever an S3 store needs. A store that stops
    answering costs a caller at most operation_timeout_seconds, and after breaker_failures
    failures in a row none at all for breaker_open_seconds (remote/server/blobs.py)."""

    url: str
    endpoint_url: str
    region: str
    access_key_id: str
    secret_access_key: str
    operation_timeout_seconds: float = bounded(0.1, 600)
    breaker_failures: int = bounded(1, 1000)
    breaker_open_seconds: float = bounded(0.1, 3600)


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
    observed_label_keys: list[str]
    observed_label_max_changes: int = bounded(0, 10000)
    observed_label_window_hours: float = bounded(0.1, 720)
    outage_window_minutes: float = bounded(1, 1440)
    outage_long_window_minutes: float = bounded(1, 1440)
    outage_baseline_days: float = bounded(0.1, 365)
    outage_baseline_floor_per_terminal_hour: float = bounded(0, 1)
    outage_min_terminals: int = bounded(2, 100000)
    outage_min_ratio: float = bounded(1, 1e6)
    outage_p_value: float = bounded(0, 1)
    outage_close_p_value: float = bounded(0, 1)
    outage_young_p_value: float = bounded(0, 1)
    outage_close_after_minutes: float = bounded(1, 10080)
    outage_explain_fraction: float = bounded(0.5, 1)
    outage_widen_min_share: float = bounded(0.1, 10)
    outage_new_terminal_hours: float = bounded(0, 24 * 365)
    outage_spread_labels: list[str]
    outage_min_spread: int = bounded(1, 1000)
    outage_wide_scopes: list[list[str]]
    outage_child_labels: list[str]
    outage_wide_min_outside: int = bounded(0, 100000)
    outage_hold_min_share: float = bounded(0, 1)
    outage_hold_max_bundles: int = bounded(1, 1 << 30)
    ignored_categories: list[str]
    counted_categories: list[str]
    regression_window_days: float = bounded(0.1, 365)
    regression_min_terminals: int = bounded(2, 100000)
    regression_min_affected: int = bounded(1, 100000)
    regression_min_ratio: float = bounded(1, 1e6)
    regression_p_value: float = bounded(0, 1)
    regression_close_p_value: float = bounded(0, 1)
    sweep_seconds: float = bounded(0.1, 86400)


@dataclass(frozen=True)
class WebhookSettings:
    """Alerts: JSON POSTed to `url`, signed with HMAC-SHA256 of `secret`; empty url: none.
    The receiver is not trusted (docs/server-security.md): one deadline per delivery, a few
    KiB of its answer read, a bounded queue, no private targets unless allowed."""

    url: str
    events: list[str]
    secret: str
    timeout_seconds: float = bounded(0.1, 120)
    retry_min_seconds: float = bounded(0.01, 3600)
    retry_max_seconds: float = bounded(0.01, 86400)
    max_queued_deliveries: int = bounded(1, 10_000_000)
    allow_private_targets: bool

    def table_problem(self) -> str | None:
        if not self.url:
            return None
        problem = target_problem(self.url, self.allow_private_targets)
        if problem:
            return f"url: {problem}"
        if not self.secret:
            return "secret: set a secret when url is set (the receiver checks X-Posdiag-Signature with it)"
        return None


def target_problem(url: str, allow_private: bool) -> str | None:
    """Why a webhook may not go to `url` as written: not http(s), no host, or (unless
    allowed) an address literal that is loopback, private, link-local or otherwise not
    public. A host name is resolved, and its addresses checked, at each delivery."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"only http:// and https:// are sent to, not {parts.scheme + ':' if parts.scheme else 'a URL without a scheme'}"
    try:
        host, _port = parts.hostname, parts.port
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if not host:
        return "no host in the URL"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not allow_private and not public(address):
        return f"{address} is not a public address; set allow_private_targets = true to send to it"
    return None


def public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A webhook may go here without allow_private_targets: a global unicast address (not
    loopback, private, link-local, carrier-grade NAT, multicast, reserved or unspecified)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


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
    password_min_length: int = bounded(8, 256)
    max_label_filters: int = bounded(1, 32)
    statement_timeout_seconds: float = bounded(0.1, 3600)
    max_concurrent_reads: int = bounded(1, 1000)
    read_wait_seconds: float = bounded(0, 600)
    fleet_queue_max: int = bounded(1, 100_000_000)
    fleet_queue_threads: int = bounded(1, 64)
    ingest_slots: int = bounded(1, 1000)
    ingest_max_waiting: int = bounded(0, 1_000_000)
    shed_retry_after_seconds: int = bounded(1, 3600)
    quota_bundles_per_terminal_hour: int = bounded(0, 1_000_000)
    quota_mib_per_terminal_day: float = bounded(0, 1 << 20)
    blobs: BlobSettings
    retention: RetentionSettings
    fleet: FleetSettings
    webhooks: WebhookSettings
    outcomes: OutcomeSettings
