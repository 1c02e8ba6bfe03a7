"""Cellular modem: SIM, registration, signal and data session over AT commands (3GPP TS 27.007),
or from ModemManager when it owns the modem.

The AT dialogue, in order, each command bounded by command_timeout_seconds and the probe's time:
    AT            answers at all (else modem.no_response)
    AT+CPIN?      READY | SIM PIN | SIM PUK | +CME ERROR: 10 (not inserted)
    AT+CCID       the ICCID (AT+ICCID on modules that name it so), kept masked to its last 4 digits
    AT+CSQ        RSSI; AT+CESQ, where supported, RSRP and RSRQ for LTE
    AT+CREG? AT+CGREG? AT+CEREG?   registration in the circuit, GPRS and EPS domains
    AT+COPS?      operator name and access technology
    AT+CGATT? AT+CGACT? AT+CGDCONT?   packet attach, active PDP context, its APN
    AT+WS46?      the access technologies allowed (AT+WS46=? what the module could do, asked
                  only when the answer leaves LTE out)
    AT+CEER       the network's last refusal, asked only when registration was denied or the
                  data session is down: the 3GPP cause it names tells a barred SIM, a data plan
                  that is not subscribed (or used up) and a SIM the network refuses in this
                  terminal (IMEI binding, 机卡绑定) apart
Only AT and AT+CPIN? must answer OK: ERROR to any other command means "not supported here".

With source "auto" the probe first asks `mmcli -J -L`: a modem listed there is owned by
ModemManager, and opening its AT port beside it would disturb both (DOMAIN.md section 6), so
the same facts are read from `mmcli -J -m N` instead.

The AT port is not opened while a dialer holds its UUCP lock file (lock_dir/LCK..PORT with a
live pid): pppd on that port would lose its data session. The probe is then skipped.

One finding per root: a missing or locked SIM explains the missing registration and data
session, so those are not reported on top of it; a module set to 2G/3G only that finds no
network is reported as that setting, not as "not registered".
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from probes import ProbeContext
from probes._at import Answer, NoFinal, command
from probes._mmcli import MmcliError, listed_modems, read_facts
from probes._modem_facts import (
    LEGACY_MODES,
    REGISTERED,
    ModemFacts,
    best_registration,
    parse_ceer,
    parse_cesq,
    parse_cgact,
    parse_cgatt,
    parse_cgdcont,
    parse_cops,
    parse_cpin,
    parse_csq,
    parse_iccid,
    parse_reg,
    parse_ws46,
    parse_ws46_supported,
)
from probes._serial_line import Line, LineError, as_observation, lock_holder, port_lock
from probes.contract.records import Finding, MetricValue, Observation, Status
from probes.contract.settings import ProbeSettings, bounded

NAME = "modem"
FINDINGS = (
    "modem.absent",
    "modem.no_response",
    "modem.sim_absent",
    "modem.sim_locked",
    "modem.sim_puk",
    "modem.not_registered",
    "modem.registration_denied",
    "modem.imei_rejected",
    "modem.legacy_rat",
    "modem.roaming",
    "modem.weak_signal",
    "modem.no_data_session",
    "modem.data_rejected",
    "modem.wrong_apn",
)


@dataclass(frozen=True)
class ModemSettings(ProbeSettings):
    source: str = bounded(choices=("auto", "at", "mmcli"))
    port: str  # a device path or pyserial URL of the AT port; empty: none
    baud_rate: int = bounded(50, 4_000_000)
    rtscts: bool
    xonxoff: bool
    command_timeout_seconds: float = bounded(0.05, 60)
    mmcli: str  # the mmcli command
    lock_dir: str  # where dialers (pppd) leave UUCP lock files; empty: not looked at
    expected_apn: str  # empty: the APN is not checked
    weak_rssi_dbm: float = bounded(-130, 0)
    weak_rsrp_dbm: float = bounded(-150, 0)


SETTINGS = ModemSettings


def run(settings: ModemSettings, ctx: ProbeContext) -> Observation:
    deadline = time.monotonic() + max(0.01, ctx.remaining(0.0) - 0.05)
    if settings.source != "at":
        try:
            modems = listed_modems(settings.mmcli, deadline)
        except MmcliError as exc:
            if settings.source == "mmcli":
                return Observation([Finding.fail("modem.no_response", str(exc))])
            modems = []
        if modems:
            return from_modemmanager(settings, modems[0], deadline)
        if settings.source == "mmcli":
            return Observation([Finding.fail("modem.absent", "ModemManager lists no modem")], status=Status.ABSENT)
    if not settings.port:
        return Observation(status=Status.SKIPPED, metrics={"reason": "no modem port configured and no modem in ModemManager"})
    return over_at(settings, deadline)


def from_modemmanager(settings: ModemSettings, modem: str, deadline: float) -> Observation:
    try:
        facts = read_facts(settings.mmcli, modem, deadline)
    except MmcliError as exc:
        return Observation([Finding.fail("modem.no_response", str(exc), modem=modem)], {"source": "mmcli"})
    return judge(facts, settings, {"source": "mmcli", "modem": modem})


def over_at(settings: ModemSettings, deadline: float) -> Observation:
    lock = port_lock(settings.port, settings.lock_dir)
    holder = lock_holder(lock) if lock else None
    if holder:  # AT commands on a port pppd is dialled on would break the data session
        return Observation(status=Status.SKIPPED, metrics={"reason": f"{settings.port} is in use by {holder} ({lock}): not opened"})
    try:
        with Line(settings.port, settings.baud_rate, settings.rtscts, settings.xonxoff) as line:
            t0 = time.monotonic()
            facts = dialogue(line, settings.command_timeout_seconds, deadline)
            latency = round((time.monotonic() - t0) * 1000, 1)
    except LineError as exc:
        return as_observation(exc, "modem", settings.port)
    except NoFinal as exc:
        detail = f"{exc.describe()} on {settings.port}"
        return Observation([Finding.fail("modem.no_response", detail, port=settings.port, command=exc.command)], {"source": "at"})
    return judge(facts, settings, {"source": "at", "dialogue_ms": latency})


def dialogue(line: Line, per_command_s: float, deadline: float) -> ModemFacts:
    def ask(text: str) -> Answer:
        return command(line, text, min(deadline, time.monotonic() + per_command_s))

    facts = ModemFacts()
    ask("AT")
    facts.sim, facts.sim_detail = parse_cpin(ask("AT+CPIN?"))
    facts.iccid = parse_iccid(ask("AT+CCID")) or parse_iccid(ask("AT+ICCID"))
    facts.rssi_dbm = parse_csq(ask("AT+CSQ"))
    facts.rsrp_dbm, facts.rsrq_db = parse_cesq(ask("AT+CESQ"))
    facts.registration = best_registration([parse_reg(ask(f"AT+{c}?"), f"+{c}:") for c in ("CREG", "CGREG", "CEREG")])
    facts.operator, facts.access_technology = parse_cops(ask("AT+COPS?"))
    facts.attached = parse_cgatt(ask("AT+CGATT?"))
    facts.context_active, active = parse_cgact(ask("AT+CGACT?"))
    facts.apn = parse_cgdcont(ask("AT+CGDCONT?"), active)
    mode = parse_ws46(ask("AT+WS46?"))
    if mode in LEGACY_MODES:
        facts.legacy_mode = LEGACY_MODES[mode]
        supported = parse_ws46_supported(ask("AT+WS46=?"))
        facts.lte_capable = bool(supported - LEGACY_MODES.keys()) if supported else None
    if facts.registration == "denied" or data_down(facts):
        facts.reject = parse_ceer(ask("AT+CEER"))
    return facts


def data_down(facts: ModemFacts) -> bool:
    return facts.registration in REGISTERED and (facts.attached is False or facts.context_active is False)


def judge(facts: ModemFacts, settings: ModemSettings, metrics: dict[str, MetricValue]) -> Observation:
    metrics = {**metrics, **known_metrics(facts)}
    found = signal_findings(facts, settings)
    if facts.sim == "absent":
        absent = Finding.fail("modem.sim_absent", f"no usable SIM card: {facts.sim_detail}", sim=facts.sim_detail)
        return Observation([absent, *found], metrics)
    if facts.sim == "locked":
        return Observation([lock_finding(facts), *found], metrics)
    found = registration_findings(facts) + found
    if facts.legacy_mode:
        found = [f for f in found if f.id != "modem.not_registered"] + [legacy_finding(facts)]
    if facts.registration in REGISTERED:
        found += data_findings(facts)
    if settings.expected_apn and facts.apn is not None and facts.apn.casefold() != settings.expected_apn.casefold():
        shown = facts.apn or "(none)"
        detail = f"APN is {shown!r}, expected {settings.expected_apn!r}"
        found.append(Finding.fail("modem.wrong_apn", detail, apn=facts.apn, expected=settings.expected_apn))
    return Observation(found, metrics)


def known_metrics(facts: ModemFacts) -> dict[str, MetricValue]:
    values: dict[str, MetricValue | None] = {
        "sim": facts.sim,
        "iccid": facts.iccid,
        "rssi_dbm": facts.rssi_dbm,
        "rsrp_dbm": facts.rsrp_dbm,
        "rsrq_db": facts.rsrq_db,
        "registration": facts.registration,
        "operator": facts.operator,
        "access_technology": facts.access_technology,
        "apn": facts.apn,
        "mode": facts.legacy_mode,
    }
    return {k: v for k, v in values.items() if v is not None}


def lock_finding(facts: ModemFacts) -> Finding:
    """SIM PIN comes back at every boot until the PIN is given or disabled; SIM PUK (after three
    wrong PINs) needs the carrier's PUK or a new SIM."""
    if "PUK" in facts.sim_detail.upper():
        detail = "the SIM card is blocked and waits for its PUK (three wrong PINs): only the carrier has it"
        return Finding.fail("modem.sim_puk", detail, sim=facts.sim_detail)
    detail = f"the SIM card is locked and waits for its {facts.sim_detail.replace('SIM ', '')} (asked again at every start)"
    return Finding.fail("modem.sim_locked", detail, sim=facts.sim_detail)


def legacy_finding(facts: ModemFacts) -> Finding:
    """Registered, a module on 2G/3G only still works until the carrier switches them off: warn;
    not registered, the setting is why: fail."""
    capable = {True: "; the module supports LTE", False: "; the module has no LTE"}.get(facts.lte_capable, "")
    detail = f"the module is set to {facts.legacy_mode} (AT+WS46){capable}: 2G and 3G networks are being switched off"
    make = Finding.warn if facts.registration in REGISTERED else Finding.fail
    return make("modem.legacy_rat", detail, mode=facts.legacy_mode, lte_capable=facts.lte_capable)


def registration_findings(facts: ModemFacts) -> list[Finding]:
    reg = facts.registration
    if reg == "denied" and facts.reject_kind == "equipment":
        detail = f"the network refuses this SIM in this terminal ({facts.reject}): the SIM is bound to another device's IMEI"
        return [Finding.fail("modem.imei_rejected", detail, registration=reg, reject=facts.reject)]
    if reg == "denied":
        return [Finding.fail("modem.registration_denied", "the network refuses to register this SIM", registration=reg)]
    if reg == "roaming":
        detail = f"registered on a roaming network ({facts.operator or 'operator unknown'})"
        return [Finding.warn("modem.roaming", detail, operator=facts.operator)]
    if reg is not None and reg not in REGISTERED:
        detail = f"not registered on any network ({reg.replace('_', ' ')})"
        return [Finding.fail("modem.not_registered", detail, registration=reg)]
    return []


def data_findings(facts: ModemFacts) -> list[Finding]:
    if data_down(facts) and facts.reject_kind in ("barred", "not_subscribed"):
        why = "the SIM is barred: suspended or unpaid" if facts.reject_kind == "barred" else "no data plan: not subscribed or used up"
        detail = f"registered, but the network refuses the data session ({facts.reject}): {why}"
        return [Finding.fail("modem.data_rejected", detail, reject=facts.reject, kind=facts.reject_kind)]
    if facts.attached is False:
        return [Finding.fail("modem.no_data_session", "registered, but not attached to the packet (data) service", attached=0)]
    if facts.context_active is False:
        return [Finding.fail("modem.no_data_session", "registered and attached, but no data session (PDP context) is active", attached=1)]
    return []


def signal_findings(facts: ModemFacts, settings: ModemSettings) -> list[Finding]:
    if facts.rsrp_dbm is not None and facts.rsrp_dbm < settings.weak_rsrp_dbm:
        detail = f"LTE RSRP {facts.rsrp_dbm:.0f} dBm (below {settings.weak_rsrp_dbm:.0f})"
        return [Finding.warn("modem.weak_signal", detail, rsrp_dbm=facts.rsrp_dbm)]
    if facts.rsrp_dbm is None and facts.rssi_dbm is not None and facts.rssi_dbm < settings.weak_rssi_dbm:
        detail = f"RSSI {facts.rssi_dbm:.0f} dBm (below {settings.weak_rssi_dbm:.0f})"
        return [Finding.warn("modem.weak_signal", detail, rssi_dbm=facts.rssi_dbm)]
    return []
