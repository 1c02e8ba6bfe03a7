"""Two servers on one database (the load-balanced set-up): the same bundle sent to both at
once is stored once, and a probe request is handed out once."""

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
