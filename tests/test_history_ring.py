"""The health history ring: fixed slots overwritten in place, torn slots skipped."""

import json

from agent.history import HistoryRing


def test_the_ring_keeps_the_newest_in_order_and_never_grows_past_its_slots(tmp_path):
    ring = HistoryRing(tmp_path / "history.jsonl", capacity=5)
    for n in range(12):
        ring.append({"at": f"t{n:02d}", "battery_pct": n})
    assert [e["battery_pct"] for e in ring.read()] == [7, 8, 9, 10, 11]
    assert (tmp_path / "history.jsonl").stat().st_size == 5 * HistoryRing.SLOT_BYTES
    assert ring.latest() == {"at": "t11", "battery_pct": 11}


def test_a_snapshot_overwrites_one_slot_in_place(tmp_path):
    path = tmp_path / "history.jsonl"
    ring = HistoryRing(path, capacity=4)
    for n in range(4):
        ring.append({"at": f"t{n}"})
    inode = path.stat().st_ino
    before = path.read_bytes()
    ring.append({"at": "t4"})
    after = path.read_bytes()
    changed = [i for i in range(4) if before[i * 512:(i + 1) * 512] != after[i * 512:(i + 1) * 512]]
    assert changed == [0] and path.stat().st_ino == inode


def test_a_restarted_agent_continues_after_the_newest_slot(tmp_path):
    path = tmp_path / "history.jsonl"
    HistoryRing(path, 3).append({"at": "a"})
    HistoryRing(path, 3).append({"at": "b"})
    ring = HistoryRing(path, 3)
    for at in "cde":
        ring.append({"at": at})
    assert [e["at"] for e in HistoryRing(path, 3).read()] == ["c", "d", "e"]


def test_a_slot_torn_by_a_power_cut_is_skipped(tmp_path):
    path = tmp_path / "history.jsonl"
    ring = HistoryRing(path, 3)
    for at in "abc":
        ring.append({"at": at})
    raw = bytearray(path.read_bytes())
    raw[512 + 5:512 + 40] = b"\x00" * 35  # slot 1 half written
    path.write_bytes(bytes(raw))
    assert [e["at"] for e in HistoryRing(path, 3).read()] == ["a", "c"]


def test_an_oversized_snapshot_drops_keys_but_keeps_its_time(tmp_path):
    ring = HistoryRing(tmp_path / "history.jsonl", 2)
    ring.append({"at": "t0", **{f"free_mib[/mnt/{n}]": 1.0 for n in range(100)}})
    [entry] = ring.read()
    assert entry["at"] == "t0" and 0 < len(entry) < 101


def test_the_older_append_only_file_is_read_and_then_overwritten(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps({"at": f"old{n}"}) + "\n" for n in range(3)))
    ring = HistoryRing(path, 10)
    assert [e["at"] for e in ring.read()] == ["old0", "old1", "old2"]
    ring.append({"at": "new"})
    assert ring.read()[-1] == {"at": "new"}
