"""Facts about the terminal read from the OS: its identity (config first, the firmware's own
word where config leaves a key empty) and the small system facts support asks for first."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from remote import wire


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def terminal_identity(terminal: Any, host: Any) -> dict[str, str]:
    """Terminal identity: config values first, the OS's own word where config leaves one empty."""
    sysfs, procfs = Path(host.sysfs_root), Path(host.procfs_root)
    found = {
        "serial": first_text(sysfs / "class/dmi/id/product_serial", procfs / "device-tree/serial-number"),
        "model": first_text(sysfs / "class/dmi/id/product_name", procfs / "device-tree/model"),
        "firmware": first_text(sysfs / "class/dmi/id/bios_version", procfs / "sys/kernel/osrelease"),
    }
    identity = {"id": terminal.id, "app_version": terminal.app_version}
    for key, value in found.items():
        identity[key] = getattr(terminal, key) or value
    return identity


def system_facts(host: Any) -> dict[str, Any]:
    """Small facts support asks for first: kernel, uptime, load, memory, the clock."""
    procfs = Path(host.procfs_root)
    facts: dict[str, Any] = {
        "kernel": first_text(procfs / "sys/kernel/osrelease"),
        "hostname": first_text(procfs / "sys/kernel/hostname"),
        "clock_utc": iso_utc(datetime.now(UTC)),
    }
    uptime = first_text(procfs / "uptime").split()
    facts["uptime_seconds"] = float(uptime[0]) if uptime else None
    load = first_text(procfs / "loadavg").split()
    facts["loadavg"] = [float(x) for x in load[:3]] if len(load) >= 3 else None
    meminfo = first_text(procfs / "meminfo")
    for key in ("MemTotal", "MemAvailable"):
        match = re.search(rf"^{key}:\s+(\d+)", meminfo, re.MULTILINE)
        facts[f"{key.lower()}_kib"] = int(match[1]) if match else None
    return facts


def first_text(*paths: Path) -> str:
    """The first of `paths` that holds text, as the server takes it (no control characters)."""
    for path in paths:
        try:
            text = wire.printable(path.read_text(encoding="utf-8", errors="replace")).strip()
        except OSError:
            continue
        if text:
            return text
    return ""
