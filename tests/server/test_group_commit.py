"""Group commit (issue 22): many uploads' or heartbeats' rows in one transaction, each upload
answered as if written alone: a repeat in the batch is stored once, another terminal's id is
409 for that upload only, a terminal past its quota is 429 alone, and what waited too long
for the writer is withdrawn (503 busy) and never stored."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from server_bundles import make_bundle
from server_harness import default_settings, fresh_pg_database

from remote.server import admission, db, fleet_queue, quotas, store
from remote.server.group_commit import GroupCommit
from remote.server.ingest import IngestError
from remote.server.service import Service

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(params=["sqlite", "postgresql"])
def service(request, tmp_path: Path) -> Iterator[Service]:
    settings = dataclasses.replace(default_settings(), quota_bundles_per_terminal_hour=3)
    if request.param == "sqlite":
        srv = Service(f"sqlite:///{tmp_path / 'g.db'}", tmp_path / "data", settings)
        yield srv
        srv.close()
    else:
        with fresh_pg_database() as url:
            srv = Service(url, tmp_path / "data", settings)
            yield srv
            srv.close()


def prepared(srv: Service, tid: str, token: str, bundle_id: str | None = None):
    _, body = make_bundle(token, tid, bundle_id=bundle_id)
    terminal = admission.admit_upload(srv, token, len(body), None)
    return srv.prepare_upload(body, terminal, None)


def stored_ids(srv: Service) -> list[str]:
    with srv.engine.connect() as conn:
        return sorted(conn.execute(sa.select(db.bundles.c.id)).scalars())


def queued(srv: Service) -> int:
    with srv.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(fleet_queue.fleet_queue)).scalar_one()


def test_one_transaction_answers_each_upload_as_if_alone(service):
    srv = service
    tokens = {tid: store.add_terminal(srv.engine, tid) for tid in ("G1", "G2", "G3")}
    a, b = prepared(srv, "G1", tokens["G1"]), prepared(srv, "G2", tokens["G2"])
    again = prepared(srv, "G1", tokens["G1"], bundle_id=a.bundle.id)  # the agent retried while the first was in flight
    stolen = prepared(srv, "G3", tokens["G3"], bundle_id=b.bundle.id)  # G3 names G2's bundle id
    answers = srv.store_uploads([a, b, again, stolen])
    assert [answer[1] for answer in answers[:3]] == [True, True, False]
    assert answers[2][0]["id"] == a.bundle.id
    assert isinstance(answers[3], IngestError) and answers[3].status == 409
    assert stored_ids(srv) == sorted([a.bundle.id, b.bundle.id])
    assert queued(srv) == 2  # each stored bundle queued for the fleet once, as its own terminal's
    with srv.engine.connect() as conn:
        assert sorted(conn.execute(sa.select(fleet_queue.fleet_queue.c.terminal_id)).scalars()) == ["G1", "G2"]
    # Sent again later, in another batch: answered with the stored record, nothing written.
    (later,) = srv.store_uploads([prepared(srv, "G2", tokens["G2"], bundle_id=b.bundle.id)])
    assert later[1] is False and later[0]["terminal_id"] == "G2"
    assert queued(srv) == 2


def test_a_terminal_past_its_quota_is_refused_alone(service):
    """Quota 3 bundles an hour: G1 sends 4 in one batch beside G2's one. The batch cannot
    be written together; written one by one, only G1's fourth is refused (429)."""
    srv = service
    t1, t2 = store.add_terminal(srv.engine, "G1"), store.add_terminal(srv.engine, "G2")
    ups = [prepared(srv, "G1", t1) for _ in range(4)] + [prepared(srv, "G2", t2)]

    async def submit_all():
        return await asyncio.gather(*(srv.uploads.submit(up) for up in ups), return_exceptions=True)

    answers = asyncio.run(submit_all())
    refused = [a for a in answers if isinstance(a, IngestError)]
    assert [(e.status, e.code) for e in refused] == [(429, "over_quota")]
    assert len(stored_ids(srv)) == 4
    assert quotas.usage(srv.engine, "G1", srv.quota_limits)["bundles_this_hour"] == 3
    assert quotas.usage(srv.engine, "G1", srv.quota_limits)["refused_this_hour"] == 1
    assert quotas.usage(srv.engine, "G2", srv.quota_limits)["bundles_this_hour"] == 1


def test_concurrent_uploads_share_transactions(service):
    """Uploads that arrive while a transaction is written are written together in the next."""
    srv = service
    tokens = [(f"C{i}", store.add_terminal(srv.engine, f"C{i}")) for i in range(24)]
    ups = [prepared(srv, tid, token) for tid, token in tokens]

    async def submit_all():
        return await asyncio.gather(*(srv.uploads.submit(up) for up in ups))

    answers = asyncio.run(submit_all())
    assert all(new for _, new in answers)
    assert len(stored_ids(srv)) == 24 and queued(srv) == 24
    assert srv.uploads.batches < 24  # fewer transactions than uploads


def test_heartbeats_are_queued_together(service):
    srv = service
    entries = [fleet_queue._row("heartbeat", f"H{i}", {"beat": {}}) for i in range(10)]

    async def submit_all():
        return await asyncio.gather(*(srv.heartbeats.submit(e) for e in entries))

    asyncio.run(submit_all())
    assert queued(srv) == 10


class _Settings:
    ingest_max_waiting = 2
    ingest_wait_seconds = 0.2
    shed_retry_after_seconds = 15
    statement_timeout_seconds = 5.0


def test_what_waits_too_long_is_withdrawn_and_never_written():
    """The writer is stuck on a first batch; a second item waits past ingest_wait_seconds and
    is answered 503 busy, and the writer, freed, does not write it; past ingest_max_waiting
    waiting, an item is refused at once."""
    written: list[list[str]] = []
    release = threading.Event()

    def write(items):
        release.wait(10)
        written.append(list(items))
        return list(items)

    commit = GroupCommit("test", write, _Settings())

    async def scenario():
        first = asyncio.ensure_future(commit.submit("first"))
        await asyncio.sleep(0.05)  # the writer took "first" and is stuck
        with pytest.raises(IngestError) as late:
            await commit.submit("second")
        assert (late.value.status, late.value.code) == (503, "busy") and late.value.retry_after >= 15
        release.set()
        assert await first == "first"

    asyncio.run(scenario())
    commit.stop()
    assert written == [["first"]]


def test_a_full_queue_is_refused_at_once():
    release = threading.Event()
    commit = GroupCommit("test", lambda items: (release.wait(10), list(items))[1], _Settings())

    async def scenario():
        waiting = [asyncio.ensure_future(commit.submit(i)) for i in range(3)]  # one taken, two waiting
        await asyncio.sleep(0.05)
        with pytest.raises(IngestError) as full:
            await commit.submit("one too many")
        assert full.value.code == "busy"
        release.set()
        return await asyncio.gather(*waiting, return_exceptions=True)

    answers = asyncio.run(scenario())
    commit.stop()
    assert answers[0] == 0
