"""What a hostile or broken device answers reaches a technician's own terminal only masked and
escaped (issue 21): a modem whose operator name and APN carry card data, ESC sequences (clear
screen, retitle the window), BEL and a right-to-left override, read by a real `posdiag probe`
and `posdiag diagnose` over a pty, as a table and as JSON."""

from __future__ import annotations

import json

import pytest

from probes.emulators.modem import EXPECTED_APN, ModemEmulator, ModemState
from tests.conftest import run_cli

PAN = "4111111111111111"
HOSTILE_OPERATOR = f"\x1b[2J\x1b]0;owned\x07CSL \u202e{PAN}\x9b31m"
HOSTILE_APN = f"cmnet\x07;{PAN}=25121011234567890?\x1b[0m"
CONTROLS = ["\x1b", "\x07", "\x9b", "\u202e"]


@pytest.fixture()
def hostile_modem(tmp_path):
    state = ModemState(reg_stat=5, operator=HOSTILE_OPERATOR, apn=HOSTILE_APN)  # roaming: the operator is in the finding
    with ModemEmulator(state) as device:
        config = tmp_path / "posdiag.toml"
        config.write_text(
            f'[probes.modem]\nsource = "at"\nport = "{device.path}"\nexpected_apn = "{EXPECTED_APN}"\n', encoding="utf-8"
        )
        yield config


def assert_clean(out: str) -> None:
    for char in CONTROLS:
        assert char not in out, (char, out)
    assert PAN not in out and "25121011234567890" not in out, out
    assert "\\x1b" in out or "\\u001b" in out  # shown as text, so the technician sees something odd was sent


@pytest.mark.parametrize("as_json", [False, True])
def test_probe_output_masks_and_escapes_what_the_modem_said(hostile_modem, as_json):
    done = run_cli("probe", "--only", "modem", "--config", str(hostile_modem), *(["--json"] if as_json else []))
    assert done.returncode in (0, 1), done.stderr
    assert_clean(done.stdout)
    if as_json:
        metrics = json.loads(done.stdout)["probes"][0]["metrics"]
        assert metrics["operator"].startswith("\\x1b[2J") and "411111******1111" in metrics["operator"]
    else:
        assert "modem.roaming" in done.stdout and "modem.wrong_apn" in done.stdout


@pytest.mark.parametrize("as_json", [False, True])
def test_diagnose_output_masks_and_escapes_what_the_modem_said(hostile_modem, as_json):
    done = run_cli("diagnose", "--code", "96", "--config", str(hostile_modem), *(["--json"] if as_json else []), timeout=120)
    assert done.returncode in (0, 1), done.stderr
    assert_clean(done.stdout + done.stderr)
