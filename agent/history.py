"""Health snapshots (battery, temperature, free space, signal, memory) in a bounded ring
on disk, so a bundle shows the trend before the error and a heartbeat reports the latest.

A snapshot reads a few kernel files directly instead of running probes: it runs every
few minutes on a weak CPU and must neither write to flash nor open network connections.
A worker takes it (the probe modules it reads through are not small); the resident agent
writes it into the ring, so this module imports them only when a snapshot is taken.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from agent.sources import now_iso

TYPE_CHECKING = False  # typing's, without importing typing (0.4 MB): agent/resident.py says why
if TYPE_CHECKING:
    from typing import Any

    from agent.config import Config


def snapshot(config: Config) -> dict[str, Any]:
    import shutil

    from probes import ProbeContext, network, power, storage, system
    from probes._metrics import keep_worst

    ctx = ProbeContext(config.section("host"), 1.0)
    snap: dict[str, Any] = {"at": now_iso()}
    batteries = [power.read_battery(p) for p in sorted(ctx.sys("class", "power_supply").glob("*")) if (p / "capacity").exists()]
    if batteries:
        battery = batteries[0]
        snap["battery_pct"] = battery.capacity_pct
        snap["battery_temp_c"] = battery.temp_c
        snap["battery_wear_ratio"] = None if battery.wear_ratio is None else round(battery.wear_ratio, 3)
        snap["battery_cycle_count"] = battery.cycle_count
    metrics: dict[str, Any] = {}
    system.check_thermal(config.probes["system"], ctx, metrics)
    system.check_memory(config.probes["system"], ctx, metrics)
    network.check_wireless(config.probes["network"], ctx, metrics)
    snap.update({k: v for k, v in metrics.items() if k in {"max_temp_c", "memory_available_mib", "wifi_level_dbm", "wifi_interface"}})
    iface = network.default_interface(ctx)
    if iface is not None:
        snap["link"] = network.link_kind(ctx, iface)
    levels = [storage.life_used_level(device) for device in storage.emmc_devices(ctx)]
    if levels:
        snap["emmc_life_used_pct"] = storage.life_used_pct(max(levels))
    for mount in config.probes["storage"].mounts:
        try:
            usage = shutil.disk_usage(mount)
        except OSError:
            continue
        keep_worst(snap, "free_mib", round(usage.free / 2**20, 1), "mount", mount, lowest=True)
    return {k: v for k, v in snap.items() if v is not None}


def ring_for(config: Config) -> HistoryRing:
    """The ring the agent keeps in its state directory (also read by `diagnose --bundle`)."""
    settings = config.section("daemon")
    return HistoryRing(Path(settings.state_dir) / "history.jsonl", settings.history_snapshots)


class HistoryRing:
    """At most `capacity` snapshots in fixed-size slots of one file, each a JSON line padded
    with spaces and numbered (`seq`). A new snapshot overwrites the oldest slot in place, so
    a snapshot costs the flash one page, never a rewrite of the file; a slot torn by a power
    cut is one unreadable line, skipped on reading."""

    SLOT_BYTES = 512

    def __init__(self, path: Path, capacity: int) -> None:
        self.path = path
        self.capacity = capacity
        self.next_seq: int | None = None

    def append(self, snap: dict[str, Any]) -> None:
        if self.next_seq is None:
            newest = self._slots()
            self.next_seq = max((e["seq"] for e in newest), default=-1) + 1
        line = self._encode({**snap, "seq": self.next_seq})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, line, (self.next_seq % self.capacity) * self.SLOT_BYTES)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        self.next_seq += 1

    def _encode(self, snap: dict[str, Any]) -> bytes:
        """One slot: the JSON object, padded; keys other than `at` and `seq` are dropped from
        the end while it does not fit."""
        keys = list(snap)
        while True:
            raw = json.dumps({k: snap[k] for k in keys}, ensure_ascii=False, separators=(",", ":")).encode()
            if len(raw) < self.SLOT_BYTES or len(keys) <= 2:
                return raw[: self.SLOT_BYTES - 1].ljust(self.SLOT_BYTES - 1) + b"\n"
            keys.remove(next(k for k in reversed(keys) if k not in ("at", "seq")))

    def _slots(self) -> list[dict[str, Any]]:
        try:
            raw = self.path.read_bytes()
        except OSError:
            return []
        entries = []
        lines = raw.splitlines()
        for index, line in enumerate(lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a slot torn by a power loss, or never written
            if isinstance(entry, dict):
                if not isinstance(entry.get("seq"), int):  # a line of the older append-only file
                    entry["seq"] = index - len(lines)
                entries.append(entry)
        return sorted(entries, key=lambda e: e["seq"])

    def read(self, limit: int | None = -1) -> list[dict[str, Any]]:
        """The newest `limit` snapshots, oldest first (default: capacity; None: all on disk),
        without the ring's own numbering."""
        entries = [{k: v for k, v in e.items() if k != "seq"} for e in self._slots()]
        keep = self.capacity if limit == -1 else limit
        return entries if keep is None else entries[-keep:]

    def latest(self) -> dict[str, Any] | None:
        entries = self.read(limit=1)
        return entries[0] if entries else None
