"""Wi-Fi as wpa_supplicant and the connectivity check see it.

wpa_supplicant's control interface is a Unix datagram socket per interface (ctrl_interface,
usually /run/wpa_supplicant/wlan0). A client binds its own socket (here in the abstract
namespace, so nothing is left on disk), sends a command and reads one datagram back. Only the
read-only commands are sent: STATUS (`wpa_state=COMPLETED`, `ssid=...`) and LIST_NETWORKS
(tab-separated `id ssid bssid flags`; `[TEMP-DISABLED]` marks a network wpa_supplicant stopped
trying after failed authentications, which is what a wrong password looks like from outside:
wpa_supplicant's ctrl_iface.c and its WRONG_KEY handling in wpa_supplicant.c).

The connectivity check is what phones do to find a captive portal: an HTTP GET of a URL that
answers 204 No Content on the open internet. A redirect or a page in its place means a portal
(a hotel- or shop-style web sign-in) intercepts the traffic.
"""

from __future__ import annotations

import http.client
import itertools
import os
import socket
import urllib.parse
from dataclasses import dataclass

_SEQUENCE = itertools.count()


@dataclass(frozen=True)
class WpaStatus:
    state: str  # COMPLETED, SCANNING, ASSOCIATING, 4WAY_HANDSHAKE, DISCONNECTED, ...
    ssid: str
    temp_disabled: tuple[str, ...]  # networks wpa_supplicant gave up on for now (auth failures)


def wpa_request(path: str, command: str, timeout: float) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(f"\0posdiag-wpa-{os.getpid()}-{next(_SEQUENCE)}")
        sock.settimeout(timeout)
        sock.connect(path)
        sock.send(command.encode("ascii"))
        return sock.recv(4096).decode("utf-8", "replace")


def wpa_status(path: str, timeout: float) -> WpaStatus:
    """OSError when wpa_supplicant does not answer on `path` within `timeout`."""
    fields = dict(line.split("=", 1) for line in wpa_request(path, "STATUS", timeout).splitlines() if "=" in line)
    state = fields.get("wpa_state", "UNKNOWN")
    disabled: list[str] = []
    if state != "COMPLETED":
        for line in wpa_request(path, "LIST_NETWORKS", timeout).splitlines()[1:]:
            parts = line.split("\t")
            if len(parts) >= 4 and "[TEMP-DISABLED]" in parts[3]:
                disabled.append(parts[1])
    return WpaStatus(state, fields.get("ssid", ""), tuple(disabled))


def portal_check(url: str, timeout: float) -> str | None:
    """None when the check URL answers 204 (or cannot be reached: that is not a portal);
    otherwise what answered in its place ("302 to http://portal/login", "200 page")."""
    parts = urllib.parse.urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname or "", parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/", headers={"Connection": "close"})
        answer = conn.getresponse()
        answer.read(4096)
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    if answer.status == 204:
        return None
    location = answer.getheader("Location")
    return f"{answer.status} to {location}" if location else f"{answer.status} page"
