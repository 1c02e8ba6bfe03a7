"""The query API: filters, cursor paging, detail, download and fleet stats."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from server_bundles import make_bundle

pytestmark = pytest.mark.clock  # the date matters: tests/clock/run.py runs this module at midnight


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture()
def fleet(server):
    """Three terminals of one fresh model, seven bundles over seven days."""
    model = f"M-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC).replace(microsecond=0)
    made = []
    spec = [
        ("51", "card.insufficient_funds", "card", "none", "1.0"),
        ("51", "card.insufficient_funds", "card", "none", "1.0"),
        ("A0", "security.keys_out_of_sync", "security", "remote", "1.0"),
        ("E3", "printer.paper_out", "printer", "onsite", "1.1"),
        ("E3", "printer.paper_out", "printer", "onsite", "1.1"),
        ("E3", "printer.paper_out", "printer", "onsite", "1.1"),
        ("68", "network.dns_failed", "network", "remote", "1.1"),
    ]
    terminals = [server.terminal("Q") for _ in range(3)]
    for i, (code, cause, category, verdict, firmware) in enumerate(spec):
        tid, token = terminals[i % 3] if code != "E3" else terminals[0]
        created = now - timedelta(days=i)
        bundle_id, body = make_bundle(
            token, tid, code=code, cause=cause, category=category, verdict=verdict,
            model=model, firmware=firmware, created_at=iso(created),
        )  # fmt: skip
        assert server.upload(token, body, bundle_id).status_code == 201
        made.append({"id": bundle_id, "terminal": tid, "code": code, "created": created, "firmware": firmware})
    return model, made, [t for t, _ in terminals]


def listing(server, **params):
    response = server.get("/api/v1/bundles", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_filters(server, fleet):
    model, made, terminals = fleet
    assert len(listing(server, model=model)["items"]) == 7
    assert {b["id"] for b in listing(server, model=model, code="E3")["items"]} == {b["id"] for b in made if b["code"] == "E3"}
    assert len(listing(server, model=model, cause="card.insufficient_funds")["items"]) == 2
    assert len(listing(server, model=model, category="printer")["items"]) == 3
    assert len(listing(server, model=model, firmware="1.1")["items"]) == 4
    assert {b["terminal_id"] for b in listing(server, terminal=terminals[0])["items"]} == {terminals[0]}
    assert listing(server, model="no-such-model")["items"] == []


def test_time_range(server, fleet):
    model, made, _ = fleet
    since = made[2]["created"]
    until = made[0]["created"]
    got = listing(server, model=model, since=iso(since), until=iso(until))["items"]
    assert [b["id"] for b in got] == [made[1]["id"], made[2]["id"]]
    response = server.get("/api/v1/bundles", params={"since": "2026-01-01T00:00:00"})
    assert response.status_code == 422 and response.json()["error"] == "invalid_request"


def test_cursor_paging_walks_every_bundle_once_newest_first(server, fleet):
    model, made, _ = fleet
    seen, cursor, pages = [], None, 0
    while True:
        page = listing(server, model=model, limit=3, **({"cursor": cursor} if cursor else {}))
        seen += [b["id"] for b in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert pages == 3
    assert seen == [b["id"] for b in made]  # made newest first


def test_bad_cursor_is_400(server):
    response = server.get("/api/v1/bundles", params={"cursor": "not-a-cursor"})
    assert response.status_code == 400 and response.json()["error"] == "bad_cursor"


def test_detail_and_download(server, fleet):
    _, made, _ = fleet
    bundle_id = made[3]["id"]
    detail = server.get(f"/api/v1/bundles/{bundle_id}").json()
    assert detail["record"]["id"] == bundle_id
    assert detail["manifest"]["bundle_id"] == bundle_id
    assert detail["diagnosis"]["causes"][0]["id"] == "printer.paper_out"
    assert detail["probes"]["probes"][0]["name"] == "printer"
    assert "paper end" in detail["logs"]["payment.log"]
    download = server.get(f"/api/v1/bundles/{bundle_id}/download")
    assert download.status_code == 200 and download.headers["content-type"] == "application/gzip"
    import hashlib

    assert hashlib.sha256(download.content).hexdigest() == detail["record"]["sha256"]
    missing = server.get(f"/api/v1/bundles/{uuid.uuid4()}")
    assert missing.status_code == 404 and missing.json()["error"] == "no_bundle"
    assert server.get("/api/v1/bundles/not-an-id").status_code == 422


def test_stats(server, fleet):
    model, _, terminals = fleet
    stats = server.get("/api/v1/stats", params={"days": 30, "top": 100}).json()
    by = {name: {c["key"]: c["count"] for c in stats[name]} for name in stats if name.startswith("by_") or name == "top_terminals"}
    assert by["by_model"][model] == 7
    assert by["by_code"]["E3"] >= 3 and by["by_cause"]["printer.paper_out"] >= 3
    assert by["top_terminals"][terminals[0]] == 5
    assert stats["total"] >= 7
    assert sum(d["count"] for d in stats["per_day"]) == stats["total"]
    assert server.get("/api/v1/stats", params={"days": 0}).status_code == 422


def test_nul_in_urls_bodies_and_credentials_is_refused_not_a_500(server):
    tid, _ = server.terminal()
    for path in ("/api/v1/bundles?code=%00", "/api/v1/terminals/a%00b/commands", "/bundles?terminal=%00"):
        response = server.get(path)
        assert response.status_code == 422 and response.json()["error"] == "invalid_request", path
    assert server.post(f"/api/v1/terminals/{tid}/commands", json={"code": "a\u0000"}).status_code == 422
    assert server.post("/api/v1/terminals", user="admin", json={"id": "a\u0000"}).status_code == 422
    import requests

    assert requests.get(server.url + "/api/v1/bundles", auth=("a\x00b", "x"), timeout=10).status_code == 401


def test_crafted_cursors_and_extreme_times_are_refused_not_a_500(server):
    import base64
    import json

    for crafted in (["\u0000", "x"], ["2026-01-01T00:00:00.000000Z", "\u0000"], [1, 2], "x"):
        cursor = base64.urlsafe_b64encode(json.dumps(crafted).encode()).decode()
        assert server.get("/api/v1/bundles", params={"cursor": cursor}).status_code == 400
    response = server.get("/api/v1/bundles", params={"since": "9999-12-31T23:59:59-10:00"})
    assert response.status_code == 422
    tid, token = server.terminal()
    bundle_id, body = make_bundle(token, tid, created_at="9999-12-31T23:59:59-10:00")
    assert server.upload(token, body, bundle_id).json()["error"] == "bad_manifest"
