"""The shop's Wi-Fi as the terminal sees it: wpa_supplicant's control socket for wlan0, and the
internet's connectivity check (an HTTP URL that answers 204 No Content).

The control socket is a Unix datagram socket answering STATUS and LIST_NETWORKS the way
wpa_supplicant 2.x does. Associated: `wpa_state=COMPLETED`. With a wrong password the access
point refuses the 4-way handshake, wpa_supplicant keeps scanning and marks the network
`[TEMP-DISABLED]`. Behind a captive portal the check URL is answered with a redirect to the
portal's sign-in page. The check server runs on every simulated terminal (a cellular one
reaches it too); with no route its name does not resolve.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from probes import network
from probes.emulators.acquirer import UNRESOLVABLE
from probes.emulators._model import WIFI, TerminalState

FAULTS = frozenset(network.WIFI_FINDINGS)
SSID = "shop-wifi"
PORTAL = "http://portal.shop-wifi.example/login"


class WpaControl:
    """wpa_supplicant's ctrl_interface socket for one interface, on a thread."""

    def __init__(self, path: Path, associated: bool) -> None:
        self.associated = associated
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve, name="wpa-ctrl", daemon=True)

    def answer(self, command: str) -> str:
        if command == "STATUS":
            if self.associated:
                return f"bssid=0a:1b:2c:3d:4e:5f\nfreq=2437\nssid={SSID}\nid=0\nmode=station\nkey_mgmt=WPA2-PSK\nwpa_state=COMPLETED\n"
            return "wpa_state=SCANNING\n"
        if command == "LIST_NETWORKS":
            flags = "[CURRENT]" if self.associated else "[TEMP-DISABLED]"
            return f"network id / ssid / bssid / flags\n0\t{SSID}\tany\t{flags}\n"
        if command == "PING":
            return "PONG\n"
        return "UNKNOWN COMMAND\n"

    def serve(self) -> None:
        while not self.stopping.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with contextlib.suppress(OSError):
                self.sock.sendto(self.answer(data.decode("ascii", "replace").strip()).encode(), peer)

    def __enter__(self) -> WpaControl:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(1.0)
        self.sock.close()


def check_server(portal: bool) -> http.server.ThreadingHTTPServer:
    class Check(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if portal:
                self.send_response(302)
                self.send_header("Location", PORTAL)
                self.send_header("Content-Length", "0")
            else:
                self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return http.server.ThreadingHTTPServer(("127.0.0.1", 0), Check)


@contextlib.contextmanager
def start(state: TerminalState, workdir: Path) -> Iterator[dict[str, Any]]:
    network: dict[str, Any] = {"wpa_ctrl_dir": ""}
    with contextlib.ExitStack() as stack:
        if WIFI in state.bearers:
            stack.enter_context(WpaControl(workdir / "wlan0", associated=not state.is_down("wifi_association")))
            network["wpa_ctrl_dir"] = str(workdir)
        server = check_server(portal="network.captive_portal" in state.faults)
        stack.callback(server.server_close)
        stack.callback(server.shutdown)
        threading.Thread(target=server.serve_forever, args=(0.1,), name="connectivity-check", daemon=True).start()
        host = UNRESOLVABLE if state.is_down("route") else "127.0.0.1"
        network["captive_check_url"] = f"http://{host}:{server.server_address[1]}/generate_204"
        yield {"probes": {"network": network}}
