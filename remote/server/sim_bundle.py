"""A spec-conforming bundle (posdiag.bundle/1, docs/bundle-format.md) for a simulated
terminal, made without the agent: the demo fleet sends these through the server's own
ingest. The cause's title comes from the packaged knowledge base."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import tarfile
import uuid
from typing import Any

from remote.server import titles

FAIL_FINDING = {"host": "network.host_unreachable", "network": "network.no_data_session", "printer": "printer.paper_out"}


def build(token: str, terminal: dict[str, str], labels: dict[str, str], created_at: str, fault: dict[str, str]) -> tuple[str, bytes]:
    """(bundle id, .tar.gz bytes). terminal: id, model, firmware, app_version; fault: code,
    scheme, cause, category, verdict (and its reason in English and Chinese)."""
    bundle_id = str(uuid.uuid4())
    members = [
        ("diagnosis.json", json.dumps(_diagnosis(fault), ensure_ascii=False).encode()),
        ("probes.json", json.dumps({"probes": _probes(fault)}).encode()),
        ("system.json", json.dumps({"uptime_s": 86400}).encode()),
        ("history.jsonl", json.dumps({"t": created_at, "ok": False, "code": fault["code"]}).encode() + b"\n"),
        ("events.jsonl", json.dumps({"code": fault["code"], "t": created_at}).encode() + b"\n"),
        ("logs/payment.log", f"{created_at[11:19]} txn failed: {fault['code']}\n".encode()),
    ]
    manifest = {
        "schema": "posdiag.bundle/1", "bundle_id": bundle_id,
        "terminal": {"id": terminal["id"], "serial": "SN-" + terminal["id"], "model": terminal["model"],
                     "firmware": terminal["firmware"], "app_version": terminal["app_version"], "labels": labels},
        "agent_version": "0.1.0", "created_at": created_at,
        "trigger": {"kind": "error", "code": fault["code"], "scheme": fault["scheme"], "command_id": None, "events": 1},
        "files": [{"path": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in members],
        "redaction": {}, "truncated": {}, "evicted": 0,
    }  # fmt: skip
    raw = json.dumps(manifest, sort_keys=True).encode()
    signature = hmac.new(hashlib.sha256(token.encode()).digest(), raw, hashlib.sha256).hexdigest().encode()
    return bundle_id, _tar_gz([("manifest.json", raw), *members, ("manifest.sig", signature)])


def _diagnosis(fault: dict[str, str]) -> dict[str, Any]:
    title = titles.cause_titles().get(fault["cause"], {"en": fault["cause"], "zh": fault["cause"]})
    return {
        "error": {"code": fault["code"], "scheme": fault["scheme"], "known": True, "meaning": title, "host_answer": fault["category"] == "card"},
        "probes": ["network", "printer"],
        "sweep": {"started_at": "2026-01-01T00:00:00Z", "wall_ms": 900.0},
        "causes": [{
            "id": fault["cause"], "category": fault["category"], "title": title, "confidence": 0.8,
            "evidence_for": [], "evidence_against": [], "actions": {"merchant": [], "technician": [], "support": []},
        }],
        "other_findings": [],
        "dispatch": {"verdict": fault["verdict"], "reason": {"en": fault["reason_en"], "zh": fault["reason_zh"]}},
    }  # fmt: skip


def _probes(fault: dict[str, str]) -> list[dict[str, Any]]:
    finding = FAIL_FINDING.get(fault["category"])
    failing = [{"id": finding, "severity": "fail", "detail": fault["cause"], "data": {}}] if finding else []
    return [
        {"name": "network", "status": "fail" if fault["category"] in ("host", "network") else "ok",
         "findings": failing if fault["category"] in ("host", "network") else [], "metrics": {"latency_ms": 60}, "duration_ms": 300.0},
        {"name": "printer", "status": "fail" if fault["category"] == "printer" else "ok",
         "findings": failing if fault["category"] == "printer" else [], "metrics": {}, "duration_ms": 40.0},
    ]  # fmt: skip


def _tar_gz(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
