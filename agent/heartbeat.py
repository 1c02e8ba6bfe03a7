"""The heartbeat: a small health report the agent sends every `heartbeat_seconds` (the
contract of `POST /api/v1/heartbeats`, docs/fleet.md). Built from the newest health
snapshot, so sending one reads no device and writes nothing. It names the learned table the
terminal holds (`learned_hash`), so that the answer carries a table only when the server has
another for this model (docs/outcomes.md)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent import __version__
from agent.facts import iso_utc, terminal_identity
from agent.learned_table import held_hash

DIRECT = (
    "battery_pct", "battery_wear_ratio", "battery_cycle_count", "emmc_life_used_pct", "free_mib", "max_temp_c",
    "memory_available_mib",
)  # fmt: skip


@dataclass
class Counters:
    """Since the agent started."""

    errors: int = 0
    diagnoses: int = 0


def health(snap: dict[str, Any] | None) -> dict[str, Any]:
    """The contract's health keys from a snapshot (free space is the fullest watched mount's,
    signal the Wi-Fi level); a key the snapshot lacks is null."""
    snap = snap or {}
    out: dict[str, Any] = {key: snap.get(key) for key in DIRECT}
    out["signal_dbm"] = snap.get("wifi_level_dbm")
    return out


def uptime_s(procfs_root: str) -> float | None:
    try:
        return round(float(Path(procfs_root, "uptime").read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return None


def payload(config: Any, snap: dict[str, Any] | None, counters: Counters, outbox: Any, labels: dict[str, str]) -> dict[str, Any]:
    host = config.section("host")
    identity = terminal_identity(config.section("terminal"), host)
    return {
        "terminal_id": identity["id"],
        "sent_at": iso_utc(datetime.now(UTC)),
        "model": identity["model"],
        "firmware": identity["firmware"],
        "app_version": identity["app_version"],
        "agent_version": __version__,
        "labels": labels,
        "learned_hash": held_hash(config.section("daemon").state_dir),
        "health": health(snap),
        "counters": {
            "errors": counters.errors,
            "diagnoses": counters.diagnoses,
            "bundles_waiting": len(outbox.entries()),
            "bundles_dead": len(outbox.dead_entries()),
            "uptime_s": uptime_s(host.procfs_root),
        },
    }
