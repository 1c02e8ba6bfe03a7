"""A cellular module's AT port on a pty, answering like a real one (3GPP TS 27.007, V.250).

Commands end with CR; with echo on (ATE1, the default) each is echoed before its answer.
Information lines and final result codes are framed `CR LF ... CR LF`. Unsolicited result
codes arrive unasked: a `+CEREG: <stat>` after every answer (a network re-selection), and a
`+CREG: <stat>` in the middle of the answer to AT+CREG?, as happens when the network state
changes while the module is answering. Unknown commands answer ERROR.

Line faults: "silent" never answers, "random" streams random bytes, "no_final" answers
without ever ending with OK, "hang_up" closes the pty halfway through an answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from probes import modem
from probes.emulators import with_faults
from probes.emulators._model import CELLULAR, TerminalState
from probes.emulators._pty import PtyDevice, missing_port

# The SIM faults that are not findings of their own: what the network does to such a SIM.
SIM_ACCOUNT_FAULTS = frozenset({"modem.sim_suspended", "modem.sim_out_of_data", "modem.sim_bound_elsewhere"})
FAULTS = frozenset(modem.FINDINGS) - {"modem.imei_rejected", "modem.data_rejected"} | SIM_ACCOUNT_FAULTS
ICCID = "89860012345678901234"
EXPECTED_APN = "pos.acquirer"
LineFault = Literal["silent", "random", "no_final", "hang_up"]


@dataclass(frozen=True)
class ModemState:
    sim: Literal["ready", "absent", "pin", "puk"] = "ready"
    reg_stat: int = 1  # 27.007 <stat>: 1 home, 2 searching, 3 denied, 5 roaming
    csq: int = 22  # -69 dBm
    rsrq: int = 24  # -8 dB
    rsrp: int = 50  # -91 dBm
    operator: str = "CHINA MOBILE"
    act: int = 7  # E-UTRAN
    attached: bool = True
    active: bool = True
    apn: str = EXPECTED_APN
    cesq: bool = True  # some 2G/3G modules answer ERROR to AT+CESQ
    iccid_command: str = "AT+CCID"  # Quectel and SIMCom answer AT+CCID, others only AT+ICCID
    ws46: int = 25  # 27.007 5.9: 25 GERAN, UTRAN and E-UTRAN; 29 GERAN and UTRAN only
    ws46_supported: str = "(12,22,25,28,29,30,31)"
    ceer: str = "No cause information available"  # the last refusal, as AT+CEER reports it


# The carrier's refusals carry the 3GPP cause names (TS 24.301 EMM #6, ESM #8 and #33).
STATE_FAULTS: dict[str, dict[str, Any]] = {
    "modem.sim_absent": {"sim": "absent"},
    "modem.sim_locked": {"sim": "pin"},
    "modem.sim_puk": {"sim": "puk"},
    "modem.not_registered": {"reg_stat": 2},
    "modem.registration_denied": {"reg_stat": 3},
    "modem.sim_bound_elsewhere": {"reg_stat": 3, "ceer": "EMM reject, cause 6: Illegal ME"},
    "modem.legacy_rat": {"ws46": 29, "reg_stat": 2, "csq": 99, "rsrp": 255, "rsrq": 255},
    "modem.sim_suspended": {"active": False, "ceer": "ESM reject, cause 8: Operator determined barring"},
    "modem.sim_out_of_data": {"active": False, "ceer": "ESM reject, cause 33: Requested service option not subscribed"},
    "modem.roaming": {"reg_stat": 5, "operator": "CSL"},
    "modem.weak_signal": {"csq": 5, "rsrp": 22, "rsrq": 6},
    "modem.no_data_session": {"active": False},
    "modem.wrong_apn": {"apn": "cmnet"},
}


class ModemEmulator(PtyDevice):
    def __init__(self, state: ModemState | None = None, line_fault: LineFault | None = None, echo: bool = True) -> None:
        super().__init__()
        self.state = state or ModemState()
        self.echo = echo
        self.commands: list[str] = []
        self._inbox = bytearray()
        self.set_line_fault(line_fault)

    def on_data(self, data: bytes) -> None:
        self._inbox += data
        while b"\r" in self._inbox:
            raw, _, rest = bytes(self._inbox).partition(b"\r")
            self._inbox = bytearray(rest.lstrip(b"\n"))
            text = raw.decode("ascii", "replace").strip()
            if text:
                self.commands.append(text)
                self.answer(text, raw + b"\r")

    def answer(self, text: str, echoed: bytes) -> None:
        fault = self.line_fault
        if fault in ("silent", "random"):
            return
        out = echoed if self.echo else b""
        lines, final = self.respond(text.upper())
        body = b"".join(b"\r\n" + line.encode() + b"\r\n" for line in lines)
        if fault == "no_final":
            self.send(out + body)
            return
        full = body + b"\r\n" + final.encode() + b"\r\n"
        if fault == "hang_up":
            self.send(out + full[: len(full) // 2])
            self.hang_up()
            return
        self.send(out + full)
        self.send(f"\r\n+CEREG: {self.state.reg_stat}\r\n".encode())

    def respond(self, cmd: str) -> tuple[list[str], str]:
        s = self.state
        no_sim = {"absent": "+CME ERROR: 10", "pin": "+CME ERROR: 11", "puk": "+CME ERROR: 12"}.get(s.sim, "")
        if cmd == "AT":
            return [], "OK"
        if cmd in ("ATE0", "ATE1"):
            self.echo = cmd == "ATE1"
            return [], "OK"
        if cmd == "AT+CPIN?":
            cpin = {"pin": "SIM PIN", "puk": "SIM PUK", "ready": "READY"}
            return ([], no_sim) if s.sim == "absent" else ([f"+CPIN: {cpin[s.sim]}"], "OK")
        if cmd == s.iccid_command:
            return ([], no_sim) if no_sim else ([f"{cmd[2:]}: {ICCID}"], "OK")
        if cmd == "AT+CSQ":
            return [f"+CSQ: {s.csq if s.sim == 'ready' else 99},99"], "OK"
        if cmd == "AT+CESQ" and s.cesq:
            return [f"+CESQ: 99,99,255,255,{s.rsrq},{s.rsrp}"], "OK"
        stat = s.reg_stat if s.sim == "ready" else 0
        if cmd == "AT+CREG?":
            return [f"+CREG: {stat}", f"+CREG: 0,{stat}"], "OK"  # an unsolicited line, then the answer
        if cmd in ("AT+CGREG?", "AT+CEREG?"):
            return [f"{cmd[2:-1]}: 0,{stat}"], "OK"
        if cmd == "AT+COPS?":
            registered = s.sim == "ready" and stat in (1, 5)
            return [f'+COPS: 0,0,"{s.operator}",{s.act}' if registered else "+COPS: 0"], "OK"
        if cmd == "AT+CGATT?":
            return [f"+CGATT: {int(s.attached and s.sim == 'ready' and stat in (1, 5))}"], "OK"
        if cmd == "AT+CGACT?":
            return [f"+CGACT: 1,{int(s.active and s.attached and s.sim == 'ready' and stat in (1, 5))}"], "OK"
        if cmd == "AT+CGDCONT?":
            return [f'+CGDCONT: 1,"IP","{s.apn}","0.0.0.0",0,0'], "OK"
        if cmd == "AT+WS46?":
            return [f"+WS46: {s.ws46}"], "OK"
        if cmd == "AT+WS46=?":
            return [f"+WS46: {s.ws46_supported}"], "OK"
        if cmd == "AT+CEER":
            return [f"+CEER: {s.ceer}"], "OK"
        return [], "ERROR"


@contextlib.contextmanager
def start(state: TerminalState, workdir: Path) -> Iterator[dict[str, Any]]:
    def port(path: str) -> dict[str, Any]:
        # source "at": the machine's own ModemManager is never asked.
        return {"probes": {"modem": {"port": path, "source": "at", "expected_apn": EXPECTED_APN}}}

    faults = state.faults & FAULTS
    if CELLULAR not in state.bearers:  # a terminal on Wi-Fi only: no modem configured
        yield port("")
        return
    if "modem.absent" in faults:
        yield port(missing_port(workdir))
        return
    fault: LineFault | None = "silent" if "modem.no_response" in faults else None
    with ModemEmulator(with_faults(ModemState(), STATE_FAULTS, faults), fault) as device:
        yield port(device.path)
