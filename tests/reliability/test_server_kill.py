"""SIGKILL a support server in the middle of ingest (issue 8, server side).

PostgreSQL: two `posdiag-support serve` processes share one fresh database and one blob
directory (the load-balanced set-up). Terminal threads upload continuously with
remote.client.Client, alternating between the servers and failing over to the other when
one does not answer; one server at a time is SIGKILLed at random moments while uploads are
in flight and restarted on its port. At the end every bundle a client saw confirmed is
stored exactly once, and every bundle sent is stored (the clients retried the rest).

SQLite: one server, SIGKILLed during ingest and restarted on the same data directory. Right
after each kill the database opens (WAL recovery) and passes integrity_check, and nothing
confirmed so far is missing; at the end every blob's sha256 matches its row.
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from server_kit import Serve, fresh_pg_database, make_bundle, prepare

from remote.client import Client, Retryable
from remote.server import db
from tests.conftest import SOAK

pytestmark = pytest.mark.timeout(150 * SOAK)  # make soak: POSDIAG_SOAK=20 kills twenty times as often


def client_for(url: str, token: str) -> Client:
    settings = SimpleNamespace(
        server_url=url, token=token, ca_file="", connect_timeout_seconds=1.0, read_timeout_seconds=10.0,
        max_attempts=2, backoff_initial_seconds=0.05, backoff_max_seconds=0.2, retry_after_max_seconds=1.0,
    )  # fmt: skip
    return Client(settings)


class Fleet:
    """Terminal threads uploading until stopped; each bundle is retried (rotating servers)
    until a server confirms it. Keeps what was sent, confirmed (with the 2xx status) and
    which bundles needed a retry."""

    def __init__(self, servers: list[Serve], tokens: dict[str, str]) -> None:
        self.servers = servers
        self.tokens = tokens
        self.sent: dict[str, str] = {}  # bundle id -> sha256 of the body
        self.confirmed: dict[str, int] = {}
        self.retried: set[str] = set()
        self.errors: list[str] = []
        self.inflight = [0] * len(servers)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.terminal, args=(i, t)) for i, t in enumerate(tokens)]

    def terminal(self, index: int, tid: str) -> None:
        clients = [client_for(s.url, self.tokens[tid]) for s in self.servers]
        turn = index
        rng = random.Random(index)
        while not self.stop.is_set():
            bundle_id, body = make_bundle(self.tokens[tid], tid, code=str(rng.randint(1, 99)))
            with self.lock:
                self.sent[bundle_id] = hashlib.sha256(body).hexdigest()
            deadline = time.monotonic() + 60
            while True:
                turn += 1
                which = turn % len(clients)
                with self.lock:
                    self.inflight[which] += 1
                try:
                    status = clients[which].send(body, bundle_id).status
                except Retryable as exc:
                    with self.lock:
                        self.retried.add(bundle_id)
                        self.errors.append(str(exc))
                    assert time.monotonic() < deadline, f"{bundle_id} never stored: {exc}"
                    time.sleep(0.05)
                    continue
                finally:
                    with self.lock:
                        self.inflight[which] -= 1
                with self.lock:
                    self.confirmed[bundle_id] = status
                break
            time.sleep(rng.uniform(0, 0.02))

    def __enter__(self) -> Fleet:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(90)

    def kill_when_busy(self, index: int) -> None:
        """SIGKILL server `index` at a moment when at least one upload to it is in flight."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self.lock:
                busy = self.inflight[index] > 0
            if busy:
                break
            time.sleep(0.001)
        self.servers[index].kill()

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.confirmed)


def stored_rows(url: str) -> list[dict]:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(db.bundles.c.id, db.bundles.c.sha256, db.bundles.c.size)).mappings()]
    finally:
        engine.dispose()


def check_blobs(rows: list[dict], data: Path, sent: dict[str, str]) -> None:
    for row in rows:
        blob = (data / "blobs" / row["sha256"][:2] / row["sha256"]).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == row["sha256"] == sent[row["id"]], row
        assert len(blob) == row["size"]


def test_sigkill_one_of_two_servers_on_postgresql_loses_and_duplicates_nothing(tmp_path):
    with fresh_pg_database() as url:
        data = tmp_path / "data"
        tokens = prepare(url, [f"K-{i:02d}" for i in range(8)])
        servers = [Serve(url, data, tmp_path / "logs"), Serve(url, data, tmp_path / "logs")]
        rng = random.Random()
        seed = rng.randrange(1 << 30)
        rng.seed(seed)
        try:
            for s in servers:
                s.start()
            with Fleet(servers, tokens) as fleet:
                for _ in range(4 * SOAK):
                    time.sleep(rng.uniform(0.3, 1.2))
                    victim = rng.randrange(2)
                    fleet.kill_when_busy(victim)
                    time.sleep(rng.uniform(0.1, 0.5))  # the fleet fails over meanwhile
                    servers[victim].start()
                time.sleep(0.5)
        finally:
            for s in servers:
                s.stop()
        rows = stored_rows(url)
    ids = [r["id"] for r in rows]
    note = f"seed {seed}, {len(fleet.sent)} sent, {len(fleet.retried)} retried"
    assert len(ids) == len(set(ids)), note
    assert set(fleet.confirmed) <= set(ids), note  # every confirmed bundle is stored ...
    assert set(ids) == set(fleet.sent) == set(fleet.confirmed), note  # ... and every bundle arrived, once
    assert all(200 <= s < 300 for s in fleet.confirmed.values())
    assert fleet.retried, f"no upload was cut by the kills ({note})"
    assert len(fleet.sent) > 100, note
    check_blobs(rows, data, fleet.sent)
    assert "Traceback" not in "".join(s.output() for s in servers)


def test_sigkill_sqlite_server_during_ingest_then_restart_on_the_same_data(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    path = data / "posdiag-support.db"
    url = f"sqlite:///{path}"
    tokens = prepare(url, [f"S-{i:02d}" for i in range(6)])
    server = Serve(url, data, tmp_path / "logs")
    rng = random.Random()
    try:
        server.start()
        with Fleet([server], tokens) as fleet:
            for _ in range(3 * SOAK):
                time.sleep(rng.uniform(0.4, 1.2))
                fleet.kill_when_busy(0)
                time.sleep(0.2)
                confirmed = fleet.snapshot()
                assert Path(f"{path}-wal").exists()  # killed before any checkpoint on close
                with sqlite3.connect(path) as conn:  # opening runs WAL recovery
                    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                    stored = {r[0] for r in conn.execute("SELECT id FROM bundles")}
                conn.close()
                assert set(confirmed) <= stored, sorted(set(confirmed) - stored)[:5]
                server.start()
            time.sleep(0.3)
    finally:
        server.stop()
    rows = stored_rows(url)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))
    assert set(ids) == set(fleet.sent) == set(fleet.confirmed)
    assert fleet.retried, "no upload was cut by the kills"
    check_blobs(rows, data, fleet.sent)
    assert "Traceback" not in server.output()
