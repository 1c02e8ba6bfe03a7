"""Webhook receivers that are broken or hostile (issue 21): one that trickles a byte every half
second, one that never answers, one whose answer never ends (body or headers), one that is
down while events pile up, and targets that are not http(s), private or unsigned. The server
runs in this process (uvicorn on loopback), so its RSS is this process's."""

from __future__ import annotations

import dataclasses
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
import requests
from server_harness import default_settings, fresh_pg_database, start_server

from remote.server import db, store
from remote.server.fleet import webhooks
from remote.server.fleet.schema import webhook_deliveries
from tests.conftest import run_cli

SECRET = "receiver-test-secret"
pytestmark = pytest.mark.timeout(300)


class Receiver:
    """A TCP server on loopback that reads each request's head, then runs `answer(conn)`."""

    def __init__(self, answer: Callable[[socket.socket], None]) -> None:
        self.answer = answer
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/hook"

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(4096) or b"\r\n\r\n"
                self.answer(conn)
            except OSError:
                pass  # the server hung up: that is the point

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


def trickle(conn: socket.socket) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" * 100:
        conn.sendall(bytes([byte]))
        time.sleep(0.5)


def never(conn: socket.socket) -> None:
    time.sleep(60)


def endless_body(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 500 Oops\r\nContent-Length: 100000000000\r\n\r\n")
    chunk = b"x" * 65536
    while True:
        conn.sendall(chunk)


def endless_headers(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    line = b"X-Filler: " + b"y" * 1000 + b"\r\n"
    while True:
        conn.sendall(line)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 's.db'}"
    else:
        with fresh_pg_database() as url:
            yield url


def settings(url: str, **hooks):
    s = default_settings()
    given = dict(url=url, secret=SECRET, timeout_seconds=1.0, retry_min_seconds=0.05, retry_max_seconds=0.1, allow_private_targets=True)
    return dataclasses.replace(
        s, webhooks=dataclasses.replace(s.webhooks, **(given | hooks)), fleet=dataclasses.replace(s.fleet, sweep_seconds=0.2)
    )


def queue(server, count: int, event: str = "incident.opened") -> None:
    with server.service.engine.begin() as conn:
        for i in range(count):
            webhooks.enqueue(conn, server.service.settings.webhooks, event, f"subject-{i}", {"n": i})


def deliveries(server) -> list:
    with server.service.engine.connect() as conn:
        return conn.execute(webhook_deliveries.select().order_by(webhook_deliveries.c.id)).all()


def metric(server, name: str) -> float:
    text = requests.get(f"{server.url}/metrics", timeout=30).text
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def wait_for(check: Callable[[], object], seconds: float) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    return check()


@pytest.mark.parametrize("answer", [trickle, never], ids=["trickle", "never"])
def test_a_slow_receiver_costs_one_deadline_per_attempt_and_delays_no_sweep(db_url, tmp_path, answer):
    receiver = Receiver(answer)
    running = start_server(db_url, tmp_path / "data", "hooks", settings(receiver.url()))
    server = next(running)
    try:
        queue(server, 1)
        assert wait_for(lambda: receiver.connections >= 1, 5)
        # A terminal last heard of 30 hours ago: the sweep (every 0.2 s) must notice it while
        # the webhook thread is stuck on the receiver.
        store.add_terminal(server.service.engine, "GONE-1")
        sent = db.stamp(datetime.now(UTC) - timedelta(hours=30))
        server.service.fleet.on_heartbeat(_beat("GONE-1", sent), sent, False, db.now())
        missing = wait_for(lambda: [r for r in deliveries(server) if r.event == "terminal.missing"], 5)
        assert missing, "the sweep did not run within 5 s while the receiver held the webhook thread"
        # Each attempt ends at the deadline (1 s), however the receiver behaves.
        tried = wait_for(lambda: [r for r in deliveries(server) if r.event == "incident.opened" and r.attempts >= 3], 10)
        assert tried and "within 1 s" in tried[0].last_error, deliveries(server)
        assert metric(server, 'posdiag_webhook_attempts_total{outcome="failed"}') >= 3
    finally:
        running.close()
        receiver.close()


def _beat(terminal_id: str, sent: str):
    from remote.server.fleet.models import Heartbeat

    return Heartbeat(terminal_id=terminal_id, sent_at=sent, model="A920")


@pytest.mark.parametrize("answer", [endless_body, endless_headers], ids=["body", "headers"])
def test_an_endless_answer_costs_no_memory(db_url, tmp_path, answer):
    receiver = Receiver(answer)
    running = start_server(db_url, tmp_path / "data", "hooks", settings(receiver.url()))
    server = next(running)
    me = psutil.Process()
    try:
        baseline = me.memory_info().rss
        queue(server, 3)
        peak, until = baseline, time.monotonic() + 6
        while time.monotonic() < until and peak - baseline < 20 << 20:  # stop early if it grows: no need to fill the machine
            peak = max(peak, me.memory_info().rss)
            time.sleep(0.1)
        assert peak - baseline < 20 << 20, f"RSS grew by {(peak - baseline) >> 20} MiB"
        rows = deliveries(server)
        print(f"endless {answer.__name__}: {sum(r.attempts for r in rows)} attempts in 6 s, RSS {baseline / 2**20:.1f} -> peak {peak / 2**20:.1f} MiB")
        assert sum(r.attempts for r in rows) >= 6, rows  # retried again and again, each cut short
        if answer is endless_body:
            assert all(r.delivered_at is None and r.last_error == "HTTP 500" for r in rows if r.attempts), rows
    finally:
        running.close()
        receiver.close()


def test_the_queue_is_bounded_and_drops_the_oldest(db_url, tmp_path):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens: every attempt fails at once
    running = start_server(db_url, tmp_path / "data", "hooks", settings(f"http://127.0.0.1:{port}/hook", max_queued_deliveries=5))
    server = next(running)
    try:
        queue(server, 30)
        assert wait_for(lambda: webhooks.pending(server.service.engine) <= 5, 10)
        kept = [r.dedupe for r in deliveries(server)]
        assert kept == [f"incident.opened:subject-{i}" for i in range(25, 30)]
        assert metric(server, "posdiag_webhook_dropped_total") == 25
        assert metric(server, "posdiag_webhook_queued") == 5
        assert metric(server, "posdiag_webhook_queue_age_seconds") >= 0
    finally:
        running.close()


def test_a_name_that_resolves_to_a_private_address_is_refused_unless_allowed(tmp_path):
    receiver = Receiver(lambda conn: conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n"))
    url = f"sqlite:///{tmp_path / 's.db'}"
    running = start_server(url, tmp_path / "data", "hooks", settings(receiver.url("localhost"), allow_private_targets=False))
    server = next(running)
    try:
        queue(server, 1)
        refused = wait_for(lambda: [r for r in deliveries(server) if r.last_error], 5)
        assert refused and "not a public address" in refused[0].last_error and "127.0.0.1" in refused[0].last_error
        assert receiver.connections == 0
        assert metric(server, 'posdiag_webhook_attempts_total{outcome="refused"}') >= 1
    finally:
        running.close()
    running = start_server(url, tmp_path / "data", "hooks", settings(receiver.url("localhost")), users=False)
    server = next(running)
    try:
        assert wait_for(lambda: all(r.delivered_at for r in deliveries(server)), 10)  # allowed: sent
        assert receiver.connections == 1
    finally:
        running.close()
        receiver.close()


@pytest.mark.parametrize(
    ("hooks", "says"),
    [
        ('url = "ftp://hooks.example.com/x"\nsecret = "s"', "only http:// and https://"),
        ('url = "file:///etc/passwd"\nsecret = "s"', "only http:// and https://"),
        ('url = "gopher://hooks.example.com/"\nsecret = "s"', "only http:// and https://"),
        ('url = "hooks.example.com/x"\nsecret = "s"', "without a scheme"),
        ('url = "https://hooks.example.com/x"', "set a secret"),
        ('url = "https://hooks.example.com/x"\nsecret = ""', "set a secret"),
        ('url = "http://127.0.0.1:9000/x"\nsecret = "s"', "not a public address"),
        ('url = "http://169.254.169.254/latest/meta-data"\nsecret = "s"', "not a public address"),
        ('url = "http://[::1]/x"\nsecret = "s"', "not a public address"),
        ('url = "http://10.1.2.3/x"\nsecret = "s"', "not a public address"),
    ],
)
def test_a_webhook_the_server_would_not_send_fails_the_config_check(tmp_path: Path, hooks, says):
    config = tmp_path / "posdiag.toml"
    config.write_text(f"[server.webhooks]\n{hooks}\n", encoding="utf-8")
    served = subprocess.run(
        [str(Path(sys.executable).parent / "posdiag-support"), "--config", str(config), "--data", str(tmp_path / "d"), "serve", "--port", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert served.returncode == 2 and says in served.stderr and "server.webhooks" in served.stderr, served.stderr
    checked = run_cli("config", "check", str(config))
    assert checked.returncode == 2 and says in checked.stderr, checked.stderr
    allowed = tmp_path / "allowed.toml"
    allowed.write_text(f"[server.webhooks]\n{hooks}\nallow_private_targets = true\n", encoding="utf-8")
    if says == "not a public address":  # the allowance exists for loopback receivers in tests and labs
        assert run_cli("config", "check", str(allowed)).returncode == 0

