"""A generated sysfs/procfs tree: battery and mains supply, eMMC, thermal zone, RTC,
network interfaces, routes, Wi-Fi, memory, uptime, mounts and the payment app's process,
plus a scratch area for the storage write test.

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

FAULTS = frozenset(power.FINDINGS + storage.FINDINGS + system.FINDINGS + network.LINK_FINDINGS)
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


def sysfs_files(faults: frozenset[str]) -> dict[str, str]:
    life = "0x0B 0x0A" if "storage.emmc_eol" in faults else "0x09 0x08" if "storage.emmc_wear" in faults else "0x02 0x01"
    pre_eol = "0x03" if "storage.emmc_eol" in faults else "0x01"
    link = "down" if "network.link_down" in faults else "up"
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
    for iface in ("eth0", "wlan0"):
        files[f"class/net/{iface}/operstate"] = link
        files[f"class/net/{iface}/carrier"] = "1" if link == "up" else "0"
    files["class/net/wlan0/uevent"] = "DEVTYPE=wlan\nINTERFACE=wlan0"  # cfg80211 devices say so
    files["class/net/lo/operstate"] = "unknown"
    return files


def procfs_files(faults: frozenset[str], data_mount: Path) -> dict[str, str]:
    routes = ["Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"]
    if "network.no_route" not in faults:
        routes.append("wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0")
    routes.append("wlan0\t0001A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0")
    level = "-95." if "network.weak_signal" in faults else "-58."
    ro = "ro" if "storage.readonly" in faults else "rw"
    files = {
        "meminfo": "MemTotal:        2009740 kB\nMemFree:          210000 kB\n"
        + f"MemAvailable:     {30000 if 'system.memory_low' in faults else 910000} kB",
        "uptime": "95.20 150.11" if "system.recent_reboot" in faults else "86400.50 170000.20",
        "loadavg": "0.42 0.35 0.30 1/180 4300",
        "mounts": "/dev/mmcblk0p2 / ext4 rw,relatime 0 0\n"
        + f"/dev/mmcblk0p5 {data_mount} ext4 {ro},relatime 0 0\nproc /proc proc rw 0 0",
        "net/route": "\n".join(routes),
        "net/wireless": "Inter-| sta-|   Quality        |   Discarded packets\n"
        + " face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22\n"
        + f" wlan0: 0000   52.  {level}  -256        0      0      0      0     12        0",
    }
    if "system.app_not_running" not in faults:
        files[f"{APP_PID}/comm"] = APP
        files[f"{APP_PID}/cmdline"] = f"/opt/pay/bin/{APP}\0--daemon"
    return files


@contextlib.contextmanager
def start(faults: frozenset[str], workdir: Path) -> Iterator[dict[str, Any]]:
    sysfs, procfs, data = workdir / "sys", workdir / "proc", workdir / "data"
    data.mkdir()
    write_tree(sysfs, sysfs_files(faults))
    write_tree(procfs, procfs_files(faults, data))
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
