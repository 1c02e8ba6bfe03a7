import json
import shutil
import re
import socket
import threading

from agent.local_socket import LocalSocket
from agent.sources import LastErrorFile, LogFollower, OffsetLedger, parse_event_document

PATTERN = [re.compile(r"(?:response code|应答码)[:=]\s*(?P<code>[0-9A-Z]{2})"), re.compile(r"错误码[:：]\s*(?P<code>\w+)")]


def follower(path, saved=None):
    return LogFollower(path, PATTERN, "iso8583", saved or {})


def append(path, text, encoding="utf-8"):
    with path.open("ab") as fh:
        fh.write(text.encode(encoding))


def test_first_start_skips_history_then_follows_new_lines(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("old response code: 05\n")
    f = follower(log)
    assert f.poll(first=True) == []
    append(log, "txn ok\nresponse code: 51 amount 100\n")
    events = f.poll()
    assert [(e.code, e.scheme) for e in events] == [("51", "iso8583")]
    assert "amount 100" in events[0].context["line"]


def test_partial_line_waits_for_its_end(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("")
    f = follower(log)
    f.poll(first=True)
    append(log, "response co")
    assert f.poll() == []
    append(log, "de: 96\n")
    assert [e.code for e in f.poll()] == ["96"]


def test_rotation_reads_the_rest_of_the_old_file_then_the_new_one(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("")
    f = follower(log)
    f.poll(first=True)
    append(log, "response code: 14\n")
    log.rename(tmp_path / "app.log.1")
    log.write_text("错误码: E3\n")
    assert [e.code for e in f.poll()] == ["14", "E3"]


def test_truncation_starts_over(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("x" * 100 + "\n")
    f = follower(log)
    f.poll(first=True)
    log.write_text("response code: 55\n")  # copytruncate, then a short new line
    assert [e.code for e in f.poll()] == ["55"]


def test_gb18030_logs_and_card_data_redacted_in_context(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("")
    f = follower(log)
    f.poll(first=True)
    append(log, "应答码=05 卡号 4111111111111111\n", encoding="gb18030")
    (event,) = f.poll()
    assert event.code == "05"
    assert "4111111111111111" not in json.dumps(event.record(), ensure_ascii=False)
    assert "411111" in event.context["line"]


def test_offsets_commit_only_past_done_events_and_resume_after_restart(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("")
    f = follower(log)
    f.poll(first=True)
    append(log, "response code: 51\nresponse code: 96\n")
    first, second = f.poll()
    second.done()
    assert f.position()["offset"] == 0  # the earlier event is not done yet
    first.done()
    assert f.position()["offset"] == log.stat().st_size
    # a restart before anything was done re-reads the same events with the same ids
    append(log, "response code: 30\n")
    again = follower(log, saved=f.position())
    (redo,) = again.poll(first=True)
    assert redo.code == "30"
    assert follower(log, saved=f.position()).poll(first=True)[0].id == redo.id


def test_ledger_moves_in_order():
    ledger = OffsetLedger(1, 0)
    for end in (10, 20, 30):
        ledger.add(end)
    ledger.done(20)
    assert ledger.committed == 0
    ledger.done(10)
    assert ledger.committed == 20
    ledger.done(30)
    assert ledger.committed == 30


def test_last_error_file(tmp_path):
    path = tmp_path / "last_error.json"
    path.write_text(json.dumps({"code": "E3"}))
    source = LastErrorFile(path, {})
    assert source.poll(first=True) == []  # from before the agent ran
    path.write_text(json.dumps({"code": "3000", "scheme": "terminal", "context": {"password": "hunter2"}}))
    (event,) = source.poll()
    assert (event.code, event.scheme) == ("3000", "terminal")
    assert "hunter2" not in json.dumps(event.record())
    assert source.poll() == []
    path.write_text("{broken")
    assert source.poll() == []


def test_event_documents_are_validated():
    for bad, why in [([], "object"), ({}, "'code'"), ({"code": ""}, "'code'"), ({"code": "51", "scheme": "visa"}, "'scheme'"),
                     ({"code": "x" * 65}, "at most"), ({"code": "51", "context": []}, "'context'")]:
        try:
            parse_event_document(bad)
        except ValueError as exc:
            assert why in str(exc)
        else:
            raise AssertionError(f"{bad!r} accepted")
    assert parse_event_document({"code": 51})[0] == "51"


def ask(address, payload: bytes) -> dict:
    with socket.create_connection(address, timeout=5) as conn:
        conn.sendall(payload)
        return json.loads(conn.makefile().readline())


def test_local_socket_answers_with_the_summary_and_refuses_garbage():
    def submit(event):
        threading.Timer(0.05, event.reply, args=({"diagnosis": {"code": event.code}},)).start()

    server = LocalSocket("127.0.0.1:0", submit, reply_timeout_s=2)
    server.start()
    try:
        good = ask(server.address, b'{"code": "51", "scheme": "iso8583"}\n')
        assert good["ok"] and good["diagnosis"] == {"code": "51"}
        bad = ask(server.address, b"{nope\n")
        assert not bad["ok"] and "malformed" in bad["error"]
        huge = ask(server.address, b"[" + b" " * 70000 + b"\n")
        assert not huge["ok"]
    finally:
        server.close()


def test_local_socket_listens_on_loopback_only():
    try:
        LocalSocket("0.0.0.0:0", lambda e: None, 1)
    except ValueError as exc:
        assert "loopback only" in str(exc)
    else:
        raise AssertionError("bound a public address")


def test_a_new_line_at_an_old_offset_after_truncation_is_a_new_event(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("")
    f = follower(log)
    f.poll(first=True)
    append(log, "response code: 51\n")
    (first,) = f.poll()
    first.done()
    log.write_text("")  # copytruncate
    f.poll()
    append(log, "response code: 05\n")
    (second,) = f.poll()
    assert second.code == "05" and second.id != first.id
    second.done()
    # the generation is part of the saved position, so a restart keeps ids apart too
    assert f.position()["generation"] == 1
    assert follower(log, saved=f.position()).generation == 1


def test_last_error_rewritten_with_the_same_error_is_a_second_event_committed_when_done(tmp_path):
    import os

    path = tmp_path / "last_error.json"
    path.write_text(json.dumps({"code": "E3"}))
    source = LastErrorFile(path, {})
    source.poll(first=True)
    path.write_text(json.dumps({"code": "3000"}))
    os.utime(path, ns=(1, 1_000_000_000))
    (a,) = source.poll()
    path.write_text(json.dumps({"code": "3000"}))
    os.utime(path, ns=(1, 2_000_000_000))
    (b,) = source.poll()
    assert a.code == b.code == "3000" and a.id != b.id
    committed = source.position()
    b.done()
    assert source.position() != committed
    restarted = LastErrorFile(path, committed)  # a crash before b was done: b comes again
    (again,) = restarted.poll(first=True)
    assert again.id == b.id


# --- Issue 12: nothing lost, nothing twice -------------------------------------------


def lines_for(codes, start=0):
    return "".join(f"t{start + i} response code: {code}\n" for i, code in enumerate(codes))


def diagnose_all(f, first=False):
    """Poll once, diagnose (mark done) every event; the codes seen and the position to save."""
    events = f.poll(first=first)
    for event in events:
        event.done()
    return [e.code for e in events], f.position()


def restart(path, saved, **kw):
    return LogFollower(path, PATTERN, "iso8583", dict(saved), **kw)


CODES = [f"{i:02d}" for i in range(10, 99)]


def test_rename_rotation_while_stopped_loses_nothing(tmp_path):
    for rotated_name in ("app.log.1", "app.log-20261130", "app-20261130.log"):
        log = tmp_path / "app.log"
        for old in tmp_path.iterdir():
            old.unlink()
        log.write_text("")
        f = follower(log)
        f.poll(first=True)
        append(log, lines_for(CODES[:3]))
        seen, saved = diagnose_all(f)
        f.close()
        append(log, lines_for(CODES[3:7], 3))  # written while the agent is down
        log.rename(tmp_path / rotated_name)
        log.write_text(lines_for(CODES[7:9], 7))  # the new log, before the agent is back
        g = restart(log, saved)
        more, _ = diagnose_all(g)
        append(log, lines_for(CODES[9:10], 9))
        last, _ = diagnose_all(g)
        assert seen + more + last == CODES[:10], (rotated_name, seen, more, last)
        g.close()


def test_a_configured_rotation_glob_is_searched(tmp_path):
    log = tmp_path / "pay.txt"
    log.write_text("")
    f = restart(log, {}, rotated=("archive-*.txt",))
    f.poll(first=True)
    append(log, lines_for(CODES[:1]))
    _, saved = diagnose_all(f)
    f.close()
    append(log, lines_for(CODES[1:3], 1))
    log.rename(tmp_path / "archive-7.txt")
    log.write_text(lines_for(CODES[3:4], 3))
    assert diagnose_all(restart(log, saved, rotated=("archive-*.txt",)))[0] == CODES[1:4]
    assert diagnose_all(restart(log, saved))[0] == CODES[3:4]  # without the glob the rotated lines are not found


def test_copytruncate_while_stopped_with_regrowth_past_the_old_offset(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("")
    f = follower(log)
    f.poll(first=True)
    append(log, lines_for(CODES[:2]))
    seen, saved = diagnose_all(f)
    f.close()
    append(log, lines_for(CODES[2:5], 2))  # unread when the copy is taken
    shutil.copy(log, tmp_path / "app.log.1")
    with log.open("r+b") as fh:
        fh.truncate(0)
    append(log, lines_for(CODES[5:25], 5))  # grows past the old offset again: size alone would miss it
    assert log.stat().st_size > saved["offset"]
    g = restart(log, saved)
    more, _ = diagnose_all(g)
    assert seen + more == CODES[:25]
    ids = set()
    g.close()
    for again in (restart(log, saved), restart(log, saved)):  # a crash before any was done: same events, same ids
        events = again.poll()
        ids.add(tuple(e.id for e in events))
        assert [e.code for e in events] == CODES[2:25]
        again.close()
    assert len(ids) == 1


def test_copytruncate_while_running_with_regrowth(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("")
    f = follower(log)
    f.poll(first=True)
    append(log, lines_for(CODES[:2]))
    seen, _ = diagnose_all(f)
    append(log, lines_for(CODES[2:4], 2))  # written, not yet read, then copied and truncated
    shutil.copy(log, tmp_path / "app.log.1")
    with log.open("r+b") as fh:
        fh.truncate(0)
    append(log, lines_for(CODES[4:30], 4))
    more, _ = diagnose_all(f)
    assert seen + more == CODES[:30]


def test_a_crash_while_finishing_the_rotated_file_resumes_in_it(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("")
    f = follower(log)
    f.poll(first=True)
    append(log, lines_for(CODES[:1]))
    _, saved = diagnose_all(f)
    f.close()
    append(log, lines_for(CODES[1:4], 1))
    log.rename(tmp_path / "app.log.1")
    log.write_text(lines_for(CODES[4:6], 4))
    g = restart(log, saved)
    events = g.poll()
    assert [e.code for e in events] == CODES[1:6]
    events[0].done()  # the crash comes before the rest is done
    saved_mid = g.position()
    g.close()
    h = restart(log, saved_mid)
    again = h.poll()
    assert [e.code for e in again] == CODES[2:6]
    assert [e.id for e in again] == [e.id for e in events[1:]]


def test_two_terminals_from_one_image_never_share_an_event_id(tmp_path):
    from agent import config
    from agent.sources import terminal_identity_key

    keys = []
    for name, serial in (("a", "SN-1001"), ("b", "SN-1002"), ("c", ""), ("d", "")):
        root = tmp_path / name / "sys"
        (root / "class/dmi/id").mkdir(parents=True)
        (root / "class/dmi/id/product_serial").write_text(serial)
        cfg = config.load(None, {"host": {"sysfs_root": str(root), "procfs_root": str(tmp_path / name / "proc")}})
        assert cfg.section("terminal").id == "UNSET"  # the image's config, unchanged
        keys.append(terminal_identity_key(cfg, tmp_path / name / "state"))
        assert terminal_identity_key(cfg, tmp_path / name / "state") == keys[-1]  # stable across restarts
    log = tmp_path / "app.log"  # one path, one inode, one offset: what cloned terminals share
    log.write_text(lines_for(["05"]))
    ids = set()
    for key in keys:
        f = restart(log, {}, identity=key)
        ids.update(e.id for e in f.poll())
        f.close()
    assert len(set(keys)) == 4 and len(ids) == 4


def test_utf16_logs_are_followed_and_redacted(tmp_path):
    for encoding, bom in (("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"), ("utf-16-le", b"")):
        log = tmp_path / f"u16-{encoding}-{len(bom)}.log"
        log.write_bytes(bom + "交易 response code: 05 card 4111111111111111\n".encode(encoding))
        f = follower(log)
        events = f.poll()
        assert [e.code for e in events] == ["05"]
        assert "411111******1111" in events[0].context["line"] and "\x00" not in events[0].context["line"]
        append(log, "应答码: 51\n", encoding)
        assert [e.code for e in f.poll()] == ["51"]
        f.close()


def test_a_pan_wrapped_onto_the_next_line_is_masked_in_both_events(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("")
    f = follower(log)
    f.poll(first=True)
    append(log, "response code: 05 pan 41111111\n11111111 response code: 51\n")
    events = f.poll()
    lines = "".join(e.context["line"] for e in events)
    assert [e.code for e in events] == ["05", "51"]
    assert "41111111" not in lines.replace("\n", "") and "11111111" not in lines, lines


def test_a_code_made_longer_by_redaction_is_cut_after_it():
    from agent.sources import MAX_CODE_LENGTH, clean_code

    code = "pin=1 " * 10 + "x"  # 61 characters; "pin=***" is longer than "pin=1"
    cleaned = clean_code(code)
    assert len(code) <= MAX_CODE_LENGTH and len(cleaned) == MAX_CODE_LENGTH and "pin=1" not in cleaned
