"""Faults on the line, played by the emulators on real ptys: a stream of random bytes, half a
frame then silence, a huge reply, an AT answer that never ends with OK, the device vanishing
mid-read (the modem: halfway through an answer). Each ends as a finding
within the probe's timeout (never as a runner timeout), and the next sweep works."""

from __future__ import annotations

import pytest

from agent import config
from agent.runner import run_probes
from probes.contract.records import Status
from probes.emulators.card_reader import ReaderEmulator
from probes.emulators.modem import ModemEmulator
from probes.emulators.printer import PrinterEmulator

DEVICES = {"printer": PrinterEmulator, "card_reader": ReaderEmulator, "modem": ModemEmulator}
# The modem probe asks only the AT port, never the machine's ModemManager.
SETTINGS = {"modem": {"source": "at"}}


def sweep(name: str, port: str):
    cfg = config.load(None, {"probes": {name: {"port": port, **SETTINGS.get(name, {})}}})
    result = run_probes(cfg, [name]).results[0]
    return result, cfg.probes[name].timeout_seconds


def finding_ids(result) -> list[str]:
    return [f.id for f in result.findings]


CASES = [
    ("printer", "random", "printer.bad_reply"),
    ("printer", "huge", "printer.bad_reply"),
    ("printer", "hang_up", "printer.no_response"),
    ("card_reader", "random", "reader.bad_frame"),
    ("card_reader", "half", "reader.bad_frame"),
    ("card_reader", "huge", "reader.bad_frame"),
    ("card_reader", "hang_up", "reader.no_response"),
    ("modem", "random", "modem.no_response"),
    ("modem", "no_final", "modem.no_response"),
    ("modem", "hang_up", "modem.no_response"),
]


@pytest.mark.parametrize(("name", "fault", "expected"), CASES)
def test_line_fault_ends_as_a_finding_within_the_timeout(name, fault, expected):
    with DEVICES[name](line_fault=fault) as device:
        result, timeout_s = sweep(name, device.path)
        assert finding_ids(result) == [expected], result
        assert result.status is not Status.TIMEOUT
        assert result.duration_ms < timeout_s * 1000


@pytest.mark.parametrize(("name", "fault"), [(n, f) for n, f, _ in CASES if f != "hang_up"])
def test_next_sweep_works_once_the_line_is_clean(name, fault):
    with DEVICES[name](line_fault=fault) as device:
        first, _ = sweep(name, device.path)
        assert first.status is Status.FAIL
        device.set_line_fault(None)
        second, _ = sweep(name, device.path)
        assert second.status is Status.OK and second.findings == [], second


@pytest.mark.parametrize("name", DEVICES)
def test_device_gone_mid_read_then_back(name):
    with DEVICES[name](line_fault="hang_up") as device:
        lost, _ = sweep(name, device.path)
    assert lost.status is Status.FAIL and "connection lost" in lost.findings[0].detail
    # The old /dev/pts/N is not probed again: the kernel may already have given it to another program.
    with DEVICES[name]() as replugged:
        back, _ = sweep(name, replugged.path)
    assert back.status is Status.OK and back.findings == []


def test_random_stream_does_not_leak_into_the_next_exchange():
    """Noise that piled up in the port's input queue while nobody read is discarded before asking."""
    with ReaderEmulator(line_fault="random") as device:
        sweep("card_reader", device.path)
        device.set_line_fault(None)
        results = [sweep("card_reader", device.path)[0] for _ in range(3)]
    assert [r.status for r in results] == [Status.OK] * 3
