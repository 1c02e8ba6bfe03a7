"""The PC/SC card-reader check (pcsc-lite's pcscd with a CCID or vendor driver) through
pyscard's low-level smartcard.scard API, which returns PC/SC result codes rather than raising.

    SCardEstablishContext   pcscd answers            (else SCARD_E_NO_SERVICE 0x8010001D)
    SCardListReaders        the reader is listed     (else SCARD_E_NO_READERS_AVAILABLE 0x8010002E)
    SCardGetStatusChange    is a card in it, is it mute
    SCardConnect/Status     power the card, its ATR  (SCARD_W_UNRESPONSIVE_CARD 0x80100066: no ATR)
    SCardTransmit           SELECT 2PAY.SYS.DDF01 (PPSE), else 1PAY.SYS.DDF01 (PSE): status word only

Nothing from the card beyond the ATR and status words is kept: the SELECT answer's data (FCI)
is dropped unread, and nothing else is asked. pcscd's socket is pcsc-lite's own setting,
the environment variable PCSCLITE_CSOCK_NAME (default /run/pcscd/pcscd.comm).

The PC/SC calls have no timeout of their own: a card that never answers holds SCardConnect
or SCardTransmit inside pcscd. They run in a daemon thread, and the probe stops waiting at
its deadline and reports what the thread was doing then.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

PPSE = b"2PAY.SYS.DDF01"
PSE = b"1PAY.SYS.DDF01"
NO_SERVICE, NO_READERS = 0x8010001D, 0x8010002E
SERVICE_STOPPED, SHARING_VIOLATION = 0x8010001E, 0x8010000B
CARD_GONE = (0x8010000C, 0x80100069)  # SCARD_E_NO_SMARTCARD, SCARD_W_REMOVED_CARD
CONTACTLESS = re.compile(r"picc|contactless|\bcl\b|nfc", re.IGNORECASE)
SAM = re.compile(r"\bsam\b", re.IGNORECASE)
Step = Literal["service", "readers", "state", "connect", "select", "done"]
FailKind = Literal["no_service", "no_reader", "silent"]


@dataclass
class PcscReport:
    reader: str = ""
    card_present: bool = False
    atr: str = ""
    select_sw: str = ""  # status word of the last SELECT, e.g. "9000", "6a82"
    application: str = ""  # ppse | pse | none
    busy: bool = False  # another program holds the card exclusively
    latency_ms: float = 0.0
    step: Step = "service"
    readers: list[str] = field(default_factory=list)


class PcscFailure(Exception):
    def __init__(self, kind: FailKind, message: str, report: PcscReport) -> None:
        self.kind: FailKind = kind
        self.report = report
        super().__init__(message)


def interface(reader: str) -> str:
    """Which slot a PC/SC reader name stands for: "contactless" (PICC, CL, NFC) or "ic" (a contact
    chip slot; a dual reader's SAM slot is a contact slot too)."""
    return "contactless" if CONTACTLESS.search(reader) and not SAM.search(reader) else "ic"


def select_apdu(name: bytes) -> list[int]:
    return list(bytes([0x00, 0xA4, 0x04, 0x00, len(name)]) + name + b"\x00")


def code(hresult: int) -> int:
    return hresult & 0xFFFFFFFF


def check(pattern: str, deadline: float) -> PcscReport:
    """Run the exchange within `deadline` (time.monotonic()); PcscFailure says what failed."""
    report = PcscReport()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            exchange(pattern, report)
        except PcscFailure as exc:
            outcome["failure"] = exc
        except Exception as exc:  # a pyscard surprise becomes the probe's error, not a silent dead thread
            outcome["error"] = exc

    thread = threading.Thread(target=work, name="pcsc-check", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if thread.is_alive():
        raise stalled(report)
    if "failure" in outcome:
        raise outcome["failure"]
    if "error" in outcome:
        raise outcome["error"]
    return report


def stalled(report: PcscReport) -> PcscFailure:
    if report.step in ("connect", "select"):
        what = "an ATR" if report.step == "connect" else "the SELECT"
        return PcscFailure("silent", f"card in {report.reader!r} did not answer {what} in time", report)
    return PcscFailure("no_service", "pcscd did not answer in time", report)


def exchange(pattern: str, report: PcscReport) -> None:
    from smartcard import scard

    hr, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if code(hr) != 0:
        text = "pcscd not running" if code(hr) in (NO_SERVICE, SERVICE_STOPPED) else scard.SCardGetErrorMessage(hr)
        raise PcscFailure("no_service", f"{text} (PC/SC 0x{code(hr):08X})", report)
    try:
        report.step = "readers"
        report.reader = choose_reader(scard, context, pattern, report)
        report.step = "state"
        hr, states = scard.SCardGetStatusChange(context, 0, [(report.reader, scard.SCARD_STATE_UNAWARE)])
        flags = states[0][1] if code(hr) == 0 and states else 0
        report.card_present = bool(flags & scard.SCARD_STATE_PRESENT)
        if flags & scard.SCARD_STATE_MUTE:
            raise PcscFailure("silent", f"card in {report.reader!r} is mute (no ATR)", report)
        if report.card_present:
            talk_to_card(scard, context, report)
        report.step = "done"
    finally:
        scard.SCardReleaseContext(context)


def choose_reader(scard: Any, context: Any, pattern: str, report: PcscReport) -> str:
    hr, readers = scard.SCardListReaders(context, [])
    if code(hr) not in (0, NO_READERS):
        raise PcscFailure("no_service", f"pcscd: {scard.SCardGetErrorMessage(hr)} (PC/SC 0x{code(hr):08X})", report)
    report.readers = list(readers or [])
    if not report.readers:
        raise PcscFailure("no_reader", "pcscd lists no card reader", report)
    matching = [r for r in report.readers if re.search(pattern, r, re.IGNORECASE)] if pattern else report.readers
    if not matching:
        raise PcscFailure("no_reader", f"no reader matching {pattern!r} among: {', '.join(report.readers)}", report)
    return matching[0]


def talk_to_card(scard: Any, context: Any, report: PcscReport) -> None:
    report.step = "connect"
    t0 = time.monotonic()
    protocols = scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1
    hr, card, protocol = scard.SCardConnect(context, report.reader, scard.SCARD_SHARE_SHARED, protocols)
    if code(hr) == SHARING_VIOLATION:
        report.busy = True
        return
    if code(hr) in CARD_GONE:
        report.card_present = False
        return
    if code(hr) != 0:
        raise PcscFailure("silent", f"card in {report.reader!r}: {scard.SCardGetErrorMessage(hr)} (PC/SC 0x{code(hr):08X})", report)
    try:
        hr, _, _, _, atr = scard.SCardStatus(card)
        report.atr = bytes(atr).hex() if code(hr) == 0 else ""
        report.step = "select"
        for label, name in (("ppse", PPSE), ("pse", PSE)):
            hr, response = scard.SCardTransmit(card, protocol, select_apdu(name))
            if code(hr) != 0:
                raise PcscFailure("silent", f"card in {report.reader!r} did not answer SELECT: {scard.SCardGetErrorMessage(hr)}", report)
            report.select_sw = bytes(response[-2:]).hex()  # the status word; the FCI before it is not kept
            if report.select_sw == "9000" or report.select_sw.startswith("61"):
                report.application = label
                break
        else:
            report.application = "none"
        report.latency_ms = round((time.monotonic() - t0) * 1000, 1)
    finally:
        scard.SCardDisconnect(card, scard.SCARD_LEAVE_CARD)
