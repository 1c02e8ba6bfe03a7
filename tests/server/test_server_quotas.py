"""Per-terminal upload quotas (issue 21, "Disk fill"): bundles per hour and bytes per day,
429 with Retry-After, counted in the metrics, shown on the terminal page, shared by every
server on one database, exact under concurrent uploads; and the agent keeps what it could
not send."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
import requests
from server_bundles import make_bundle
from server_harness import default_settings, fresh_pg_database, start_server
from test_server_pages import signed_in

from agent.outbox import Outbox
from agent.upload import flush
from remote.client import Client
from remote.server import quotas

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 's.db'}"
    else:
        with fresh_pg_database() as url:
            yield url


def limited(bundles: int = 0, mib: float = 0.0):
    return dataclasses.replace(default_settings(), quota_bundles_per_terminal_hour=bundles, quota_mib_per_terminal_day=mib)


@pytest.fixture()
def serve(db_url, tmp_path):
    started = []

    def start(settings, name: str = "q"):
        running = start_server(db_url, tmp_path / "data", name, settings, users=not started)
        started.append(running)
        return next(running)

    yield start
    for running in started:
        running.close()


def metric(server, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", requests.get(f"{server.url}/metrics", timeout=30).text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def test_bundles_per_hour_past_the_limit_are_429_with_retry_after(serve):
    server = serve(limited(bundles=3))
    tid, token = server.terminal()
    made = [make_bundle(token, tid) for _ in range(4)]
    assert [server.upload(token, body, bid).status_code for bid, body in made[:2]] == [201, 201]
    assert server.upload(token, made[0][1], made[0][0]).status_code == 200  # a repeat stores nothing, costs nothing
    assert server.upload(token, made[2][1], made[2][0]).status_code == 201
    refused = server.upload(token, made[3][1], made[3][0])
    assert refused.status_code == 429 and refused.json()["error"] == "over_quota", refused.text
    left = 3600 - (datetime.now(UTC).minute * 60 + datetime.now(UTC).second)
    assert abs(int(refused.headers["Retry-After"]) - left) <= 5
    assert server.get(f"/api/v1/bundles/{made[3][0]}").status_code == 404
    assert metric(server, 'posdiag_quota_refused_total{quota="bundles_per_hour"}') == 1
    assert metric(server, 'posdiag_bundles_rejected_total{reason="over_quota"}') == 1
    other, other_token = server.terminal()  # a quota is the terminal's own
    bid, body = make_bundle(other_token, other)
    assert server.upload(other_token, body, bid).status_code == 201


def test_bytes_per_day_past_the_limit_are_429_until_the_day_ends(serve):
    server = serve(limited(mib=0.01))  # 10 KiB a day
    tid, token = server.terminal()
    statuses, stored = [], 0
    for _ in range(12):
        bid, body = make_bundle(token, tid, log_text="x" * 1500)
        answer = server.upload(token, body, bid)
        statuses.append(answer.status_code)
        if answer.status_code == 201:
            stored += len(body)
        else:
            assert answer.status_code == 429 and answer.json()["error"] == "over_quota", answer.text
            now = datetime.now(UTC)
            assert abs(int(answer.headers["Retry-After"]) - (86400 - (now.hour * 3600 + now.minute * 60 + now.second))) <= 5
    assert 201 in statuses and 429 in statuses and statuses == sorted(statuses)  # stored until full, then refused
    assert stored <= 0.01 * (1 << 20)
    usage = quotas.usage(server.service.engine, tid, server.service.quota_limits)
    assert usage["bytes_today"] == stored and usage["refused_today"] == statuses.count(429)


def test_concurrent_uploads_never_pass_the_limit(serve):
    server = serve(limited(bundles=3))
    tid, token = server.terminal()
    made = [make_bundle(token, tid) for _ in range(12)]
    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(lambda m: server.upload(token, m[1], m[0]).status_code, made))
    assert sorted(codes) == [201] * 3 + [429] * 9, codes


def test_several_servers_on_one_database_share_the_count(db_url, serve):
    if not db_url.startswith("postgresql"):
        pytest.skip("several servers share PostgreSQL (SQLite serves one)")
    first, second = serve(limited(bundles=4), "one"), serve(limited(bundles=4), "two")
    tid, token = first.terminal()
    codes = []
    for i in range(8):
        bid, body = make_bundle(token, tid)
        codes.append((first if i % 2 else second).upload(token, body, bid).status_code)
    assert codes == [201] * 4 + [429] * 4


def test_the_terminal_page_shows_the_quota_and_the_refusals(serve):
    server = serve(limited(bundles=1, mib=64))
    tid, token = server.terminal()
    for _ in range(3):
        bid, body = make_bundle(token, tid)
        server.upload(token, body, bid)
    page = signed_in(server).get(f"{server.url}/terminals/{tid}", timeout=30).text
    shown = re.search(r'<p id="quota"[^>]*>(.*?)</p>', page, re.S)[1]
    assert "1 of 1 bundles this hour" in shown and "of 64 MiB today" in shown and "2 this hour, 2 today" in shown


def test_the_agent_keeps_what_the_quota_refused(serve, tmp_path):
    server = serve(limited(bundles=1))
    tid, token = server.terminal()
    outbox = Outbox(tmp_path / "outbox", 1 << 20)
    ids = []
    for _ in range(3):
        bid, body = make_bundle(token, tid)
        outbox.put(body, bid)
        ids.append(bid)
    settings = SimpleNamespace(
        server_url=server.url, token=token, ca_file="", connect_timeout_seconds=5, read_timeout_seconds=30, max_attempts=1,
        backoff_initial_seconds=0, backoff_max_seconds=0, retry_after_max_seconds=1,
    )  # fmt: skip
    report = flush(outbox, Client(settings))
    assert report.sent == ids[:1] and report.dead == [] and "429" in report.stopped
    assert [e.bundle_id for e in outbox.entries()] == ids[1:]  # kept, in order, for a later flush
