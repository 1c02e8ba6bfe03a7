"""Probes against kernel trees built in tmp_path: quirks the simulator does not cover."""

import os
import time
from dataclasses import replace
from pathlib import Path

from agent import config
from probes import ProbeContext, network, power, storage, system
from probes.contract.records import Status
from probes.contract.settings import HostSettings


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def ctx(tmp_path: Path, timeout: float = 2.0) -> ProbeContext:
    return ProbeContext(HostSettings(str(tmp_path / "sys"), str(tmp_path / "proc")), timeout)


def settings(name: str, **changes):
    return replace(config.load().probes[name], **changes)


def ids(observation):
    return [f.id for f in observation.findings]


def test_power_worn_battery_and_countertop_terminal(tmp_path):
    bat = "sys/class/power_supply/BAT1/"
    tree(tmp_path, {bat + "type": "Battery\n", bat + "capacity": "88\n", bat + "health": "Good\n",
                    bat + "charge_full": "1500000\n", bat + "charge_full_design": "3000000\n"})
    out = power.run(settings("power"), ctx(tmp_path))
    assert ids(out) == ["power.battery_unhealthy"]
    assert out.metrics["wear_ratio"] == 0.5

    (tmp_path / "sys/class/power_supply/BAT1/present").write_text("0\n")
    assert ids(power.run(settings("power", battery_expected=False), ctx(tmp_path))) == []
    assert ids(power.run(settings("power"), ctx(tmp_path))) == ["power.no_battery"]


def test_power_without_sysfs_class_under_a_test_root_is_absent_not_the_host_battery(tmp_path):
    out = power.run(settings("power"), ctx(tmp_path))
    assert out.derived_status() is Status.ABSENT


def test_emmc_life_time_without_0x_prefix_and_mmc_host_path(tmp_path):
    dev = "sys/class/mmc_host/mmc0/mmc0:0001/"
    tree(tmp_path, {dev + "life_time": "0A 09\n", dev + "pre_eol_info": "02\n", "proc/mounts": ""})
    out = storage.run(settings("storage", mounts=[], write_test_count=0), ctx(tmp_path))
    assert ids(out) == ["storage.emmc_wear"]
    assert out.metrics["emmc_life_used_level"] == 10


def test_garbage_emmc_attributes_are_ignored(tmp_path):
    tree(tmp_path, {"sys/block/mmcblk0/device/life_time": "banana\n", "proc/mounts": ""})
    assert ids(storage.run(settings("storage", mounts=[], write_test_count=0), ctx(tmp_path))) == []


def test_readonly_uses_longest_matching_mount_and_octal_escapes(tmp_path):
    data = tmp_path / "my data"
    data.mkdir()
    escaped = str(data).replace(" ", "\\040")
    tree(tmp_path, {"proc/mounts": f"/dev/root / ext4 rw 0 0\n/dev/mmcblk0p5 {escaped} ext4 ro,noatime 0 0\n"})
    out = storage.run(settings("storage", mounts=[str(data)], write_test_count=0), ctx(tmp_path))
    assert ids(out) == ["storage.readonly"]
    other = storage.run(settings("storage", mounts=[str(tmp_path)], write_test_count=0), ctx(tmp_path))
    assert ids(other) == []


def test_write_test_measures_and_cleans_up(tmp_path):
    tree(tmp_path, {"proc/mounts": ""})
    scratch = tmp_path / "scratch"
    out = storage.run(settings("storage", mounts=[], scratch_dir=str(scratch)), ctx(tmp_path))
    assert ids(out) == [] and out.metrics["write_ms_max"] >= 0
    assert list(scratch.iterdir()) == []


def test_missing_mount_point_is_reported(tmp_path):
    tree(tmp_path, {"proc/mounts": ""})
    out = storage.run(settings("storage", mounts=[str(tmp_path / "gone")], write_test_count=0), ctx(tmp_path))
    assert ids(out) == ["storage.write_failed"]


def test_network_default_route_over_ipv6_only(tmp_path):
    v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 wlan0\n"
    tree(tmp_path, {"sys/class/net/wlan0/operstate": "up\n", "proc/net/route": "Iface\tDestination\n", "proc/net/ipv6_route": v6})
    assert ids(network.run(settings("network"), ctx(tmp_path))) == []


def test_network_named_interface_down_while_another_is_up(tmp_path):
    route = "Iface\tDestination\tGateway\tFlags\nwlan0\t00000000\t0101A8C0\t0003\n"
    tree(tmp_path, {"sys/class/net/wlan0/operstate": "up\n", "sys/class/net/ppp0/operstate": "down\n", "proc/net/route": route})
    out = network.run(settings("network", interfaces=["wlan0", "ppp0"]), ctx(tmp_path))
    assert ids(out) == ["network.link_down"] and out.findings[0].severity == "warn"


def test_dns_lookup_is_bounded_by_its_timeout(tmp_path):
    tree(tmp_path, {"proc/net/route": ""})
    t0 = time.monotonic()
    assert network.resolve("localhost", 80, 1.0)
    assert network.resolve("nothing.posdiag.invalid", 80, 0.5) is None
    assert time.monotonic() - t0 < 2.0


def test_system_finds_app_by_argv0_and_reads_thermal(tmp_path):
    tree(tmp_path, {
        "proc/77/comm": "java\n", "proc/77/cmdline": "/opt/pay/payterminal-app\0-x",
        "proc/meminfo": "MemTotal: 100 kB\nMemAvailable: 50 kB\n", "proc/uptime": "5000.0 1.0\n",
        "sys/class/thermal/thermal_zone3/temp": "91000\n", "sys/class/thermal/thermal_zone3/type": "battery\n",
    })
    out = system.run(settings("system", app_process="payterminal-app"), ctx(tmp_path))
    assert sorted(ids(out)) == ["system.memory_low", "system.overheat"]
    assert out.metrics["app_pid"] == 77 and out.metrics["max_temp_c"] == 91.0


def test_system_on_this_host_never_raises():
    host_ctx = ProbeContext(HostSettings("/sys", "/proc"), 2.0)
    out = system.run(settings("system", app_process=f"no-such-app-{os.getpid()}"), host_ctx)
    assert "system.app_not_running" in ids(out)


def test_connect_tries_every_address_of_a_host(tmp_path):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        # 127.0.0.2 refuses (nothing listens there), 127.0.0.1 answers: like a broken IPv6 route
        sock = network.connect_any(["127.0.0.2", "127.0.0.1"], port, settings("network"), ctx(tmp_path))
        assert sock.getpeername()[0] == "127.0.0.1"
        sock.close()


def test_probe_error_text_is_cleaned_of_card_data():
    from agent.runner import run_probes
    from probes.contract.records import Observation
    from tests import fakeprobes

    def leaky() -> Observation:
        raise ValueError("device echoed 4111111111111111")

    module = fakeprobes.make("leaky", leaky)
    with fakeprobes.registered(module) as sections:
        sweep = run_probes(config.load(None, sections), ["leaky"])
    detail = sweep.results[0].findings[0].detail
    assert "4111111111111111" not in detail and "ValueError: device echoed 411111" in detail


def test_storage_metrics_are_plain_names_with_the_mount_as_a_field(tmp_path):
    """Keys never embed a path; the figures are the fullest mount's, which is named."""
    tree(tmp_path, {"proc/mounts": ""})
    mounts = ["/", str(tmp_path), "/dev"]
    out = storage.run(settings("storage", mounts=mounts, write_test_count=0), ctx(tmp_path))
    assert {"mount", "used_pct", "free_mib", "inodes_used_pct"} <= set(out.metrics)
    assert all("[" not in key and "/" not in key for key in out.metrics)

    def used(path):
        st = os.statvfs(path)
        return round(100.0 * (st.f_blocks - st.f_bfree) / (st.f_blocks - st.f_bfree + st.f_bavail), 1)

    assert out.metrics["mount"] in mounts
    assert out.metrics["used_pct"] == max(used(m) for m in mounts) == used(out.metrics["mount"])
