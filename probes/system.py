"""Memory, load, uptime, clock sanity, thermal zones and the payment app's process.

Everything is read from procfs and sysfs under the configured roots, so the same code
reads a real terminal and a tree built for tests.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from probes import ProbeContext
from probes._sysfs import read_number, read_text
from probes.contract.records import Finding, MetricValue, Observation
from probes.contract.settings import ProbeSettings, bounded

NAME = "system"
FINDINGS = (
    "system.memory_low",
    "system.recent_reboot",
    "system.clock_unset",
    "system.overheat",
    "system.app_not_running",
)


@dataclass(frozen=True)
class SystemSettings(ProbeSettings):
    app_process: str
    memory_low_mib: float = bounded(0, 1 << 20)
    recent_reboot_seconds: float = bounded(0, 1 << 30)
    clock_min_year: int = bounded(1970, 2100)
    overheat_c: float = bounded(20, 150)


SETTINGS = SystemSettings


def run(settings: SystemSettings, ctx: ProbeContext) -> Observation:
    findings: list[Finding] = []
    metrics: dict[str, MetricValue] = {}
    findings += check_memory(settings, ctx, metrics)
    findings += check_uptime(settings, ctx, metrics)
    findings += check_clock(settings, ctx, metrics)
    findings += check_thermal(settings, ctx, metrics)
    load = read_text(ctx.proc("loadavg"))
    if load:
        metrics["load_1m"] = float(load.split()[0])
    if settings.app_process:
        pid = find_process(ctx, settings.app_process)
        if pid is None:
            findings.append(Finding.fail("system.app_not_running", f"payment app {settings.app_process!r} is not running", process=settings.app_process))
        else:
            metrics["app_pid"] = pid
    return Observation(findings, metrics)


def meminfo(ctx: ProbeContext) -> dict[str, float]:
    values = {}
    for line in (read_text(ctx.proc("meminfo")) or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = float(parts[0])  # kB
    return values


def check_memory(s: SystemSettings, ctx: ProbeContext, metrics: dict[str, MetricValue]) -> list[Finding]:
    info = meminfo(ctx)
    if "MemAvailable" not in info:
        return []
    available = info["MemAvailable"] / 1024
    metrics["memory_available_mib"] = round(available, 1)
    if "MemTotal" in info:
        metrics["memory_total_mib"] = round(info["MemTotal"] / 1024, 1)
    if available < s.memory_low_mib:
        return [Finding.warn("system.memory_low", f"only {available:.0f} MiB of memory available", available_mib=round(available, 1))]
    return []


def check_uptime(s: SystemSettings, ctx: ProbeContext, metrics: dict[str, MetricValue]) -> list[Finding]:
    text = read_text(ctx.proc("uptime"))
    if not text:
        return []
    uptime = float(text.split()[0])
    metrics["uptime_s"] = round(uptime)
    if uptime < s.recent_reboot_seconds:
        return [Finding.warn("system.recent_reboot", f"terminal restarted {uptime / 60:.1f} min ago", uptime_s=round(uptime))]
    return []


def check_clock(s: SystemSettings, ctx: ProbeContext, metrics: dict[str, MetricValue]) -> list[Finding]:
    """The system clock and the RTC must both be past Jan 1 of clock_min_year."""
    floor = datetime(s.clock_min_year, 1, 1, tzinfo=UTC).timestamp()
    found = []
    now = time.time()
    if now < floor:
        found.append(Finding.fail("system.clock_unset", f"system clock reads {iso(now)}", clock=iso(now)))
    rtc = read_number(ctx.sys("class", "rtc", "rtc0", "since_epoch"))
    if rtc is not None:
        metrics["rtc_offset_s"] = round(rtc - now)
        if rtc < floor:
            found.append(Finding.fail("system.clock_unset", f"hardware clock (RTC) reads {iso(rtc)}: its battery may be flat", rtc=iso(rtc)))
    return found


def iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")


def check_thermal(s: SystemSettings, ctx: ProbeContext, metrics: dict[str, MetricValue]) -> list[Finding]:
    found = []
    hottest = None
    for zone in sorted(ctx.sys("class", "thermal").glob("thermal_zone*")):
        milli = read_number(zone / "temp")
        if milli is None:
            continue
        temp = milli / 1000
        hottest = temp if hottest is None else max(hottest, temp)
        if temp >= s.overheat_c:
            kind = read_text(zone / "type") or zone.name
            found.append(Finding.fail("system.overheat", f"{kind} at {temp:.1f} °C", zone=kind, temp_c=temp))
    if hottest is not None:
        metrics["max_temp_c"] = hottest
    return found


def find_process(ctx: ProbeContext, name: str) -> int | None:
    """pid of a process whose comm or argv[0] basename is `name` (comm is cut at 15 chars)."""
    try:
        entries = os.scandir(ctx.proc())
    except OSError:
        return None
    with entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            comm = read_text(ctx.proc(entry.name, "comm"))
            if comm == name[:15]:
                return int(entry.name)
            cmdline = read_text(ctx.proc(entry.name, "cmdline")) or ""
            argv0 = cmdline.split("\0", 1)[0]
            if argv0 and os.path.basename(argv0) == name:
                return int(entry.name)
    return None
