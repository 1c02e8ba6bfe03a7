"""The correlation engine on hand-built probe results: rankings pinned for many (code, faults)."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import knowledge
from agent.correlate import correlate
from agent.model import ProbeResult
from probes import all_finding_ids
from probes.contract.records import Finding, Status

ORDER = ("iso8583", "cup", "terminal", "exception")
PROBES = ("card_reader", "modem", "network", "payment_app", "power", "printer", "storage", "system")
PREFIX_PROBE = {"reader": "card_reader", "probe": "system", "app": "payment_app"}
WARN_ONLY = {
    "printer.paper_near_end", "network.cert_expiring", "storage.disk_low", "storage.emmc_wear",
    "app.state_stale", "app.keys_stale", "app.parameters_stale", "reader.no_payment_app", "reader.in_use",
    "modem.roaming", "modem.weak_signal",
}  # fmt: skip
KB = knowledge.load()


def probe_of(fid: str) -> str:
    prefix = fid.split(".", 1)[0]
    return PREFIX_PROBE.get(prefix, prefix)


def terminal(*faults: str, status: dict[str, Status] | None = None) -> list[ProbeResult]:
    """Every probe ran; each fault is a finding of its probe; the rest came back ok."""
    status = status or {}
    results = []
    for name in PROBES:
        findings = [
            (Finding.warn if f in WARN_ONLY else Finding.fail)(f, f"simulated {f}") for f in faults if probe_of(f) == name
        ]
        default = (Status.FAIL if any(f.severity == "fail" for f in findings) else Status.WARN) if findings else Status.OK
        results.append(ProbeResult(name, status.get(name, default), findings, {}, 1.0))
    return results


def run(code: str | None, *faults: str, **kw):
    entry = KB.lookup(code, None, ORDER) if code else None
    return correlate(KB, entry, terminal(*faults, **kw))


PINNED = [
    # (code, faults, top cause)
    ("03", (), "merchant.not_registered"),
    ("03", ("printer.paper_out",), "merchant.not_registered"),
    ("51", (), "card.insufficient_funds"),
    ("51", ("network.link_down",), "card.insufficient_funds"),
    ("51", ("network.dns_failed", "printer.paper_out"), "card.insufficient_funds"),
    ("55", (), "card.wrong_pin"),
    ("54", (), "card.expired"),
    ("54", ("reader.slot_fault",), "card.expired"),  # a date read as past was read: the slot is an other finding
    ("33", (), "card.pick_up"),
    ("36", (), "card.pick_up"),
    ("38", (), "card.pick_up"),
    ("14", (), "card.invalid_number"),
    ("14", ("reader.bad_frame",), "reader.read_error"),
    ("41", (), "card.lost_stolen"),
    ("61", (), "transaction.limit"),
    ("58", (), "merchant.terminal_setup"),
    ("97", (), "merchant.not_registered"),
    ("A0", (), "security.keys_out_of_sync"),
    ("A0", ("reader.tamper",), "security.keys_lost"),
    ("99", ("reader.tamper",), "security.keys_lost"),
    ("A0", ("network.clock_skew",), "security.keys_out_of_sync"),
    ("90", (), "host.cutoff"),
    ("91", (), "host.issuer_unavailable"),
    ("96", (), "host.switch_malfunction"),
    ("94", (), "transaction.duplicate"),
    ("94", ("storage.readonly", "system.recent_reboot"), "software.state_lost"),
    ("00", ("printer.paper_out",), "printer.paper_out"),
    ("00", (), "transaction.approved"),
    ("45", (), "card.chip_damaged"),
    ("45", ("reader.slot_fault",), "reader.slot_fault"),
    ("3000", ("printer.paper_out",), "printer.paper_out"),
    ("3000", ("printer.cover_open",), "printer.cover_open"),
    ("3000", ("reader.no_response",), "reader.not_connected"),
    ("3000", ("storage.readonly",), "storage.failing"),
    ("3000", ("power.battery_critical",), "power.battery_low"),
    ("3000", ("system.app_not_running",), "software.app_fault"),
    ("E3", ("reader.slot_fault",), "reader.slot_fault"),
    ("E3", ("storage.disk_full",), "storage.full"),
    ("E3", ("power.overheat",), "power.overheat"),
    ("E3", ("printer.permission_denied",), "software.device_permission"),
    ("E3", (), "operator.card_misuse"),
    ("CommunicationError", ("network.dns_failed",), "network.dns"),
    ("CommunicationError", ("network.link_down",), "network.no_link"),
    ("CommunicationError", ("network.weak_signal",), "network.weak_signal"),
    ("CommunicationError", ("network.tls_failed",), "network.tls"),
    ("CommunicationError", ("network.cert_expired", "system.clock_unset"), "software.clock_wrong"),
    ("CommunicationError", (), "host.timeout"),
    ("ConnectError", ("network.connect_timeout",), "network.host_unreachable"),
    ("ConnectError", ("network.connect_refused",), "host.unavailable"),
    ("ConnectError", ("network.link_down", "network.no_route"), "network.no_link"),
    ("3", ("network.dns_failed",), "network.dns"),
    ("DataTransferError", ("network.high_latency",), "network.weak_signal"),
    ("DuplicateTransactionError", (), "transaction.duplicate"),
    ("TransactionFailed", ("network.connect_timeout",), "network.host_unreachable"),
    ("1", ("reader.bad_frame",), "reader.read_error"),
    ("2", (), "card.insufficient_funds"),
    ("4", (), "transaction.limit"),
    (None, (), "software.unexplained"),
    (None, ("printer.paper_out",), "printer.paper_out"),
    (None, ("reader.tamper",), "reader.tampered"),
    (None, ("network.link_down",), "network.no_link"),
]


@pytest.mark.parametrize(("code", "faults", "top"), PINNED, ids=lambda v: ",".join(v) if isinstance(v, tuple) else str(v))
def test_ranking_is_pinned(code, faults, top):
    result = run(code, *faults)
    assert result.causes[0].cause.id == top


def test_confidence_sums_to_one_and_is_ranked():
    for code, faults, _ in PINNED:
        causes = run(code, *faults).causes
        assert sum(c.confidence for c in causes) == pytest.approx(1.0)
        assert [c.confidence for c in causes] == sorted((c.confidence for c in causes), reverse=True)


def test_a_host_answer_stays_a_card_matter_when_the_link_is_down_now():
    result = run("51", "network.link_down")
    assert result.causes[0].cause.category == "card"
    assert all(c.cause.category != "network" for c in result.causes)
    assert [f.id for f in result.other_findings] == ["network.link_down"]


def test_evidence_for_names_the_finding_and_its_detail():
    top = run("CommunicationError", "network.dns_failed").causes[0]
    assert [(e.probe, e.finding, e.detail) for e in top.evidence_for] == [
        ("network", "network.dns_failed", "simulated network.dns_failed")
    ]
    assert top.evidence_for[0].weight > 0


def test_a_healthy_probe_weakens_causes_of_its_category():
    healthy = run("CommunicationError")
    not_run = run("CommunicationError", status={"network": Status.SKIPPED})
    conf = {c.cause.id: c.confidence for c in healthy.causes}
    conf_unchecked = {c.cause.id: c.confidence for c in not_run.causes}
    assert conf["network.no_link"] < conf_unchecked["network.no_link"]
    no_link = next(c for c in healthy.causes if c.cause.id == "network.no_link")
    assert [(e.probe, e.finding, e.detail) for e in no_link.evidence_against] == [("network", None, "probe network ok")]


@pytest.mark.parametrize("status", [Status.SKIPPED, Status.TIMEOUT, Status.ERROR])
def test_a_probe_that_did_not_run_is_neutral(status):
    base = run("3000", status={"printer": Status.SKIPPED})
    other = run("3000", status={"printer": status})
    assert [(c.cause.id, c.confidence) for c in base.causes] == [(c.cause.id, c.confidence) for c in other.causes]
    printer = next(c for c in other.causes if c.cause.category == "printer")
    assert printer.evidence_against == ()


def test_a_probe_timeout_is_reported_but_not_taken_for_a_cause():
    results = terminal()
    results[3] = ProbeResult("printer", Status.TIMEOUT, [Finding.warn("probe.timeout", "printer probe did not finish")], {}, 3000.0)
    result = correlate(KB, KB.lookup("51", None, ORDER), results)
    assert [f.id for f in result.other_findings] == ["probe.timeout"]
    assert result.dispatch.verdict == "none"  # a warn finding does not send anyone


def test_same_input_same_output_whatever_the_order_of_results():
    faults = ("printer.paper_out", "network.weak_signal", "storage.disk_low", "reader.bad_frame")
    results = terminal(*faults)
    entry = KB.lookup("E3", None, ORDER)
    first = correlate(KB, entry, results)
    rng = random.Random(7)
    for _ in range(5):
        shuffled = results[:]
        rng.shuffle(shuffled)
        again = correlate(KB, entry, shuffled)
        assert [(c.cause.id, round(c.confidence, 12)) for c in again.causes] == [
            (c.cause.id, round(c.confidence, 12)) for c in first.causes
        ]
        assert again.dispatch == first.dispatch


def test_ties_are_broken_by_cause_id():
    # 64 lists operator.wrong_amount and operator.wrong_original with the same prior.
    causes = run("64").causes
    assert [c.cause.id for c in causes] == ["operator.wrong_amount", "operator.wrong_original"]
    assert causes[0].confidence == causes[1].confidence


def test_an_unknown_code_takes_its_causes_from_the_findings():
    result = run(None, "printer.paper_out", "network.link_down")
    assert {c.cause.id for c in result.causes} >= {"printer.paper_out", "network.no_link"}
    assert result.other_findings == ()


def test_a_generic_code_lets_the_probes_decide():
    assert run("3000", "printer.paper_out").causes[0].cause.category == "printer"
    assert run("3000", "network.link_down").causes[0].cause.category == "network"


@pytest.mark.parametrize(
    ("code", "faults", "verdict"),
    [
        ("51", (), "none"),
        ("55", (), "none"),
        ("03", (), "remote"),
        ("A0", (), "merchant"),  # the merchant signs in (签到) first; remote when it persists
        ("96", (), "remote"),
        ("3000", ("printer.paper_out",), "merchant"),  # the merchant loads a roll: no visit
        ("3000", ("printer.cover_open",), "merchant"),
        ("E3", ("power.battery_critical",), "merchant"),
        ("3000", ("printer.cutter_error",), "onsite"),
        ("A0", ("reader.tamper",), "onsite"),
        ("CommunicationError", ("network.dns_failed",), "remote"),
        ("51", ("network.link_down",), "merchant"),  # the decline needs no one; the merchant reseats SIM or cable
        ("51", ("storage.readonly",), "onsite"),
        # the read-only filesystem is evidence for the top cause (state lost) and still needs hands
        ("94", ("storage.readonly", "system.recent_reboot"), "onsite"),
        ("51", ("storage.disk_full",), "remote"),
        ("51", ("printer.paper_near_end",), "none"),  # a warning sends no one
    ],
)
def test_dispatch_verdict(code, faults, verdict):
    assert run(code, *faults).dispatch.verdict == verdict


def test_an_escalated_dispatch_says_why_in_both_languages():
    dispatch = run("51", "storage.readonly").dispatch
    assert "filesystem read-only" in dispatch.reason.en and "文件系统只读" in dispatch.reason.zh
    assert "insufficient funds" in dispatch.reason.en


FINDING_IDS = sorted(all_finding_ids())
CODES = sorted({c.code for c in KB.codes.values()}) + ["ZZ-unknown"]


@settings(max_examples=200, deadline=None)
@given(code=st.sampled_from(CODES), faults=st.sets(st.sampled_from(FINDING_IDS), max_size=5))
def test_any_input_gives_a_well_formed_answer(code, faults):
    result = run(code if code != "ZZ-unknown" else None, *sorted(faults))
    assert result.causes and sum(c.confidence for c in result.causes) == pytest.approx(1.0)
    bearing = {e.finding for c in result.causes for e in (*c.evidence_for, *c.evidence_against)}
    for f in (f for r in terminal(*sorted(faults)) for f in r.findings):
        assert (f.id in bearing) != (f in result.other_findings)
    assert result.dispatch.verdict in ("none", "merchant", "remote", "onsite")
    assert result == run(code if code != "ZZ-unknown" else None, *sorted(faults))


def cup(code: str, *faults: str):
    return correlate(KB, KB.lookup(code, "cup", ORDER), terminal(*faults))


def other_ids(result) -> list[str]:
    return [f.id for f in result.other_findings]


def evidence_ids(result) -> set[str]:
    return {e.finding for c in result.causes for e in (*c.evidence_for, *c.evidence_against)}


def test_a_local_slow_link_under_a_host_68_is_an_other_finding_not_evidence_against():
    result = run("68", "network.high_latency", "network.weak_signal")
    assert result.causes[0].cause.id == "host.timeout"
    assert other_ids(result) == ["network.high_latency", "network.weak_signal"]
    assert evidence_ids(result) <= {None}


def test_unionpay_98_was_answered_so_a_link_down_now_is_an_other_finding():
    result = cup("98", "network.link_down")
    assert result.causes[0].cause.category == "host"
    assert other_ids(result) == ["network.link_down"]


def test_a_finding_still_weakens_a_cause_when_it_supports_a_ranked_alternative():
    result = run("CommunicationError", "network.link_down")
    timeout = next(c for c in result.causes if c.cause.id == "host.timeout")
    assert [e.finding for e in timeout.evidence_against] == ["network.link_down"]


def test_a_wrong_clock_does_not_outrank_sign_in_for_a_mac_error():
    result = cup("A0", "network.clock_skew", "system.clock_unset")
    assert result.causes[0].cause.id == "security.keys_out_of_sync"
    assert all(c.cause.id != "software.clock_wrong" for c in result.causes)
    assert other_ids(result) == ["network.clock_skew", "system.clock_unset"]
    assert result.dispatch.verdict == "remote"


def test_clock_findings_still_bear_on_certificates():
    assert run("CommunicationError", "network.cert_expired", "system.clock_unset").causes[0].cause.id == "software.clock_wrong"


@pytest.mark.parametrize("code", ["33", "54"])
def test_a_slot_fault_is_not_why_a_card_is_expired(code):
    result = run(code, "reader.slot_fault")
    assert result.causes[0].cause.category == "card"
    assert other_ids(result) == ["reader.slot_fault"]
    assert result.dispatch.verdict == "onsite"  # the slot still needs repair, said as an escalation


def test_unionpay_22_is_a_linked_transaction_error_for_the_operator():
    result = cup("22")
    assert result.causes[0].cause.id == "operator.wrong_original"
    assert result.dispatch.verdict == "none"


def test_iso_22_no_longer_leans_on_keys():
    assert run("22").causes[0].cause.id != "security.keys_out_of_sync"


def test_a_host_14_is_a_card_matter_with_the_reader_a_weak_prior():
    causes = {c.cause.id: c.confidence for c in run("14").causes}
    assert max(causes, key=causes.get) == "card.invalid_number"
    assert causes["reader.read_error"] < 0.1


@pytest.mark.parametrize(("code", "top"), [("08", "transaction.approved_with_id"), ("10", "transaction.partial_approval"), ("11", "transaction.approved")])
def test_approvals_are_approvals_not_unexplained(code, top):
    result = run(code)
    assert result.causes[0].cause.id == top and result.dispatch.verdict == "none"


def test_a_paper_roll_is_the_merchants_job_and_the_reason_says_no_one_is_sent():
    dispatch = run("3000", "printer.paper_out").dispatch
    assert dispatch.verdict == "merchant"
    assert "no one is sent" in dispatch.reason.en and "无需派人" in dispatch.reason.zh


def test_every_cause_class_matches_what_its_support_action_says():
    for cause in KB.causes.values():
        said = " ".join(a.en for a in cause.actions["support"]).lower()
        if "no visit needed" in said:
            assert cause.dispatch in ("none", "merchant"), cause.id
        if said.startswith(("send a technician", "arrange a")):
            assert cause.dispatch == "onsite", cause.id
