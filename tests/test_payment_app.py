"""The payment_app probe on state files a real payment app (or its integration) could write:
fresh, stale keys, a batch open 30 hours, no parameter download, a hand-edited MID, a reset
trace counter, no master key, a silent PIN pad; times as ISO 8601 with and without an offset
and as epoch seconds; and files that are missing, half-written, too big or of another schema."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent import config
from agent.i18n import zh_detail
from probes import ProbeContext, payment_app
from probes.contract.records import Severity, Status
from probes.contract.settings import AppSettings, HostSettings

KCV = {"pin": "8C2D41", "mac": "3F90A7"}


def ago(**delta: float) -> str:
    """A moment that long before now (taken when the file is written, not when tests are collected)."""
    return (datetime.now(UTC) - timedelta(**delta)).isoformat(timespec="seconds")


def healthy() -> dict:
    """What a UnionPay POS app writes on a normal afternoon: signed in this morning, a batch
    since the morning, parameters from three weeks ago."""
    return {
        "schema": "posdiag.app_state/1",
        "updated_at": ago(seconds=20),
        "tid": "20240601",
        "mid": "898310048160001",
        "keys": {"master_key": True, "loaded_at": ago(hours=6), "kcv": dict(KCV), "kcv_host": dict(KCV)},
        "batch": {"number": "000123", "open_since": ago(hours=7), "count": 41, "last_trace": 512},
        "trace_next": 513,
        "parameters": {"downloaded_at": ago(days=21), "tid": "20240601", "mid": "898310048160001"},
        "pinpad": {"status": "ok"},
    }


def probe(tmp_path: Path, state: dict | str | bytes | None, **settings: float):
    path = tmp_path / "app_state.json"
    if isinstance(state, dict):
        path.write_text(json.dumps(state), encoding="utf-8")
    elif isinstance(state, str):
        path.write_text(state, encoding="utf-8")
    elif isinstance(state, bytes):
        path.write_bytes(state)
    loaded = config.load(None, {"probes": {"payment_app": settings}}).probes["payment_app"]
    ctx = ProbeContext(HostSettings("/nonexistent-sys", "/nonexistent-proc"), 1.0, app=AppSettings(str(path)))
    return payment_app.run(loaded, ctx)


def ids(observation) -> list[str]:
    return [f.id for f in observation.findings]


def test_a_normal_afternoon_is_healthy_with_its_figures(tmp_path):
    seen = probe(tmp_path, healthy())
    assert seen.derived_status() is Status.OK and seen.findings == []
    m = seen.metrics
    assert 5.9 < m["sign_in_age_h"] < 6.1 and 6.9 < m["batch_open_h"] < 7.1 and m["batch_count"] == 41
    assert (m["trace_next"], m["tid"], m["mid"]) == (513, "20240601", "898310048160001")
    assert 20.9 < m["parameters_age_d"] < 21.1


def test_no_state_file_configured_is_skipped_with_the_reason(tmp_path):
    loaded = config.load().probes["payment_app"]
    seen = payment_app.run(loaded, ProbeContext(HostSettings("/x", "/y"), 1.0))
    assert seen.derived_status() is Status.SKIPPED and seen.metrics["reason"] == "no [app] state_file configured"


def test_keys_not_refreshed_for_three_days(tmp_path):
    state = healthy()
    state["keys"]["loaded_at"] = ago(hours=74)
    seen = probe(tmp_path, state)
    assert ids(seen) == ["app.keys_stale"] and seen.findings[0].severity is Severity.WARN
    assert "74 h ago" in seen.findings[0].detail


def test_never_signed_in_is_a_failure(tmp_path):
    state = healthy()
    state["keys"]["loaded_at"] = None
    seen = probe(tmp_path, state)
    assert ids(seen) == ["app.keys_stale"] and seen.findings[0].severity is Severity.FAIL


def test_a_batch_open_30_hours_with_sales_in_it_was_not_settled(tmp_path):
    state = healthy()
    state["batch"].update(open_since=ago(hours=30), count=57)
    seen = probe(tmp_path, state)
    assert ids(seen) == ["app.batch_unsettled"]
    assert seen.findings[0].data == {"open_h": 30, "count": 57}
    assert "000123 open for 30 h with 57 transactions" in seen.findings[0].detail


def test_an_empty_batch_open_long_is_fine(tmp_path):
    state = healthy()
    state["batch"].update(open_since=ago(hours=30), count=0)
    assert probe(tmp_path, state).findings == []


def test_no_parameter_download_leaves_no_tid_or_mid(tmp_path):
    state = healthy()
    state.update(parameters={}, tid="", mid="")
    seen = probe(tmp_path, state)
    assert ids(seen) == ["app.parameters_missing", "app.ids_missing"]
    assert seen.findings[1].detail == "no TID and MID configured in the payment app"


def test_parameters_older_than_the_limit(tmp_path):
    state = healthy()
    state["parameters"]["downloaded_at"] = ago(days=400)
    seen = probe(tmp_path, state, parameters_max_age_days=180.0)
    assert ids(seen) == ["app.parameters_stale"] and seen.findings[0].data == {"age_d": 400}


@pytest.mark.parametrize(
    ("tid", "mid", "said"),
    [
        ("20240601", "898310048160009", "MID '898310048160009' differs from the downloaded '898310048160001'"),
        ("2024060", "898310048160001", "TID '2024060' is not 8 characters"),
    ],
)
def test_a_wrong_tid_or_mid(tmp_path, tid, mid, said):
    state = healthy()
    state.update(tid=tid, mid=mid)
    seen = probe(tmp_path, state)
    assert ids(seen) == ["app.ids_mismatch"] and said in seen.findings[0].detail


def test_a_reset_trace_counter_repeats_numbers_the_batch_already_used(tmp_path):
    state = healthy()
    state["trace_next"] = 1
    seen = probe(tmp_path, state)
    assert ids(seen) == ["app.trace_reset"]
    assert "000001 is not above the batch's last 000512" in seen.findings[0].detail


def test_key_check_values_differing_from_the_hosts_are_keys_out_of_step(tmp_path):
    state = healthy()
    state["keys"]["kcv_host"]["mac"] = "d15b02"
    seen = probe(tmp_path, state)
    assert ids(seen) == ["app.keys_out_of_step"]
    assert seen.findings[0].data == {"mismatched": ["mac"]}
    assert "mac key 3F90A7 (host: d15b02)" in seen.findings[0].detail
    state["keys"]["kcv_host"]["mac"] = "3f90a7"  # check values compare without regard to case
    assert probe(tmp_path, state).findings == []


def test_response_macs_failing_to_verify_are_keys_out_of_step_too(tmp_path):
    state = healthy()
    state["keys"]["mac_failures"] = 2
    assert ids(probe(tmp_path, state)) == ["app.keys_out_of_step"]


def test_no_master_key_is_the_only_key_finding(tmp_path):
    state = healthy()
    state["keys"] = {"master_key": False, "loaded_at": ago(hours=90), "kcv": KCV, "kcv_host": {"mac": "000000"}}
    assert ids(probe(tmp_path, state)) == ["app.master_key_missing"]


def test_a_pin_pad_that_does_not_answer(tmp_path):
    state = healthy()
    state["pinpad"] = {"status": "no_response", "detail": "no answer in 3 s"}
    seen = probe(tmp_path, state)
    assert ids(seen) == ["app.pinpad_fault"] and seen.findings[0].detail == "the PIN pad reports 'no_response': no answer in 3 s"


def test_a_file_the_app_stopped_writing_is_stale(tmp_path):
    state = healthy()
    state["updated_at"] = ago(hours=3)
    seen = probe(tmp_path, state)
    assert ids(seen) == ["app.state_stale"] and seen.findings[0].severity is Severity.WARN


@pytest.mark.parametrize("style", ["offset", "utc_z", "local_naive", "epoch"])
def test_times_in_the_shapes_apps_write(tmp_path, style):
    """An app on a terminal in UTC+8 may write 2024-06-01T09:30:00+08:00, ...Z, a local time
    with no offset, or epoch seconds: all mean the same moment."""
    moment = datetime.now(UTC) - timedelta(hours=30)
    shaped = {
        "offset": moment.astimezone().isoformat(),
        "utc_z": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "local_naive": moment.astimezone().replace(tzinfo=None).isoformat(timespec="seconds"),
        "epoch": moment.timestamp(),
    }[style]
    state = healthy()
    state["batch"].update(open_since=shaped, count=3)
    seen = probe(tmp_path, state)
    assert ids(seen) == ["app.batch_unsettled"] and 29.9 < seen.metrics["batch_open_h"] < 30.1


def test_every_field_is_optional(tmp_path):
    assert probe(tmp_path, {"schema": "posdiag.app_state/1"}).findings == []
    assert probe(tmp_path, {"pinpad": {"status": "ok"}}).findings == []


def test_fields_it_does_not_know_are_ignored_and_not_kept(tmp_path):
    state = healthy()
    state["keys"]["tmk"] = "0123456789ABCDEF0123456789ABCDEF"  # an app must never write this; if it does, it stays here
    seen = probe(tmp_path, state)
    assert seen.findings == [] and "0123456789ABCDEF" not in json.dumps(seen.metrics)


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (None, "No such file"),
        ('{"schema": "posdiag.app_state/1", "tid": "2024', "not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        ("[1, 2]", "not a JSON object"),
        ('{"schema": "vendor/9"}', "schema 'vendor/9'"),
        ('{"updated_at": "yesterday"}', "'yesterday' is not an ISO 8601 time"),
        ("{" + " " * (70 * 1024) + "}", "larger than 64 KiB"),
    ],
)
def test_a_file_that_cannot_be_read_says_why(tmp_path, content, said):
    seen = probe(tmp_path, content)
    assert ids(seen) == ["app.state_unreadable"] and seen.findings[0].severity is Severity.WARN
    assert said in seen.findings[0].detail


def test_every_finding_reads_in_chinese(tmp_path):
    cases = []
    for change in (
        lambda s: s["keys"].update(loaded_at=ago(hours=74)),
        lambda s: s["keys"].update(loaded_at=None),
        lambda s: s["batch"].update(open_since=ago(hours=30), count=57),
        lambda s: s.update(parameters={}, tid="", mid=""),
        lambda s: s["parameters"].update(downloaded_at=ago(days=400)),
        lambda s: s.update(mid="898310048160009"),
        lambda s: s.update(trace_next=1),
        lambda s: s["keys"]["kcv_host"].update(mac="D15B02"),
        lambda s: s["keys"].update(mac_failures=1),
        lambda s: s.update(keys={"master_key": False}),
        lambda s: s.update(pinpad={"status": "no_response"}),
        lambda s: s.update(updated_at=ago(hours=3)),
    ):
        state = healthy()
        change(state)
        cases += probe(tmp_path, state).findings
    cases += probe(tmp_path, "not json").findings
    assert {f.id for f in cases} == set(payment_app.FINDINGS)
    for finding in cases:
        assert zh_detail(finding), f"no Chinese template of {finding.id} fits {finding.data}"


def test_the_simulated_terminal_writes_a_file_the_probe_reads(tmp_path):
    from probes.emulators import SimulatedTerminal

    with SimulatedTerminal.from_spec("app.batch_unsettled,app.trace_reset") as terminal:
        path = Path(terminal.overrides["app"]["state_file"])
        written = json.loads(path.read_text())
        ctx = ProbeContext(HostSettings("/x", "/y"), 1.0, app=AppSettings(str(path)))
        seen = payment_app.run(config.load().probes["payment_app"], ctx)
    assert written["schema"] == "posdiag.app_state/1" and written["trace_next"] == 1
    assert ids(seen) == ["app.batch_unsettled", "app.trace_reset"]
    assert time.time() - datetime.fromisoformat(written["updated_at"]).timestamp() < 600
