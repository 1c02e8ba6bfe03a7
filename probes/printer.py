"""Receipt printer: ESC/POS real-time status (`DLE EOT n`, n = 1..4) over serial or usblp.

Each status byte is shaped 0xx1xx10 (bits 1 and 4 set, 0 and 7 clear); a byte that is not,
or more than one byte, is printer.bad_reply. Bit meanings: ../shared/DOMAIN.md section 2
(Epson ESC/POS reference, "DLE EOT"). The probe only asks; it never prints or feeds paper.

Other code talks to the printer through open_printer(settings) (write, DLE EOT query),
ready_to_print(settings) and print_test_page(settings, lines).

printer.offline is reported only when no more specific fail finding explains why the printer
is offline (cover open, paper out, cutter error, unrecoverable error): one finding per root,
the offline state travels in the finding's data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from probes import ProbeContext
from probes._escpos import PrinterLink, open_printer
from probes._serial_line import LineError, as_observation
from probes.contract.records import Finding, Observation, Severity, Status
from probes.contract.settings import ProbeSettings, bounded

NAME = "printer"
FINDINGS = (
    "printer.absent",
    "printer.permission_denied",
    "printer.no_response",
    "printer.bad_reply",
    "printer.offline",
    "printer.cover_open",
    "printer.paper_out",
    "printer.paper_near_end",
    "printer.cutter_error",
    "printer.unrecoverable",
)

FIXED_MASK, FIXED_BITS = 0x93, 0x12  # bits 7, 4, 1, 0 must read 0, 1, 1, 0
# usblp LPGETSTATUS port status bits (<linux/lp.h>: LP_POUTPA, LP_PSELECD, LP_PERRORP).
LP_PAPER_OUT, LP_SELECTED, LP_NO_ERROR = 0x20, 0x10, 0x08


@dataclass(frozen=True)
class PrinterSettings(ProbeSettings):
    transport: str = bounded(choices=("serial", "usblp"))
    port: str  # a device path or pyserial URL; empty: no printer configured
    baud_rate: int = bounded(50, 4_000_000)
    rtscts: bool
    xonxoff: bool
    read_timeout_seconds: float = bounded(0.01, 30)


@dataclass(frozen=True)
class StatusBytes:
    printer: int  # n=1
    offline_cause: int  # n=2
    error_cause: int  # n=3
    paper: int  # n=4

    def hex(self) -> str:
        return " ".join(f"{b:02x}" for b in (self.printer, self.offline_cause, self.error_cause, self.paper))



SETTINGS = PrinterSettings

def valid_status_byte(value: int) -> bool:
    return value & FIXED_MASK == FIXED_BITS


def decode(status: StatusBytes) -> list[Finding]:
    prn, off, err, paper = status.printer, status.offline_cause, status.error_cause, status.paper
    offline = bool(prn & 0x08)
    found: list[Finding] = []
    if off & 0x04:
        found.append(Finding.fail("printer.cover_open", "printer cover is open", offline=offline))
    # A sensor reports each state on two bits (0x0C near end, 0x60 end); either bit counts,
    # as some printers set only one of the pair.
    if paper & 0x60 or off & 0x20:
        found.append(Finding.fail("printer.paper_out", "printer is out of paper", offline=offline))
    elif paper & 0x0C:
        found.append(Finding.warn("printer.paper_near_end", "paper roll is nearly used up"))
    if err & 0x08:
        found.append(Finding.fail("printer.cutter_error", "auto-cutter error", offline=offline))
    if err & 0x20:
        found.append(Finding.fail("printer.unrecoverable", "printer reports an unrecoverable error", offline=offline))
    if offline and not any(f.severity is Severity.FAIL for f in found):
        cause = offline_cause(prn, off, err)
        found.append(Finding.fail("printer.offline", f"printer is offline ({cause})", cause=cause))
    return found


def offline_cause(prn: int, off: int, err: int) -> str:
    if err & 0x40:
        return "auto-recoverable error, e.g. print head too hot"
    if err & 0x04:
        return "recoverable error"
    if off & 0x40:
        return "error occurred"
    if off & 0x08:
        return "paper being fed by the feed button"
    if prn & 0x20:
        return "waiting for online recovery"
    return "no cause reported"


def decode_port_status(value: int) -> list[Finding]:
    """usblp's LPGETSTATUS byte: coarser than DLE EOT, used when the printer cannot answer read()."""
    found: list[Finding] = []
    if value & LP_PAPER_OUT:
        found.append(Finding.fail("printer.paper_out", "printer is out of paper (port status)"))
    elif not value & LP_SELECTED or not value & LP_NO_ERROR:
        cause = "not selected" if not value & LP_SELECTED else "error line active"
        found.append(Finding.fail("printer.offline", f"printer is offline ({cause}, port status)", cause=cause))
    return found


class NoReply(Exception):
    def __init__(self, n: int) -> None:
        self.n = n


class BadReply(Exception):
    def __init__(self, n: int, reply: bytes) -> None:
        self.n = n
        self.reply = reply


def read_status(link: PrinterLink, per_query_s: float, deadline: float) -> tuple[StatusBytes, float]:
    """All four status bytes and the slowest round trip in ms."""
    values: list[int] = []
    slowest = 0.0
    for n in (1, 2, 3, 4):
        t0 = time.monotonic()
        reply = link.query(n, min(t0 + per_query_s, deadline))
        slowest = max(slowest, (time.monotonic() - t0) * 1000)
        if not reply:
            raise NoReply(n)
        if len(reply) != 1 or not valid_status_byte(reply[0]):
            raise BadReply(n, reply)
        values.append(reply[0])
    return StatusBytes(*values), slowest


def run(settings: PrinterSettings, ctx: ProbeContext) -> Observation:
    # Leave the runner a moment to collect the result before its own timeout fires.
    return check(settings, time.monotonic() + max(0.01, ctx.remaining(0.0) - 0.05))


def check(settings: PrinterSettings, deadline: float) -> Observation:
    if not settings.port:
        return Observation(status=Status.SKIPPED, metrics={"reason": "no printer port configured"})
    try:
        with open_printer(settings) as link:
            return observe(link, settings, deadline)
    except LineError as exc:
        return as_observation(exc, "printer", settings.port)


def observe(link: PrinterLink, settings: PrinterSettings, deadline: float) -> Observation:
    try:
        status, latency = read_status(link, settings.read_timeout_seconds, deadline)
    except NoReply as exc:
        port_status = link.port_status()
        if port_status is not None:
            return Observation(decode_port_status(port_status), {"port_status": port_status})
        detail = f"no answer to DLE EOT {exc.n} within {settings.read_timeout_seconds:g} s on {settings.port}"
        return Observation([Finding.fail("printer.no_response", detail, n=exc.n)])
    except BadReply as exc:
        detail = f"reply to DLE EOT {exc.n} is not a printer status byte ({len(exc.reply)} bytes)"
        data = {"n": exc.n, "length": len(exc.reply), "head": exc.reply[:8].hex(" ")}
        return Observation([Finding.fail("printer.bad_reply", detail, **data)])
    drawer = int(bool(status.printer & 0x04))
    metrics = {"latency_ms": round(latency, 1), "status_bytes": status.hex(), "drawer_pin3": drawer}
    return Observation(decode(status), metrics)


def ready_to_print(settings: PrinterSettings, timeout_s: float = 2.0) -> tuple[bool, list[Finding]]:
    """Whether a page sent now would print; the findings say why not."""
    observation = check(settings, time.monotonic() + timeout_s)
    if observation.derived_status() is Status.SKIPPED:
        return False, []
    return not any(f.severity is Severity.FAIL for f in observation.findings), observation.findings


def print_test_page(settings: PrinterSettings, lines: list[str], timeout_s: float = 5.0) -> str:
    """Print a short page (init, text, feed, partial cut) if the printer is ready; says what happened."""
    ready, findings = ready_to_print(settings)
    if not ready:
        why = "; ".join(f.detail for f in findings) or "no printer port configured"
        return f"test page not printed: {why}"
    page = b"\x1b@" + "".join(f"{line}\n" for line in lines).encode("ascii", "replace") + b"\x1bd\x04\x1dV\x01"
    try:
        with open_printer(settings) as link:
            link.write(page, time.monotonic() + timeout_s)
    except LineError as exc:
        return f"test page not printed: {exc}"
    return f"test page sent to {settings.port} ({len(page)} bytes)"
