"""`diagnose --print`: a short summary on the terminal's own receipt printer.

For a technician without a laptop: code, meaning, top cause, actions for the role, the
dispatch verdict and the bundle id as a QR code (ESC/POS `GS ( k`, model 2, printed by the
printer itself: no image library). Chinese text is sent in GB18030 after `FS &` (Chinese
character mode), as Chinese ESC/POS printers expect; English text is ASCII.

It prints only when the sweep's printer probe came back without a fail finding; otherwise
the caller shows why on screen, since the printer is then the problem, not the medium.
"""

from __future__ import annotations

import time

from agent.config import Config
from agent.diagnosis import Diagnosis
from agent.i18n import finding_detail, phrase
from agent.knowledge import finding_title
from probes.contract import catalogue
from probes.contract.records import Severity, Status

WIDTH = 32  # columns of a 58 mm roll in font A
INIT, CHINESE_ON = b"\x1b@", b"\x1c&"
FEED_AND_CUT = b"\x1bd\x04\x1dV\x01"
WRITE_TIMEOUT_S = 5.0


def print_summary(config: Config, diagnosis: Diagnosis, lang: str, role: str, bundle_id: str | None = None) -> str:
    """Print the summary if the printer is fit to; returns what happened, for the screen."""
    from probes._escpos import open_printer
    from probes._serial_line import LineError

    words = catalogue.words("receipt", lang)
    blocked = printer_problem(diagnosis, lang)
    if blocked is not None:
        return blocked
    settings = config.probes["printer"]
    page = receipt_bytes(diagnosis, lang, role, config.section("terminal").id, bundle_id)
    try:
        with open_printer(settings) as link:
            link.write(page, time.monotonic() + WRITE_TIMEOUT_S)
    except LineError as exc:
        return words["failed"].format(error=exc)
    return words["sent"].format(port=settings.port)


def printer_problem(diagnosis: Diagnosis, lang: str) -> str | None:
    """Why the summary must not be printed, or None when the printer is fit."""
    words = catalogue.words("receipt", lang)
    result = next((r for r in diagnosis.sweep.results if r.name == "printer"), None)
    if result is None or result.status in (Status.SKIPPED, Status.TIMEOUT, Status.ERROR):
        why = "--only" if result is None else phrase(str(result.metrics.get("reason", result.status.value)), lang)
        return words["skipped"].format(why=why)
    faults = [f for f in result.findings if f.severity is Severity.FAIL]
    if faults:
        return words["fault"].format(faults="; ".join(f"{finding_title(f.id, lang)} ({finding_detail(f, lang)})" for f in faults))
    return None


def receipt_bytes(diagnosis: Diagnosis, lang: str, role: str, terminal_id: str, bundle_id: str | None) -> bytes:
    words = catalogue.words("receipt", lang)
    error, top = diagnosis.error, diagnosis.top
    meaning = error.meaning.get(lang) if error.meaning else words["unknown"]
    lines = [words["title"], f"{terminal_id}  {diagnosis.sweep.started_at[:19]}Z", "-" * WIDTH]
    lines += wrap(f"{words['code']} {error.code}: {meaning}")
    lines += wrap(f"{words['cause']} ({top.confidence * 100:.0f}%): {top.cause.title.get(lang)}")
    lines.append(f"{words['todo']}:")
    for n, action in enumerate(top.cause.actions[role], 1):
        lines += wrap(f"{n}) {action.get(lang)}")
    lines += wrap(f"{words['dispatch']}: {diagnosis.correlation.dispatch.verdict}")
    if bundle_id:
        lines += wrap(f"{words['bundle']}: {bundle_id}")
    body = "".join(f"{line}\n" for line in lines)
    page = INIT + (CHINESE_ON + body.encode("gb18030", "replace") if lang == "zh" else body.encode("ascii", "replace"))
    if bundle_id:
        page += qr_code(bundle_id.encode("ascii", "replace"))
    return page + FEED_AND_CUT


def qr_code(data: bytes, module_size: int = 6) -> bytes:
    """ESC/POS `GS ( k` function 165/167/169/180/181: model 2, size, error level M, store, print."""
    if len(data) > 7000:
        raise ValueError("QR data too long for one symbol")
    store_len = len(data) + 3
    return b"".join(
        (
            b"\x1d(k\x04\x001A2\x00",  # fn 165: model 2
            b"\x1d(k\x03\x001C" + bytes([module_size]),  # fn 167: module size in dots
            b"\x1d(k\x03\x001E1",  # fn 169: error correction M
            b"\x1d(k" + bytes([store_len & 0xFF, store_len >> 8]) + b"1P0" + data,  # fn 180: store
            b"\x1d(k\x03\x001Q0",  # fn 181: print the stored symbol
        )
    )


def wrap(text: str, width: int = WIDTH) -> list[str]:
    """Break a line at `width` display columns (CJK characters take two)."""
    lines, current, used = [], "", 0
    for ch in text:
        w = 2 if ord(ch) > 0x2E7F else 1
        if used + w > width:
            lines.append(current.rstrip())
            current, used = "", 0
            if ch == " ":
                continue
        current += ch
        used += w
    if current:
        lines.append(current.rstrip())
    return lines
