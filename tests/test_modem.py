"""The modem probe: the AT dialogue against the AT modem emulator on a real pty (echo on and
off, unsolicited lines, optional commands answering ERROR), the answers' arithmetic, the
ModemManager path, and the CLI for the simulated terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from agent import config
from probes import ProbeContext, modem
from probes._at import Answer, mask_digits
from probes._modem_facts import ModemFacts, parse_ceer, parse_cesq, parse_cpin, parse_csq, parse_reg, parse_ws46_supported
from probes.contract.records import Status
from probes.contract.settings import HostSettings
from probes.emulators.modem import EXPECTED_APN, ICCID, ModemEmulator, ModemState
from tests.conftest import run_cli

MMCLI_DATA = Path(__file__).parent / "data" / "mmcli"
DIALOGUE = [
    "AT", "AT+CPIN?", "AT+CCID", "AT+CSQ", "AT+CESQ", "AT+CREG?", "AT+CGREG?", "AT+CEREG?",
    "AT+COPS?", "AT+CGATT?", "AT+CGACT?", "AT+CGDCONT?", "AT+WS46?",
]  # fmt: skip


def probe(port: str = "", timeout_s: float = 6.0, **extra: object):
    overrides = {"port": port, "source": "at", "expected_apn": EXPECTED_APN, **extra}
    settings = config.load(None, {"probes": {"modem": overrides}}).probes["modem"]
    return modem.run(settings, ProbeContext(HostSettings("/nonexistent-sys", "/nonexistent-proc"), timeout_s))


def ids(observation) -> list[str]:
    return [f.id for f in observation.findings]


# --- the dialogue on a pty ----------------------------------------------------------------


@pytest.mark.parametrize("echo", [True, False])
def test_healthy_modem_reports_operator_technology_and_signal(echo):
    with ModemEmulator(echo=echo) as device:
        observation = probe(device.path)
        assert device.commands == DIALOGUE
    assert observation.derived_status() is Status.OK and observation.findings == [], observation
    m = observation.metrics
    assert (m["operator"], m["access_technology"], m["registration"]) == ("CHINA MOBILE", "lte", "home")
    assert (m["rssi_dbm"], m["rsrp_dbm"], m["rsrq_db"]) == (-69.0, -91.0, -8.0)
    assert m["apn"] == EXPECTED_APN and m["source"] == "at"


def test_iccid_is_masked_to_its_last_four_digits_everywhere():
    with ModemEmulator() as device:
        observation = probe(device.path)
    assert observation.metrics["iccid"] == "*" * 16 + ICCID[-4:]
    assert ICCID not in json.dumps(observation.metrics) and ICCID[:10] not in repr(observation)


def test_optional_commands_answering_error_are_not_faults():
    """A 3G module without AT+CESQ that names its ICCID command AT+ICCID."""
    state = ModemState(cesq=False, iccid_command="AT+ICCID", csq=8)  # -97 dBm
    with ModemEmulator(state) as device:
        observation = probe(device.path)
        assert "AT+ICCID" in device.commands
    assert "rsrp_dbm" not in observation.metrics and observation.metrics["iccid"].endswith(ICCID[-4:])
    # Without RSRP the weak-signal check falls back to RSSI.
    assert ids(observation) == ["modem.weak_signal"] and "RSSI -97 dBm" in observation.findings[0].detail


def test_unsolicited_line_inside_an_answer_is_not_taken_for_it():
    """The emulator puts `+CREG: 5` (unsolicited) before `+CREG: 0,5` (the answer) and a
    `+CEREG: 5` line after every answer, as a module does when the network state changes."""
    with ModemEmulator(ModemState(reg_stat=5, operator="CSL")) as device:
        with serial.serial_for_url(device.path, timeout=0.3) as raw:
            raw.write(b"AT+CREG?\r")
            transcript = raw.read(200)
        assert transcript == b"AT+CREG?\r\r\n+CREG: 5\r\n\r\n+CREG: 0,5\r\n\r\nOK\r\n\r\n+CEREG: 5\r\n"
        observation = probe(device.path)
    assert ids(observation) == ["modem.roaming"] and observation.metrics["registration"] == "roaming"


def test_ate0_switches_echo_off_like_a_module():
    with ModemEmulator() as device:
        with serial.serial_for_url(device.path, timeout=0.2) as raw:
            raw.write(b"ATE0\r")
            assert raw.read(100) == b"ATE0\r\r\nOK\r\n\r\n+CEREG: 1\r\n"  # echoed: echo was still on
            raw.write(b"AT+CSQ\r")
            assert raw.read(100) == b"\r\n+CSQ: 22,99\r\n\r\nOK\r\n\r\n+CEREG: 1\r\n"
        observation = probe(device.path)
    assert observation.findings == [] and observation.metrics["rssi_dbm"] == -69.0


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (ModemState(sim="absent"), ["modem.sim_absent"]),
        (ModemState(sim="pin"), ["modem.sim_locked"]),
        (ModemState(reg_stat=2), ["modem.not_registered"]),
        (ModemState(reg_stat=3), ["modem.registration_denied"]),
        (ModemState(attached=False), ["modem.no_data_session"]),
        (ModemState(active=False), ["modem.no_data_session"]),
        (ModemState(apn="cmnet"), ["modem.wrong_apn"]),
        (ModemState(csq=5, rsrp=22), ["modem.weak_signal"]),
        (ModemState(reg_stat=3, csq=5, rsrp=22), ["modem.registration_denied", "modem.weak_signal"]),
    ],
)
def test_each_state_gives_its_finding(state, expected):
    with ModemEmulator(state) as device:
        observation = probe(device.path)
    assert ids(observation) == expected


def test_a_missing_sim_is_the_only_root_reported():
    """No SIM: no registration and no data session follow, but only the SIM is reported."""
    with ModemEmulator(ModemState(sim="absent")) as device:
        observation = probe(device.path)
    assert ids(observation) == ["modem.sim_absent"]
    assert observation.findings[0].detail == "no usable SIM card: SIM not inserted"


def test_apn_is_not_checked_without_expected_apn():
    with ModemEmulator(ModemState(apn="cmnet")) as device:
        observation = probe(device.path, expected_apn="")
    assert observation.findings == [] and observation.metrics["apn"] == "cmnet"


def test_silent_modem_ends_within_the_command_timeout():
    with ModemEmulator(line_fault="silent") as device:
        t0 = time.monotonic()
        observation = probe(device.path, command_timeout_seconds=0.3)
    assert ids(observation) == ["modem.no_response"] and time.monotonic() - t0 < 1.0
    assert observation.findings[0].detail.startswith("no answer to AT on ")


def test_a_port_a_dialer_holds_is_not_opened_and_a_stale_lock_is_ignored(tmp_path):
    with ModemEmulator() as device:
        lock = tmp_path / f"LCK..{Path(device.path).name}"
        lock.write_text(f"{os.getpid():>10}\n")  # HDB form, as pppd writes it; this pid runs
        held = probe(device.path, lock_dir=str(tmp_path))
        assert device.commands == []  # not one AT command on a port in use
        assert held.derived_status() is Status.SKIPPED and f"in use by pid {os.getpid()}" in held.metrics["reason"]
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
        lock.write_text(f"{int(gone):>10}\n")  # that pid has ended: a stale lock
        assert probe(device.path, lock_dir=str(tmp_path)).derived_status() is Status.OK
        assert device.commands == DIALOGUE


def test_no_port_and_no_modemmanager_is_skipped():
    observation = probe("", source="auto", mmcli="/nonexistent/mmcli")
    assert observation.derived_status() is Status.SKIPPED


# --- SIM locks, the network's refusals and the 2G/3G mode ------------------------------------

BARRED = "ESM reject, cause 8: Operator determined barring"
NO_PLAN = "ESM reject, cause 33: Requested service option not subscribed"
ILLEGAL_ME = "EMM reject, cause 6: Illegal ME"


@pytest.mark.parametrize(
    ("state", "expected", "severity"),
    [
        (ModemState(sim="puk"), "modem.sim_puk", "fail"),
        (ModemState(active=False, ceer=BARRED), "modem.data_rejected", "fail"),
        (ModemState(attached=False, ceer=NO_PLAN), "modem.data_rejected", "fail"),
        (ModemState(reg_stat=3, ceer=ILLEGAL_ME), "modem.imei_rejected", "fail"),
        (ModemState(ws46=29, reg_stat=2, csq=99, rsrp=255, rsrq=255), "modem.legacy_rat", "fail"),
        (ModemState(ws46=29, act=2), "modem.legacy_rat", "warn"),  # still on a 3G cell: works for now
    ],
)
def test_locks_refusals_and_legacy_mode(state, expected, severity):
    with ModemEmulator(state) as device:
        observation = probe(device.path)
    assert [(f.id, f.severity) for f in observation.findings] == [(expected, severity)]


def test_a_pin_lock_and_a_puk_block_say_who_can_open_them():
    with ModemEmulator(ModemState(sim="pin")) as device:
        pin = probe(device.path).findings[0]
    with ModemEmulator(ModemState(sim="puk")) as device:
        puk = probe(device.path).findings[0]
    assert "asked again at every start" in pin.detail
    assert "only the carrier has it" in puk.detail and puk.data == {"sim": "SIM PUK"}


def test_the_refusal_names_its_3gpp_cause_and_what_it_means():
    with ModemEmulator(ModemState(active=False, ceer=BARRED)) as device:
        barred = probe(device.path).findings[0]
        assert device.commands[-1] == "AT+CEER"  # asked after the data session was found down
    with ModemEmulator(ModemState(active=False, ceer=NO_PLAN)) as device:
        no_plan = probe(device.path).findings[0]
    assert barred.data == {"reject": BARRED, "kind": "barred"} and "suspended or unpaid" in barred.detail
    assert no_plan.data["kind"] == "not_subscribed" and "not subscribed or used up" in no_plan.detail


def test_a_refusal_with_no_cause_named_stays_no_data_session():
    with ModemEmulator(ModemState(active=False)) as device:  # +CEER: No cause information available
        assert ids(probe(device.path)) == ["modem.no_data_session"]


def test_ceer_and_ws46_support_are_asked_only_when_they_can_tell_something():
    with ModemEmulator() as device:
        probe(device.path)
    assert "AT+CEER" not in device.commands and "AT+WS46=?" not in device.commands
    with ModemEmulator(ModemState(ws46=29, reg_stat=2)) as device:
        observation = probe(device.path)
    assert device.commands[-2:] == ["AT+WS46?", "AT+WS46=?"]  # searching, not refused: no AT+CEER
    assert observation.findings[0].data == {"mode": "2G/3G only", "lte_capable": True}


def test_a_module_without_lte_says_so():
    with ModemEmulator(ModemState(ws46=29, ws46_supported="(12,22,29)", reg_stat=2)) as device:
        finding = probe(device.path).findings[0]
    assert finding.data["lte_capable"] is False and "the module has no LTE" in finding.detail


def test_ws46_ranges_and_ceer_text():
    assert parse_ws46_supported(answer("+WS46: (12,22,25,28-31)")) == {12, 22, 25, 28, 29, 30, 31}
    assert parse_ws46_supported(answer(final="ERROR")) == set()
    assert parse_ceer(answer("+CEER: " + "x" * 300)) == "x" * 120
    assert ModemFacts(reject='+CEER: "EMM","IMEI not accepted"').reject_kind == "equipment"
    assert ModemFacts(reject="Missing or unknown APN").reject_kind == "apn"
    assert ModemFacts(reject="No cause information available").reject_kind is None


# --- the answers' arithmetic (27.007) -------------------------------------------------------


def answer(*lines: str, final: str = "OK") -> Answer:
    return Answer(tuple(lines), final)


@pytest.mark.parametrize(("csq", "dbm"), [("0,99", -113.0), ("2,0", -109.0), ("31,99", -51.0), ("99,99", None)])
def test_csq_rssi_in_dbm(csq, dbm):
    assert parse_csq(answer(f"+CSQ: {csq}")) == dbm


def test_cesq_rsrp_and_rsrq_ranges():
    assert parse_cesq(answer("+CESQ: 99,99,255,255,0,0")) == (-141.0, -20.0)
    assert parse_cesq(answer("+CESQ: 99,99,255,255,34,97")) == (-44.0, -3.0)
    assert parse_cesq(answer("+CESQ: 99,99,255,255,255,255")) == (None, None)
    assert parse_cesq(answer(final="ERROR")) == (None, None)


def test_registration_read_answer_versus_unsolicited_lines():
    urc_with_location = '+CREG: 1,"1A2B","01C3D4E5",7'
    assert parse_reg(answer(urc_with_location, '+CREG: 2,3,"1A2B","01C3D4E5",7'), "+CREG:") == "denied"
    assert parse_reg(answer("+CREG: 5"), "+CREG:") is None


@pytest.mark.parametrize(
    ("lines", "final", "expected"),
    [
        (["+CPIN: READY"], "OK", ("ready", "READY")),
        (["+CPIN: SIM PUK"], "OK", ("locked", "SIM PUK")),
        (["+CPIN: NOT INSERTED"], "OK", ("absent", "SIM not inserted")),
        ([], "+CME ERROR: 10", ("absent", "SIM not inserted")),
        ([], "+CME ERROR: 13", ("absent", "SIM failure")),
        ([], "+CME ERROR: 14", (None, "")),  # SIM busy: no statement about the SIM
    ],
)
def test_cpin_states(lines, final, expected):
    assert parse_cpin(answer(*lines, final=final)) == expected


def test_mask_digits_keeps_last_four():
    assert mask_digits("+CCID: 89860012345678901234") == "+CCID: ****************1234"


# --- ModemManager: recorded `mmcli -J` output --------------------------------------------
# The JSON files in tests/data/mmcli are shaped after ModemManager's cli/mmcli-output.c (the key
# names) and public recordings of `mmcli -J -m N` from Quectel EC25 modules. No ModemManager
# runs here: a stand-in `mmcli` program prints them, so the probe's real subprocess path runs.

FAKE_MMCLI = """#!{python}
import json, pathlib, sys
here = pathlib.Path(__file__).parent
answers = json.loads((here / "answers.json").read_text())
name = answers.get(" ".join(sys.argv[1:]))
if name is None:
    sys.exit("error: couldn't find modem")
sys.stdout.write((pathlib.Path({data!r}) / name).read_text())
"""


def fake_mmcli(tmp_path: Path, modem_file: str, bearer_file: str | None = "bearer-connected.json", listed: bool = True) -> str:
    answers = {"-J -L": "list.json" if listed else "list-empty.json", "-J -m 0": modem_file, "-J -m 0 --signal-get": "signal.json"}
    if bearer_file:
        answers["-J -b 1"] = bearer_file
    (tmp_path / "answers.json").write_text(json.dumps(answers))
    script = tmp_path / "mmcli"
    script.write_text(FAKE_MMCLI.format(python=sys.executable, data=str(MMCLI_DATA)))
    script.chmod(0o755)
    return str(script)


def from_mm(tmp_path: Path, modem_file: str, bearer_file: str | None = "bearer-connected.json", **extra: object):
    return probe("", source="auto", mmcli=fake_mmcli(tmp_path, modem_file, bearer_file), **extra)


def test_modemmanager_connected_modem(tmp_path):
    observation = from_mm(tmp_path, "modem-connected.json")
    assert observation.findings == [], observation
    m = observation.metrics
    assert (m["source"], m["modem"], m["operator"], m["access_technology"]) == ("mmcli", "0", "CHINA MOBILE", "lte")
    assert (m["rsrp_dbm"], m["rsrq_db"], m["rssi_dbm"], m["registration"]) == (-96.0, -11.0, -67.0, "home")


@pytest.mark.parametrize(
    ("modem_file", "bearer_file", "expected"),
    [
        ("modem-sim-missing.json", None, ["modem.sim_absent"]),
        ("modem-sim-pin.json", None, ["modem.sim_locked"]),
        ("modem-sim-puk.json", None, ["modem.sim_puk"]),
        ("modem-legacy-modes.json", None, ["modem.legacy_rat"]),
        ("modem-denied.json", None, ["modem.registration_denied"]),
        # the recorded bearer says why: "Requested service option not subscribed" (ESM #33)
        ("modem-registered.json", "bearer-disconnected.json", ["modem.data_rejected"]),
        ("modem-connected.json", "bearer-cmnet.json", ["modem.wrong_apn"]),
    ],
)
def test_modemmanager_faults(tmp_path, modem_file, bearer_file, expected):
    assert ids(from_mm(tmp_path, modem_file, bearer_file)) == expected


def test_modemmanager_owns_the_modem_so_the_at_port_is_left_alone(tmp_path):
    with ModemEmulator() as device:
        observation = probe(device.path, source="auto", mmcli=fake_mmcli(tmp_path, "modem-connected.json"))
        time.sleep(0.05)
        assert device.commands == []
    assert observation.metrics["source"] == "mmcli"


def test_no_modem_in_modemmanager_falls_back_to_the_at_port(tmp_path):
    with ModemEmulator() as device:
        observation = probe(device.path, source="auto", mmcli=fake_mmcli(tmp_path, "modem-connected.json", listed=False))
    assert observation.metrics["source"] == "at" and observation.findings == []


def test_mmcli_source_with_no_modem_listed_is_absent(tmp_path):
    observation = probe("", source="mmcli", mmcli=fake_mmcli(tmp_path, "modem-connected.json", listed=False))
    assert observation.derived_status() is Status.ABSENT and ids(observation) == ["modem.absent"]


def test_mmcli_source_without_modemmanager_is_no_response(tmp_path):
    observation = probe("", source="mmcli", mmcli=str(tmp_path / "not-installed"))
    assert ids(observation) == ["modem.no_response"] and "ModemManager is not installed" in observation.findings[0].detail


# --- the simulated terminal through the CLI --------------------------------------------------


def test_cli_healthy_terminal_eight_probes_ok_with_the_modem_facts():
    result = run_cli("probe", "--simulate", "healthy", "--json")
    assert result.returncode == 0, result.stderr
    probes = {p["name"]: p for p in json.loads(result.stdout)["probes"]}
    assert {n: p["status"] for n, p in probes.items()} == dict.fromkeys(
        ["card_reader", "modem", "network", "payment_app", "power", "printer", "storage", "system"], "ok"
    )
    m = probes["modem"]["metrics"]
    assert (m["operator"], m["access_technology"], m["rssi_dbm"], m["rsrp_dbm"]) == ("CHINA MOBILE", "lte", -69.0, -91.0)


def test_cli_diagnose_code_3_with_no_sim_names_the_sim():
    result = run_cli("diagnose", "--code", "3", "--simulate", "modem.sim_absent", "--json")
    doc = json.loads(result.stdout)
    top = doc["causes"][0]
    assert top["category"] == "network" and top["id"] == "network.no_link"
    assert any(e["finding"] == "modem.sim_absent" and "SIM" in e["detail"] for e in top["evidence_for"])


def test_cli_diagnose_connect_error_without_data_session_is_remote():
    result = run_cli("diagnose", "--code", "ConnectError", "--simulate", "modem.no_data_session", "--json")
    doc = json.loads(result.stdout)
    assert doc["causes"][0]["category"] == "network" and doc["causes"][0]["id"] == "network.data_session"
    assert doc["dispatch"]["verdict"] == "remote"
