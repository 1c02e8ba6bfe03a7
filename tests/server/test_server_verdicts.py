"""The `merchant` dispatch class on the server: an agent's bundle carrying it is indexed,
filtered by verdict and counted in the stats; an unknown verdict in a filter is refused."""

from __future__ import annotations

import uuid

from server_bundles import make_bundle


def test_merchant_verdicts_are_filtered_and_counted(server):
    model = f"V-{uuid.uuid4().hex[:6]}"
    tid, token = server.terminal("V")
    ids = {}
    for verdict, code, cause, category in (
        ("merchant", "3000", "printer.paper_out", "printer"),
        ("merchant", "E3", "power.battery_low", "power"),
        ("onsite", "94", "storage.failing", "storage"),
        ("none", "51", "card.insufficient_funds", "card"),
    ):
        bundle_id, body = make_bundle(token, tid, code=code, cause=cause, category=category, verdict=verdict, model=model)
        assert server.upload(token, body, bundle_id).status_code == 201
        ids.setdefault(verdict, set()).add(bundle_id)
    listed = server.get("/api/v1/bundles", params={"model": model, "verdict": "merchant"}).json()["items"]
    assert {b["id"] for b in listed} == ids["merchant"]
    assert {b["verdict"] for b in listed} == {"merchant"}
    stats = server.get("/api/v1/stats", params={"days": 30, "top": 100}).json()
    assert {c["key"]: c["count"] for c in stats["by_verdict"]}.get("merchant", 0) >= 2
    refused = server.get("/api/v1/bundles", params={"verdict": "maybe"})
    assert refused.status_code == 422
