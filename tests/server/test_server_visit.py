"""`posdiag visit close` end to end: the record through the outbox to a real server, online
and offline, after the bundles older than it, once; bad input refused at the terminal or by
the server, with the reason kept in dead/."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from outcome_bundles import uploaded

POSDIAG = Path(sys.executable).parent / "posdiag"
DEAD_SERVER = "http://127.0.0.1:9"


def setup(server, tmp_path: Path, prefix: str, url: str | None = None) -> tuple[str, str, Path]:
    tid, token = server.terminal(prefix)
    write_config(tmp_path, tid, token, url or server.url)
    return tid, token, tmp_path / "posdiag.toml"


def write_config(tmp_path: Path, tid: str, token: str, url: str) -> None:
    (tmp_path / "posdiag.toml").write_text(
        f'[terminal]\nid = "{tid}"\nmodel = "K300"\n'
        f'[outbox]\ndir = "{tmp_path / "outbox"}"\n'
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[upload]\nserver_url = "{url}"\ntoken = "{token}"\nmax_attempts = 1\n',
        encoding="utf-8",
    )


def posdiag(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(POSDIAG), *args, "--config", str(config)], capture_output=True, text=True, timeout=120, check=False
    )


def outcome_of(server, bundle_id: str) -> dict:
    return server.get(f"/api/v1/bundles/{bundle_id}/outcome").json()


def test_a_technician_closes_a_visit_at_the_terminal_and_support_sees_it(server, tmp_path):
    tid, token, config = setup(server, tmp_path, "VC")
    bid = uploaded(server, token, tid, ["printer.mechanism_fault", "printer.not_connected"])
    done = posdiag(config, "visit", "close", "--found", "printer.not_connected", "--fixed", "--by", "li.wei",
                   "--note", "driver restarted", "--lang", "en")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "recorded on the server" in done.stderr and "found printer.not_connected, fixed" in done.stdout
    current = outcome_of(server, bid)["current"]
    assert (current["found"], current["fixed"], current["by"], current["via"], current["note"]) == (
        "printer.not_connected", True, "li.wei", "terminal", "driver restarted",
    )  # fmt: skip
    assert list((tmp_path / "outbox").glob("*.outcome.json")) == []


def test_offline_the_record_waits_behind_its_bundle_and_goes_once(server, tmp_path):
    tid, token, config = setup(server, tmp_path, "VO", url=DEAD_SERVER)
    diagnosed = posdiag(config, "diagnose", "--code", "E3", "--simulate", "printer.cutter_error", "--upload", "--json")
    assert diagnosed.returncode == 3, diagnosed.stderr  # no link: the bundle waits
    closed = posdiag(config, "visit", "close", "--found", "printer.mechanism_fault", "--fixed", "--lang", "zh")
    assert closed.returncode == 3 and "上门结果" in closed.stderr and "保留在" in closed.stderr
    listed = json.loads(posdiag(config, "outbox", "list", "--json").stdout)
    assert len(listed["waiting"]) == 1 and len(listed["outcomes"]["waiting"]) == 1
    assert listed["outcomes"]["waiting"][0]["created_at"] > listed["waiting"][0]["created_at"]
    record_file = next((tmp_path / "outbox").glob("*.outcome.json"))
    kept = record_file.read_bytes()

    write_config(tmp_path, tid, token, server.url)  # the link is back
    flushed = posdiag(config, "outbox", "flush", "--json")
    assert flushed.returncode == 0, flushed.stderr
    report = json.loads(flushed.stdout)
    bundle_id = report["sent"][0]
    assert report["outcomes"]["sent"] == [json.loads(kept)["outcome_id"]]
    assert outcome_of(server, bundle_id)["current"]["found"] == "printer.mechanism_fault"  # the newest dispatched bundle

    record_file.write_bytes(kept)  # as if the answer had been lost: sent again
    again = json.loads(posdiag(config, "outbox", "flush", "--json").stdout)
    assert again["outcomes"]["duplicates"] == [json.loads(kept)["outcome_id"]]
    assert len(outcome_of(server, bundle_id)["history"]) == 1


def test_an_unknown_cause_is_refused_at_the_terminal_and_nothing_is_kept(server, tmp_path):
    _, _, config = setup(server, tmp_path, "VU")
    done = posdiag(config, "visit", "close", "--found", "printer.mechanism_falt", "--fixed")
    assert done.returncode == 2
    assert "did you mean printer.mechanism_fault" in done.stderr and "Traceback" not in done.stderr
    unsaid = posdiag(config, "visit", "close", "--found", "printer.paper_out")
    assert unsaid.returncode == 2 and "--fixed or --not-fixed" in unsaid.stderr
    other = posdiag(config, "visit", "close", "--found", "other", "--fixed")
    assert other.returncode == 2 and "--note" in other.stderr
    assert not list((tmp_path / "outbox").glob("*.outcome.json"))


def test_another_terminals_bundle_is_refused_by_the_server_and_kept_with_why(server, tmp_path):
    _, _, config = setup(server, tmp_path, "VW")
    other_tid, other_token = server.terminal("VZ")
    theirs = uploaded(server, other_token, other_tid, ["printer.mechanism_fault"])
    done = posdiag(config, "visit", "close", "--found", "nothing", "--bundle", theirs, "--lang", "en")
    assert done.returncode == 3
    assert "refused by the server" in done.stderr and "wrong_terminal" in done.stderr
    listed = json.loads(posdiag(config, "outbox", "list", "--json").stdout)
    assert listed["outcomes"]["dead"][0]["reason"]["error"] == "wrong_terminal"
    assert outcome_of(server, theirs)["history"] == []
    text = posdiag(config, "outbox", "list").stdout
    assert "refused" in text and "outcome" in text and "wrong_terminal" in text


def test_a_bundle_id_that_is_not_one_is_refused_at_the_terminal(server, tmp_path):
    _, _, config = setup(server, tmp_path, "VB")
    done = posdiag(config, "visit", "close", "--found", "nothing", "--bundle", "12345")
    assert done.returncode == 2 and "not a bundle id" in done.stderr
    unknown = posdiag(config, "visit", "close", "--found", "nothing", "--bundle", str(uuid.uuid4()), "--lang", "en")
    assert unknown.returncode == 3 and "no_bundle" in unknown.stderr


def test_no_upload_only_keeps_the_record(server, tmp_path):
    _, _, config = setup(server, tmp_path, "VN")
    done = posdiag(config, "visit", "close", "--found", "nothing", "--no-upload", "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["uploaded"] is None and shown["outcome"]["bundle_id"] is None and "signature" not in shown["outcome"]
    assert Path(shown["file"]).exists()
