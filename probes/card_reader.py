"""Card reader: USB presence by VID:PID, then a status exchange on its serial line or,
with driver "pcsc", through the PC/SC service (pcscd).

Each check runs only when configured (usb_vid/usb_pid, port, driver "pcsc"); with none the
probe is skipped. The serial check goes through a driver (probes._reader_drivers); the
reference driver speaks the framed protocol of DESIGN.md. The PC/SC check (probes._pcsc)
needs pyscard, the optional extra `posdiag[pcsc]`. A missing USB device ends the probe: its
serial line (usually a ttyACM of the same device) or its PC/SC slot cannot answer either.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from probes import ProbeContext, _pcsc
from probes._reader_drivers import DRIVERS, BadFrame, NoReply, ReaderStatus
from probes._serial_line import Line, LineError, as_observation
from probes._usb_presence import find_device, parse_id
from probes.contract.records import Finding, MetricValue, Observation, Status
from probes.contract.settings import ProbeSettings, bounded

NAME = "card_reader"
# What the serial line (and USB presence) can tell, and what only PC/SC can.
SERIAL_FINDINGS = (
    "reader.absent",
    "reader.permission_denied",
    "reader.no_response",
    "reader.bad_frame",
    "reader.tamper",
    "reader.slot_fault",
)
PCSC_FINDINGS = ("reader.service_down", "reader.no_payment_app", "reader.in_use")
FINDINGS = SERIAL_FINDINGS + PCSC_FINDINGS
SLOT_NAMES = {"ic": "IC (chip)", "magstripe": "magstripe", "contactless": "contactless"}


@dataclass(frozen=True)
class CardReaderSettings(ProbeSettings):
    driver: str = bounded(choices=(*DRIVERS, "pcsc"))
    port: str  # a device path or pyserial URL; empty: no serial check
    baud_rate: int = bounded(50, 4_000_000)
    rtscts: bool
    xonxoff: bool
    read_timeout_seconds: float = bounded(0.01, 30)
    usb_vid: str  # hex; empty: no USB presence check
    usb_pid: str
    usb_lookup: str = bounded(choices=("auto", "sysfs"))
    reader_name: str  # pcsc: a regular expression for the PC/SC reader name; empty: the first reader



SETTINGS = CardReaderSettings

def run(settings: CardReaderSettings, ctx: ProbeContext) -> Observation:
    pcsc = settings.driver == "pcsc"
    if not settings.port and not settings.usb_vid and not pcsc:
        return Observation(status=Status.SKIPPED, metrics={"reason": "no reader port or USB id configured"})
    metrics: dict[str, MetricValue] = {}
    if settings.usb_vid:
        absent = check_usb(settings, ctx, metrics)
        if absent is not None:
            return absent
    deadline = time.monotonic() + max(0.01, min(settings.read_timeout_seconds, ctx.remaining(0.0) - 0.05))
    if pcsc:
        return check_pcsc(settings, deadline, metrics)
    if not settings.port:
        return Observation(metrics=metrics)
    return check_line(settings, deadline, metrics)


def check_usb(settings: CardReaderSettings, ctx: ProbeContext, metrics: dict[str, MetricValue]) -> Observation | None:
    try:
        vid, pid = parse_id(settings.usb_vid), parse_id(settings.usb_pid)
    except ValueError:
        reason = f"usb_vid/usb_pid must be hex ids, got {settings.usb_vid!r}:{settings.usb_pid!r}"
        return Observation(status=Status.ERROR, metrics={"reason": reason})
    match = find_device(vid, pid, settings.usb_lookup, ctx.sys())
    usb_id = f"{vid:04x}:{pid:04x}"
    if match is None:
        finding = Finding.fail("reader.absent", f"no USB device {usb_id} attached", usb_id=usb_id)
        return Observation([finding], status=Status.ABSENT)
    metrics.update(usb_id=usb_id, usb_lookup=match.method, usb_device=match.where)
    if match.driver:
        metrics["usb_driver"] = match.driver
    return None


def check_line(settings: CardReaderSettings, deadline: float, metrics: dict[str, MetricValue]) -> Observation:
    driver = DRIVERS[settings.driver]
    try:
        with Line(settings.port, settings.baud_rate, settings.rtscts, settings.xonxoff) as line:
            t0 = time.monotonic()
            status = driver.status(line, deadline)
    except LineError as exc:
        return as_observation(exc, "reader", settings.port)
    except NoReply:
        detail = f"no reply to a status request within {settings.read_timeout_seconds:g} s on {settings.port}"
        return Observation([Finding.fail("reader.no_response", detail, port=settings.port)], metrics)
    except BadFrame as exc:
        head = exc.head.hex(" ")
        finding = Finding.fail("reader.bad_frame", f"malformed reply: {exc}", port=settings.port, head=head)
        return Observation([finding], metrics)
    metrics.update(latency_ms=round((time.monotonic() - t0) * 1000, 1), firmware_version=status.firmware)
    metrics["card_present"] = int(status.card_present)
    return Observation(status_findings(status), metrics)


def check_pcsc(settings: CardReaderSettings, deadline: float, metrics: dict[str, MetricValue]) -> Observation:
    try:
        report = _pcsc.check(settings.reader_name, deadline)
    except ImportError:
        reason = "driver pcsc needs pyscard: pip install 'posdiag[pcsc]'"
        return Observation(status=Status.ERROR, metrics={**metrics, "reason": reason})
    except _pcsc.PcscFailure as exc:
        return pcsc_failure(exc, metrics)
    return Observation(pcsc_findings(report), {**metrics, **pcsc_metrics(report)})


def pcsc_findings(report: _pcsc.PcscReport) -> list[Finding]:
    """A card the payment app holds exclusively could not be checked; a card that answers
    SELECT of both payment directories with 6A82 carries no payment application (a transit, ID
    or loyalty card): neither is a fault of the reader, both are worth a technician's eye."""
    if report.busy:
        detail = f"the card in {report.reader!r} is held exclusively by another program (the payment app): not checked"
        return [Finding.warn("reader.in_use", detail, reader=report.reader)]
    if report.application == "none":
        detail = f"the card in {report.reader!r} has no payment application (SELECT PPSE and PSE: {report.select_sw})"
        return [Finding.warn("reader.no_payment_app", detail, reader=report.reader, select_sw=report.select_sw)]
    return []


def pcsc_metrics(report: _pcsc.PcscReport) -> dict[str, MetricValue]:
    metrics: dict[str, MetricValue] = {"reader": report.reader, "card_present": int(report.card_present)}
    if report.busy:
        metrics["card_busy"] = 1
    if report.atr:
        metrics.update(atr=report.atr, select_sw=report.select_sw, payment_application=report.application)
        metrics["latency_ms"] = report.latency_ms
    return metrics


def pcsc_failure(exc: _pcsc.PcscFailure, metrics: dict[str, MetricValue]) -> Observation:
    report = exc.report
    if exc.kind == "no_service":
        return Observation([Finding.fail("reader.service_down", str(exc), service="pcscd")], metrics)
    if exc.kind == "no_reader":
        finding = Finding.fail("reader.absent", str(exc), readers=report.readers)
        return Observation([finding], metrics, status=Status.ABSENT)
    slot = _pcsc.interface(report.reader)
    detail = f"{SLOT_NAMES[slot]} interface: {exc}"
    finding = Finding.fail("reader.slot_fault", detail, slots=[slot], reader=report.reader)
    return Observation([finding], {**metrics, "reader": report.reader, "card_present": 1})


def status_findings(status: ReaderStatus) -> list[Finding]:
    found = []
    if status.tamper:
        found.append(Finding.fail("reader.tamper", "reader reports tamper: keys are likely erased"))
    if status.slot_faults:
        names = ", ".join(SLOT_NAMES[s] for s in status.slot_faults)
        found.append(Finding.fail("reader.slot_fault", f"reader slot fault: {names}", slots=list(status.slot_faults)))
    return found
