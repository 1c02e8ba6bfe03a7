"""The printer emulator checked by a client nobody here wrote: python-escpos's Serial printer.

python-escpos (src/escpos/escpos.py) sends RT_STATUS_PAPER = DLE EOT 4 and classifies the byte
with RT_MASK_NOPAPER 0x72 -> 0, RT_MASK_LOWPAPER 0x1E -> 1, RT_MASK_PAPER 0x12 -> 2; is_online()
sends DLE EOT 1 and tests RT_MASK_ONLINE 0x08 (the offline bit). Its Serial._read is read(16),
so every query waits out its timeout: keep that short.
"""

from __future__ import annotations

import time

import pytest
from escpos.constants import RT_STATUS_ONLINE, RT_STATUS_PAPER
from escpos.printer import Serial

from agent import config
from probes import ProbeContext, printer
from probes.contract.settings import HostSettings
from probes.emulators.printer import PrinterEmulator, PrinterState

ESCPOS_PAPER = {"fine": 2, "near_end": 1, "out": 0}


def probe_ids(path: str, **extra: object) -> list[str]:
    settings = config.load(None, {"probes": {"printer": {"port": path, **extra}}}).probes["printer"]
    observation = printer.run(settings, ProbeContext(HostSettings("/nonexistent", "/nonexistent"), 3.0))
    return [f.id for f in observation.findings]


def escpos_printer(path: str) -> Serial:
    client = Serial(devfile=path, baudrate=9600, timeout=0.1)
    client.open()
    return client


@pytest.mark.parametrize("paper", ["fine", "near_end", "out"])
def test_escpos_reads_the_paper_state_the_emulator_was_given(paper):
    with PrinterEmulator(PrinterState(paper=paper)) as device:
        client = escpos_printer(device.path)
        try:
            assert client.paper_status() == ESCPOS_PAPER[paper]
            raw = client.query_status(RT_STATUS_PAPER)
        finally:
            client.close()
        ours = probe_ids(device.path)
    assert raw == bytes([PrinterState(paper=paper).status_byte(4)]) and printer.valid_status_byte(raw[0])
    assert ours == {"fine": [], "near_end": ["printer.paper_near_end"], "out": ["printer.paper_out"]}[paper]


@pytest.mark.parametrize(
    ("state", "online"),
    [(PrinterState(), True), (PrinterState(offline=True), False), (PrinterState(cover_open=True), False)],
)
def test_escpos_reads_the_online_state(state, online):
    with PrinterEmulator(state) as device:
        client = escpos_printer(device.path)
        try:
            assert client.is_online() is online
            assert client.query_status(RT_STATUS_ONLINE) == bytes([state.status_byte(1)])
        finally:
            client.close()


def test_escpos_text_and_cut_land_in_the_emulator_as_print_data():
    with PrinterEmulator() as device:
        client = escpos_printer(device.path)
        try:
            client.text("posdiag\n")
            client.cut()
        finally:
            client.close()
        deadline = time.monotonic() + 3
        while b"posdiag\n" not in device.printed and time.monotonic() < deadline:
            time.sleep(0.01)  # the emulator reads the pty in its own thread
        assert b"posdiag\n" in device.printed and device.received == device.printed


def test_silent_printer_escpos_gets_nothing_where_the_probe_says_no_response():
    """python-escpos answers paper_status() 2 (plenty) when nothing comes back; the probe does not guess."""
    with PrinterEmulator(line_fault="silent") as device:
        client = escpos_printer(device.path)
        try:
            assert client.query_status(RT_STATUS_PAPER) == b""
        finally:
            client.close()
        assert probe_ids(device.path, read_timeout_seconds=0.1) == ["printer.no_response"]
