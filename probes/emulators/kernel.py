"""A generated sysfs/procfs tree: battery and mains supply, eMMC, thermal zone, RTC,
network interfaces, routes, Wi-Fi, memory, uptime, mounts and the payment app's process,
plus a scratch area for the storage write test.

The interfaces and routes follow the device model: wwan0 (the modem's data interface) has
carrier only while the data session is up, wlan0 only while Wi-Fi is associated; the default
route goes through the link that is up (Wi-Fi metric 600 before cellular 700, as
NetworkManager orders them), and there is none when no link is up.

Disk usage and write latency cannot be faked without mounting a filesystem (root only),
so for storage.disk_low / disk_full / inodes_exhausted / slow the emulator lowers that
probe's threshold to 0: the probe's real statvfs and write path then reports the fault.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from probes import network, power, storage, system
from probes.emulators._model import CELLULAR, WIFI, TerminalState

FAULTS = frozenset(power.FINDINGS + storage.FINDINGS + system.FINDINGS + network.LINK_FINDINGS)
# interface, its sysfs DEVTYPE, the part whose being down takes its carrier, route metric and gateway
LINKS = {
    CELLULAR: ("wwan0", "wwan", "cellular_link", 700, "0100000A"),  # 10.0.0.1 (the carrier's side)
    WIFI: ("wlan0", "wlan", "wifi_link", 600, "0101A8C0"),  # 192.168.1.1
}
APP = "payapp"
APP_PID = 4242
THRESHOLD_FAULTS = {
    "storage.disk_low": "disk_low_pct",
    "storage.disk_full": "disk_full_pct",
    "storage.inodes_exhausted": "inodes_exhausted_pct",
    "storage.slow": "slow_write_ms",
}


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content + "\n", encoding="utf-8")


def battery_files(faults: frozenset[str]) -> dict[str, str]:
    capacity = 5 if "power.battery_critical" in faults else 15 if "power.battery_low" in faults else 76
    status = "Not charging" if "power.not_charging" in faults else "Charging"
    bat = "class/power_supply/battery/"
    return {
        bat + "type": "Battery",
        bat + "present": "0" if "power.no_battery" in faults else "1",
        bat + "capacity": str(capacity),
        bat + "status": status if capacity > 10 or status == "Not charging" else "Discharging",
        bat + "health": "Dead" if "power.battery_unhealthy" in faults else "Good",
        bat + "voltage_now": "3950000",
        bat + "temp": "580" if "power.overheat" in faults else "310",
        bat + "cycle_count": "212",
        bat + "charge_full": "2650000",
        bat + "charge_full_design": "3000000",
        "class/power_supply/ac/type": "Mains",
        "class/power_supply/ac/online": "1",
    }


def sysfs_files(state: TerminalState) -> dict[str, str]:
    faults = state.faults
    life = "0x0B 0x0A" if "storage.emmc_eol" in faults else "0x09 0x08" if "storage.emmc_wear" in faults else "0x02 0x01"
    pre_eol = "0x03" if "storage.emmc_eol" in faults else "0x01"
    files = battery_files(faults)
    files.update(
        {
            "block/mmcblk0/device/life_time": life,
            "block/mmcblk0/device/pre_eol_info": pre_eol,
            "block/mmcblk0/device/type": "MMC",
            "class/thermal/thermal_zone0/type": "cpu-thermal",
            "class/thermal/thermal_zone0/temp": "96000" if "system.overheat" in faults else "47000",
            "class/rtc/rtc0/since_epoch": "0" if "system.clock_unset" in faults else str(int(time.time())),
        }
    )
    for bearer in sorted(state.bearers):
        iface, devtype, part, _, _ = LINKS[bearer]
        if bearer == CELLULAR and state.down.get("modem") == "modem.absent":
            continue  # the module is gone from USB: no data interface at all
        up = not state.is_down(part)
        # wpa_supplicant leaves an unassociated wlan0 dormant; a wwan0 without a data session is down
        files[f"class/net/{iface}/operstate"] = "up" if up else "dormant" if bearer == WIFI else "down"
        files[f"class/net/{iface}/carrier"] = "1" if up else "0"
        files[f"class/net/{iface}/uevent"] = f"DEVTYPE={devtype}\nINTERFACE={iface}"  # cfg80211 and wwan say so
    files["class/net/lo/operstate"] = "unknown"
    return files


def route_lines(state: TerminalState) -> list[str]:
    """/proc/net/route: a default route (and the subnet) through every link that is up."""
    lines = ["Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"]
    for bearer in sorted(state.bearers, key=lambda b: LINKS[b][3]):
        iface, _, part, metric, gateway = LINKS[bearer]
        if state.is_down(part):
            continue
        if not state.is_down("route"):
            lines.append(f"{iface}\t00000000\t{gateway}\t0003\t0\t0\t{metric}\t00000000\t0\t0\t0")
        subnet = "00" + gateway[2:]  # little-endian hex: the first byte is the last octet
        lines.append(f"{iface}\t{subnet}\t00000000\t0001\t0\t0\t{metric}\t00FFFFFF\t0\t0\t0")
    return lines


def wireless_lines(state: TerminalState) -> list[str]:
    """/proc/net/wireless: wlan0's link quality while associated (an unassociated one has none)."""
    lines = [
        "Inter-| sta-|   Quality        |   Discarded packets",
        " face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22",
    ]
    if WIFI in state.bearers and not state.is_down("wifi_association"):
        level = "-95." if "network.weak_signal" in state.faults else "-58."
        lines.append(f" wlan0: 0000   52.  {level}  -256        0      0      0      0     12        0")
    return lines


def procfs_files(state: TerminalState, data_mount: Path) -> dict[str, str]:
    faults = state.faults
    ro = "ro" if "storage.readonly" in faults else "rw"
    files = {
        "meminfo": "MemTotal:        2009740 kB\nMemFree:          210000 kB\n"
        + f"MemAvailable:     {30000 if 'system.memory_low' in faults else 910000} kB",
        "uptime": "95.20 150.11" if "system.recent_reboot" in faults else "86400.50 170000.20",
        "loadavg": "0.42 0.35 0.30 1/180 4300",
        "mounts": "/dev/mmcblk0p2 / ext4 rw,relatime 0 0\n"
        + f"/dev/mmcblk0p5 {data_mount} ext4 {ro},relatime 0 0\nproc /proc proc rw 0 0",
        "net/route": "\n".join(route_lines(state)),
        "net/wireless": "\n".join(wireless_lines(state)),
    }
    if "system.app_not_running" not in faults:
        files[f"{APP_PID}/comm"] = APP
        files[f"{APP_PID}/cmdline"] = f"/opt/pay/bin/{APP}\0--daemon"
    return files


@contextlib.contextmanager
def start(state: TerminalState, workdir: Path) -> Iterator[dict[str, Any]]:
    faults = state.faults
    sysfs, procfs, data = workdir / "sys", workdir / "proc", workdir / "data"
    data.mkdir()
    write_tree(sysfs, sysfs_files(state))
    write_tree(procfs, procfs_files(state, data))
    scratch = data / "posdiag"
    if "storage.write_failed" in faults:
        blocker = data / "blocked"
        blocker.write_text("a file where the scratch directory should be\n")
        scratch = blocker / "scratch"
    storage: dict[str, Any] = {"mounts": [str(data)], "scratch_dir": str(scratch)}
    storage.update({THRESHOLD_FAULTS[f]: 0.0 for f in faults & THRESHOLD_FAULTS.keys()})
    yield {
        "host": {"sysfs_root": str(sysfs), "procfs_root": str(procfs)},
        "probes": {
            "storage": storage,
            "network": {"interfaces": []},
            "system": {"app_process": APP},
        },
    }
