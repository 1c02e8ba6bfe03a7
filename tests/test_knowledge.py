"""The knowledge base as shipped, and its schema check (errors name file and key)."""

from pathlib import Path

import pytest

from agent import config, knowledge
from agent.knowledge import CATEGORIES, ROLES, RUNNER_FINDINGS
from probes import all_finding_ids
from probes.contract.errors import ConfigError, UsageError

ORDER = ("iso8583", "cup", "terminal", "exception")
ISSUE_CODES = (
    "00 01 03 04 05 06 12 13 14 15 19 21 25 30 33 34 38 39 40 41 43 51 54 55 57 58 59 61 62 63 "
    "64 65 75 76 77 90 91 92 94 96 97 98 99 A0"
).split()
TERMINAL_CODES = ("E3", "3000", "1", "2", "3", "4")
EXCEPTIONS = ("ConnectError", "TransactionFailed", "DuplicateTransactionError", "CommunicationError", "DataTransferError")


@pytest.fixture(scope="module")
def kb():
    return knowledge.load()


def has_text(text) -> bool:
    return bool(text.zh.strip()) and bool(text.en.strip()) and text.zh != text.en


@pytest.mark.parametrize("code", ISSUE_CODES)
def test_every_response_code_of_the_issue_is_covered(kb, code):
    found = kb.lookup(code, None, ORDER)
    assert found is not None and found.scheme in ("iso8583", "cup")
    assert found.host_answer


@pytest.mark.parametrize(("scheme", "code"), [("terminal", c) for c in TERMINAL_CODES] + [("exception", c) for c in EXCEPTIONS])
def test_terminal_codes_and_exceptions_are_covered_and_local(kb, scheme, code):
    found = kb.lookup(code, None, ORDER)
    assert found is not None and found.scheme == scheme
    assert not found.host_answer


def test_generic_codes_are_open(kb):
    assert kb.lookup("E3", None, ORDER).open
    assert kb.lookup("3000", None, ORDER).open


def test_every_code_and_cause_has_both_languages_and_an_action_per_role(kb):
    for code in kb.codes.values():
        assert has_text(code.meaning), code.code
        assert code.causes or code.open, code.code
    for cause in kb.causes.values():
        assert has_text(cause.title), cause.id
        assert cause.category in CATEGORIES
        for role in ROLES:
            assert cause.actions[role], (cause.id, role)
            for action in cause.actions[role]:
                assert action.zh.strip() and action.en.strip(), (cause.id, role)


def test_every_probe_finding_has_a_title_in_both_languages(kb):
    for fid in sorted(all_finding_ids() | RUNNER_FINDINGS):
        assert fid in kb.findings, f"{fid} has no title in config/knowledge/findings.toml"
        assert has_text(kb.findings[fid]), fid


def test_every_finding_has_a_cause_it_supports(kb):
    supported = {fid for cause in kb.causes.values() for fid in cause.support}
    assert all_finding_ids() - supported == set()


def test_finding_title_helper_falls_back_to_the_id():
    assert knowledge.finding_title("printer.paper_out", "zh") == "缺纸（打印纸用完）"
    assert knowledge.finding_title("printer.paper_out", "en") == "paper out"
    assert knowledge.finding_title("vendor.thing", "en") == "vendor.thing"


def test_03_is_an_invalid_merchant_and_nothing_about_the_card(kb):
    """ISO 8583:1987 and UnionPay: 03 无效商户. The popular reading (invalid card, low balance)
    is 14 and 51; none of 03's causes is a card one."""
    code = kb.lookup("03", None, ORDER)
    assert code.scheme == "iso8583"
    assert (code.meaning.en, code.meaning.zh) == ("invalid merchant", "无效商户")
    assert {kb.causes[c].category for c in code.causes} == {"merchant"}


def test_cup_codes_are_found_after_iso_and_by_scheme(kb):
    assert kb.lookup("A0", None, ORDER).scheme == "cup"
    assert kb.lookup("12", None, ORDER).scheme == "iso8583"
    assert kb.lookup("12", "cup", ORDER).meaning.zh == "无效的关联交易"
    assert kb.lookup("51", "terminal", ORDER) is None


def test_lookup_ignores_case_and_spaces(kb):
    assert kb.lookup(" a0 ", None, ORDER).code == "A0"
    assert kb.lookup("communicationerror", None, ORDER).code == "CommunicationError"


def test_search_matches_either_language(kb):
    assert {(c.scheme, c.code) for c in kb.search("签到")} >= {("cup", "A0"), ("cup", "99")}
    assert ("iso8583", "51") in {(c.scheme, c.code) for c in kb.search("INSUFFICIENT")}
    assert kb.search("no such words anywhere") == []


# --- the schema check -------------------------------------------------------------------

GOOD_CAUSE = """
[causes."printer.vendor_jam"]
category = "printer"
dispatch = "onsite"
title = { zh = "卡纸", en = "paper jam" }
support = { "printer.offline" = 1.0 }
actions.merchant = [{ zh = "清除卡纸", en = "Clear the jam" }]
actions.technician = [{ zh = "清除卡纸", en = "Clear the jam" }]
actions.support = [{ zh = "指导商户", en = "Guide the merchant" }]
"""


def write(tmp_path: Path, text: str, name: str = "vendor.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (GOOD_CAUSE.replace(', en = "paper jam"', ""), "causes.printer.vendor_jam.title.en"),
        (GOOD_CAUSE.replace('"printer.offline"', '"printer.on_fire"'), "causes.printer.vendor_jam.support.printer.on_fire"),
        (GOOD_CAUSE.replace('"printer.offline" = 1.0', '"printer.offline" = "big"'), "causes.printer.vendor_jam.support.printer.offline"),
        (GOOD_CAUSE.replace('dispatch = "onsite"', 'dispatch = "maybe"'), "causes.printer.vendor_jam.dispatch"),
        (GOOD_CAUSE.replace('category = "printer"', 'category = "reader"'), "causes.printer.vendor_jam"),
        (GOOD_CAUSE.replace('actions.support = [{ zh = "指导商户", en = "Guide the merchant" }]', "actions.support = []"), "causes.printer.vendor_jam.actions.support"),
        (GOOD_CAUSE + "colour = 3\n", "causes.printer.vendor_jam.colour"),
        ('scheme = "vendor"\n[codes.P9]\nmeaning = { zh = "纸", en = "paper" }\nhost_answer = false\ncauses = { "printer.nope" = 1 }\n', "codes.P9.causes.printer.nope"),
        ('scheme = "vendor"\n[codes.P9]\nmeaning = { zh = "纸", en = "paper" }\nhost_answer = "no"\ncauses = {}\n', "codes.P9.host_answer"),
        ('scheme = "vendor"\n[codes.P9]\nmeaning = { zh = "纸", en = "paper" }\nhost_answer = true\nopen = true\ncauses = {}\n', "codes.P9.open"),
        ('[codes.P9]\nmeaning = { zh = "纸", en = "paper" }\nhost_answer = false\ncauses = {}\n', "scheme"),
        ('[dispatch.onsite]\nrank = 2\nreason = { zh = "{oops}", en = "x" }\nescalated = { zh = "x", en = "x" }\n', "dispatch.onsite.reason"),
        ("[engine]\nopen_prior = 0\n", "engine.open_prior"),
        ('[dispatch.onsite]\nrank = 1\nreason = { zh = "x", en = "y" }\nescalated = { zh = "x", en = "y" }\n', "dispatch"),
        ("[widgets]\n", "widgets"),
    ],
)
def test_a_malformed_file_is_named_with_the_key(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        knowledge.load((str(path),))
    assert caught.value.source == str(path)
    assert caught.value.key == key
    assert str(path) in str(caught.value) and key in str(caught.value)


def test_invalid_toml_names_the_file(tmp_path):
    path = write(tmp_path, "[causes\n")
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        knowledge.load((str(path),))
    assert caught.value.source == str(path)


def test_a_missing_extra_path_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        knowledge.load((str(tmp_path / "absent.toml"),))


VENDOR_TABLE = 'scheme = "vendor"\n' + GOOD_CAUSE + """

[codes.P9]
meaning = { zh = "打印机卡纸", en = "printer jammed" }
host_answer = false
causes = { "printer.vendor_jam" = 0.7, "printer.mechanism_fault" = 0.3 }
"""
REPLACED_51 = """
scheme = "iso8583"

[codes."51"]
meaning = { zh = "余额不足（本行）", en = "insufficient funds (our wording)" }
host_answer = true
causes = { "card.insufficient_funds" = 1.0 }
"""


def test_an_operator_adds_a_vendor_table_and_replaces_a_code(tmp_path):
    tables = tmp_path / "knowledge.d"
    tables.mkdir()
    write(tables, VENDOR_TABLE, "a_vendor.toml")
    write(tables, REPLACED_51, "b_ours.toml")
    conf = write(
        tmp_path,
        f'[knowledge]\nextra_paths = ["{tables}"]\nscheme_order = ["iso8583", "cup", "vendor"]\n',
        "posdiag.toml",
    )
    kb = knowledge.load_for(config.load(str(conf)))
    order = config.load(str(conf)).section("knowledge").scheme_order
    assert kb.lookup("p9", None, order).causes["printer.vendor_jam"] == 0.7
    assert kb.lookup("51", None, order).meaning.en == "insufficient funds (our wording)"
    assert kb.lookup("E3", None, order) is None  # terminal is not in this operator's order


def test_scheme_order_naming_an_unknown_scheme_is_a_config_error(tmp_path):
    conf = write(tmp_path, '[knowledge]\nscheme_order = ["iso8583", "visa"]\n', "posdiag.toml")
    with pytest.raises(ConfigError) as caught:
        knowledge.load_for(config.load(str(conf)))
    assert caught.value.key == "knowledge.scheme_order[1]"
    assert caught.value.source == str(conf)


def test_an_entry_defined_twice_in_the_packaged_set_names_both_files(tmp_path):
    first, second = write(tmp_path, GOOD_CAUSE, "one.toml"), write(tmp_path, GOOD_CAUSE, "two.toml")
    builder = knowledge._Builder()
    builder.add_file(first, replace=False)
    with pytest.raises(ConfigError, match="defined twice") as caught:
        builder.add_file(second, replace=False)
    assert caught.value.source == str(second) and str(first) in str(caught.value)
    assert caught.value.key == "causes.printer.vendor_jam"


# --- issue 11: UnionPay readings, approvals, pick-up codes, scheme hints ------------------

@pytest.mark.parametrize(
    ("scheme", "code", "zh"),
    [
        ("cup", "21", "卡未初始化或睡眠卡"),
        ("cup", "22", "故障怀疑，关联交易错误"),
        ("cup", "77", "需要向网络中心签到"),
        ("cup", "79", "脱机交易对账不平"),
        ("cup", "98", "发卡方超时"),
        ("iso8583", "56", "无此卡记录"),
        ("iso8583", "63", "侵犯安全"),
        ("iso8583", "21", "不做任何处理"),
        ("cup", "05", "持卡人认证失败"),
        ("iso8583", "93", "交易违法，不能完成"),
        ("iso8583", "95", "调节控制错"),
        ("iso8583", "08", "凭身份证件承兑"),
        ("iso8583", "10", "部分承兑"),
        ("iso8583", "11", "重要人物批准（VIP）"),
    ],
)
def test_unionpay_and_iso_readings_in_the_words_technicians_use(kb, scheme, code, zh):
    found = kb.lookup(code, scheme, ORDER)
    assert found is not None and zh in found.meaning.zh and found.host_answer


@pytest.mark.parametrize("code", ["33", "36", "38"])
def test_pick_up_codes_say_so_in_meaning_and_actions(kb, code):
    found = kb.lookup(code, None, ORDER)
    assert "没收卡" in found.meaning.zh and "pick up" in found.meaning.en
    top = max(found.causes, key=found.causes.get)
    merchant = " ".join(a.en for a in kb.causes[top].actions["merchant"])
    assert "pick-up" in merchant and "Do not hand the card back" in merchant


def test_33_and_54_no_longer_read_the_same(kb):
    assert kb.lookup("33", None, ORDER).meaning != kb.lookup("54", None, ORDER).meaning


def test_63_carries_the_issuer_refusal_reading(kb):
    assert "card.issuer_declined" in kb.lookup("63", None, ORDER).causes


def test_no_security_cause_takes_the_clock_as_evidence(kb):
    clock = {"system.clock_unset", "network.clock_skew"}
    for cause in kb.causes.values():
        if cause.category == "security":
            assert not clock & set(cause.support), cause.id
    assert "software.clock_wrong" not in kb.lookup("A0", "cup", ORDER).causes


def test_the_merchant_class_sits_between_none_and_remote(kb):
    ranks = {v.id: v.rank for v in kb.verdicts.values()}
    assert sorted(ranks, key=ranks.get) == ["none", "merchant", "remote", "onsite"]
    assert kb.verdicts["onsite"].unfixed is not None
    assert {kb.causes[c].dispatch for c in ("printer.paper_out", "printer.cover_open", "power.battery_low")} == {"merchant"}


def hinted(kb, code, scheme, strict=False):
    from agent.diagnosis import explain
    from agent.model import Sweep

    return explain(kb, code, scheme, ORDER, Sweep([], "2026-11-30T00:00:00+00:00", 1.0), strict)


def test_a_hinted_scheme_without_the_code_falls_back_to_scheme_order_and_says_which_answered(kb):
    from agent.explain import diagnosis_text

    d = hinted(kb, "E3", "iso8583")
    assert (d.error.known, d.error.scheme, d.error.asked.scheme, d.error.asked.strict) == (True, "terminal", "iso8583", False)
    assert "not in iso8583, the scheme the error named; terminal answered" in diagnosis_text(d, "en", "technician")
    assert "来源指定的码制 iso8583 中没有此码" in diagnosis_text(d, "zh", "technician")
    assert hinted(kb, "22", "cup").error.scheme == "cup"  # a hint that knows the code answers first
    assert hinted(kb, "51", "no-such-scheme").error.scheme == "iso8583"  # an unknown hint is only a hint


def test_a_strict_scheme_without_the_code_says_so(kb):
    d = hinted(kb, "3000", "iso8583", strict=True)
    assert not d.error.known and d.error.asked.known_in == ("terminal",)
    with pytest.raises(UsageError):
        hinted(kb, "51", "no-such-scheme", strict=True)
