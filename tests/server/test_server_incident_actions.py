"""An incident as support works it: its page (figures, timeline against the expected count,
terminals, held bundles, causes, webhooks), and acknowledge, note, resolve, dismiss from the
page (CSRF) and the API (support and admin only), each recorded with who and when and sent
as a webhook; dismissing releases the holds."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import requests
from server_bundles import make_bundle
from server_harness import start_server
from test_server_fleet_webhooks import Receiver, db_url, enrol, settings, wait_for  # noqa: F401  (db_url: a fixture)
from test_server_pages import csrf_of, signed_in

from remote.server import db
from remote.server.fleet import incident_actions

pytestmark = [pytest.mark.timeout(300), pytest.mark.clock]  # clock: the date matters (tests/clock/run.py)


def outage(server, prefix: str, labels: dict[str, str]) -> tuple[str, list[str]]:
    """Seven of eight terminals fail on the host within minutes: (incident id, held bundle ids)."""
    now = datetime.now(UTC)
    tokens = enrol(server, prefix, labels, now)
    sent = []
    for i, token in enumerate(tokens[:7]):
        bundle_id, body = make_bundle(token, f"{prefix}-{i}", code="96", cause="host.unreachable", category="host", verdict="onsite",
                                      created_at=db.stamp(now - timedelta(minutes=20 - i)), labels=labels)  # fmt: skip
        assert server.upload(token, body, bundle_id).status_code == 201
        sent.append(bundle_id)
    found = [i for i in server.get("/api/v1/incidents", params={"status": "open"}).json()["items"] if i["scope"] == labels]
    assert len(found) == 1
    return found[0]["id"], sent


def held(server, bundle_ids: list[str]) -> set[str]:
    return {b for b in bundle_ids if server.get(f"/api/v1/bundles/{b}").json()["record"]["fleet_dispatch"]}


@pytest.fixture()
def hooked(db_url, tmp_path):  # noqa: F811
    receiver = Receiver()
    receiver.down = False
    servers = start_server(db_url, tmp_path / "data", "acts", settings(receiver.url))
    try:
        yield next(servers), receiver
    finally:
        servers.close()
        receiver.http.shutdown()


def test_acknowledge_note_and_dismiss_through_the_api(hooked):
    server, receiver = hooked
    incident, bundles = outage(server, "K", {"acquirer": "K", "region": "east"})
    assert held(server, bundles) == set(bundles)

    assert server.post(f"/api/v1/incidents/{incident}/ack", user="technician").status_code == 403
    assert requests.post(f"{server.url}/api/v1/incidents/{incident}/ack", timeout=10).status_code == 401
    acked = server.post(f"/api/v1/incidents/{incident}/ack", json={"note": "calling the acquirer"})
    assert acked.status_code == 200, acked.text
    assert (acked.json()["acknowledged_by"], acked.json()["status"]) == ("support", "open")
    again = server.post(f"/api/v1/incidents/{incident}/ack", user="admin").json()
    assert again["acknowledged_by"] == "support" and again["acknowledged_at"] == acked.json()["acknowledged_at"]

    assert server.post(f"/api/v1/incidents/{incident}/notes", json={"note": "  "}).status_code == 422
    noted = server.post(f"/api/v1/incidents/{incident}/notes", json={"note": "acquirer says: a config push"}, user="admin").json()
    assert [(n["by"], n["note"]) for n in noted["notes"]] == [("admin", "acquirer says: a config push")]

    dismissed = server.post(f"/api/v1/incidents/{incident}/dismiss", json={"note": "test traffic"})
    assert dismissed.status_code == 200 and dismissed.json()["status"] == "dismissed"
    assert held(server, bundles) == set()  # their dispatch is the terminal's own again
    assert server.get("/api/v1/bundles", params={"verdict": "hold"}).json()["items"] == []
    assert server.post(f"/api/v1/incidents/{incident}/dismiss").status_code == 409
    assert server.post(f"/api/v1/incidents/{incident}/resolve").json()["error"] == "not_open"

    detail = server.get(f"/api/v1/incidents/{incident}").json()
    assert [(a["action"], a["by"]) for a in detail["actions"]] == [("acknowledged", "support"), ("note", "admin"), ("dismissed", "support")]
    assert detail["actions"][0]["note"] == "calling the acquirer" and all(a["at"] for a in detail["actions"])
    assert [i["id"] for i in server.get("/api/v1/incidents", params={"status": "dismissed"}).json()["items"]] == [incident]
    logged = incident_actions.audit_entries(server.service.engine, {"object_id": incident}, None, 10)  # the audit log's source
    assert [(e["action"], e["actor"], e["source"], e["object_kind"]) for e in logged] == [
        ("incident.dismissed", "support", "api", "incident"), ("incident.note", "admin", "api", "incident"),
        ("incident.acknowledged", "support", "api", "incident"),
    ]
    assert logged[0]["detail"] == {"note": "test traffic"}
    audit = server.get("/api/v1/audit", params={"object_kind": "incident", "object_id": incident}, user="admin").json()["items"]
    assert [(e["action"], e["actor"]) for e in audit] == [("incident.dismissed", "support"), ("incident.note", "admin"), ("incident.acknowledged", "support")]
    assert server.get("/api/v1/incidents/nope").status_code == 404
    events = lambda: {b["event"] for _, b in receiver.taken if b["data"].get("id") == incident}  # noqa: E731
    assert wait_for(lambda: {"incident.opened", "incident.acknowledged", "incident.dismissed"} <= events())
    told = next(b for _, b in receiver.taken if b["event"] == "incident.dismissed")
    assert told["data"]["status"] == "dismissed" and told["data"]["action"]["by"] == "support"


def test_the_incident_page_and_its_forms(hooked):
    server, receiver = hooked
    incident, bundles = outage(server, "Q", {"acquirer": "Q", "region": "west"})
    session = signed_in(server)
    page = session.get(f"{server.url}/incidents/{incident}", timeout=30)
    assert page.status_code == 200
    html = page.text
    assert "acquirer=Q, region=west" in html and 'id="timeline"' in html and 'class="slot"' in html
    assert all(f"/terminals/Q-{i}" in html for i in range(7)) and "/terminals/Q-7" not in html  # the failing ones, linked
    assert all(f"/bundles/{b}" in html for b in bundles)  # held
    assert "host.unreachable" in html and 'id="act-ack"' in html
    assert f'href="/incidents/{incident}"' in session.get(f"{server.url}/incidents", timeout=30).text

    forged = session.post(f"{server.url}/incidents/{incident}/ack", data={"csrf": "0" * 64}, allow_redirects=False, timeout=30)
    assert forged.status_code == 403
    token = csrf_of(html)
    done = session.post(f"{server.url}/incidents/{incident}/ack", data={"csrf": token}, allow_redirects=False, timeout=30)
    assert done.status_code == 303 and done.headers["location"].endswith("?done=ack")
    session.post(f"{server.url}/incidents/{incident}/note", data={"csrf": token, "note": "<b>paged</b> the host team"}, timeout=30)
    resolved = session.post(f"{server.url}/incidents/{incident}/resolve", data={"csrf": token}, timeout=30)
    assert resolved.status_code == 200 and 'id="act-resolve"' not in resolved.text
    assert "&lt;b&gt;paged&lt;/b&gt; the host team" in resolved.text
    actions = re.findall(r'<tr class="action-(\w+)"><td>.*?</td><td>(\w+)</td>', resolved.text)
    assert actions == [("acknowledged", "support"), ("note", "support"), ("resolved", "support")]
    record = server.get(f"/api/v1/incidents/{incident}").json()
    assert record["status"] == "closed" and record["ended_at"]
    assert held(server, bundles) == set(bundles)  # resolved, not dismissed: the holds were right
    logged = incident_actions.audit_entries(server.service.engine, {"object_id": incident, "action": "incident.resolved"}, None, 10)
    assert [(e["actor"], e["source"]) for e in logged] == [("support", "web")]
    assert wait_for(lambda: any(b["event"] == "incident.resolved" for _, b in receiver.taken))
    assert "incident.resolved" in session.get(f"{server.url}/incidents/{incident}", timeout=30).text  # webhooks sent

    technician = signed_in(server, "technician")
    page = technician.get(f"{server.url}/incidents/{incident}", timeout=30).text
    assert 'id="act-note"' not in page
    refused = technician.post(f"{server.url}/incidents/{incident}/note", data={"csrf": csrf_of(page), "note": "x"}, timeout=30)
    assert refused.status_code == 403

    chinese = session.get(f"{server.url}/incidents/{incident}", headers={"Accept-Language": "zh"}, timeout=30).text
    assert "受影响终端" in chinese and "Terminals affected" not in chinese and "已解决" in chinese
    assert session.get(f"{server.url}/incidents/no-such", timeout=30).status_code == 404
