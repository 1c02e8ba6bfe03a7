"""Links, route, Wi-Fi, DNS, TCP, TLS and clock towards the configured payment hosts, and
whether a captive portal stands in the way.

Each host is checked in order DNS -> TCP connect -> TLS handshake; a failing step ends
that host's checks (its later steps cannot be judged). getaddrinfo has no timeout of its
own (DOMAIN.md section 6), so it runs in a daemon thread that is abandoned on timeout.
"""

from __future__ import annotations

import email.utils
import http.client
import os
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime

from probes import ProbeContext
from probes._metrics import keep_worst
from probes._wifi import portal_check, wpa_status
from probes._sysfs import read_text
from probes.contract.records import Finding, MetricValue, Observation
from probes.contract.settings import ProbeSettings, bounded

NAME = "network"
FINDINGS = (
    "network.link_down",
    "network.no_route",
    "network.dns_failed",
    "network.connect_refused",
    "network.connect_timeout",
    "network.tls_failed",
    "network.cert_expired",
    "network.cert_expiring",
    "network.clock_skew",
    "network.high_latency",
    "network.weak_signal",
    "network.wifi_auth_failed",
    "network.captive_portal",
)
# What the interfaces, routes and radio say, as opposed to what talking to a host says, and
# what wpa_supplicant and the connectivity check say.
LINK_FINDINGS = ("network.link_down", "network.no_route", "network.weak_signal")
WIFI_FINDINGS = ("network.wifi_auth_failed", "network.captive_portal")
# OpenSSL X509_V_ERR_CERT_NOT_YET_VALID and X509_V_ERR_CERT_HAS_EXPIRED
CERT_NOT_YET_VALID, CERT_HAS_EXPIRED = 9, 10


@dataclass(frozen=True)
class Endpoint:
    name: str
    host: str
    port: int = bounded(1, 65535)
    tls: bool = field(default=False)
    ca_file: str = field(default="")
    server_name: str = field(default="")


@dataclass(frozen=True)
class NetworkSettings(ProbeSettings):
    interfaces: list[str]
    hosts: list[Endpoint]
    clock_reference: str
    clock_reference_ca_file: str
    dns_timeout_seconds: float = bounded(0.05, 60)
    connect_timeout_seconds: float = bounded(0.05, 60)
    high_latency_ms: float = bounded(1, 60000)
    cert_expiring_days: int = bounded(0, 3650)
    clock_skew_seconds: float = bounded(1, 86400)
    weak_signal_dbm: float = bounded(-130, 0)
    wpa_ctrl_dir: str  # wpa_supplicant's ctrl_interface directory; empty: not asked
    captive_check_url: str  # http URL that answers 204 on the open internet; empty: no check


SETTINGS = NetworkSettings


def run(settings: NetworkSettings, ctx: ProbeContext) -> Observation:
    findings: list[Finding] = []
    metrics: dict[str, MetricValue] = {}
    findings += check_links(settings, ctx, metrics)
    iface = default_interface(ctx)
    if iface is None:
        findings.append(Finding.fail("network.no_route", "no default route"))
    else:
        metrics["link"] = link_kind(ctx, iface)
    findings += check_wireless(settings, ctx, metrics)
    findings += check_wifi_auth(settings, ctx, metrics)
    for endpoint in settings.hosts:
        findings += check_endpoint(endpoint, settings, ctx, metrics)
    if settings.clock_reference:
        findings += check_clock(settings, ctx, metrics)
    if settings.captive_check_url:
        findings += check_portal(settings, ctx)
    return Observation(findings, metrics)


def check_links(s: NetworkSettings, ctx: ProbeContext, metrics: dict[str, MetricValue]) -> list[Finding]:
    net = ctx.sys("class", "net")
    names = s.interfaces
    if not names and net.is_dir():
        names = sorted(p.name for p in net.iterdir() if p.name != "lo")
    up = [n for n in names if read_text(net / n / "operstate") in {"up", "unknown"} and read_text(net / n / "carrier") != "0"]
    metrics["interfaces_up"] = len(up)
    if net.is_dir() and not names:  # a handheld whose cellular module is gone has no interface left
        return [Finding.fail("network.link_down", "no network interface besides loopback")]
    if names and not up:
        return [Finding.fail("network.link_down", f"no link up on {', '.join(names)}", interfaces=list(names))]
    down = [n for n in s.interfaces if n not in up]
    if down:
        return [Finding.warn("network.link_down", f"link down on {', '.join(down)}", interfaces=down)]
    return []


def default_interface(ctx: ProbeContext) -> str | None:
    """The interface of the default route in /proc/net/route (destination 00000000, flag
    RTF_UP) or /proc/net/ipv6_route (::/0), None when there is none."""
    for line in (read_text(ctx.proc("net", "route")) or "").splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[1] == "00000000" and int(fields[3], 16) & 0x1:
            return fields[0]
    for line in (read_text(ctx.proc("net", "ipv6_route")) or "").splitlines():
        fields = line.split()
        if len(fields) >= 10 and fields[0] == "0" * 32 and fields[1] == "00" and fields[9] != "lo":
            return fields[9]
    return None


CELLULAR_PREFIXES = ("wwan", "rmnet", "ppp", "ccmni", "usb", "wwp")


def link_kind(ctx: ProbeContext, iface: str) -> str:
    """wifi, cellular or ethernet, from the interface's sysfs entry (a `wireless` directory
    or DEVTYPE in its uevent) and, failing that, the names drivers give cellular links."""
    base = ctx.sys("class", "net", iface)
    uevent = read_text(base / "uevent") or ""
    if (base / "wireless").is_dir() or "DEVTYPE=wlan" in uevent:
        return "wifi"
    if "DEVTYPE=wwan" in uevent or iface.startswith(CELLULAR_PREFIXES):
        return "cellular"
    return "ethernet"


def check_wireless(s: NetworkSettings, ctx: ProbeContext, metrics: dict[str, MetricValue]) -> list[Finding]:
    """/proc/net/wireless: iface: status link level noise ... (two header lines)."""
    found = []
    for line in (read_text(ctx.proc("net", "wireless")) or "").splitlines()[2:]:
        iface, _, rest = line.partition(":")
        fields = rest.split()
        if len(fields) < 3:
            continue
        try:
            level = float(fields[2].rstrip("."))
        except ValueError:
            continue
        keep_worst(metrics, "wifi_level_dbm", level, "wifi_interface", iface.strip(), lowest=True)
        if level < s.weak_signal_dbm:
            found.append(Finding.warn("network.weak_signal", f"Wi-Fi {iface.strip()} signal {level:.0f} dBm", level_dbm=level))
    return found


def check_wifi_auth(s: NetworkSettings, ctx: ProbeContext, metrics: dict[str, MetricValue]) -> list[Finding]:
    """Ask wpa_supplicant about each Wi-Fi interface: not associated, with the configured
    network set aside after failed authentications, is a password the access point refuses."""
    net = ctx.sys("class", "net")
    if not s.wpa_ctrl_dir or not net.is_dir():
        return []
    found = []
    for iface in sorted(p.name for p in net.iterdir() if p.name != "lo" and link_kind(ctx, p.name) == "wifi"):
        path = os.path.join(s.wpa_ctrl_dir, iface)
        if not os.path.exists(path):
            continue
        try:
            status = wpa_status(path, min(1.0, ctx.remaining()))
        except OSError:
            continue  # wpa_supplicant not answering (or not ours to ask): the link checks say the rest
        metrics["wifi_state"] = status.state.lower()
        if status.ssid:
            metrics["wifi_ssid"] = status.ssid
        if status.state != "COMPLETED" and status.temp_disabled:
            ssids = ", ".join(status.temp_disabled)
            detail = f"Wi-Fi {iface} cannot join {ssids}: the access point refuses the password (wpa_supplicant: {status.state})"
            found.append(Finding.fail("network.wifi_auth_failed", detail, interface=iface, ssid=ssids))
    return found


def check_portal(s: NetworkSettings, ctx: ProbeContext) -> list[Finding]:
    url = urllib.parse.urlsplit(s.captive_check_url)
    if not resolve(url.hostname or "", url.port or 80, min(s.dns_timeout_seconds, ctx.remaining())):
        return []  # no name service, no portal to find: the host checks say why
    answered = portal_check(s.captive_check_url, min(s.connect_timeout_seconds, ctx.remaining()))
    if answered is None:
        return []
    detail = f"a captive portal intercepts the traffic: {s.captive_check_url} answered {answered} instead of 204"
    return [Finding.fail("network.captive_portal", detail, url=s.captive_check_url, answer=answered)]


def resolve(host: str, port: int, timeout: float) -> list[str] | None:
    """Addresses of `host`, or None when resolution failed or did not finish in time."""
    box: dict[str, list[str]] = {}

    def work() -> None:
        try:
            box["addrs"] = [ai[4][0] for ai in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
        except OSError:
            pass

    worker = threading.Thread(target=work, name=f"dns-{host}", daemon=True)
    worker.start()
    worker.join(timeout)
    return box.get("addrs")


def check_endpoint(e: Endpoint, s: NetworkSettings, ctx: ProbeContext, metrics: dict[str, MetricValue]) -> list[Finding]:
    t0 = time.monotonic()
    addrs = resolve(e.host, e.port, min(s.dns_timeout_seconds, ctx.remaining()))
    if not addrs:
        return [Finding.fail("network.dns_failed", f"cannot resolve {e.host} ({e.name})", host=e.host)]
    keep_worst(metrics, "dns_ms", round((time.monotonic() - t0) * 1000, 1), "dns_endpoint", e.name)
    t1 = time.monotonic()
    try:
        sock = connect_any(addrs, e.port, s, ctx)
    except ConnectionRefusedError:
        return [Finding.fail("network.connect_refused", f"{e.name} {e.host}:{e.port} refused the connection", host=e.host, port=e.port)]
    except TimeoutError:
        return [Finding.fail("network.connect_timeout", f"{e.name} {e.host}:{e.port} did not answer the connection", host=e.host, port=e.port)]
    except OSError as exc:
        return [Finding.fail("network.connect_timeout", f"{e.name} {e.host}:{e.port} unreachable: {exc.strerror}", host=e.host, port=e.port)]
    found: list[Finding] = []
    with sock:
        if e.tls:
            found += handshake(sock, e, s, ctx, metrics)
        latency = (time.monotonic() - t1) * 1000
    keep_worst(metrics, "latency_ms", round(latency, 1), "latency_endpoint", e.name)
    if latency > s.high_latency_ms and not any(f.severity == "fail" for f in found):
        found.append(Finding.warn("network.high_latency", f"{e.name} answered in {latency:.0f} ms", host=e.host, latency_ms=round(latency, 1)))
    return found


def connect_any(addrs: list[str], port: int, s: NetworkSettings, ctx: ProbeContext) -> socket.socket:
    """A connection to the first address that takes one (a dual-stack host with a broken
    IPv6 route still answers on IPv4); the last failure is raised when none does."""
    failure: OSError = TimeoutError("no address")
    for addr in dict.fromkeys(addrs):
        if ctx.remaining(0) <= 0:
            break
        try:
            return socket.create_connection((addr, port), timeout=min(s.connect_timeout_seconds, ctx.remaining()))
        except OSError as exc:
            failure = exc
    raise failure


def handshake(sock: socket.socket, e: Endpoint, s: NetworkSettings, ctx: ProbeContext, metrics: dict[str, MetricValue]) -> list[Finding]:
    context = ssl.create_default_context(cafile=e.ca_file or None)
    sock.settimeout(min(s.connect_timeout_seconds, ctx.remaining()))
    try:
        with context.wrap_socket(sock, server_hostname=e.server_name or e.host) as tls:
            cert = tls.getpeercert()
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code == CERT_HAS_EXPIRED:
            return [Finding.fail("network.cert_expired", f"{e.name} certificate has expired (or the clock is wrong)", host=e.host)]
        if exc.verify_code == CERT_NOT_YET_VALID:
            return [Finding.fail("network.clock_skew", f"{e.name} certificate is not yet valid: the terminal clock is likely behind", host=e.host)]
        return [Finding.fail("network.tls_failed", f"{e.name} certificate not trusted: {exc.verify_message}", host=e.host)]
    except (ssl.SSLError, OSError) as exc:
        return [Finding.fail("network.tls_failed", f"{e.name} TLS handshake failed: {exc}", host=e.host)]
    not_after = ssl.cert_time_to_seconds(cert["notAfter"])
    days = (not_after - time.time()) / 86400
    keep_worst(metrics, "cert_days_left", round(days, 1), "cert_endpoint", e.name, lowest=True)
    if days < s.cert_expiring_days:
        return [Finding.warn("network.cert_expiring", f"{e.name} certificate expires in {days:.1f} days", host=e.host, days_left=round(days, 1))]
    return []


def check_clock(s: NetworkSettings, ctx: ProbeContext, metrics: dict[str, MetricValue]) -> list[Finding]:
    url = urllib.parse.urlsplit(s.clock_reference)
    # http.client resolves the name with no time limit: resolve it first, bounded.
    if not resolve(url.hostname or "", url.port or 80, min(s.dns_timeout_seconds, ctx.remaining())):
        return []  # unresolvable reference: not a clock finding; the host checks say why
    timeout = min(s.connect_timeout_seconds, ctx.remaining())
    if url.scheme == "https":
        tls_context = ssl.create_default_context(cafile=s.clock_reference_ca_file or None)
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(url.hostname or "", url.port, timeout=timeout, context=tls_context)
    else:
        conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=timeout)
    try:
        t0 = time.time()
        conn.request("HEAD", url.path or "/")
        date = conn.getresponse().getheader("Date")
        t1 = time.time()
    except (OSError, http.client.HTTPException):
        return []  # the reference being unreachable is not a clock finding; the host checks say why
    finally:
        conn.close()
    if not date:
        return []
    try:
        reference = email.utils.parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return []
    offset = (t0 + t1) / 2 - reference
    metrics["clock_offset_s"] = round(offset, 1)
    if abs(offset) > s.clock_skew_seconds:
        ahead = "ahead of" if offset > 0 else "behind"
        stamp = datetime.fromtimestamp(reference, UTC).isoformat(timespec="seconds")
        return [Finding.warn("network.clock_skew", f"terminal clock is {abs(offset):.0f} s {ahead} the reference ({stamp})", offset_s=round(offset, 1))]
    return []
