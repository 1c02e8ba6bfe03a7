"""The fleet queue (issue 22): uploads and heartbeats are answered once durably queued, and
the fleet counts them after; what support reads is the same as when the upload counted them
itself, every arrival is counted once, and nothing queued is lost to a restart."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest
import requests
import sqlalchemy as sa
from server_bundles import make_bundle
from server_harness import default_settings, fresh_pg_database, start_server

from remote.server import db, fleet_queue, store
from remote.server.fleet.schema import heartbeats

OUTAGE = {"acquirer": "Q", "region": "east"}
OTHER = {"acquirer": "P", "region": "west"}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 's.db'}"
    else:
        with fresh_pg_database() as url:
            yield url


def beat(tid: str, when: datetime, labels: dict[str, str], free_mib: float) -> dict:
    return {"terminal_id": tid, "sent_at": db.stamp(when), "model": "A920", "firmware": "1.0", "labels": labels,
            "health": {"free_mib": free_mib}, "counters": {}}  # fmt: skip


def arrivals(now: datetime) -> list[tuple[str, str, dict | tuple[str, bytes]]]:
    """(kind, terminal, body) in arrival order: ten terminals heard from for three hours, a
    host outage on acquirer Q (seven terminals within 20 minutes), printer faults elsewhere."""
    fleet = [(f"Q-{i}", OUTAGE) for i in range(8)] + [(f"P-{i}", OTHER) for i in range(2)]
    out: list = []
    for hours in (3, 2, 1):
        out += [("beat", tid, beat(tid, now - timedelta(hours=hours), labels, 900 - 100 * hours)) for tid, labels in fleet]
    for i in range(7):
        out.append(("bundle", f"Q-{i}", dict(code="96", cause="host.unreachable", category="host", verdict="remote",
                                             created_at=db.stamp(now - timedelta(minutes=20 - i)), labels=OUTAGE)))  # fmt: skip
    for i, (tid, labels) in enumerate([("P-0", OTHER), ("P-1", OTHER), ("Q-7", OUTAGE), ("P-0", OTHER)]):
        out.append(("bundle", tid, dict(created_at=db.stamp(now - timedelta(minutes=9 - i)), labels=labels)))
    out += [("beat", tid, beat(tid, now, labels, 500)) for tid, labels in fleet]
    return out


def send(server, tokens: dict[str, str], items, each) -> None:
    http = requests.Session()
    for kind, tid, body in items:
        auth = {"Authorization": f"Bearer {tokens[tid]}"}
        if kind == "beat":
            answer = http.post(f"{server.url}/api/v1/heartbeats", json=body, headers=auth, timeout=30)
            assert answer.status_code == 202, answer.text
        else:
            bundle_id, data = make_bundle(tokens[tid], tid, **body)
            answer = server.upload(tokens[tid], data, bundle_id)
            assert answer.status_code == 201, answer.text
        each()


def figures(server) -> dict:
    """What support reads of the fleet: problems, incidents, the inventory."""
    server.service.fleet.sweep()
    problems = server.get("/api/v1/problems", params={"limit": 500}).json()["items"]
    incidents = server.get("/api/v1/incidents").json()["items"]
    terminals = server.get("/api/v1/terminals", params={"limit": 500}).json()["items"]
    return {
        "problems": sorted((p["id"], p["code"], p["bundles"], p["terminals_affected"], p["first_seen"], p["last_seen"]) for p in problems),
        "incidents": sorted((i["kind"], sorted(i["scope"].items()), i["status"], i["started_at"], i["terminals_affected"], i["bundles"]) for i in incidents),
        "terminals": sorted((t["id"], t["status"], t["last_seen_at"], t["last_heartbeat_at"], sorted(t["labels"].items()), json.dumps(t["health"], sort_keys=True), bool(t["risk"])) for t in terminals),
    }  # fmt: skip


def run(db_url, data_dir, now, inline: bool) -> dict:
    """inline: counted before the next request is sent, as the upload handler once counted;
    else the drainer is held back until everything was answered, then counts it all."""
    servers = start_server(db_url, data_dir, "queue")
    server = next(servers)
    try:
        fleet = server.service.settings.fleet  # the operator's labels: outages are cut by them
        tokens = {t: store.add_terminal(server.service.engine, t, OUTAGE if t[0] == "Q" else OTHER, fleet) for t in [f"Q-{i}" for i in range(8)] + ["P-0", "P-1"]}
        if not inline:
            server.service.fleet_queue.stop()
        send(server, tokens, arrivals(now), server.counted if inline else lambda: None)
        if not inline:
            queued = fleet_queue.backlog(server.service.engine)
            assert queued.depth == len(arrivals(now))  # answered, not yet counted: every one queued
            assert fleet_queue.Drainer(server.service.engine, server.service.fleet).drain() == queued.depth
        return figures(server)
    finally:
        servers.close()


def test_the_fleet_counts_the_same_from_the_queue_as_in_the_request_path(db_url, tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    queued = run(db_url, tmp_path / "queued", now, inline=False)
    if db_url.startswith("sqlite"):
        inline = run(f"sqlite:///{tmp_path / 'inline.db'}", tmp_path / "inline", now, inline=True)
    else:
        with fresh_pg_database() as url:
            inline = run(url, tmp_path / "inline", now, inline=True)
    assert queued == inline
    assert [(kind, scope) for kind, scope, *_ in queued["incidents"]] == [("outage", sorted(OUTAGE.items()))]
    assert {code: bundles for _, code, bundles, *_ in queued["problems"]} == {"96": 7, "51": 4}
    assert len(queued["terminals"]) == 10 and all(t[3] for t in queued["terminals"])


def test_a_stored_bundle_not_yet_counted_is_counted_after_a_restart_and_only_once(db_url, tmp_path):
    """The server dies after answering, before the fleet counted: the next server counts it,
    and the terminal sending it again (it may not have had the answer) changes nothing."""
    first = start_server(db_url, tmp_path / "data", "restart")
    server = next(first)
    token = store.add_terminal(server.service.engine, "R-0")
    server.service.fleet_queue.stop()  # the worker never gets to it
    bundle_id, body = make_bundle(token, "R-0", code="96", cause="host.unreachable", category="host", verdict="remote", labels=OTHER)
    assert server.upload(token, body, bundle_id).status_code == 201
    assert requests.post(f"{server.url}/api/v1/heartbeats", json=beat("R-0", datetime.now(UTC), OTHER, 100),
                         headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code == 202  # fmt: skip
    assert fleet_queue.backlog(server.service.engine).depth == 2
    first.close()

    second = start_server(db_url, tmp_path / "data", "restart", users=False)
    restarted = next(second)
    try:
        restarted.counted()
        with restarted.service.engine.connect() as conn:
            problems = conn.execute(sa.text("SELECT code, bundles FROM problems")).all()
            beats = conn.execute(sa.select(sa.func.count()).select_from(heartbeats)).scalar()
        assert [tuple(p) for p in problems] == [("96", 1)] and beats == 1
        assert restarted.upload(token, body, bundle_id).status_code == 200
        restarted.counted()
        with restarted.service.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT bundles FROM problems")).scalar() == 1
    finally:
        second.close()


def test_an_entry_counted_but_not_yet_deleted_is_not_counted_again(db_url, tmp_path):
    """A drainer killed between counting an entry and deleting it: its successor skips it."""
    servers = start_server(db_url, tmp_path / "data", "twice", users=False)
    server = next(servers)
    try:
        token = store.add_terminal(server.service.engine, "D-0")
        server.service.fleet_queue.stop()
        bundle_id, body = make_bundle(token, "D-0", labels=OTHER)
        assert server.upload(token, body, bundle_id).status_code == 201
        assert requests.post(f"{server.url}/api/v1/heartbeats", json=beat("D-0", datetime.now(UTC), OTHER, 100),
                             headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code == 202  # fmt: skip
        engine = server.service.engine
        drainer = fleet_queue.Drainer(engine, server.service.fleet)
        with engine.connect() as conn:
            rows = conn.execute(sa.select(fleet_queue.fleet_queue).order_by(fleet_queue.fleet_queue.c.id)).mappings().all()
        for row in rows:
            drainer._apply(row)  # counted; the process dies before the delete
        assert drainer.drain() == 2 and drainer.failed == 0
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT bundles FROM problems")).scalar() == 1
            assert conn.execute(sa.select(sa.func.count()).select_from(heartbeats)).scalar() == 1
    finally:
        servers.close()


def test_past_the_queue_bound_uploads_and_heartbeats_are_shed_and_healthz_still_answers(tmp_path):
    settings = dataclasses.replace(default_settings(), fleet_queue_max=2, shed_retry_after_seconds=7)
    servers = start_server(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "data", "shed", settings, users=False)
    server = next(servers)
    try:
        token = store.add_terminal(server.service.engine, "S-0")
        queue = server.service.fleet_queue
        queue.stop()  # the fleet falls behind
        made = [make_bundle(token, "S-0", labels=OTHER) for _ in range(3)]
        assert [server.upload(token, body, bid).status_code for bid, body in made[:2]] == [201, 201]
        assert queue.look().depth == 2
        shed = server.upload(token, made[2][1], made[2][0])
        assert shed.status_code == 503 and shed.json()["error"] == "fleet_behind", shed.text
        assert 7 <= int(shed.headers["Retry-After"]) <= 14
        beat_answer = requests.post(f"{server.url}/api/v1/heartbeats", json=beat("S-0", datetime.now(UTC), OTHER, 100),
                                    headers={"Authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
        assert beat_answer.status_code == 503 and 7 <= int(beat_answer.headers["Retry-After"]) <= 14
        assert requests.get(f"{server.url}/healthz", timeout=30).status_code == 200
        assert fleet_queue.Drainer(server.service.engine, server.service.fleet).drain() == 2
        assert queue.look().depth == 0
        assert server.upload(token, made[2][1], made[2][0]).status_code == 201  # the agent, back when told
    finally:
        servers.close()


def outage_closed_then_another(now: datetime) -> list:
    """An outage two hours ago; the fleet heard from since (its quiet outage closes by event
    time); then a second burst on the same scope, which must open a new incident rather
    than join the closed one; a bundle of a problem touched again between other arrivals."""
    fleet = [(f"Q-{i}", OUTAGE) for i in range(8)] + [(f"P-{i}", OTHER) for i in range(2)]
    out = arrivals(now - timedelta(hours=2))
    out += [("beat", tid, beat(tid, now - timedelta(minutes=30), labels, 400)) for tid, labels in fleet]
    for i in range(6):
        out.append(("bundle", f"Q-{i + 1}", dict(code="96", cause="host.unreachable", category="host", verdict="remote",
                                                 created_at=db.stamp(now - timedelta(minutes=8 - i)), labels=OUTAGE)))  # fmt: skip
        out.append(("bundle", "P-1", dict(created_at=db.stamp(now - timedelta(minutes=8 - i, seconds=30)), labels=OTHER)))
    out += [("beat", tid, beat(tid, now, labels, 300)) for tid, labels in fleet]
    return out


def drained_in_chunks(db_url, data_dir, now, chunk: int) -> dict:
    servers = start_server(db_url, data_dir, "chunks")
    server = next(servers)
    try:
        fleet = server.service.settings.fleet
        tokens = {t: store.add_terminal(server.service.engine, t, OUTAGE if t[0] == "Q" else OTHER, fleet) for t in [f"Q-{i}" for i in range(8)] + ["P-0", "P-1"]}
        server.service.fleet_queue.stop()
        items = outage_closed_then_another(now)
        send(server, tokens, items, lambda: None)
        drainer = fleet_queue.Drainer(server.service.engine, server.service.fleet, chunk=chunk)
        assert drainer.drain() == len(items) and drainer.failed == 0
        problems = server.get("/api/v1/problems", params={"limit": 500}).json()["items"]
        breakdowns = sorted((p["id"], json.dumps([p["by_model"], p["by_firmware"], p["by_label"], p["daily"]], sort_keys=True)) for p in problems)
        return dict(figures(server), breakdowns=breakdowns)
    finally:
        servers.close()


def test_counting_a_chunk_in_one_transaction_gives_the_figures_of_one_by_one(db_url, tmp_path, caplog):
    now = datetime.now(UTC).replace(microsecond=0)
    chunked = drained_in_chunks(db_url, tmp_path / "chunked", now, fleet_queue.CHUNK)
    if db_url.startswith("sqlite"):
        single = drained_in_chunks(f"sqlite:///{tmp_path / 'single.db'}", tmp_path / "single", now, 1)
    else:
        with fresh_pg_database() as url:
            single = drained_in_chunks(url, tmp_path / "single", now, 1)
    assert chunked == single
    assert not [r for r in caplog.records if "one by one" in r.getMessage()]  # counted in chunks, not after a fallback
    assert sorted(status for kind, _, status, *_ in chunked["incidents"]) == ["closed", "open"], chunked["incidents"]
    by_label = {json.loads(b)[2]["acquirer"][0]["key"]: json.loads(b)[2]["acquirer"] for _, b in chunked["breakdowns"]}
    assert by_label == {"P": [{"count": 9, "key": "P"}, {"count": 1, "key": "Q"}], "Q": [{"count": 13, "key": "Q"}]}


def test_a_row_the_fleet_cannot_count_is_dropped_alone_from_its_chunk(tmp_path):
    servers = start_server(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "data", "bad-row", users=False)
    server = next(servers)
    try:
        engine = server.service.engine
        token = store.add_terminal(engine, "B-0")
        server.service.fleet_queue.stop()
        for _ in range(3):
            bundle_id, body = make_bundle(token, "B-0", labels=OTHER)
            assert server.upload(token, body, bundle_id).status_code == 201
        with db.writing(engine) as conn:  # a row no release of the fleet can read
            conn.execute(fleet_queue.fleet_queue.insert().values(kind="bundle", terminal_id="B-0", payload="{}", enqueued_at=db.now()))
        drainer = fleet_queue.Drainer(engine, server.service.fleet)
        assert drainer.drain() == 4 and drainer.counted == 3 and drainer.failed == 1
        assert fleet_queue.backlog(engine).depth == 0
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM bundle_fleet")).scalar() == 3
    finally:
        servers.close()
