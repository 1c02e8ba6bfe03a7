"""Outcome records at the terminal (agent/visits.py) and in the outbox (agent/outbox.py,
agent/upload.py): checked and signed, ordered after older bundles, never evicted, and
held back while an older bundle waits. The trip to a real server: tests/server/test_server_visit.py."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from agent import knowledge, visits
from agent.outbox import Outbox
from agent.upload import OLDER_BUNDLE_WAITING, send_outcomes
from probes.contract.errors import UsageError
from remote.client import Client
from remote.outcome_wire import record_signature
from tests.conftest import ROOT

KB = knowledge.load()
TOKEN = "pdt_visit-token"
NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def record(found: str = "printer.mechanism_fault", fixed: bool | None = True, **kw) -> dict:
    return visits.make_record(KB, "T-9", TOKEN, found, fixed, now=NOW, **kw)


def test_a_record_is_signed_with_the_terminals_token_and_masks_card_data():
    made = record(note="card 4111 1111 1111 1111 stuck in the slot", by="li.wei")
    assert made["signature"] == record_signature(hashlib.sha256(TOKEN.encode()).digest(), made)
    assert "4111 1111 1111 1111" not in made["note"] and "stuck in the slot" in made["note"]
    assert (made["visited_at"], made["bundle_id"], made["by"]) == ("2026-03-01T10:00:00.000000Z", None, "li.wei")
    tampered = dict(made, found="nothing")
    assert tampered["signature"] != record_signature(hashlib.sha256(TOKEN.encode()).digest(), tampered)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"found": "printer.mechanism_falt"}, "did you mean printer.mechanism_fault"),
        ({"found": "paper"}, "codes show"),
        ({"found": "other"}, "--note"),
        ({"found": "printer.paper_out", "fixed": None}, "--fixed or --not-fixed"),
        ({"found": "nothing", "fixed": None, "bundle_id": "B-7"}, "not a bundle id"),
        ({"found": "nothing", "fixed": None, "note": "x" * 501}, "500"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(kwargs, message):
    args = {"found": "printer.mechanism_fault", "fixed": True, **kwargs}
    with pytest.raises(UsageError, match=message):
        visits.make_record(KB, "T-9", TOKEN, args.pop("found"), args.pop("fixed"), now=NOW, **args)


def test_a_record_goes_after_every_bundle_in_the_outbox_even_when_the_clock_went_back(tmp_path):
    outbox = Outbox(tmp_path / "out", 1 << 20)
    later = outbox.put(b"bundle bytes", "b-1", now=NOW + timedelta(days=1))
    entry = outbox.put_outcome(json.dumps(record()).encode(), "o-1", now=NOW)
    assert entry.stamp > later.stamp
    assert [e.bundle_id for e in outbox.entries()] == ["b-1"]  # a bundle flush never sees a record
    assert [e.bundle_id for e in outbox.outcome_entries()] == ["o-1"]


def test_the_byte_cap_never_evicts_a_record(tmp_path):
    outbox = Outbox(tmp_path / "out", 3000)
    visits.put(outbox, record())
    for i in range(5):
        outbox.put(bytes(1000), f"b-{i}", now=NOW + timedelta(seconds=i))
    assert len(outbox.outcome_entries()) == 1 and len(outbox.entries()) < 5


def test_a_record_waits_while_an_older_bundle_waits(tmp_path):
    outbox = Outbox(tmp_path / "out", 1 << 20)
    outbox.put(b"bundle bytes", "b-1", now=NOW)
    visits.put(outbox, record())
    nowhere = SimpleNamespace(server_url="http://127.0.0.1:9", token=TOKEN, ca_file="", connect_timeout_seconds=1.0,
                              read_timeout_seconds=1.0, max_attempts=1, backoff_initial_seconds=0.0,
                              backoff_max_seconds=0.0, retry_after_max_seconds=0.0)  # fmt: skip
    with outbox.flushing():
        report = send_outcomes(outbox, Client(nowhere))
    assert (report.stopped, report.sent, report.remaining) == (OLDER_BUNDLE_WAITING, [], 1)


def test_the_idle_agent_loads_nothing_of_outcomes_or_learning():
    code = "import sys, agent.resident; print([m for m in ('agent.learned', 'agent.visits', 'agent.learned_table', 'agent.upload') if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]"
