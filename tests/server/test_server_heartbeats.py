"""Heartbeats and bundles and the inventory they feed (event time, labels, card data), on a
server whose [server] clock_ahead_seconds is an hour: the one setting that decides how far
ahead an event time may be."""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
import requests
from server_bundles import make_bundle
from server_harness import default_settings, fresh_pg_database, start_server

from remote.server import db

pytestmark = pytest.mark.clock  # the date matters: tests/clock/run.py runs this module at midnight

AHEAD_SECONDS = 3600.0
PAN = "4111111111111111"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"heartbeats-{request.param}")
    settings = dataclasses.replace(default_settings(), clock_ahead_seconds=AHEAD_SECONDS)
    with contextlib.ExitStack() as stack:
        url = f"sqlite:///{tmp / 's.db'}" if request.param == "sqlite" else stack.enter_context(fresh_pg_database())
        yield from start_server(url, tmp / "data", request.param, settings)


def send(server, token: str, tid: str, sent_at: datetime, **fields) -> dict:
    body = {"terminal_id": tid, "sent_at": db.stamp(sent_at), "model": "A920", "firmware": "1.0"} | fields
    answer = requests.post(f"{server.url}/api/v1/heartbeats", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert answer.status_code == 202, answer.text
    return answer.json()


def test_the_server_clock_setting_decides_the_fleet_clamp(server):
    tid, token = server.terminal("H")
    now = datetime.now(UTC)
    within = now + timedelta(seconds=AHEAD_SECONDS / 2)  # past the old fleet-only 300 s, inside [server]'s hour
    kept = send(server, token, tid, within)
    assert kept["clock_clamped"] is False and kept["event_at"] == db.stamp(within)
    beyond = send(server, token, tid, now + timedelta(seconds=AHEAD_SECONDS * 2))
    assert beyond["clock_clamped"] is True and beyond["event_at"] < db.stamp(within)


def inventory_row(server, tid: str) -> dict:
    listed = server.get("/api/v1/terminals", params={"limit": 500}).json()["items"]
    return next(t for t in listed if t["id"] == tid)


def test_a_bundle_from_an_agent_without_labels_keeps_the_terminals_labels(server):
    tid, token = server.terminal("L")
    now = datetime.now(UTC)
    send(server, token, tid, now - timedelta(minutes=10), labels={"acquirer": "A", "region": "east", "carrier": "X"})
    bundle_id, body = make_bundle(token, tid, created_at=db.stamp(now - timedelta(minutes=5)))  # no terminal.labels
    assert server.upload(token, body, bundle_id).status_code == 201
    row = inventory_row(server, tid)
    assert row["claimed_labels"] == {"acquirer": "A", "region": "east", "carrier": "X"}
    assert row["labels"] == {"carrier": "X"}  # acquirer and region are the operator's: a claim is a hint
    bundle_id, body = make_bundle(token, tid, created_at=db.stamp(now - timedelta(minutes=1)), labels={"acquirer": "B"})
    assert server.upload(token, body, bundle_id).status_code == 201
    row = inventory_row(server, tid)  # a newer sighting that has labels replaces them
    assert (row["claimed_labels"], row["labels"]) == ({"acquirer": "B"}, {})


def test_card_numbers_in_labels_and_versions_are_stored_masked(server):
    tid, token = server.terminal("P")
    now = datetime.now(UTC)
    send(server, token, tid, now - timedelta(minutes=10), labels={"carrier": f"card {PAN}", "shop": f"card {PAN}"}, model=f"A920 {PAN}")
    row = inventory_row(server, tid)
    assert row["labels"] == {"carrier": "card 411111******1111"} and row["model"] == "A920 411111******1111"
    assert row["claimed_labels"]["shop"] == "card 411111******1111"
    bundle_id, body = make_bundle(token, tid, created_at=db.stamp(now - timedelta(minutes=5)), labels={"carrier": f"pan {PAN}"})
    assert server.upload(token, body, bundle_id).status_code == 201
    assert inventory_row(server, tid)["labels"] == {"carrier": "pan 411111******1111"}
    pages = [server.get("/api/v1/terminals", params={"label.carrier": "pan 411111******1111"}).text, server.get("/api/v1/problems").text]
    assert all(PAN not in text for text in pages)
