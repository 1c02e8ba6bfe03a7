"""The card-reader probe: the reference frame byte for byte, every status bit, every malformed
reply over a real pty, USB presence on a sysfs tree and through pyusb, the CLI for every id."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from agent import config
from probes import ProbeContext, _usb_presence, card_reader
from probes._reader_drivers import frame, lrc
from probes.contract.records import Status
from probes.contract.settings import HostSettings, ProbeSettings
from probes.emulators import card_reader as reader_emulator
from probes.emulators._pty import PtyDevice, forbidden_port, missing_port
from probes.emulators.card_reader import ReaderEmulator, ReaderState
from tests.conftest import run_cli


def settings_for(port: str = "", **extra: object) -> card_reader.CardReaderSettings:
    return config.load(None, {"probes": {"card_reader": {"port": port, **extra}}}).probes["card_reader"]


def probe(port: str = "", timeout_s: float = 1.0, sysfs: Path | str = "/nonexistent-sys", **extra: object):
    ctx = ProbeContext(HostSettings(str(sysfs), "/nonexistent-proc"), timeout_s)
    return card_reader.run(settings_for(port, **extra), ctx)


def ids(observation) -> list[str]:
    return [f.id for f in observation.findings]


class Scripted(PtyDevice):
    """A reader that answers any request with fixed bytes (a malformed reply, on purpose)."""

    def __init__(self, reply: bytes) -> None:
        super().__init__()
        self.reply = reply

    def on_data(self, data: bytes) -> None:
        self.send(self.reply)


# --- the frame, byte for byte ----------------------------------------------------------


def test_get_status_request_bytes():
    # STX, LEN 00 01, CMD 01, ETX, LRC = 00 ^ 01 ^ 01 ^ 03 = 03
    assert frame(0x01) == bytes.fromhex("02 00 01 01 03 03")


def test_status_reply_bytes_agree_between_probe_and_emulator():
    expected = bytes.fromhex("02 00 04 81 00 56 31 03 e1")  # LRC worked by hand: 00^04^81^00^56^31^03
    assert frame(0x81, b"\x00V1") == expected == reader_emulator.encode(0x81, b"\x00V1")
    assert lrc(expected[1:-1]) == expected[-1]


def test_emulator_receives_exactly_one_status_request():
    with ReaderEmulator() as device:
        probe(device.path)
        time.sleep(0.05)
        assert bytes(device.received) == bytes.fromhex("02 00 01 01 03 03")


# --- status bits over the line -----------------------------------------------------------


def test_healthy_reader_reports_firmware_and_latency():
    with ReaderEmulator(ReaderState(firmware="ACME-7.1")) as device:
        observation = probe(device.path)
    assert observation.derived_status() is Status.OK and observation.findings == []
    assert observation.metrics["firmware_version"] == "ACME-7.1"
    assert 0 <= observation.metrics["latency_ms"] < 500
    assert observation.metrics["card_present"] == 0


def test_card_present_is_a_metric_not_a_fault():
    with ReaderEmulator(ReaderState(card_present=True)) as device:
        observation = probe(device.path)
    assert observation.findings == [] and observation.metrics["card_present"] == 1


def test_tamper():
    with ReaderEmulator(ReaderState(tamper=True)) as device:
        assert ids(probe(device.path)) == ["reader.tamper"]


@pytest.mark.parametrize(
    ("slots", "named"),
    [
        ({"ic"}, "IC (chip)"),
        ({"magstripe"}, "magstripe"),
        ({"contactless"}, "contactless"),
        ({"ic", "contactless"}, "IC (chip), contactless"),
        ({"ic", "magstripe", "contactless"}, "IC (chip), magstripe, contactless"),
    ],
)
def test_slot_fault_names_which_slot(slots, named):
    with ReaderEmulator(ReaderState(slot_faults=frozenset(slots))) as device:
        (finding,) = probe(device.path).findings
    assert finding.id == "reader.slot_fault" and finding.detail.endswith(named)
    assert set(finding.data["slots"]) == slots


def test_tamper_and_slot_fault_together():
    with ReaderEmulator(ReaderState(tamper=True, slot_faults=frozenset({"magstripe"}))) as device:
        assert ids(probe(device.path)) == ["reader.tamper", "reader.slot_fault"]


# --- malformed replies ---------------------------------------------------------------------


def reply(cmd_and_data: bytes) -> bytes:
    return frame(cmd_and_data[0], cmd_and_data[1:])


GOOD = reply(b"\x81\x00V1")


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (GOOD[:-1] + bytes([GOOD[-1] ^ 0x01]), "LRC mismatch"),
        (GOOD[:-2] + b"\x04" + GOOD[-1:], "where ETX belongs"),
        (b"\x55" + GOOD[1:], "not STX"),
        (b"\x02\x00\x00\x03\x03", "length 0 out of range"),
        (b"\x02\x01\x01" + bytes(300), "length 257 out of range"),
        (GOOD[:5], "truncated frame: 2 of 6"),
        (GOOD[:2], "truncated frame: length missing"),
        (reply(b"\x82\x00V1"), "unexpected reply 0x82"),
        (reply(b"\x81"), "unexpected reply 0x81 with 0 data bytes"),
        (reply(b"\x81\x00\xffV"), "not printable ASCII"),
    ],
)
def test_malformed_replies_are_bad_frame(raw, problem):
    with Scripted(raw) as device:
        t0 = time.monotonic()
        (finding,) = probe(device.path).findings
        elapsed = time.monotonic() - t0
    assert finding.id == "reader.bad_frame" and problem in finding.detail
    assert elapsed < 1.0


def test_bad_lrc_from_the_emulator():
    with ReaderEmulator(line_fault="bad_lrc") as device:
        (finding,) = probe(device.path).findings
    assert finding.id == "reader.bad_frame" and "LRC" in finding.detail


def test_silent_reader_is_no_response_at_the_read_timeout():
    with ReaderEmulator(line_fault="silent") as device:
        t0 = time.monotonic()
        observation = probe(device.path, read_timeout_seconds=0.4)
        elapsed = time.monotonic() - t0
    assert ids(observation) == ["reader.no_response"]
    assert 0.4 <= elapsed < 0.55


def test_missing_port_is_absent(tmp_path):
    observation = probe(missing_port(tmp_path))
    assert ids(observation) == ["reader.absent"] and observation.derived_status() is Status.ABSENT


def test_forbidden_port_is_permission_denied(tmp_path):
    with forbidden_port(tmp_path) as path:
        assert ids(probe(path)) == ["reader.permission_denied"]


def test_nothing_configured_is_skipped():
    observation = probe("")
    assert observation.derived_status() is Status.SKIPPED and observation.findings == []


# --- USB presence ---------------------------------------------------------------------------


def usb_tree(root: Path, name: str, vid: str, pid: str, driver: str = "") -> Path:
    """A slice of /sys: bus/usb/devices/NAME/{idVendor,idProduct} and NAME:1.0/driver -> drivers/X."""
    device = root / "bus" / "usb" / "devices" / name
    device.mkdir(parents=True)
    (device / "idVendor").write_text(f"{vid}\n")
    (device / "idProduct").write_text(f"{pid}\n")
    if driver:
        target = root / "bus" / "usb" / "drivers" / driver
        target.mkdir(parents=True)
        (device / f"{name}:1.0").mkdir()
        (device / f"{name}:1.0" / "driver").symlink_to(target)
    return device


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    usb_tree(tmp_path, "usb1", "1d6b", "0002")  # the root hub
    usb_tree(tmp_path, "1-1", "072f", "2200", driver="cdc_acm")
    (tmp_path / "bus" / "usb" / "devices" / "1-1.4").mkdir()  # a device without id files
    return tmp_path


def test_usb_present_in_sysfs(sysfs):
    observation = probe(sysfs=sysfs, usb_vid="072f", usb_pid="2200", usb_lookup="sysfs")
    assert observation.derived_status() is Status.OK
    assert observation.metrics == {
        "usb_id": "072f:2200",
        "usb_lookup": "sysfs",
        "usb_device": "1-1",
        "usb_driver": "cdc_acm",
    }


def test_usb_missing_in_sysfs_is_absent(sysfs):
    observation = probe(sysfs=sysfs, usb_vid="0x072F", usb_pid="b100", usb_lookup="sysfs")
    assert ids(observation) == ["reader.absent"] and observation.derived_status() is Status.ABSENT
    assert observation.findings[0].data["usb_id"] == "072f:b100"


def test_usb_present_then_serial_status(sysfs):
    with ReaderEmulator() as device:
        observation = probe(device.path, sysfs=sysfs, usb_vid="072f", usb_pid="2200", usb_lookup="sysfs")
    assert observation.metrics["usb_device"] == "1-1" and observation.metrics["firmware_version"]


def test_usb_absent_ends_the_probe_before_the_serial_line(sysfs):
    with ReaderEmulator() as device:
        observation = probe(device.path, sysfs=sysfs, usb_vid="dead", usb_pid="beef", usb_lookup="sysfs")
        time.sleep(0.05)
        assert device.received == b""
    assert ids(observation) == ["reader.absent"]


def test_bad_usb_id_is_an_error_status_not_a_crash(sysfs):
    observation = probe(sysfs=sysfs, usb_vid="xyz", usb_pid="2200", usb_lookup="sysfs")
    assert observation.derived_status() is Status.ERROR and "usb_vid" in observation.metrics["reason"]


@pytest.mark.skipif(_usb_presence.pyusb_backend() is None, reason="no libusb backend installed for pyusb")
def test_auto_asks_pyusb_when_libusb_is_there(sysfs):
    """Real pyusb over the real libusb: this machine's bus has no 072f:2200, so the reader is absent
    even though the (fake) sysfs tree lists one — which shows pyusb, not sysfs, answered."""
    observation = probe(sysfs=sysfs, usb_vid="072f", usb_pid="2200", usb_lookup="auto")
    assert ids(observation) == ["reader.absent"]


def test_auto_falls_back_to_sysfs_without_libusb(sysfs, monkeypatch):
    # The one stand-in in this file: libusb cannot be uninstalled for a test, so the backend
    # lookup is made to find none, as on a terminal image without libusb.
    monkeypatch.setattr(_usb_presence, "pyusb_backend", lambda: None)
    observation = probe(sysfs=sysfs, usb_vid="072f", usb_pid="2200", usb_lookup="auto")
    assert observation.metrics["usb_lookup"] == "sysfs" and observation.metrics["usb_device"] == "1-1"


# --- contract and CLI -------------------------------------------------------------------------


def test_module_conforms_to_the_probe_contract():
    assert card_reader.NAME == "card_reader"
    assert issubclass(card_reader.SETTINGS, ProbeSettings) and card_reader.SETTINGS.__dataclass_params__.frozen
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(card_reader.SETTINGS))
    assert all(fid.startswith("reader.") for fid in card_reader.FINDINGS) and len(set(card_reader.FINDINGS)) == 9
    assert set(card_reader.FINDINGS) == reader_emulator.FAULTS


def cli(fault: str) -> dict:
    result = run_cli("probe", "--simulate", fault, "--only", "printer,card_reader", "--json", timeout=20)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


def test_cli_healthy_shows_firmware_and_latency():
    doc = cli("healthy")
    results = {p["name"]: p for p in doc["probes"]}
    assert results["card_reader"]["status"] == "ok" and results["printer"]["status"] == "ok"
    assert results["card_reader"]["metrics"]["firmware_version"] == reader_emulator.FIRMWARE
    assert "latency_ms" in results["card_reader"]["metrics"] and "latency_ms" in results["printer"]["metrics"]


@pytest.mark.parametrize("fault", sorted(reader_emulator.FAULTS))
def test_cli_simulates_every_reader_finding(fault):
    results = {p["name"]: p for p in cli(fault)["probes"]}
    assert [f["id"] for f in results["card_reader"]["findings"]] == [fault]
    assert results["printer"]["status"] == "ok"


def test_cli_silent_reader_costs_its_configured_timeout():
    configured = config.load().probes["card_reader"].read_timeout_seconds
    wall_s = cli("reader.no_response")["sweep"]["wall_ms"] / 1000
    assert configured <= wall_s <= configured + 0.3
