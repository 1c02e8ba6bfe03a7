"""Typed shape of every config section other than [probes.*].

Values live in config/posdiag.toml (every default in that one file); these classes say
only what each key must be. `bounded` attaches the range or choices the loader checks.
A new section is one class here and one entry in SECTIONS; [host], [app] and [server] are
declared where their readers live (probes/contract/settings.py, remote/server_settings.py).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from probes.contract.settings import AppSettings, HostSettings, bounded
from remote.server_settings import ServerSettings
from remote import wire

COUNTRY = re.compile(r"[A-Z]{2}")


def country_problem(country: str) -> str | None:
    if country and not COUNTRY.fullmatch(country):
        return f"expected an ISO 3166-1 alpha-2 country code in capitals, such as \"CN\", got {country!r}"
    return None


def labels_problem(labels: dict[str, str]) -> str | None:
    """Labels group terminals on the support server, which refuses a bundle or heartbeat
    whose labels break wire.label_problem: checked here, where the operator can fix them."""
    if len(labels) > wire.MAX_LABELS:
        return f"at most {wire.MAX_LABELS} labels"
    for key, value in labels.items():
        problem = wire.label_problem(key, value)
        if problem:
            return f"label {key!r}: {problem}"
    return None


@dataclass(frozen=True)
class TerminalSettings:
    id: str = field(metadata={"check": wire.terminal_id_problem})
    serial: str = field(metadata={"check": wire.text_problem})
    model: str = field(metadata={"check": wire.text_problem})
    firmware: str = field(metadata={"check": wire.text_problem})
    app_version: str = field(metadata={"check": wire.text_problem})
    lang: str = bounded(choices=("auto", "zh", "en"))
    country: str = field(metadata={"check": country_problem})
    labels: dict[str, str] = field(metadata={"check": labels_problem})


@dataclass(frozen=True)
class RunnerSettings:
    deadline_seconds: float = bounded(0.1, 600)


@dataclass(frozen=True)
class KnowledgeSettings:
    """Error-code knowledge base: the packaged tables plus an operator's own (vendor codes)."""

    extra_paths: list[str]
    scheme_order: list[str]
    scheme_order_by_country: dict[str, list[str]]


@dataclass(frozen=True)
class LogsSettings:
    """Log files whose redacted tails go into a bundle."""

    files: list[str]
    lines: int = bounded(0, 100000)
    file_max_kib: int = bounded(1, 65536)
    total_max_kib: int = bounded(1, 262144)


@dataclass(frozen=True)
class BundleSettings:
    max_kib: int = bounded(8, 1 << 20)
    history_entries: int = bounded(0, 10000)
    events_entries: int = bounded(0, 10000)


@dataclass(frozen=True)
class OutboxSettings:
    dir: str
    max_mib: float = bounded(0.1, 100000)


@dataclass(frozen=True)
class UploadSettings:
    server_url: str
    token: str
    ca_file: str
    connect_timeout_seconds: float = bounded(0.1, 120)
    read_timeout_seconds: float = bounded(0.1, 600)
    max_attempts: int = bounded(1, 100)
    backoff_initial_seconds: float = bounded(0, 3600)
    backoff_max_seconds: float = bounded(0, 86400)
    retry_after_max_seconds: float = bounded(0, 86400)


def log_pattern_problem(pattern: str) -> str | None:
    """Why a log pattern cannot work, None when it compiles and has a named group `code`."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        return f"not a valid regular expression ({exc})"
    if "code" not in compiled.groupindex:
        return "the pattern has no named group `code`, e.g. (?P<code>[0-9A-Z]{2})"
    return None


@dataclass(frozen=True)
class LogSource:
    """A payment-app log file; each pattern has a named group `code` (and may have `scheme`)."""

    path: str
    patterns: list[str] = field(metadata={"check": log_pattern_problem})
    scheme: str = field(default="")
    # Globs (in the log's directory) of rotated copies beyond name.1, name-DATE and the like.
    rotated: list[str] = field(default=())  # type: ignore[assignment]


def listen_problem(listen: str) -> str | None:
    """Why the event socket cannot listen there; "" (off), unix:/path or loopback host:port work."""
    if not listen:
        return None
    if listen.startswith("unix:"):
        return None if listen[5:] else "expected a path after unix:, e.g. unix:/run/posdiag/events.sock"
    host, _, port = listen.rpartition(":")
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return f"expected unix:/path or a loopback address and port such as 127.0.0.1:7878, got {listen!r}"
    if not loopback:
        return "the event socket listens on loopback only: it is not a network service"
    if not port.isdigit() or int(port) > 65535:
        return f"{port!r} is not a TCP port number"
    return None


@dataclass(frozen=True)
class DaemonSettings:
    state_dir: str
    log_sources: list[LogSource]
    last_error_file: str
    listen: str = field(metadata={"check": listen_problem})
    busy_lock_files: list[str]
    settle_seconds: float = bounded(0, 60)
    max_wait_seconds: float = bounded(0, 600)
    debounce_seconds: float = bounded(0, 86400)
    max_diagnoses_per_hour: int = bounded(0, 3600)
    reply_timeout_seconds: float = bounded(0, 120)
    snapshot_interval_seconds: float = bounded(1, 86400)
    history_snapshots: int = bounded(1, 100000)
    command_poll_seconds: float = bounded(1, 86400)
    heartbeat_seconds: float = bounded(1, 86400)
    start_jitter_seconds: float = bounded(0, 3600)
    upload_retry_seconds: float = bounded(1, 86400)
    file_poll_seconds: float = bounded(0.1, 3600)
    worker_linger_seconds: float = bounded(0, 3600)
    nice: int = bounded(0, 19)
    log_level: str = bounded(choices=("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class DispatchSettings:
    """How long a merchant verdict is remembered (agent/merchant_fixes.py)."""

    merchant_fix_memory_hours: float = bounded(0, 24 * 30)
    merchant_fix_grace_seconds: float = bounded(0, 86400)


@dataclass(frozen=True)
class LearningSettings:
    """What a learned table from the support server may not change (agent/learned.py)."""

    safety_causes: list[str]


SECTIONS: dict[str, type] = {
    "terminal": TerminalSettings,
    "host": HostSettings,
    "app": AppSettings,
    "runner": RunnerSettings,
    "server": ServerSettings,
    "knowledge": KnowledgeSettings,
    "logs": LogsSettings,
    "bundle": BundleSettings,
    "outbox": OutboxSettings,
    "upload": UploadSettings,
    "daemon": DaemonSettings,
    "dispatch": DispatchSettings,
    "learning": LearningSettings,
}
