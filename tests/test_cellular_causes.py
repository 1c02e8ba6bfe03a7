"""The modem's findings in the knowledge base: the network errors a cellular terminal shows
(terminal code 3, ConnectError, CommunicationError, E3) put the cause the modem points at first,
with the finding as evidence and the dispatch that fits who can fix it."""

from __future__ import annotations

import pytest

from agent import knowledge
from agent.correlate import correlate
from agent.model import ProbeResult
from probes import modem
from probes.contract.records import Finding, Status

KB = knowledge.load()
ORDER = ("iso8583", "cup", "terminal", "exception")
PROBES = ("card_reader", "modem", "network", "power", "printer", "storage", "system")
WARN = {"modem.roaming", "modem.weak_signal"}
# what the network probe reports on a cellular terminal when the modem's fault takes the link
DOWNSTREAM = ("network.link_down", "network.no_route", "network.dns_failed")
# finding -> (top cause, dispatch verdict); reseating the SIM or moving the terminal is the
# merchant's first step (a fix the probes still see failing later escalates to onsite). The
# merchant holds neither the acquirer SIM's PIN nor its PUK: support gives or disables the PIN
# (remote); a PUK-blocked SIM needs the carrier's PUK or a new SIM (onsite).
EXPECTED = {
    "modem.absent": ("network.modem_fault", "onsite"),
    "modem.no_response": ("network.modem_fault", "onsite"),
    "modem.sim_absent": ("network.no_link", "merchant"),
    "modem.sim_locked": ("network.sim_pin", "remote"),
    "modem.sim_puk": ("network.sim_puk", "onsite"),
    "modem.not_registered": ("network.no_link", "merchant"),
    "modem.registration_denied": ("network.sim_account", "remote"),
    "modem.imei_rejected": ("network.sim_bound", "remote"),
    "modem.legacy_rat": ("network.legacy_rat", "remote"),
    "modem.data_rejected": ("network.sim_account", "remote"),
    "modem.roaming": ("network.sim_account", "remote"),
    "modem.weak_signal": ("network.weak_signal", "merchant"),
    "modem.no_data_session": ("network.data_session", "remote"),
    "modem.wrong_apn": ("network.apn_wrong", "remote"),
}


def terminal(*faults: str) -> list[ProbeResult]:
    results = []
    for name in PROBES:
        findings = [(Finding.warn if f in WARN else Finding.fail)(f, f"simulated {f}") for f in faults if f.startswith(f"{name}.")]
        status = (Status.WARN if all(f.id in WARN for f in findings) else Status.FAIL) if findings else Status.OK
        results.append(ProbeResult(name, status, findings, {}, 1.0))
    return results


def diagnose(code: str, *faults: str):
    return correlate(KB, KB.lookup(code, None, ORDER), terminal(*faults))


def test_every_modem_finding_is_pinned_here():
    assert set(EXPECTED) == set(modem.FINDINGS)


@pytest.mark.parametrize("code", ["3", "ConnectError", "CommunicationError", "E3"])
@pytest.mark.parametrize("finding", sorted(EXPECTED))
def test_network_errors_rank_the_modem_cause_first(code, finding):
    result = diagnose(code, finding)
    top = result.causes[0]
    cause, verdict = EXPECTED[finding]
    assert (top.cause.id, result.dispatch.verdict) == (cause, verdict)
    assert top.cause.category == "network"
    assert finding in [e.finding for e in top.evidence_for]


def test_a_healthy_modem_leaves_the_other_network_causes_alone():
    assert diagnose("3", "network.link_down").causes[0].cause.id == "network.no_link"
    assert diagnose("ConnectError", "network.dns_failed").causes[0].cause.id == "network.dns"


def test_a_host_answer_is_not_blamed_on_the_sim_but_the_sim_still_gets_fixed():
    """51 came back from the issuer: the path worked then. The missing SIM is another fault,
    which the merchant is told to reseat."""
    result = diagnose("51", "modem.sim_absent")
    assert result.causes[0].cause.id == "card.insufficient_funds"
    assert result.dispatch.verdict == "merchant"
    assert "modem.sim_absent" in [f.id for f in result.other_findings]


def test_new_causes_have_both_languages_for_every_role():
    for cause_id in ("network.sim_account", "network.data_session", "network.apn_wrong", "network.modem_fault"):
        cause = KB.causes[cause_id]
        assert all(cause.actions[role] for role in knowledge.ROLES)
        assert all(text.zh and text.en for texts in cause.actions.values() for text in texts)
    assert all(KB.finding_title(f, "zh") != f for f in modem.FINDINGS)


@pytest.mark.parametrize("code", ["3", "ConnectError", "CommunicationError", "E3"])
@pytest.mark.parametrize("finding", sorted(set(EXPECTED) - WARN - {"modem.wrong_apn"}))
def test_the_modem_fault_is_the_cause_and_the_network_findings_its_evidence(code, finding):
    """On a cellular terminal a modem fault takes the link, the route and DNS with it (the
    simulated terminal's device model). The modem fault stays the cause with the verdict it has
    alone; the network findings are its consequences: evidence with no weight of their own, not
    other findings and not a second reason to send someone."""
    result = diagnose(code, finding, *DOWNSTREAM)
    top = result.causes[0]
    assert (top.cause.id, result.dispatch.verdict) == EXPECTED[finding]
    consequences = [e for e in top.evidence_for if e.explained_by is not None]
    assert sorted(e.finding for e in consequences) == sorted(DOWNSTREAM)
    assert all(e.explained_by == finding and e.weight == 0.0 for e in consequences)
    assert result.other_findings == ()
    assert [a.finding for a in result.dispatch.also] == []


def test_a_wrong_apn_explains_the_unresolved_host():
    result = diagnose("ConnectError", "modem.wrong_apn", "network.dns_failed")
    top = result.causes[0]
    assert (top.cause.id, result.dispatch.verdict) == ("network.apn_wrong", "remote")
    assert [(e.finding, e.explained_by) for e in top.evidence_for if e.explained_by] == [("network.dns_failed", "modem.wrong_apn")]


def test_without_the_modem_fault_the_network_findings_speak_for_themselves():
    result = diagnose("ConnectError", *DOWNSTREAM)
    assert result.causes[0].cause.id == "network.no_link"
    chained = {e.finding: e.explained_by for e in result.causes[0].evidence_for}
    assert chained["network.link_down"] is None and chained["network.no_route"] == "network.link_down"
