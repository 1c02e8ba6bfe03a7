"""Health snapshots (battery, temperature, free space, signal, memory) in a bounded ring
on disk, so a bundle shows the trend before the error.

A snapshot reads a few kernel files directly instead of running probes: it runs every
few minutes on a weak CPU and must neither write to flash nor open network connections.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from agent.config import Config
from agent.sources import now_iso
from probes import ProbeContext, network, power, system
from probes._metrics import keep_worst


def snapshot(config: Config) -> dict[str, Any]:
    ctx = ProbeContext(config.section("host"), 1.0)
    snap: dict[str, Any] = {"at": now_iso()}
    batteries = [power.read_battery(p) for p in sorted(ctx.sys("class", "power_supply").glob("*")) if (p / "capacity").exists()]
    if batteries:
        snap["battery_pct"] = batteries[0].capacity_pct
        snap["battery_temp_c"] = batteries[0].temp_c
    metrics: dict[str, Any] = {}
    system.check_thermal(config.probes["system"], ctx, metrics)
    system.check_memory(config.probes["system"], ctx, metrics)
    network.check_wireless(config.probes["network"], ctx, metrics)
    snap.update({k: v for k, v in metrics.items() if k in {"max_temp_c", "memory_available_mib", "wifi_level_dbm", "wifi_interface"}})
    for mount in config.probes["storage"].mounts:
        try:
            usage = shutil.disk_usage(mount)
        except OSError:
            continue
        keep_worst(snap, "free_mib", round(usage.free / 2**20, 1), "mount", mount, lowest=True)
    return snap


def ring_for(config: Config) -> HistoryRing:
    """The ring the agent keeps in its state directory (also read by `diagnose --bundle`)."""
    settings = config.section("daemon")
    return HistoryRing(Path(settings.state_dir) / "history.jsonl", settings.history_snapshots)


class HistoryRing:
    """At most `capacity` snapshots in a JSON-lines file; rewritten atomically when it
    has grown half again past its capacity, so appends stay cheap."""

    def __init__(self, path: Path, capacity: int) -> None:
        self.path = path
        self.capacity = capacity
        self.lines: int | None = None

    def append(self, snap: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.lines is None:
            self.lines = len(self.read(limit=None))
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(snap, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.lines += 1
        if self.lines > self.capacity * 3 // 2:
            self._rewrite(self.read())
            self.lines = self.capacity

    def read(self, limit: int | None = -1) -> list[dict[str, Any]]:
        """The newest `limit` snapshots (default: capacity; None: all on disk)."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        entries = []
        for line in lines:
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a power loss
        keep = self.capacity if limit == -1 else limit
        return entries if keep is None else entries[-keep:]

    def _rewrite(self, entries: list[dict[str, Any]]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(e, ensure_ascii=False) + "\n" for e in entries)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
