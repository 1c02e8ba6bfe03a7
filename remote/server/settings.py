"""The [server] section of posdiag.toml, read by the support server; terminals check it
with the rest of the file but ignore it."""

from __future__ import annotations

from dataclasses import dataclass

from probes.contract.settings import bounded


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
