"""The printer probe: every DLE EOT status bit, every fault, over a real pty; the CLI for every id."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from agent import config
from probes import ProbeContext, printer
from probes.contract.records import Severity, Status
from probes.contract.settings import HostSettings, ProbeSettings
from probes.emulators import printer as printer_emulator
from probes.emulators._pty import forbidden_port, missing_port
from probes.emulators.printer import PrinterEmulator, PrinterState
from probes.printer import StatusBytes, decode, decode_port_status, valid_status_byte
from tests.conftest import run_cli

OK = 0x12


def settings_for(port: str, **extra: object) -> printer.PrinterSettings:
    return config.load(None, {"probes": {"printer": {"port": port, **extra}}}).probes["printer"]


def probe(port: str, timeout_s: float = 3.0, **extra: object):
    ctx = ProbeContext(HostSettings("/nonexistent-sys", "/nonexistent-proc"), timeout_s)
    return printer.run(settings_for(port, **extra), ctx)


def ids(observation) -> list[str]:
    return [f.id for f in observation.findings]


def status(prn: int = 0, off: int = 0, err: int = 0, paper: int = 0) -> StatusBytes:
    return StatusBytes(OK | prn, OK | off, OK | err, OK | paper)


# --- decoding, bit by bit ----------------------------------------------------------------


def test_all_clear_is_no_finding():
    assert decode(status()) == []


@pytest.mark.parametrize(
    ("byte", "valid"),
    [(0x12, True), (0x7E, True), (0x1A, True), (0x13, False), (0x10, False), (0x02, False), (0x92, False)]
    + [(0xFF, False), (0x00, False)],
)
def test_fixed_bits_are_checked(byte, valid):
    assert valid_status_byte(byte) is valid


@pytest.mark.parametrize(
    ("bits", "expected"),
    [
        # n=1 printer status
        (dict(prn=0x04), []),  # drawer kick-out connector pin 3 high: a metric, not a fault
        (dict(prn=0x08), ["printer.offline"]),
        (dict(prn=0x08 | 0x20), ["printer.offline"]),
        (dict(prn=0x40), []),  # feed button being pressed
        # n=2 offline cause
        (dict(prn=0x08, off=0x04), ["printer.cover_open"]),
        (dict(prn=0x08, off=0x08), ["printer.offline"]),
        (dict(prn=0x08, off=0x20), ["printer.paper_out"]),
        (dict(prn=0x08, off=0x40), ["printer.offline"]),
        # n=3 error cause
        (dict(prn=0x08, off=0x40, err=0x04), ["printer.offline"]),
        (dict(prn=0x08, off=0x40, err=0x08), ["printer.cutter_error"]),
        (dict(err=0x08), ["printer.cutter_error"]),
        (dict(prn=0x08, off=0x40, err=0x20), ["printer.unrecoverable"]),
        (dict(prn=0x08, off=0x40, err=0x40), ["printer.offline"]),
        # n=4 paper sensors: either bit of a pair counts
        (dict(paper=0x04), ["printer.paper_near_end"]),
        (dict(paper=0x08), ["printer.paper_near_end"]),
        (dict(paper=0x0C), ["printer.paper_near_end"]),
        (dict(paper=0x20), ["printer.paper_out"]),
        (dict(paper=0x40), ["printer.paper_out"]),
        (dict(prn=0x08, off=0x20, paper=0x6C), ["printer.paper_out"]),
        # several at once: each root once, offline folded into them
        (
            dict(prn=0x08, off=0x04 | 0x40, err=0x08, paper=0x0C),
            ["printer.cover_open", "printer.paper_near_end", "printer.cutter_error"],
        ),
        (dict(prn=0x08, paper=0x0C), ["printer.paper_near_end", "printer.offline"]),
    ],
)
def test_each_status_bit(bits, expected):
    assert [f.id for f in decode(status(**bits))] == expected


@pytest.mark.parametrize(
    ("bits", "cause"),
    [
        (dict(prn=0x08), "no cause reported"),
        (dict(prn=0x28), "waiting for online recovery"),
        (dict(prn=0x08, off=0x08), "paper being fed by the feed button"),
        (dict(prn=0x08, off=0x40), "error occurred"),
        (dict(prn=0x08, off=0x40, err=0x04), "recoverable error"),
        (dict(prn=0x08, off=0x40, err=0x40), "auto-recoverable error, e.g. print head too hot"),
    ],
)
def test_offline_names_its_cause(bits, cause):
    (finding,) = decode(status(**bits))
    assert finding.id == "printer.offline" and finding.data["cause"] == cause and cause in finding.detail


def test_severities():
    by_id = {f.id: f.severity for f in decode(status(prn=0x08, off=0x04, err=0x28, paper=0x0C))}
    assert by_id == {
        "printer.cover_open": Severity.FAIL,
        "printer.paper_near_end": Severity.WARN,
        "printer.cutter_error": Severity.FAIL,
        "printer.unrecoverable": Severity.FAIL,
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0x18, []), (0x38, ["printer.paper_out"]), (0x08, ["printer.offline"]), (0x10, ["printer.offline"])],
)
def test_usblp_port_status_bits(value, expected):
    assert [f.id for f in decode_port_status(value)] == expected


# --- the probe against the emulator on a real pty ----------------------------------------


def test_healthy_printer_is_ok_with_latency():
    with PrinterEmulator() as device:
        observation = probe(device.path)
    assert observation.derived_status() is Status.OK and observation.findings == []
    assert observation.metrics["status_bytes"] == "12 12 12 12"
    assert 0 <= observation.metrics["latency_ms"] < 500


def test_probe_only_asks_never_prints():
    with PrinterEmulator() as device:
        probe(device.path)
        time.sleep(0.05)
        assert bytes(device.received) == b"".join(b"\x10\x04" + bytes([n]) for n in (1, 2, 3, 4))
        assert device.printed == b""


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (PrinterState(offline=True), ["printer.offline"]),
        (PrinterState(cover_open=True), ["printer.cover_open"]),
        (PrinterState(paper="out"), ["printer.paper_out"]),
        (PrinterState(paper="near_end"), ["printer.paper_near_end"]),
        (PrinterState(cutter_error=True), ["printer.cutter_error"]),
        (PrinterState(unrecoverable=True), ["printer.unrecoverable"]),
        (PrinterState(cover_open=True, paper="near_end"), ["printer.cover_open", "printer.paper_near_end"]),
    ],
)
def test_device_states_over_the_line(state, expected):
    with PrinterEmulator(state) as device:
        assert ids(probe(device.path)) == expected


def test_silent_printer_is_no_response_within_the_read_timeout():
    with PrinterEmulator(line_fault="silent") as device:
        t0 = time.monotonic()
        observation = probe(device.path, read_timeout_seconds=0.3)
        elapsed = time.monotonic() - t0
    assert ids(observation) == ["printer.no_response"]
    assert 0.3 <= elapsed < 0.5


def test_read_is_bounded_by_the_probe_timeout_too():
    with PrinterEmulator(line_fault="silent") as device:
        t0 = time.monotonic()
        observation = probe(device.path, timeout_s=0.3, read_timeout_seconds=5.0)
        elapsed = time.monotonic() - t0
    assert ids(observation) == ["printer.no_response"] and elapsed < 0.3


def test_garbage_is_bad_reply():
    with PrinterEmulator(line_fault="garbage") as device:
        (finding,) = probe(device.path).findings
    assert finding.id == "printer.bad_reply" and finding.data["head"] == "ff" and finding.data["n"] == 1


def test_missing_port_is_absent(tmp_path):
    observation = probe(missing_port(tmp_path))
    assert ids(observation) == ["printer.absent"] and observation.derived_status() is Status.ABSENT


def test_forbidden_port_is_permission_denied(tmp_path):
    with forbidden_port(tmp_path) as path:
        observation = probe(path)
    assert ids(observation) == ["printer.permission_denied"]
    assert observation.derived_status() is Status.FAIL


@pytest.mark.parametrize("port", ["socket://127.0.0.1:9", "nosuchscheme://x", "/"])
def test_unusable_addresses_are_absent_not_a_crash(port):
    assert ids(probe(port)) == ["printer.absent"]


def test_unconfigured_printer_is_skipped():
    observation = probe("")
    assert observation.derived_status() is Status.SKIPPED and observation.findings == []


def test_usblp_transport_reads_the_reply_from_the_node():
    """The usblp code path (os.open, write, poll, read) on a pty standing in for /dev/usb/lp0."""
    with PrinterEmulator(PrinterState(paper="near_end")) as device:
        assert ids(probe(device.path, transport="usblp")) == ["printer.paper_near_end"]
    with PrinterEmulator(line_fault="silent") as device:
        # A pty refuses LPGETSTATUS (ENOTTY), so there is no status to fall back on.
        assert ids(probe(device.path, transport="usblp", read_timeout_seconds=0.1)) == ["printer.no_response"]


class UnidirectionalUsbLp:
    """Stands in for a usblp node on a unidirectional interface (read() never answers, only the
    LPGETSTATUS ioctl does): no USB printer and no usblp driver exist on this machine."""

    def __init__(self, port_status: int) -> None:
        self.status = port_status

    def write(self, data: bytes, deadline: float) -> None:
        pass

    def query(self, n: int, deadline: float) -> bytes:
        return b""

    def port_status(self) -> int | None:
        return self.status


@pytest.mark.parametrize(
    ("value", "expected"), [(0x18, []), (0x38, ["printer.paper_out"]), (0x10, ["printer.offline"])]
)
def test_usblp_falls_back_to_port_status(value, expected):
    observation = printer.observe(UnidirectionalUsbLp(value), settings_for("/dev/usb/lp0"), time.monotonic() + 1)
    assert ids(observation) == expected and observation.metrics["port_status"] == value


# --- the transport API other code uses ----------------------------------------------------


def test_print_test_page_prints_when_ready():
    with PrinterEmulator() as device:
        message = printer.print_test_page(settings_for(device.path), ["posdiag test page", "terminal T-1"])
        time.sleep(0.05)
        assert "sent" in message
        assert device.printed.startswith(b"\x1b@posdiag test page\nterminal T-1\n")
        assert device.printed.endswith(b"\x1dV\x01")


def test_print_test_page_refuses_when_not_ready():
    with PrinterEmulator(PrinterState(cover_open=True)) as device:
        message = printer.print_test_page(settings_for(device.path), ["x"])
        time.sleep(0.05)
        assert message == "test page not printed: printer cover is open"
        assert device.printed == b""


def test_ready_to_print():
    with PrinterEmulator(PrinterState(paper="near_end")) as device:
        ready, findings = printer.ready_to_print(settings_for(device.path))
    assert ready and [f.id for f in findings] == ["printer.paper_near_end"]
    assert printer.ready_to_print(settings_for("")) == (False, [])


def test_open_printer_writes_raw_bytes():
    with PrinterEmulator() as device:
        with printer.open_printer(settings_for(device.path)) as link:
            link.write(b"hello\n", time.monotonic() + 1)
            assert link.query(4, time.monotonic() + 1) == b"\x12"
        time.sleep(0.05)
        assert device.printed == b"hello\n"


# --- contract and CLI -------------------------------------------------------------------------


def test_module_conforms_to_the_probe_contract():
    assert printer.NAME == "printer"
    assert issubclass(printer.SETTINGS, ProbeSettings) and printer.SETTINGS.__dataclass_params__.frozen
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(printer.SETTINGS))
    assert all(fid.startswith("printer.") for fid in printer.FINDINGS) and len(set(printer.FINDINGS)) == 10
    assert set(printer.FINDINGS) == printer_emulator.FAULTS


@pytest.mark.parametrize("fault", sorted(printer_emulator.FAULTS))
def test_cli_simulates_every_printer_finding(fault):
    result = run_cli("probe", "--simulate", fault, "--only", "printer,card_reader", "--json", timeout=20)
    assert result.returncode in (0, 1), result.stderr
    results = {p["name"]: p for p in json.loads(result.stdout)["probes"]}
    assert [f["id"] for f in results["printer"]["findings"]] == [fault]
    assert results["card_reader"]["status"] == "ok"


def test_cli_print_test_only_when_asked():
    asked = run_cli("probe", "--simulate", "healthy", "--only", "printer", "--json", "--print-test", timeout=20)
    assert "test page sent" in asked.stderr
    not_asked = run_cli("probe", "--simulate", "healthy", "--only", "printer", "--json", timeout=20)
    assert "test page" not in not_asked.stderr
