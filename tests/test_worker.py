"""The resident agent and its workers: a hung worker is killed at its deadline, killing
either process loses and duplicates nothing, a worker never outlives its resident, and the
resident does not carry what only a worker needs."""

import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from agent.journal import Failures
from agent.lane import Lane, WorkerFailed
from tests.conftest import ROOT, SOAK


def workers_of(pid: int) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(pid).children() if "worker" in p.cmdline()]
    except psutil.NoSuchProcess:
        return []


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.02)
    return found


def lane_for(tmp_path, sysfs_root) -> Lane:
    conf = tmp_path / "agent.toml"
    conf.write_text(
        f'[host]\nsysfs_root = "{sysfs_root}"\nprocfs_root = "{tmp_path / "proc"}"\n'
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n[outbox]\ndir = "{tmp_path / "outbox"}"\n'
    )
    return Lane("test", lambda: {"config": str(conf), "overrides": None}, 0.0, lambda kind, stats: None)


def test_a_hung_worker_is_killed_at_its_deadline_and_the_next_job_gets_a_new_one(tmp_path):
    battery = tmp_path / "sys" / "class" / "power_supply" / "BAT0"
    battery.mkdir(parents=True)
    os.mkfifo(battery / "capacity")  # a sysfs read that never returns: open() waits for a writer
    lane = lane_for(tmp_path, tmp_path / "sys")
    try:
        view = lane.view()
        assert view["deadlines"]["snapshot"] > 1.0  # the real deadline; the test asks for a short one
        hung = lane.process.pid
        t0 = time.monotonic()
        with pytest.raises(WorkerFailed) as failed:
            lane.run("snapshot", {}, deadline_s=1.0)
        assert failed.value.kind == "Deadline" and "went 1 s without an answer" in str(failed.value)
        assert 1.0 <= time.monotonic() - t0 < 4.0
        assert not psutil.pid_exists(hung) or psutil.Process(hung).status() == psutil.STATUS_ZOMBIE
        (battery / "capacity").unlink()
        (battery / "capacity").write_text("77\n")
        assert lane.run("snapshot", {}, deadline_s=30.0)["snapshot"]["battery_pct"] == 77
        assert lane.process.pid != hung
    finally:
        lane.close()


def test_a_failing_job_reports_its_exception_and_an_unknown_job_is_refused(tmp_path):
    lane = lane_for(tmp_path, tmp_path / "sys")
    try:
        with pytest.raises(WorkerFailed) as failed:
            lane.run("command", {"command": {}}, deadline_s=30.0)  # no command_id
        assert failed.value.kind == "KeyError" and "Traceback" in failed.value.traceback
        with pytest.raises(WorkerFailed) as unknown:
            lane.run("no-such-job", {}, deadline_s=30.0)
        assert unknown.value.kind == "UnknownJob"
        assert lane.run("snapshot", {}, deadline_s=30.0)["snapshot"]["at"]  # the same worker goes on
    finally:
        lane.close()


def test_a_config_that_does_not_load_is_the_workers_answer_to_its_setup(tmp_path):
    conf = tmp_path / "bad.toml"
    conf.write_text("[daemon]\nsettle_seconds = -1\n")
    lane = Lane("test", lambda: {"config": str(conf), "overrides": None}, 0.0, lambda kind, stats: None)
    with pytest.raises(WorkerFailed) as failed:
        lane.view()
    assert failed.value.kind == "ConfigError" and "daemon.settle_seconds" in str(failed.value)
    assert lane.process is None


def test_sigkill_of_workers_during_bursts_loses_nothing_and_duplicates_nothing(agent):
    a = agent(settle_seconds=0.2, max_wait_seconds=0.5, debounce_seconds=0.0, upload_retry_seconds=1.0, worker_linger_seconds=1.0)
    codes = ["03", "05", "12", "13", "14", "30", "51", "54", "55"] * SOAK
    rng = random.Random(11)
    a.start()
    killed = 0
    for n, code in enumerate(codes):
        a.write(*[f"txn {n}-{i} response code: {code}" for i in range(3)])
        time.sleep(rng.uniform(0.2, 0.6))  # the burst settles, its diagnosis or upload runs: kill it there
        for worker in workers_of(a.proc.pid):
            worker.send_signal(signal.SIGKILL)
            killed += 1
    assert killed, "no worker was ever running when the test looked"
    found = a.wait_for(len(set(codes)), 30.0)
    assert {b["code"] for b in found} == set(codes), a.stderr.read_text()[-3000:]
    time.sleep(1.5)  # a retry still under way would show as a duplicate now
    found = a.bundles()
    ids = [b["id"] for b in found]
    assert len(ids) == len(set(ids))
    seen: dict[str, str] = {}
    for b in found:
        for ev in a.events_of(b["id"]):
            assert ev["id"] not in seen, f"event {ev['id']} in two bundles"
            seen[ev["id"]] = b["id"]
    assert a.proc.poll() is None
    assert a.stop() < 2.0


def test_a_worker_never_outlives_its_resident(agent):
    a = agent(worker_linger_seconds=60.0, snapshot_interval_seconds=1.0)
    a.start()
    a.write("txn 1 response code: 51")
    (worker,) = wait_until(lambda: workers_of(a.proc.pid)[:1], 10.0, "no worker started")
    a.stop(signal.SIGKILL)
    wait_until(lambda: not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, 3.0, "the worker outlived its resident")


def test_workers_run_the_config_the_resident_accepted_not_a_file_edited_since(agent):
    """Every worker reads the config anew; it gets the text the resident accepted, so a
    broken edit without SIGHUP changes nothing, as when the agent was one process."""
    a = agent(worker_linger_seconds=0.0)
    a.start()
    a.config.write_text("[daemon\nthis is not toml")
    a.write("txn 9 response code: 05")
    assert [b["code"] for b in a.wait_for(1, 10.0)] == ["05"], a.stderr.read_text()[-2000:]
    assert "config error" not in a.stderr.read_text()
    assert a.stop() < 2.0


def test_the_start_line_names_the_server_and_the_followed_files(agent, tmp_path):
    a = agent()
    a.start()
    line = next(line for line in a.stderr.read_text().splitlines() if "agent running" in line)
    assert f"terminal {a.terminal}" in line and f"server {a.server.url}" in line and str(a.log) in line
    assert a.stop() < 2.0
    b = agent()
    b.write_config()
    b.config.write_text(b.config.read_text().replace(f'server_url = "{a.server.url}"', 'server_url = ""'))
    b.start()
    text = b.stderr.read_text()
    assert "no server" in text and "server_url is empty: bundles stay in the outbox" in text
    assert b.stop() < 2.0


def test_an_unexpected_failure_shows_its_traceback_once_at_error_level_then_at_debug(caplog):
    log = logging.getLogger("posdiag.test")
    failures = Failures(log)
    with caplog.at_level(logging.DEBUG, logger="posdiag.test"):
        for _ in range(3):
            try:
                {}["missing"]
            except KeyError as exc:
                failures.exception("reading app.log", "reading app.log failed", exc)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert [r.getMessage() for r in errors].count("reading app.log failed: KeyError: 'missing'") == 3
    assert sum("Traceback" in r.getMessage() for r in errors) == 1
    assert sum("Traceback" in r.getMessage() for r in debug) == 2


HEAVY = ("hashlib", "_hashlib", "ssl", "_ssl", "requests", "tenacity", "tomllib", "dataclasses", "inspect",
         "agent.config", "agent.knowledge", "agent.bundle", "agent.pipeline", "remote.redact", "serial", "probes",
         "typing", "random", "datetime", "uuid", "shutil", "subprocess", "tempfile", "socket")  # fmt: skip


def test_the_resident_imports_nothing_only_a_worker_needs():
    """What `posdiag run` imports before its first event: a heavy import at the top of one of
    its modules would quietly add megabytes to every terminal."""
    script = (
        "import sys; from agent.cli import build_parser; build_parser('run'); "
        "import agent.resident, agent.commands.run, agent.priority; "
        f"print(sorted(set({HEAVY!r}) & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_a_running_resident_has_no_openssl_mapped(support_server, tmp_path):
    """On the real host (the simulated terminal's TLS servers would run in the resident),
    with a server to talk to: only the workers load OpenSSL."""
    from tests.conftest import POSDIAG

    terminal, token = support_server.terminal("NOSSL")
    log = tmp_path / "app.log"
    log.write_text("")
    conf = tmp_path / "agent.toml"
    conf.write_text(
        f'[terminal]\nid = "{terminal}"\n[upload]\nserver_url = "{support_server.url}"\ntoken = "{token}"\n'
        f'[outbox]\ndir = "{tmp_path / "outbox"}"\n[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f'start_jitter_seconds = 0.0\nlisten = "127.0.0.1:0"\n'
        f'[[daemon.log_sources]]\npath = "{log}"\npatterns = ["code: (?P<code>[0-9]{{2}})"]\n'
    )
    stderr = tmp_path / "agent.log"
    proc = subprocess.Popen([str(POSDIAG), "run", "--config", str(conf)], stderr=stderr.open("wb"))
    try:
        wait_until(lambda: "agent running" in stderr.read_text(), 30.0, "the agent did not start")
        with log.open("a") as fh:
            fh.write("txn 7 code: 51\n")
        bundles = f"/api/v1/bundles?terminal={terminal}"
        wait_until(lambda: support_server.get(bundles).json()["items"], 30.0, "no bundle: " + stderr.read_text())
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "libcrypto" not in maps and "libssl" not in maps and "_hashlib" not in maps and "_ssl" not in maps
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


TGKILL = {"x86_64": 234, "aarch64": 131}  # syscall numbers: Python has no tgkill


@pytest.mark.skipif(os.uname().machine not in TGKILL, reason="tgkill's number is known here for x86_64 and aarch64 only")
def test_sigterm_taken_by_any_thread_stops_the_resident_within_2s(agent):
    """The kernel may hand a process's signal to any of its threads; the resident's main
    thread must wake whichever took it (a signal handler that set an Event did not)."""
    import ctypes

    a = agent()
    a.start()
    main = a.proc.pid
    others = [int(t) for t in os.listdir(f"/proc/{main}/task") if int(t) != main]
    assert others, "the resident runs threads"
    libc = ctypes.CDLL(None, use_errno=True)
    t0 = time.monotonic()
    assert libc.syscall(TGKILL[os.uname().machine], main, others[-1], signal.SIGTERM) == 0
    a.proc.wait(10)
    assert time.monotonic() - t0 < 2.0 and a.proc.returncode == 0
    assert "posdiag agent stopped" in a.stderr.read_text()
