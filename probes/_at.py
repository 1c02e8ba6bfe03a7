"""The AT dialogue (3GPP TS 27.007 section 4, ITU-T V.250) over a probes._serial_line.Line.

A command is written as `AT...<CR>`; the modem answers with information lines and ends with
one final result code (`OK`, `ERROR`, `+CME ERROR: <err>`, ...), each line framed by CR LF.
With echo on (ATE1, the factory default) the command itself comes back first. Unsolicited
result codes (`+CREG: 1`, `RING`) may arrive at any time, also between the lines of an
answer: the caller keeps only the lines that carry the command's own prefix.

The module name starts with "_" so the probe scanner does not take it for a probe.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from probes._serial_line import Line

FINAL_OK = "OK"
# V.250 and 27.007 final result codes other than OK: the command is over, it did not succeed.
FINAL_ERRORS = ("ERROR", "NO CARRIER", "NO DIALTONE", "BUSY", "NO ANSWER")
ERROR_PREFIXES = ("+CME ERROR:", "+CMS ERROR:")
MAX_ANSWER = 4096  # no answer to a query is longer; a stream past this is not a modem talking
LONG_DIGITS = re.compile(r"\d{10,}")


@dataclass(frozen=True)
class Answer:
    lines: tuple[str, ...]  # information lines, echo and empty lines removed
    final: str  # "OK", "ERROR", "+CME ERROR: 10", ...

    @property
    def ok(self) -> bool:
        return self.final == FINAL_OK

    def values(self, prefix: str) -> list[str]:
        """The text after `prefix` on each line that has it (`+CSQ:` -> ["20,99"])."""
        return [line[len(prefix) :].strip() for line in self.lines if line.startswith(prefix)]

    def cme_error(self) -> int | None:
        match = re.fullmatch(r"\+CME ERROR:\s*(\d+)", self.final)
        return int(match.group(1)) if match else None


class NoFinal(Exception):
    """No final result code before the deadline: silence, garbage or an answer cut short."""

    def __init__(self, command: str, received: bytes) -> None:
        self.command = command
        self.received = received
        super().__init__(command)

    def describe(self) -> str:
        if not self.received:
            return f"no answer to {self.command}"
        printable = sum(32 <= b < 127 or b in (10, 13) for b in self.received) / len(self.received)
        kind = "an answer that never ended with OK or ERROR" if printable > 0.9 else "unreadable bytes"
        return f"{kind} to {self.command} ({len(self.received)} bytes)"


def split_lines(data: bytes) -> list[str]:
    text = data.decode("ascii", "replace")
    return [line.strip() for line in re.split(r"[\r\n]+", text) if line.strip()]


def is_final(line: str) -> bool:
    return line == FINAL_OK or line in FINAL_ERRORS or line.startswith(ERROR_PREFIXES)


def command(line: Line, text: str, deadline: float) -> Answer:
    """Send `text` (e.g. "AT+CSQ") and collect its answer up to the final result code."""
    line.discard_input()  # unsolicited lines that arrived since the last answer
    line.write(text.encode("ascii") + b"\r", deadline)
    received = bytearray()
    while True:
        first = line.read(1, deadline)  # wakes on the first byte, not on a fixed tick
        received += first + (line.read_available(MAX_ANSWER) if first else b"")
        lines = split_lines(bytes(received))
        # A final code counts only once its line is complete (CR or LF after it).
        complete = lines if received[-1:] in (b"\r", b"\n") else lines[:-1]
        final = next((i for i, item in enumerate(complete) if is_final(item)), None)
        if final is not None:
            body = [item for item in complete[:final] if item.upper() != text.upper()]
            return Answer(tuple(body), complete[final])
        if len(received) > MAX_ANSWER or time.monotonic() >= deadline:
            raise NoFinal(text, bytes(received))


def mask_digits(text: str) -> str:
    """Long digit runs (an ICCID, an IMSI) keep only their last 4 digits."""
    return LONG_DIGITS.sub(lambda m: "*" * (len(m.group()) - 4) + m.group()[-4:], text)
