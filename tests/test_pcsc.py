"""The card-reader probe's PC/SC driver against the real stack: pcscd, vsmartcard's virtual
reader (vpcd) and virtual card (vicc), started here (tests/pcsc_stack.py). Card absent,
present and answering, present but silent; pcscd not running; a reader that is not listed. The
simulated terminal's own pcscd (probes/emulators/_pcscd.py) is tested in tests/test_simulated.py."""

from __future__ import annotations

import json
import os
import time

import pytest

from agent import config
from probes import ProbeContext, card_reader
from probes._pcsc import interface
from probes.contract.records import Status
from probes.contract.settings import HostSettings
from tests import pcsc_stack
from tests.conftest import run_cli

WHY_NOT = pcsc_stack.missing()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if WHY_NOT:
        pytest.skip(WHY_NOT)
    running = pcsc_stack.PcscStack(tmp_path_factory.mktemp("pcsc"))
    # pcsc-lite's client library reads this once per process, at the first PC/SC call.
    previous = os.environ.get("PCSCLITE_CSOCK_NAME")
    os.environ["PCSCLITE_CSOCK_NAME"] = str(running.socket)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        if previous is None:
            os.environ.pop("PCSCLITE_CSOCK_NAME", None)
        else:
            os.environ["PCSCLITE_CSOCK_NAME"] = previous


@pytest.fixture
def card(stack):
    stack.insert()
    yield stack
    stack.remove()


def probe(reader_name: str = "Virtual PCD", timeout_s: float = 3.0):
    overrides = {"driver": "pcsc", "reader_name": reader_name, "read_timeout_seconds": 1.5, "timeout_seconds": timeout_s}
    settings = config.load(None, {"probes": {"card_reader": overrides}}).probes["card_reader"]
    ctx = ProbeContext(HostSettings("/nonexistent-sys", "/nonexistent-proc"), timeout_s)
    return card_reader.run(settings, ctx)


def test_reader_listed_without_a_card_is_healthy(stack):
    observation = probe()
    assert observation.derived_status() is Status.OK and observation.findings == []
    assert observation.metrics["reader"] == pcsc_stack.READER
    assert observation.metrics["card_present"] == 0
    assert "atr" not in observation.metrics


def test_card_present_answers_with_atr_and_status_word(card):
    observation = probe()
    # no payment application on vicc's card: worth a technician's eye (a warning), not a fault
    assert observation.derived_status() is Status.WARN, observation
    assert [(f.id, f.data["select_sw"]) for f in observation.findings] == [("reader.no_payment_app", "6a82")]
    metrics = observation.metrics
    assert metrics["card_present"] == 1
    # vicc's ISO 7816 card: ATR 3B 95 13 81 01 80 73 FF 01 00 0B; no payment application in it,
    # so SELECT PPSE and then PSE both end in 6A82 (file not found).
    assert metrics["atr"] == "3b951381018073ff01000b"
    assert metrics["select_sw"] == "6a82" and metrics["payment_application"] == "none"
    assert 0 < metrics["latency_ms"] < 1500
    # Nothing from the card but the ATR and the status word travels in the result.
    assert set(metrics) == {"reader", "card_present", "atr", "select_sw", "payment_application", "latency_ms"}


def test_silent_card_is_a_slot_fault_naming_the_interface(card):
    card.freeze()
    t0 = time.monotonic()
    observation = probe()
    elapsed = time.monotonic() - t0
    assert [f.id for f in observation.findings] == ["reader.slot_fault"], observation
    finding = observation.findings[0]
    assert finding.detail.startswith("IC (chip) interface:") and pcsc_stack.READER in finding.detail
    assert finding.data == {"slots": ["ic"], "reader": pcsc_stack.READER}
    assert elapsed < 2.5  # read_timeout_seconds 1.5, not the card's silence


def test_configured_reader_not_listed_is_absent(stack):
    observation = probe(reader_name="ACR39U")
    assert observation.derived_status() is Status.ABSENT
    assert [f.id for f in observation.findings] == ["reader.absent"]
    assert "no reader matching 'ACR39U' among: Virtual PCD 00 00" in observation.findings[0].detail


def test_cli_reads_the_card_through_pcscd(card, tmp_path):
    conf = tmp_path / "posdiag.toml"
    conf.write_text('[probes.card_reader]\ndriver = "pcsc"\nreader_name = "Virtual"\nread_timeout_seconds = 1.5\ntimeout_seconds = 3.0\n')
    result = run_cli("probe", "--only", "card_reader", "--json", "--config", str(conf), env={"PCSCLITE_CSOCK_NAME": str(card.socket)})
    assert result.returncode == 0, result.stderr
    reader = json.loads(result.stdout)["probes"][0]
    assert reader["status"] == "warn" and reader["metrics"]["atr"] == "3b951381018073ff01000b"
    assert [f["id"] for f in reader["findings"]] == ["reader.no_payment_app"]


def test_pcscd_not_running_is_the_service_down(tmp_path):
    pytest.importorskip("smartcard", reason="pyscard is not installed")
    conf = tmp_path / "posdiag.toml"
    conf.write_text('[probes.card_reader]\ndriver = "pcsc"\n')
    gone = tmp_path / "no-pcscd.comm"
    result = run_cli("probe", "--only", "card_reader", "--json", "--config", str(conf), env={"PCSCLITE_CSOCK_NAME": str(gone)})
    assert result.returncode == 1, result.stderr
    finding = json.loads(result.stdout)["probes"][0]["findings"][0]
    assert finding["id"] == "reader.service_down"
    assert finding["detail"] == "pcscd not running (PC/SC 0x8010001D)"


@pytest.mark.parametrize(
    ("name", "slot"),
    [
        ("ACS ACR1252 1S CL Reader PICC 00 00", "contactless"),
        ("ACS ACR1252 1S CL Reader SAM 00 01", "ic"),
        ("Identiv uTrust 3700 F CL Reader 00 00", "contactless"),
        ("ACS ACR39U ICC Reader 00 00", "ic"),
        ("Virtual PCD 00 00", "ic"),
    ],
)
def test_interface_from_reader_name(name, slot):
    assert interface(name) == slot
