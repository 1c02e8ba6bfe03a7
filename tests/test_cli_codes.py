"""`codes search` by words, stems (zh and en) and code prefixes; `codes show` suggests what
a person may have meant."""

import pytest

from agent.codesearch import stems, suggestions
from agent.knowledge import load
from tests.conftest import run_cli

KB = load()
ORDER = ["iso8583", "cup", "terminal", "exception"]


def found(query: str) -> list[tuple[str, str]]:
    return [(c.scheme, c.code) for c in KB.search(query, ORDER)]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("timeout", {("cup", "68"), ("cup", "98")}),  # "timed out": stems joined
        ("timeouts", {("cup", "68")}),
        ("timed out", {("cup", "98")}),
        ("打印", {("terminal", "3000"), ("terminal", "E3")}),  # a cause's title: 打印纸用完…
        ("insufficient funds", {("iso8583", "51")}),
        ("INSUFFICIENT", {("iso8583", "51")}),
        ("签到", {("cup", "A0"), ("cup", "99")}),
        ("余额", {("iso8583", "51")}),
    ],
)
def test_words_and_stems_in_both_languages(query, expected):
    assert expected <= set(found(query))


def test_paper_finds_the_codes_a_paper_fault_explains():
    """Through the code's meaning, a cause's title, the title of a finding that supports a cause,
    or, for a generic code (3000, E3), any cause the probes can bring."""
    hits = KB.search("paper", ORDER)
    assert hits
    for code in hits:
        causes = KB.causes if code.open else code.causes
        texts = [code.meaning.en] + [KB.causes[c].title.en for c in causes]
        texts += [KB.findings[f].en for c in causes for f in KB.causes[c].support if f in KB.findings]
        assert any("paper" in t.lower() for t in texts), code.code


@pytest.mark.parametrize("query", ["paper out", "缺纸", "打印纸"])
def test_a_paper_fault_finds_the_generic_terminal_codes_too(query):
    """3000 and E3 have no meaning of their own: the probes decide, and paper out is one of the
    things they find. A technician who searches for it must see them."""
    assert {"3000", "E3"} <= {code for _, code in found(query)}
    assert {"00", "10"} <= {code for _, code in found(query)}  # approvals whose receipt did not come out


def test_a_code_prefix_finds_codes_first():
    assert found("51")[0] == ("iso8583", "51")
    assert {code for _, code in found("5")} >= {"51", "54", "55"}
    assert all(code.startswith("5") for _, code in found("5")[:3])


def test_meaning_matches_rank_before_cause_matches():
    hits = found("timeout")
    assert hits.index(("cup", "68")) < hits.index(("exception", "CommunicationError"))


def test_nothing_found():
    assert found("no such words anywhere") == [] and found("   ") == []


def test_stems_join_adjacent_words():
    assert "timeout" in stems("transaction timed out") and "time" in stems("timed")


def test_show_suggests_the_padded_code():
    assert suggestions(KB, "5") == ["05"] and suggestions(KB, "05") == [] and suggestions(KB, "nope") == []
    proc = run_cli("codes", "show", "5", "--lang", "en")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == "5: not in the knowledge base; did you mean 05?\n"


def test_cli_search_prints_no_match_on_stderr():
    proc = run_cli("codes", "search", "zzzz", "qqqq", "--lang", "en")
    assert proc.returncode == 1 and proc.stdout == "" and proc.stderr == "no match\n"
    hit = run_cli("codes", "search", "timed", "out", "--lang", "en")
    assert hit.returncode == 0 and "transaction timed out" in hit.stdout and hit.stderr == ""


def test_cli_show_names_the_scheme_diagnose_uses():
    proc = run_cli("codes", "show", "12", "--lang", "en")
    lines = proc.stdout.splitlines()
    entries = [i for i, line in enumerate(lines) if line.startswith("12 (")]
    assert lines[entries[0]].startswith("12 (iso8583):") and len(entries) > 1
    marks = [i for i, line in enumerate(lines) if "answers the bare code" in line]
    assert len(marks) == 1 and entries[0] < marks[0] < entries[1]
