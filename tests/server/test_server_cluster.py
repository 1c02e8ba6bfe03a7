"""Several servers on one database (the load-balanced set-up): the same bundle sent to two
at once is stored once, a probe request is handed out once, and three `serve` processes on
PostgreSQL and SeaweedFS S3 lose and duplicate nothing when a server or the store is killed."""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import sqlalchemy as sa
from server_bundles import make_bundle
from server_harness import fresh_pg_database, start_server

from remote.server.db import bundles


@pytest.fixture(params=["sqlite", "postgresql"])
def pair(request, tmp_path):
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'shared.db'}"
        else:
            url = stack.enter_context(fresh_pg_database())
        first = stack.enter_context(contextlib.contextmanager(start_server)(url, tmp_path / "blobs", request.param))
        second = stack.enter_context(
            contextlib.contextmanager(start_server)(url, tmp_path / "blobs", request.param, users=False)
        )
        yield first, second


def test_same_bundle_to_two_servers_at_once_is_stored_once(pair):
    first, second = pair
    stored = 0
    for _ in range(5):
        tid, token = first.terminal()
        bundle_id, body = make_bundle(token, tid)
        barrier = threading.Barrier(16)

        def send(i: int, token=token, body=body, bundle_id=bundle_id, barrier=barrier) -> int:
            barrier.wait()
            return (first if i % 2 else second).upload(token, body, bundle_id).status_code

        with ThreadPoolExecutor(16) as pool:
            codes = sorted(pool.map(send, range(16)))
        assert codes == [200] * 15 + [201], codes
        with first.service.engine.connect() as conn:
            stored += conn.execute(
                sa.select(sa.func.count()).select_from(bundles).where(bundles.c.id == bundle_id)
            ).scalar_one()
    assert stored == 5


def test_probe_request_is_handed_out_once_across_servers(pair):
    first, second = pair
    tid, token = first.terminal()
    assert first.post(f"/api/v1/terminals/{tid}/commands", json={}).status_code == 201
    barrier = threading.Barrier(10)

    def poll(i: int) -> int:
        barrier.wait()
        server = first if i % 2 else second
        return requests.get(
            f"{server.url}/api/v1/terminals/{tid}/commands/next", headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).status_code

    with ThreadPoolExecutor(10) as pool:
        assert sorted(pool.map(poll, range(10))) == [200] + [204] * 9


def test_three_servers_on_postgresql_and_seaweedfs_survive_a_server_and_a_store_kill(tmp_path, seaweedfs):
    """The large deployment: three `serve` processes, one PostgreSQL, one SeaweedFS S3;
    terminals upload and poll round robin (as a balancer would) while one server is
    SIGKILLed and restarted and then SeaweedFS itself is SIGKILLed and restarted. Every
    bundle a server confirmed is stored once and downloadable; the clients retried the rest."""
    import hashlib
    import sys
    import time
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))
    from server_kit import PASSWORD, Serve, prepare
    from test_server_kill import Fleet, stored_rows

    with fresh_pg_database() as url:
        tokens = prepare(url, [f"C-{i:02d}" for i in range(6)])
        blobs = ("--blobs", seaweedfs.s3_url())
        servers = [Serve(url, tmp_path / f"s{i}", tmp_path / "logs", extra=blobs, env=seaweedfs.env()) for i in range(3)]
        polls: list[int | str] = []
        stop = threading.Event()

        def poll(tid: str) -> None:
            turn = 0
            while not stop.wait(0.1):
                turn += 1
                try:
                    polls.append(requests.get(
                        f"{servers[turn % 3].url}/api/v1/terminals/{tid}/commands/next",
                        headers={"Authorization": f"Bearer {tokens[tid]}"}, timeout=5,
                    ).status_code)  # fmt: skip
                except requests.RequestException as exc:
                    polls.append(type(exc).__name__)

        pollers = [threading.Thread(target=poll, args=(tid,)) for tid in tokens]
        try:
            with ThreadPoolExecutor(3) as pool:
                list(pool.map(lambda s: s.start(timeout=90), servers))
            for t in pollers:
                t.start()
            with Fleet(servers, tokens) as fleet:
                time.sleep(1.0)
                fleet.kill_when_busy(1)
                time.sleep(0.5)
                servers[1].start(timeout=90)
                time.sleep(1.0)
                seaweedfs.kill()
                time.sleep(1.0)
                seaweedfs.start()
                time.sleep(1.5)
            stop.set()
            for t in pollers:
                t.join(10)
            rows = stored_rows(url)
            ids = [r["id"] for r in rows]
            note = f"{len(fleet.sent)} sent, {len(fleet.retried)} retried"
            assert len(ids) == len(set(ids)), note
            assert set(ids) == set(fleet.sent) == set(fleet.confirmed), note
            assert fleet.retried and len(fleet.sent) > 50, note
            for i, row in enumerate(rows):
                got = download(f"{servers[i % 3].url}/api/v1/bundles/{row['id']}/download", PASSWORD)
                assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == fleet.sent[row["id"]]
        finally:
            stop.set()
            for s in servers:
                s.stop()
    assert set(polls) <= {204, "ConnectionError", "ReadTimeout"} and polls.count(204) > 20, sorted(set(map(str, polls)))
    assert "Traceback" not in "".join(s.output() for s in servers)


def download(url: str, password: str) -> requests.Response:
    """A download, waiting as its 503 says while a server's blob store breaker is still open
    after the store came back (it tries the store again after breaker_open_seconds)."""
    import time

    deadline = time.monotonic() + 30
    while True:
        got = requests.get(url, auth=("support", password), timeout=30)
        if got.status_code != 503 or time.monotonic() > deadline:
            return got
        time.sleep(int(got.headers.get("Retry-After", "1")))
