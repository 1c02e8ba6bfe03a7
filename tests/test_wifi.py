"""Wi-Fi in the network probe: wpa_supplicant's control socket (a real Unix datagram socket
played by the simulated terminal's emulator) and the connectivity check that finds a captive
portal (a real HTTP server on loopback)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from agent import config
from probes import ProbeContext, network
from probes._wifi import portal_check, wpa_status
from probes.contract.settings import HostSettings
from probes.emulators.wifi import PORTAL, SSID, WpaControl, check_server


def wifi_tree(root: Path, associated: bool = True) -> Path:
    """A sysfs with wlan0 (a cfg80211 interface) and nothing else."""
    net = root / "sys" / "class" / "net" / "wlan0"
    net.mkdir(parents=True)
    (net / "uevent").write_text("DEVTYPE=wlan\nINTERFACE=wlan0\n")
    (net / "operstate").write_text("up\n" if associated else "dormant\n")
    (net / "carrier").write_text("1\n" if associated else "0\n")
    (root / "proc" / "net").mkdir(parents=True)
    if associated:  # the default route through wlan0 (/proc/net/route, little-endian hex)
        (root / "proc" / "net" / "route").write_text(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
            "wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n"
        )
    return root


def probe(root: Path, **overrides: object):
    settings = config.load(None, {"probes": {"network": overrides}}).probes["network"]
    return network.run(settings, ProbeContext(HostSettings(str(root / "sys"), str(root / "proc")), 3.0))


@pytest.fixture
def serving():
    servers = []

    def start(portal: bool) -> str:
        server = check_server(portal)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/generate_204"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_an_associated_interface_reports_its_state_and_network(tmp_path):
    root = wifi_tree(tmp_path)
    with WpaControl(tmp_path / "wlan0", associated=True):
        seen = probe(root, wpa_ctrl_dir=str(tmp_path))
    assert seen.findings == []
    assert (seen.metrics["wifi_state"], seen.metrics["wifi_ssid"]) == ("completed", SSID)


def test_a_refused_password_is_wifi_auth_failed(tmp_path):
    root = wifi_tree(tmp_path, associated=False)
    with WpaControl(tmp_path / "wlan0", associated=False):
        seen = probe(root, wpa_ctrl_dir=str(tmp_path))
    assert [f.id for f in seen.findings] == ["network.link_down", "network.no_route", "network.wifi_auth_failed"]
    refused = seen.findings[2]
    assert refused.data == {"interface": "wlan0", "ssid": SSID} and "refuses the password" in refused.detail


def test_no_wpa_supplicant_or_no_socket_says_nothing_about_wifi(tmp_path):
    root = wifi_tree(tmp_path, associated=False)
    seen = probe(root, wpa_ctrl_dir=str(tmp_path / "none"))
    assert "network.wifi_auth_failed" not in [f.id for f in seen.findings]
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # bound, never answers
    silent.bind(str(tmp_path / "wlan0"))
    try:
        t0 = time.monotonic()
        seen = probe(root, wpa_ctrl_dir=str(tmp_path))
        assert time.monotonic() - t0 < 2.5  # a control socket that stays silent costs at most 1 s
    finally:
        silent.close()
    assert "wifi_state" not in seen.metrics


def test_the_control_socket_is_asked_only_read_only_commands(tmp_path):
    asked: list[str] = []

    class Recording(WpaControl):
        def answer(self, command: str) -> str:
            asked.append(command)
            return super().answer(command)

    with Recording(tmp_path / "wlan0", associated=False):
        status = wpa_status(str(tmp_path / "wlan0"), 1.0)
    assert asked == ["STATUS", "LIST_NETWORKS"]
    assert (status.state, status.temp_disabled) == ("SCANNING", (SSID,))


def test_a_portal_redirect_is_a_captive_portal(tmp_path, serving):
    url = serving(portal=True)
    assert portal_check(url, 2.0) == f"302 to {PORTAL}"
    seen = probe(wifi_tree(tmp_path), captive_check_url=url, wpa_ctrl_dir="")
    assert [f.id for f in seen.findings] == ["network.captive_portal"]
    assert seen.findings[0].data == {"url": url, "answer": f"302 to {PORTAL}"}


def test_204_is_the_open_internet(tmp_path, serving):
    url = serving(portal=False)
    assert portal_check(url, 2.0) is None
    assert probe(wifi_tree(tmp_path), captive_check_url=url, wpa_ctrl_dir="").findings == []


def test_an_unreachable_check_url_is_not_a_portal(tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: refused
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/generate_204"
        assert portal_check(url, 1.0) is None
    seen = probe(wifi_tree(tmp_path), captive_check_url="http://portal.posdiag.invalid/generate_204", wpa_ctrl_dir="")
    assert seen.findings == []
