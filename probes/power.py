"""Battery and supplies from the power_supply class (Documentation/ABI/testing/sysfs-class-power).

psutil.sensors_battery only sees supplies named BAT* or containing "battery" (DOMAIN.md
section 4), so sysfs is read directly and psutil is the fallback when the class is missing.

A countertop terminal on mains has no battery, and "no battery" there is no fault. With
battery_expected = "auto" (the default) a battery is expected only when the power_supply class
has a Battery-type supply (the driver knows one belongs there, present or not) or the
terminal's model is listed in portable_models; true and false decide outright.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from probes import ProbeContext
from probes._sysfs import read_number, read_text
from probes.contract.records import Finding, MetricValue, Observation, Status
from probes.contract.settings import ProbeSettings, bounded

NAME = "power"
FINDINGS = (
    "power.battery_low",
    "power.battery_critical",
    "power.battery_unhealthy",
    "power.overheat",
    "power.not_charging",
    "power.no_battery",
)
GOOD_HEALTH = {"Good", "Unknown"}


@dataclass(frozen=True)
class PowerSettings(ProbeSettings):
    battery_expected: bool | str = bounded(choices=("auto",))
    portable_models: list[str]
    battery_low_pct: int = bounded(0, 100)
    battery_critical_pct: int = bounded(0, 100)
    overheat_c: float = bounded(20, 120)
    not_charging_below_pct: int = bounded(0, 100)
    min_wear_ratio: float = bounded(0, 1)


SETTINGS = PowerSettings


@dataclass(frozen=True)
class Battery:
    name: str
    present: bool
    capacity_pct: float | None
    status: str | None
    health: str | None
    voltage_v: float | None
    temp_c: float | None
    cycle_count: float | None
    wear_ratio: float | None


def read_battery(path: Path) -> Battery:
    voltage = read_number(path / "voltage_now")
    temp = read_number(path / "temp")
    full, design = read_number(path / "charge_full"), read_number(path / "charge_full_design")
    present = read_number(path / "present")
    return Battery(
        name=path.name,
        present=present is None or present > 0,
        capacity_pct=read_number(path / "capacity"),
        status=read_text(path / "status"),
        health=read_text(path / "health"),
        voltage_v=None if voltage is None else voltage / 1e6,
        temp_c=None if temp is None else temp / 10,
        cycle_count=read_number(path / "cycle_count"),
        wear_ratio=full / design if full and design else None,
    )


def run(settings: PowerSettings, ctx: ProbeContext) -> Observation:
    class_dir = ctx.sys("class", "power_supply")
    if not class_dir.is_dir():
        return from_psutil(settings, ctx)
    batteries: list[Battery] = []
    external_online = False
    for supply in sorted(class_dir.iterdir()):
        kind = read_text(supply / "type")
        if kind == "Battery":
            batteries.append(read_battery(supply))
        elif kind in {"Mains", "USB", "Wireless"} and read_number(supply / "online") == 1:
            external_online = True
    metrics: dict[str, MetricValue] = {"external_power_online": int(external_online)}
    present = [b for b in batteries if b.present]
    if not present:
        if not expects_battery(settings, ctx, battery_supply_seen=bool(batteries)):
            return Observation(metrics=metrics)
        return Observation([no_battery(settings, "no battery present")], metrics)
    findings: list[Finding] = []
    for battery in present:
        findings += judge(battery, external_online, settings)
    main = present[0]
    metrics.update(battery_metrics(main))
    return Observation(findings, metrics)


def expects_battery(settings: PowerSettings, ctx: ProbeContext, battery_supply_seen: bool) -> bool:
    if settings.battery_expected != "auto":
        return bool(settings.battery_expected)
    portable = {m.strip().casefold() for m in settings.portable_models}
    return battery_supply_seen or (bool(ctx.model) and ctx.model.strip().casefold() in portable)


def no_battery(settings: PowerSettings, what: str) -> Finding:
    why = "battery_expected = true" if settings.battery_expected is True else "a battery supply exists or the model is portable"
    return Finding.fail(
        "power.no_battery",
        f"{what}, yet one is expected ({why}); a countertop terminal on mains: set [probes.power] battery_expected = false",
    )


def judge(b: Battery, external_online: bool, s: PowerSettings) -> list[Finding]:
    found: list[Finding] = []
    if b.capacity_pct is not None:
        if b.capacity_pct <= s.battery_critical_pct:
            found.append(Finding.fail("power.battery_critical", f"{b.name} at {b.capacity_pct:.0f} %", capacity_pct=b.capacity_pct))
        elif b.capacity_pct <= s.battery_low_pct:
            found.append(Finding.warn("power.battery_low", f"{b.name} at {b.capacity_pct:.0f} %", capacity_pct=b.capacity_pct))
    if b.health and b.health not in GOOD_HEALTH:
        severe = b.health in {"Dead", "Over voltage", "Unspecified failure"}
        make = Finding.fail if severe else Finding.warn
        found.append(make("power.battery_unhealthy", f"{b.name} health is {b.health}", health=b.health))
    elif b.wear_ratio is not None and b.wear_ratio < s.min_wear_ratio:
        found.append(
            Finding.warn(
                "power.battery_unhealthy",
                f"{b.name} holds {b.wear_ratio:.0%} of its design charge",
                wear_ratio=round(b.wear_ratio, 3),
            )
        )
    if b.temp_c is not None and b.temp_c >= s.overheat_c:
        found.append(Finding.fail("power.overheat", f"{b.name} at {b.temp_c:.1f} °C", temp_c=b.temp_c))
    if (
        external_online
        and b.status == "Not charging"
        and b.capacity_pct is not None
        and b.capacity_pct < s.not_charging_below_pct
    ):
        found.append(
            Finding.warn(
                "power.not_charging",
                f"{b.name} not charging at {b.capacity_pct:.0f} % although external power is online",
                capacity_pct=b.capacity_pct,
            )
        )
    return found


def battery_metrics(b: Battery) -> dict[str, MetricValue]:
    values: dict[str, MetricValue | None] = {
        "capacity_pct": b.capacity_pct,
        "voltage_v": None if b.voltage_v is None else round(b.voltage_v, 3),
        "temp_c": b.temp_c,
        "cycle_count": b.cycle_count,
        "wear_ratio": None if b.wear_ratio is None else round(b.wear_ratio, 3),
        "status": b.status,
        "health": b.health,
    }
    return {k: v for k, v in values.items() if v is not None}


def from_psutil(settings: PowerSettings, ctx: ProbeContext) -> Observation:
    """No power_supply class under the configured root: only the real root may fall back."""
    if Path(ctx.host.sysfs_root) != Path("/sys"):
        return Observation(status=Status.ABSENT, metrics={"reason": "no power_supply class under sysfs root"})
    import psutil

    reading = psutil.sensors_battery()
    if reading is None:
        if expects_battery(settings, ctx, battery_supply_seen=False):
            return Observation([no_battery(settings, "no battery reported by the OS")])
        return Observation(status=Status.OK)
    battery = Battery("battery", True, reading.percent, None, None, None, None, None, None)
    return Observation(judge(battery, bool(reading.power_plugged), settings), battery_metrics(battery))
