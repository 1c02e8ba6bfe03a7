"""What a cellular modem says about its SIM, network and data session, read from AT answers
(3GPP TS 27.007) or from ModemManager's `mmcli -J` output, in one shape: ModemFacts.

Pure parsing, no I/O. Values are None when the modem did not say (an optional command
answered ERROR, a field was "--"). The ICCID is kept masked to its last 4 digits.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from typing import Any

from probes._at import Answer, mask_digits

# 27.007 +CREG/+CGREG/+CEREG <stat> (7.2, 10.1.20, 10.1.22).
REG_STATES = {
    0: "not_searching", 1: "home", 2: "searching", 3: "denied", 4: "unknown", 5: "roaming",
    6: "home", 7: "roaming", 8: "emergency_only", 9: "home", 10: "roaming",
}  # fmt: skip
REGISTERED = ("home", "roaming")
# 27.007 +COPS <AcT> (7.3).
ACCESS_TECH = {
    0: "gsm", 1: "gsm", 2: "umts", 3: "edge", 4: "hspa", 5: "hspa", 6: "hspa", 7: "lte",
    8: "ec-gsm-iot", 9: "nb-iot", 10: "lte", 11: "5g-nr", 12: "5g-nr", 13: "5g-nr",
}  # fmt: skip
# 27.007 +CME ERROR codes that are a statement about the SIM (9.2.1).
CME_SIM = {10: ("absent", "SIM not inserted"), 13: ("absent", "SIM failure"), 15: ("absent", "wrong SIM"),
           11: ("locked", "SIM PIN"), 12: ("locked", "SIM PUK")}  # fmt: skip
ICCID = re.compile(r"(\d{18,22})F?", re.IGNORECASE)
# 27.007 +WS46 <n> (5.9): the radio access technologies the module may use. These three leave
# out LTE and 5G: a module set so finds nothing to register on once 2G and 3G are switched off.
LEGACY_MODES = {12: "2G only", 22: "3G only", 29: "2G/3G only"}
# The 3GPP cause names a module's last-failure report (AT+CEER, free text chosen by the maker)
# or ModemManager's bearer error carries, folded to letters and digits: TS 24.301 9.9.3.9 (EMM
# causes: #5 IMEI not accepted, #6 illegal ME), 9.9.4.4 (ESM causes: #8 operator determined
# barring, #27 missing or unknown APN, #33 requested service option not subscribed) and TS
# 24.008 10.5.6.6 (the same SM causes for 2G/3G).
REJECT_KINDS = {
    "illegalme": "equipment",
    "imeinotaccepted": "equipment",
    "operatordeterminedbarring": "barred",
    "serviceoptionnotsubscribed": "not_subscribed",
    "missingorunknownapn": "apn",
    "unknownapn": "apn",
}


@dataclass
class ModemFacts:
    sim: str | None = None  # ready | absent | locked
    sim_detail: str = ""  # "SIM PIN", "SIM not inserted", ...
    iccid: str | None = None  # masked: ****************1234
    rssi_dbm: float | None = None
    rsrp_dbm: float | None = None
    rsrq_db: float | None = None
    registration: str | None = None  # home | roaming | searching | denied | not_searching | unknown | emergency_only
    operator: str | None = None
    access_technology: str | None = None
    attached: bool | None = None  # packet domain attach (+CGATT)
    context_active: bool | None = None  # a PDP context is up (+CGACT)
    apn: str | None = None
    legacy_mode: str | None = None  # "2G/3G only" when the module is set to leave LTE out (+WS46)
    lte_capable: bool | None = None  # the module could use LTE (+WS46=? lists a mode with it)
    reject: str | None = None  # the network's last refusal as the module reports it (+CEER)

    @property
    def reject_kind(self) -> str | None:
        """equipment | barred | not_subscribed | apn, from the 3GPP cause named in `reject`."""
        folded = re.sub(r"[^a-z0-9]", "", (self.reject or "").casefold())
        return next((kind for name, kind in REJECT_KINDS.items() if name in folded), None)


def fields(value: str) -> list[str]:
    return next(csv.reader([value], skipinitialspace=True), [])


def as_int(text: str) -> int | None:
    return int(text) if text.strip().isdigit() else None


# --- AT answers ---------------------------------------------------------------------------


def parse_cpin(answer: Answer) -> tuple[str | None, str]:
    if answer.ok:
        state = next(iter(answer.values("+CPIN:")), "")
        if state.upper() == "READY":
            return "ready", state
        if state.upper() == "NOT INSERTED":
            return "absent", "SIM not inserted"
        return ("locked", state) if state else (None, "")
    code = answer.cme_error()
    if code in CME_SIM:
        return CME_SIM[code]
    return None, ""


def parse_iccid(answer: Answer) -> str | None:
    if not answer.ok:
        return None
    for line in answer.lines:
        match = ICCID.search(line)
        if match:
            return mask_digits(match.group(1))
    return None


def parse_csq(answer: Answer) -> float | None:
    """+CSQ: <rssi>,<ber>; rssi 0 is -113 dBm or less, n is -113 + 2n, 31 is -51 or more, 99 unknown."""
    parts = fields(next(iter(answer.values("+CSQ:")), ""))
    rssi = as_int(parts[0]) if parts else None
    return None if rssi is None or rssi > 31 else -113.0 + 2 * rssi


def parse_cesq(answer: Answer) -> tuple[float | None, float | None]:
    """+CESQ: rxlev,ber,rscp,ecno,rsrq,rsrp. rsrq 0..34 is -20..-3 dB in 0.5 dB steps
    (0: below -19.5), rsrp 0..97 is -141..-44 dBm (0: below -140); 255 is unknown."""
    parts = fields(next(iter(answer.values("+CESQ:")), ""))
    if len(parts) < 6:
        return None, None
    rsrq, rsrp = as_int(parts[4]), as_int(parts[5])
    rsrq_db = -20.0 + 0.5 * rsrq if rsrq is not None and rsrq <= 34 else None
    rsrp_dbm = -141.0 + rsrp if rsrp is not None and rsrp <= 97 else None
    return rsrp_dbm, rsrq_db


def parse_reg(answer: Answer, prefix: str) -> str | None:
    """The read answer is `<n>,<stat>[,...]`. An unsolicited `<stat>[,"lac",...]` line with the
    same prefix can sit among the answer's lines: its second field, if any, is quoted."""
    for value in answer.values(prefix):
        parts = [p.strip() for p in value.split(",")]
        if len(parts) >= 2 and parts[1].isdigit() and parts[0].isdigit():
            return REG_STATES.get(int(parts[1]), "unknown")
    return None


def best_registration(states: list[str | None]) -> str | None:
    """Circuit (CREG), GPRS (CGREG) and EPS (CEREG) registration: any domain registered counts
    (an LTE data module may never register for circuit switching)."""
    known = [s for s in states if s is not None]
    for wanted in ("home", "roaming", "denied", "searching", "emergency_only", "not_searching", "unknown"):
        if wanted in known:
            return wanted
    return None


def parse_cops(answer: Answer) -> tuple[str | None, str | None]:
    parts = fields(next(iter(answer.values("+COPS:")), ""))
    operator = parts[2].strip() if len(parts) >= 3 and parts[2].strip() else None
    act = as_int(parts[3]) if len(parts) >= 4 else None
    return operator, ACCESS_TECH.get(act) if act is not None else None


def parse_cgatt(answer: Answer) -> bool | None:
    value = next(iter(answer.values("+CGATT:")), "")
    return {"1": True, "0": False}.get(value.strip())


def parse_cgact(answer: Answer) -> tuple[bool | None, set[int]]:
    """Whether any PDP context is active, and which cids are."""
    if not answer.ok:
        return None, set()
    active = set()
    for value in answer.values("+CGACT:"):
        parts = fields(value)
        if len(parts) >= 2 and as_int(parts[0]) is not None and parts[1].strip() == "1":
            active.add(int(parts[0]))
    return bool(active), active


def parse_cgdcont(answer: Answer, active: set[int]) -> str | None:
    """The APN of the first active context, else of the lowest defined one ("" when unset)."""
    apns: dict[int, str] = {}
    for value in answer.values("+CGDCONT:"):
        parts = fields(value)
        if len(parts) >= 3 and as_int(parts[0]) is not None:
            apns[int(parts[0])] = parts[2].strip()
    for cid in sorted(active) + sorted(apns):
        if cid in apns:
            return apns[cid]
    return None


def parse_ws46(answer: Answer) -> int | None:
    return as_int(next(iter(answer.values("+WS46:")), ""))


def parse_ws46_supported(answer: Answer) -> set[int]:
    """+WS46: (12,22,25,28-31): every mode listed, ranges expanded."""
    modes: set[int] = set()
    for item in re.findall(r"\d+(?:-\d+)?", next(iter(answer.values("+WS46:")), "")):
        low, _, high = item.partition("-")
        modes.update(range(int(low), int(high or low) + 1))
    return modes


def parse_ceer(answer: Answer) -> str | None:
    """The report of +CEER (27.007 6.10), quotes and separators kept, cut to 120 characters."""
    report = next(iter(answer.values("+CEER:")), "").strip()
    return report[:120] or None


# --- ModemManager (mmcli -J) --------------------------------------------------------------

MM_REGISTRATION = {
    "home": "home", "roaming": "roaming", "searching": "searching", "denied": "denied",
    "idle": "not_searching", "unknown": "unknown", "emergency-only": "emergency_only",
    "home-sms-only": "home", "roaming-sms-only": "roaming",
    "home-csfb-not-preferred": "home", "roaming-csfb-not-preferred": "roaming",
}  # fmt: skip
MM_TECH = {"gsm": "gsm", "gprs": "gsm", "edge": "edge", "umts": "umts", "hsdpa": "hspa", "hsupa": "hspa",
           "hspa": "hspa", "hspa-plus": "hspa", "lte": "lte", "lte-cat-m": "lte", "lte-nb-iot": "nb-iot",
           "5gnr": "5g-nr"}  # fmt: skip


def mm_value(tree: dict[str, Any], *path: str) -> Any:
    """A value from mmcli's JSON; mmcli writes "--" for a field it has no value for."""
    node: Any = tree
    for part in path:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return None if node in ("--", "", None) else node


def mm_number(tree: dict[str, Any], *path: str) -> float | None:
    try:
        return float(mm_value(tree, *path))
    except (TypeError, ValueError):
        return None


def from_mmcli(modem: dict[str, Any], signal: dict[str, Any], bearers: list[dict[str, Any]]) -> ModemFacts:
    """Facts from `mmcli -J -m N`, `mmcli -J -m N --signal-get` and `mmcli -J -b B` of its bearers."""
    facts = ModemFacts()
    state = mm_value(modem, "modem", "generic", "state")
    failed = mm_value(modem, "modem", "generic", "state-failed-reason")
    lock = mm_value(modem, "modem", "generic", "unlock-required")
    if failed in ("sim-missing", "sim-error"):
        facts.sim, facts.sim_detail = "absent", {"sim-missing": "SIM not inserted", "sim-error": "SIM failure"}[failed]
    elif state == "locked" or lock not in (None, "sim-pin2", "sim-puk2"):
        facts.sim, facts.sim_detail = "locked", str(lock or "locked").upper().replace("-", " ")
    elif state is not None:
        facts.sim = "ready"
    facts.registration = MM_REGISTRATION.get(mm_value(modem, "modem", "3gpp", "registration-state") or "")
    facts.operator = mm_value(modem, "modem", "3gpp", "operator-name") or mm_value(modem, "modem", "3gpp", "operator-code")
    techs = mm_value(modem, "modem", "generic", "access-technologies") or []
    facts.access_technology = next((MM_TECH[t] for t in techs if t in MM_TECH), None)
    facts.rssi_dbm = next(
        (v for t in ("lte", "umts", "gsm") if (v := mm_number(signal, "modem", "signal", t, "rssi")) is not None), None
    )
    facts.rsrp_dbm = mm_number(signal, "modem", "signal", "lte", "rsrp")
    facts.rsrq_db = mm_number(signal, "modem", "signal", "lte", "rsrq")
    packet = mm_value(modem, "modem", "3gpp", "packet-service-state")
    facts.attached = {"attached": True, "detached": False}.get(packet or "")
    connected = [b for b in bearers if mm_value(b, "bearer", "status", "connected") == "yes"]
    if state is not None:
        facts.context_active = bool(connected) or state == "connected"
    chosen = connected or bearers
    if chosen:
        facts.apn = mm_value(chosen[0], "bearer", "properties", "apn") or ""
        error = mm_value(chosen[0], "bearer", "status", "connection-error")
        if isinstance(error, dict) and not connected:
            facts.reject = str(error.get("message") or error.get("name") or "")[:120] or None
    facts.legacy_mode, facts.lte_capable = mm_modes(modem)
    return facts


def mm_modes(modem: dict[str, Any]) -> tuple[str | None, bool | None]:
    """From "allowed: 2g, 3g; preferred: 3g" (current-modes) and the supported-modes list."""

    def allowed(text: str) -> set[str]:
        head = text.split(";", 1)[0].removeprefix("allowed:")
        return {part.strip() for part in head.split(",") if part.strip()}

    current = allowed(str(mm_value(modem, "modem", "generic", "current-modes") or ""))
    supported = [allowed(str(m)) for m in mm_value(modem, "modem", "generic", "supported-modes") or []]
    lte_capable = any(m & {"4g", "5g"} for m in supported) if supported else None
    if current and current <= {"2g", "3g"}:
        return "/".join(sorted(m.upper() for m in current)) + " only", lte_capable
    return None, lte_capable
