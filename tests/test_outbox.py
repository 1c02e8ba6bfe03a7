import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from agent import bundle
from agent.outbox import Outbox
from tests.conftest import ROOT, run_cli
from tests.uploadserver import UploadServer

TOKEN = "outbox-token"


def make_bundle(n: int = 0, logs_bytes: int = 0) -> bundle.Bundle:
    inp = bundle.BundleInput(
        terminal={"id": "T-1"},
        trigger=bundle.Trigger("scheduled"),
        diagnosis={"n": n, "noise": os.urandom(logs_bytes).hex()},
        probes={},
        system={},
    )
    return bundle.build(inp, bundle.Limits(), TOKEN)


def test_put_is_whole_and_in_creation_order(tmp_path):
    outbox = Outbox(tmp_path / "out", 1 << 30)
    made = [make_bundle(i) for i in range(5)]
    for b in made:
        outbox.put(b.data, b.bundle_id)
    entries = outbox.entries()
    assert [e.bundle_id for e in entries] == [b.bundle_id for b in made]
    assert [e.name for e in entries] == sorted(set(os.listdir(tmp_path / "out")) - {"dead", "state.json", ".lock"})
    assert all(e.path.read_bytes() == b.data for e, b in zip(entries, made, strict=True))
    assert not list((tmp_path / "out").glob(".tmp-*"))


def test_clock_going_back_keeps_order(tmp_path):
    outbox = Outbox(tmp_path, 1 << 30)
    now = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    first, second = make_bundle(1), make_bundle(2)
    outbox.put(first.data, first.bundle_id, now=now)
    outbox.put(second.data, second.bundle_id, now=now - timedelta(days=3650))  # clock reset to 2016
    assert [e.bundle_id for e in outbox.entries()] == [first.bundle_id, second.bundle_id]


def test_temp_files_ignored_and_cleaned_unless_writer_lives(tmp_path):
    outbox = Outbox(tmp_path, 1 << 30)
    dead_writer = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stale = tmp_path / f".tmp-{dead_writer.stdout.strip()}-abc"
    stale.write_bytes(b"half a bundle")
    live = tmp_path / f".tmp-{os.getpid()}-def"
    live.write_bytes(b"being written")
    assert outbox.entries() == []
    Outbox(tmp_path, 1 << 30)
    assert not stale.exists() and live.exists()


def test_byte_cap_evicts_oldest_and_counts_until_reported(tmp_path):
    made = [make_bundle(i, logs_bytes=3000) for i in range(6)]
    size = len(made[0].data)
    outbox = Outbox(tmp_path, int(size * 3.5))
    for b in made[:5]:
        outbox.put(b.data, b.bundle_id)
    assert [e.bundle_id for e in outbox.entries()] == [b.bundle_id for b in made[2:5]]
    assert outbox.pending_evicted() == 2
    assert json.loads((tmp_path / "state.json").read_text()) == {"evicted": 2}
    assert Outbox(tmp_path, int(size * 3.5)).pending_evicted() == 2  # survives a restart
    # the next bundle's manifest reports 2; once it is stored the count starts again (plus its own eviction)
    outbox.put(made[5].data, made[5].bundle_id, reported_evicted=2)
    assert outbox.pending_evicted() == 1
    assert made[5].bundle_id in [e.bundle_id for e in outbox.entries()]


def test_newest_bundle_is_kept_even_over_the_cap(tmp_path):
    outbox = Outbox(tmp_path, 100)
    b = make_bundle()
    outbox.put(b.data, b.bundle_id)
    assert [e.bundle_id for e in outbox.entries()] == [b.bundle_id]


def test_dead_letters_go_first_and_uncounted(tmp_path):
    made = [make_bundle(i, logs_bytes=3000) for i in range(4)]
    size = len(made[0].data)
    outbox = Outbox(tmp_path, int(size * 2.5))
    outbox.put(made[0].data, made[0].bundle_id)
    outbox.dead_letter(outbox.entries()[0], {"status": 422, "error": "bad_signature"})
    assert json.loads((tmp_path / "dead" / (outbox.dead_entries()[0].name[:-7] + ".reason.json")).read_text())["status"] == 422
    outbox.put(made[1].data, made[1].bundle_id)
    outbox.put(made[2].data, made[2].bundle_id)
    assert outbox.dead_entries() == [] and list((tmp_path / "dead").iterdir()) == []
    assert outbox.pending_evicted() == 0
    assert len(outbox.entries()) == 2


WRITER = """
import hashlib, os, sys, uuid
sys.path.insert(0, {root!r})
from agent.outbox import Outbox
outbox = Outbox({path!r}, {cap})
body = os.urandom({size})
print("ready", flush=True)
for n in range(1 << 30):
    part = n.to_bytes(8, "big") + body
    outbox.put(hashlib.sha256(part).digest() + part, str(uuid.uuid4()))
"""


def test_sigkill_while_writing_leaves_whole_files_only(tmp_path):
    """The outbox does not look inside what it stores: big opaque payloads make the
    write+fsync window wide enough for the kills to land inside it."""
    size = 4 << 20
    script = WRITER.format(root=str(ROOT), path=str(tmp_path), cap=3 * size + 1000, size=size)
    rng = random.Random(3)
    caught_mid_write = 0
    for attempt in range(40):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.02, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        caught_mid_write += bool(list(tmp_path.glob(".tmp-*")))
        if caught_mid_write >= 3 and attempt >= 8:
            break
    assert caught_mid_write, "no kill landed inside a write"
    outbox = Outbox(tmp_path, 3 * size + 1000)
    assert not list(tmp_path.glob(".tmp-*"))
    entries = outbox.entries()
    assert entries
    for entry in entries:
        data = entry.path.read_bytes()
        assert len(data) == 32 + 8 + size and hashlib.sha256(data[32:]).digest() == data[:32], entry.name


def test_cli_list_and_flush(tmp_path):
    outbox = Outbox(tmp_path / "out", 1 << 30)
    made = [make_bundle(i) for i in range(3)]
    for b in made:
        outbox.put(b.data, b.bundle_id)
    with UploadServer(TOKEN) as server:
        config = tmp_path / "posdiag.toml"
        config.write_text(
            f'[outbox]\ndir = "{tmp_path / "out"}"\n'
            f'[upload]\nserver_url = "{server.url}"\ntoken = "{TOKEN}"\nbackoff_initial_seconds = 0.05\n'
        )
        listed = run_cli("outbox", "list", "--json", "--config", str(config))
        assert [w["bundle_id"] for w in json.loads(listed.stdout)["waiting"]] == [b.bundle_id for b in made]
        table = run_cli("outbox", "list", "--config", str(config))
        assert "3 waiting, 0 refused" in table.stdout
        server.faults.extend(["503", "429:1"])
        flushed = run_cli("outbox", "flush", "--config", str(config))
        assert flushed.returncode == 0, flushed.stderr
        assert "sent 3" in flushed.stdout and "[3/3]" in flushed.stderr
        assert server.store_order == [b.bundle_id for b in made]
    assert outbox.entries() == []
    again = run_cli("outbox", "flush", "--config", str(config))
    assert again.returncode == 0 and "sent 0" in again.stdout
