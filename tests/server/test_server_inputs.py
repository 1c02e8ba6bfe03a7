"""What a terminal may write where support reads it (issue 21, "Inputs"): event times before
1970 and labels, models and versions with control, bidi or zero-width characters are refused
with 400 on a bundle and on a heartbeat alike; the agent dead-letters such a bundle instead of
retrying it; and text stored before these rules reaches no page raw (the outage banner)."""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace

import pytest
import requests
from server_bundles import make_bundle
from server_harness import fresh_pg_database, start_server
from test_server_pages import signed_in

from agent.outbox import Outbox
from agent.upload import flush
from remote.client import Client
from remote.server import db
from remote.server.fleet.schema import incidents

HOSTILE = {
    "ESC": "A920\x1b[31m",
    "BEL": "A920\x07",
    "DEL": "A920\x7f",
    "C1 CSI": "A920\x9b2J",
    "NUL": "A920\x00",
    "newline": "A920\nfake line",
    "RIGHT-TO-LEFT OVERRIDE": "A\u202e029",
    "FIRST STRONG ISOLATE": "A\u2068920",
    "ZERO WIDTH SPACE": "A\u200b920",
    "ZERO WIDTH JOINER": "A\u200d920",
    "BOM": "\ufeffA920",
    "private use": "A\ue000920",
}
FINE = ["A920 Pro", "华北 区", "北京\u3000朝阳", "AT+T", "v1.2.3-rc1 (build 7)", "Ünïcödé"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"inputs-{request.param}")
    if request.param == "sqlite":
        yield from start_server(f"sqlite:///{tmp / 's.db'}", tmp / "data", "sqlite")
    else:
        with fresh_pg_database() as url:
            yield from start_server(url, tmp / "data", "postgresql")


def heartbeat(server, token: str, tid: str, **fields) -> requests.Response:
    body = {"terminal_id": tid, "sent_at": "2026-11-30T10:00:00Z", **fields}
    return requests.post(f"{server.url}/api/v1/heartbeats", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00Z", "0999-12-31T23:59:59Z", "1969-12-31T23:59:59Z"])
def test_event_times_before_1970_are_refused_with_400(server, when):
    tid, token = server.terminal()
    bundle_id, body = make_bundle(token, tid, created_at=when)
    answer = server.upload(token, body, bundle_id)
    assert answer.status_code == 400 and answer.json()["error"] == "bad_time", answer.text
    assert "created_at" in answer.json()["detail"]
    beat = heartbeat(server, token, tid, sent_at=when)
    assert beat.status_code == 400 and beat.json()["error"] == "bad_time", beat.text
    assert server.get(f"/api/v1/bundles/{bundle_id}").status_code == 404


def test_the_epoch_itself_is_taken(server):
    """A terminal whose clock lost its setting reads 1970: its bundle is stored (flagged behind)."""
    tid, token = server.terminal()
    bundle_id, body = make_bundle(token, tid, created_at="1970-01-01T00:00:05Z")
    answer = server.upload(token, body, bundle_id)
    assert answer.status_code == 201 and answer.json()["clock_flag"] == "behind", answer.text
    assert heartbeat(server, token, tid, sent_at="1970-01-01T00:00:05Z").status_code == 202


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_text_in_model_firmware_or_labels_is_refused_with_400(server, kind):
    text = HOSTILE[kind]
    tid, token = server.terminal()
    for field, expected in (("model", "bad_text"), ("firmware", "bad_text"), ("labels", "bad_label")):
        extra = {"labels": {"acquirer": text}} if field == "labels" else {field: text}
        bundle_id, body = make_bundle(token, tid, **extra)
        answer = server.upload(token, body, bundle_id)
        assert answer.status_code == 400 and answer.json()["error"] == expected, (field, answer.text)
        beat = heartbeat(server, token, tid, **extra)
        assert beat.status_code == 400 and beat.json()["error"] == expected, (field, beat.text)
    listed = server.get(f"/api/v1/terminals?label.acquirer={requests.utils.quote(text)}")
    assert listed.status_code in (200, 422) and not listed.json().get("items"), listed.text


@pytest.mark.parametrize("text", FINE)
def test_printable_text_of_any_script_is_taken(server, text):
    tid, token = server.terminal()
    bundle_id, body = make_bundle(token, tid, model=text, firmware=text, labels={"carrier": text})
    assert server.upload(token, body, bundle_id).status_code == 201
    assert heartbeat(server, token, tid, model=text, firmware=text, labels={"carrier": text}).status_code == 202
    shown = server.get(f"/api/v1/terminals?label.carrier={requests.utils.quote(text)}").json()["items"]
    assert [t["id"] for t in shown] == [tid] and shown[0]["model"] == text


def test_a_label_a_terminal_may_not_send_is_named_in_the_refusal(server):
    tid, token = server.terminal()
    for labels, says in (({"Acquirer": "B"}, "keys are"), ({"acquirer": "B&C"}, "'&'"), ({"acquirer": "x" * 65}, "1-64")):
        bundle_id, body = make_bundle(token, tid, labels=labels)
        answer = server.upload(token, body, bundle_id)
        assert answer.status_code == 400 and says in answer.json()["detail"], answer.text


def test_the_agent_dead_letters_a_bundle_the_server_refuses_for_its_time(server, tmp_path):
    tid, token = server.terminal()
    outbox = Outbox(tmp_path / "outbox", 1 << 20)
    bundle_id, body = make_bundle(token, tid, created_at="0001-01-01T00:00:00Z")
    outbox.put(body, bundle_id)
    settings = SimpleNamespace(
        server_url=server.url, token=token, ca_file="", connect_timeout_seconds=5, read_timeout_seconds=30, max_attempts=3,
        backoff_initial_seconds=0, backoff_max_seconds=0, retry_after_max_seconds=1,
    )  # fmt: skip
    report = flush(outbox, Client(settings))
    assert report.dead == [bundle_id] and outbox.entries() == []
    reason = json.loads(next((tmp_path / "outbox" / "dead").glob("*.json")).read_text())
    assert reason["status"] == 400 and reason["error"] == "bad_time"


def test_text_stored_before_these_rules_reaches_the_banner_escaped(server):
    """An open outage whose scope came from a label stored before the rules (or set by an
    operator): every page's red banner shows its control and bidi characters as escapes."""
    scope = {"acquirer": "B\u202eevil<script>alert(1)</script>\x1b[2J"}
    summary = {"en": f"Host or network outage on acquirer {scope['acquirer']}", "zh": f"acquirer {scope['acquirer']} 主机或网络故障"}
    incident_id = str(uuid.uuid4())
    now = db.now()
    with server.service.engine.begin() as conn:
        conn.execute(incidents.insert().values(
            id=incident_id, kind="outage", status="open", scope_key=f"acquirer={incident_id}", open_key=f"outage:{incident_id}",
            scope=json.dumps(scope), categories='["host"]', codes="[]", started_at=now, detected_at=now, last_hit_at=now,
            terminals_affected=5, terminals_in_scope=100, bundles=5, expected=0.1, p_value=1e-9, summary=json.dumps(summary),
        ))  # fmt: skip
    try:
        session = signed_in(server, "support")
        for path in ("/", "/incidents", "/bundles"):
            page = session.get(server.url + path, timeout=30)
            assert page.status_code == 200
            assert "\u202e" not in page.text and "\x1b" not in page.text and "<script>alert" not in page.text, path
            assert "B\\u202eevil&lt;script&gt;" in page.text, path
    finally:
        with server.service.engine.begin() as conn:
            conn.execute(incidents.delete().where(incidents.c.id == incident_id))
