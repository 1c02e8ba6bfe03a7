"""docs/knowledge.md as written: its agent example config, read from the page, turns log lines
into diagnoses through the agent's real log source and pipeline; its shell examples run."""

import json
import re

import pytest

from agent import bundle, config, pipeline
from agent.jobs import resident_view
from agent.resident import ResidentConfig, Sources
from agent.outbox import Outbox
from agent.state import StateFile
from probes.emulators import SimulatedTerminal
from tests.conftest import ROOT, run_example

DOC = (ROOT / "docs" / "knowledge.md").read_text(encoding="utf-8")
TERMINAL_MEANING = "generic terminal error (no public definition; the checks decide)"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, flags=re.S)


def test_the_documented_log_source_diagnoses_E3_and_3000_with_their_terminal_meanings(tmp_path):
    (example,) = [b for b in blocks("toml") if "[[daemon.log_sources]]" in b]
    log = tmp_path / "app.log"
    log.write_text("")
    source = example.replace('"/var/log/payapp/app.log"', json.dumps(str(log)))
    assert source != example
    conf = tmp_path / "agent.toml"
    conf.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n' + source, encoding="utf-8")
    with SimulatedTerminal.from_spec("healthy") as sim:
        cfg = config.load(str(conf), sim.overrides)
        view = ResidentConfig(resident_view(cfg))
        (follower,) = Sources(view, StateFile(tmp_path / "state" / "sources.json"), lambda event: None).followers
        follower.poll(first=True)
        with log.open("a", encoding="utf-8") as fh:
            fh.write("10:00:01 交易失败 错误码：E3\n10:00:09 签到失败 错误码: 3000\n")
        events = follower.poll()
        assert [(e.code, e.scheme) for e in events] == [("E3", "iso8583"), ("3000", "iso8583")]
        outbox = Outbox(tmp_path / "outbox", 1 << 20)
        docs = []
        for event in events:
            trigger = bundle.Trigger("error", event.code, event.scheme)
            outcome = pipeline.run(cfg, outbox, trigger, event.id, [event.record()], [])
            docs.append(outcome.diagnosis.to_dict())
    for doc, code in zip(docs, ("E3", "3000"), strict=True):
        assert doc["error"]["code"] == code and doc["error"]["known"] is True
        assert doc["error"]["scheme"] == "terminal"
        assert doc["error"]["meaning"]["en"] == TERMINAL_MEANING
        assert doc["error"]["asked"] == {"scheme": "iso8583", "strict": False, "known_in": []}
        assert "software.unexplained" not in [c["id"] for c in doc["causes"]]  # the code's own causes compete
    assert len(outbox.entries()) == 2


@pytest.mark.parametrize("script", blocks("sh"), ids=lambda s: s.splitlines()[-1][:40])
def test_every_shell_example_runs_as_written(script, tmp_path):
    proc = run_example(script, tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_the_running_agent_takes_a_log_sources_scheme_as_a_hint(agent):
    a = agent()  # its log source names scheme = "iso8583" (tests/agent_harness.py)
    a.start()
    a.write("2026-11-30 10:00:01 txn 000125 response code: E3")
    (found,) = a.wait_for(1, 5.0)
    assert (found["code"], found["scheme"]) == ("E3", "terminal")
    assert found["top_cause"] != "software.unexplained"
    error = a.detail(found["id"])["diagnosis"]["error"]
    assert error["asked"] == {"scheme": "iso8583", "strict": False, "known_in": []}
    assert a.stop() < 2.0
