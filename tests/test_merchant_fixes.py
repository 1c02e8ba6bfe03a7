"""A merchant verdict that did not hold becomes onsite: diagnoses of one terminal against the
ESC/POS printer emulator on a pty, with the memory in a real state directory."""

import json
from datetime import UTC, datetime, timedelta

from agent import config, knowledge
from agent.correlate import correlate
from agent.diagnosis import diagnose
from agent.merchant_fixes import FILE_NAME, review
from probes.contract.records import Status
from probes.emulators.printer import PrinterEmulator, PrinterState
from tests.test_correlate import ORDER, terminal

KB = knowledge.load()
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def terminal_config(tmp_path, device=None, grace=300.0):
    overrides = {"daemon": {"state_dir": str(tmp_path / "state")}, "dispatch": {"merchant_fix_grace_seconds": grace}}
    if device is not None:
        overrides["probes"] = {"printer": {"port": device.path, "transport": "serial"}}
    return config.load(None, overrides)


def correlate_for(code, results):
    return correlate(KB, KB.lookup(code, None, ORDER), results)


def judged(cfg, code, *faults, now):
    results = terminal(*faults)
    return review(cfg, KB, correlate_for(code, results), results, now=now).dispatch


def test_paper_still_out_after_the_merchant_was_told_goes_onsite(tmp_path):
    with PrinterEmulator(PrinterState(paper="out")) as device:
        cfg = terminal_config(tmp_path, device, grace=0)
        first = diagnose(cfg, "3000", only=["printer"], remember=True)
        second = diagnose(cfg, "00", only=["printer"], remember=True)
    assert first.correlation.dispatch.verdict == "merchant"
    assert second.correlation.dispatch.verdict == "onsite"
    assert "paper out" in second.correlation.dispatch.reason.en
    assert "商户已按提示处理过" in second.correlation.dispatch.reason.zh
    saved = json.loads((tmp_path / "state" / FILE_NAME).read_text())
    assert set(saved) == {"printer.paper_out"}


def test_a_fix_that_held_is_forgotten(tmp_path):
    with PrinterEmulator(PrinterState(paper="out")) as device:
        cfg = terminal_config(tmp_path, device, grace=0)
        assert diagnose(cfg, "3000", only=["printer"], remember=True).correlation.dispatch.verdict == "merchant"
        device.state = PrinterState()  # the merchant loaded a roll
        diagnose(cfg, "51", only=["printer"], remember=True)
        device.state = PrinterState(paper="out")  # later the roll runs out again: a new merchant job
        again = diagnose(cfg, "3000", only=["printer"], remember=True)
    assert again.correlation.dispatch.verdict == "merchant"


def test_no_escalation_before_the_merchant_had_time_to_act(tmp_path):
    cfg = terminal_config(tmp_path)
    assert judged(cfg, "3000", "printer.cover_open", now=T0).verdict == "merchant"
    assert judged(cfg, "3000", "printer.cover_open", now=T0 + timedelta(seconds=60)).verdict == "merchant"
    assert judged(cfg, "3000", "printer.cover_open", now=T0 + timedelta(minutes=10)).verdict == "onsite"


def test_the_memory_expires(tmp_path):
    cfg = terminal_config(tmp_path)
    judged(cfg, "E3", "power.battery_critical", now=T0)
    assert judged(cfg, "E3", "power.battery_critical", now=T0 + timedelta(hours=25)).verdict == "merchant"


def test_a_probe_that_did_not_run_does_not_forget_a_failure(tmp_path):
    cfg = terminal_config(tmp_path)
    judged(cfg, "3000", "printer.paper_out", now=T0)
    results = terminal(status={"printer": Status.SKIPPED})
    review(cfg, KB, correlate_for("51", results), results, now=T0 + timedelta(hours=1))
    assert judged(cfg, "51", "printer.paper_out", now=T0 + timedelta(hours=2)).verdict == "onsite"


def test_a_merchant_failure_behind_a_decline_is_remembered_too(tmp_path):
    cfg = terminal_config(tmp_path)
    assert judged(cfg, "51", "network.link_down", now=T0).verdict == "merchant"
    later = judged(cfg, "51", "network.link_down", now=T0 + timedelta(hours=1))
    assert later.verdict == "onsite" and "network link down" in later.reason.en


def test_an_unwritable_state_dir_leaves_the_verdict_alone(tmp_path):
    (tmp_path / "state").write_text("not a directory")
    cfg = terminal_config(tmp_path)
    assert judged(cfg, "3000", "printer.paper_out", now=T0).verdict == "merchant"
    assert judged(cfg, "3000", "printer.paper_out", now=T0 + timedelta(hours=1)).verdict == "merchant"


def test_a_sign_in_that_did_not_help_goes_to_support_not_onsite(tmp_path):
    """A0 on a terminal whose checks find nothing: the merchant signs in (签到) first. The same
    cause back after the grace time means the sign-in did not bring the keys into step: support
    resets them on the host (remote), nobody is sent."""
    cfg = terminal_config(tmp_path)
    first = judged(cfg, "A0", now=T0)
    assert first.verdict == "merchant" and "no one is sent" in first.reason.en
    again = judged(cfg, "A0", now=T0 + timedelta(minutes=10))
    assert again.verdict == "remote"
    assert "still happens" in again.reason.en and "working keys" in again.reason.en
    assert "商户已按提示处理过" in again.reason.zh and "客服远程处理" in again.reason.zh


def test_keys_the_app_still_reports_out_of_step_after_a_sign_in_go_to_support(tmp_path):
    cfg = terminal_config(tmp_path)
    assert judged(cfg, "A0", "app.keys_out_of_step", now=T0).verdict == "merchant"
    later = judged(cfg, "99", "app.keys_out_of_step", now=T0 + timedelta(minutes=10))
    assert later.verdict == "remote" and "working keys out of step" in later.reason.en


def test_an_unsettled_batch_is_settled_by_the_merchant_first(tmp_path):
    cfg = terminal_config(tmp_path)
    assert judged(cfg, "77", "app.batch_unsettled", now=T0).verdict == "merchant"
    assert judged(cfg, "77", "app.batch_unsettled", now=T0 + timedelta(hours=1)).verdict == "remote"
