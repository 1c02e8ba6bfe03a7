"""The server's reading of the knowledge base (remote/server/outcomes/knowledge.py) answers
what the terminal's loader (agent/knowledge.py) answers, for every cause and code, with an
operator's extra file replacing a packaged entry on both sides."""

from __future__ import annotations

import pytest

from agent import knowledge as agent_knowledge
from remote.outcome_wire import code_key
from remote.server.outcomes import knowledge


def agree(extra: tuple[str, ...]) -> None:
    kb, view = agent_knowledge.load(extra), knowledge.load(extra)
    assert view.dispatch == {cid: cause.dispatch for cid, cause in kb.causes.items()}
    assert view.open_prior == kb.open_prior
    expected = {code_key(c.scheme, c.code): (c.host_answer, c.open, c.causes) for c in kb.codes.values()}
    assert {k: (c.host_answer, c.open, c.causes) for k, c in view.codes.items()} == expected


def test_packaged_knowledge_reads_the_same_on_both_sides():
    agree(())


def test_an_operators_file_replaces_a_packaged_code_on_both_sides(tmp_path):
    vendor = tmp_path / "acme.toml"
    vendor.write_text(
        'scheme = "terminal"\n'
        '[codes."E3"]\nmeaning = { zh = "通用", en = "generic" }\nhost_answer = false\nopen = true\n'
        'causes = { "printer.not_connected" = 0.7, "printer.paper_out" = 0.3 }\n',
        encoding="utf-8",
    )
    agree((str(vendor),))
    assert knowledge.load((str(vendor),)).codes["terminal:e3"].causes == {"printer.not_connected": 0.7, "printer.paper_out": 0.3}


def test_a_missing_extra_path_is_a_clear_error(tmp_path):
    with pytest.raises(knowledge.KnowledgeError, match="knowledge_extra_paths"):
        knowledge.load((str(tmp_path / "nope.toml"),))
