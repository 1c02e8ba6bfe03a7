"""The knowledge-base corrections of issue 24, each against the source it follows:

- ISO 8583:1987 field 39 as carried in openemv/emv-utils src/emv_strings.c (09, 20, 23, 35, 37,
  42, 44, 52, 53, 60, 66, 67; 63 security violation, 21 no action taken, 03 invalid merchant);
- UnionPay's POS answer-code table (A2, A4, A5, A6 有缺陷的成功: approved, category A; 05
  持卡人认证失败; A0, 99 and 77 sign in again);
- 3GPP TS 27.007 +CPIN for the SIM: PIN asked at every start until given or disabled, PUK
  only from the carrier.
Each correction is checked through the engine on hand-built sweeps (tests/test_correlate.py)."""

from __future__ import annotations

import pytest

from agent import config, knowledge
from agent.correlate import correlate
from tests.test_correlate import ORDER, cup, run, terminal

KB = knowledge.load()
CUP_FIRST = ("cup", "iso8583", "terminal", "exception")


def test_a_pin_locked_sim_is_for_support_to_unlock_and_a_puk_blocked_one_needs_hands():
    pin = run("ConnectError", "modem.sim_locked", "network.link_down", "network.no_route", "network.dns_failed")
    puk = run("ConnectError", "modem.sim_puk", "network.link_down", "network.no_route", "network.dns_failed")
    assert (pin.causes[0].cause.id, pin.dispatch.verdict) == ("network.sim_pin", "remote")
    assert (puk.causes[0].cause.id, puk.dispatch.verdict) == ("network.sim_puk", "onsite")
    assert "network.no_link" not in {c.cause.id for c in (pin.causes[0], puk.causes[0])}
    said = " ".join(a.en for a in KB.causes["network.sim_pin"].actions["merchant"])
    assert "Do not try PINs yourself" in said  # the merchant holds no PIN of the acquirer's SIM


@pytest.mark.parametrize("code", ["A2", "A4", "A5", "A6"])
def test_approved_with_a_defect_is_an_approval_never_to_run_again(code):
    entry = KB.lookup(code, None, ORDER)
    assert entry.scheme == "cup" and entry.host_answer and "有缺陷的成功" in entry.meaning.zh
    result = run(code)
    top = result.causes[0].cause
    assert (top.id, result.dispatch.verdict) == ("transaction.approved_with_defect", "none")
    assert any("do not run it again" in a.en for a in top.actions["merchant"])
    assert any("切勿重复" in top.title.zh or "不要重新" in a.zh for a in top.actions["merchant"])


@pytest.mark.parametrize(
    ("code", "en", "top"),
    [
        ("09", "request in progress", "transaction.duplicate"),
        ("20", "invalid response", "host.switch_malfunction"),
        ("23", "unacceptable transaction fee", "merchant.terminal_setup"),
        ("35", "card acceptor contact acquirer, pick up", "card.pick_up"),
        ("37", "card acceptor call acquirer security, pick up", "card.pick_up"),
        ("42", "no universal account", "operator.account_type"),
        ("44", "no investment account", "operator.account_type"),
        ("52", "no cheque account", "operator.account_type"),
        ("53", "no savings account", "operator.account_type"),
        ("60", "card acceptor contact acquirer", "merchant.call_acquirer"),
        ("66", "card acceptor call acquirer's security department", "merchant.call_acquirer"),
        ("67", "hard capture (pick up the card at the ATM)", "card.pick_up"),
    ],
)
def test_the_rest_of_the_1987_table(code, en, top):
    entry = KB.lookup(code, None, ORDER)
    assert (entry.scheme, entry.meaning.en, entry.host_answer) == ("iso8583", en, True)
    assert run(code).causes[0].cause.id == top


@pytest.mark.parametrize("code", ["A0", "99", "77", "63"])
def test_re_sign_in_codes_are_the_merchants_first_then_supports(code):
    result = cup(code) if KB.lookup(code, "cup", ORDER) else run(code)
    top = result.causes[0].cause
    assert (top.id, result.dispatch.verdict) == ("security.keys_out_of_sync", "merchant")
    assert "签到" in top.actions["merchant"][0].zh and top.unfixed == "remote"


def test_63_means_what_its_top_cause_says():
    entry = KB.lookup("63", None, ORDER)
    top = run("63").causes[0].cause
    assert "侵犯安全" in entry.meaning.zh and "sign in again" in entry.meaning.en
    assert top.id == "security.keys_out_of_sync" and "sign in" in top.title.en


def test_03_has_no_card_causes_and_an_app_with_a_wrong_mid_explains_it():
    assert all(KB.causes[c].category == "merchant" for c in KB.lookup("03", None, ORDER).causes)
    result = run("03", "app.ids_mismatch")
    assert (result.causes[0].cause.id, result.dispatch.verdict) == ("merchant.wrong_ids", "remote")


@pytest.mark.parametrize(
    ("scheme", "code", "zh"),
    [("cup", "05", "持卡人认证失败"), ("iso8583", "63", "侵犯安全"), ("iso8583", "21", "不做任何处理")],
)
def test_the_chinese_wordings(scheme, code, zh):
    assert KB.lookup(code, scheme, ORDER).meaning.zh.startswith(zh)


@pytest.mark.parametrize(("code", "unionpay"), [("22", "operator.wrong_original"), ("21", "card.dormant"), ("12", "operator.wrong_original"), ("77", "security.keys_out_of_sync")])
def test_the_terminals_country_chooses_unionpays_reading(code, unionpay):
    china = config.load_text('[terminal]\ncountry = "CN"\n', "cn.toml").section("knowledge").scheme_order
    elsewhere = config.load_text('[terminal]\ncountry = "DE"\n', "de.toml").section("knowledge").scheme_order
    assert tuple(china) == CUP_FIRST and tuple(elsewhere) == ORDER
    assert KB.lookup(code, None, china).scheme == "cup" and KB.lookup(code, None, elsewhere).scheme == "iso8583"
    assert correlate(KB, KB.lookup(code, None, china), terminal()).causes[0].cause.id == unionpay


def test_an_operators_own_scheme_order_wins_over_the_country():
    both = config.load_text('[terminal]\ncountry = "CN"\n[knowledge]\nscheme_order = ["iso8583", "cup"]\n', "x.toml")
    assert both.section("knowledge").scheme_order == ["iso8583", "cup"]


def test_country_is_a_country_code_not_a_region_label():
    with pytest.raises(Exception, match="ISO 3166-1 alpha-2"):
        config.load_text('[terminal]\ncountry = "north"\n', "x.toml")


def test_the_devices_page_no_longer_says_a_missing_sim_stays_onsite():
    from tests.conftest import ROOT

    text = (ROOT / "docs" / "devices.md").read_text(encoding="utf-8")
    assert "stays\n`onsite`" not in text and "stays `onsite`" not in text
    assert KB.causes["network.no_link"].dispatch == "merchant"
