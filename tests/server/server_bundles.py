"""Spec-conforming test bundles (posdiag.bundle/1), built without the agent.

The server must accept what the spec says, so these are built from the spec; a test in
test_ingest.py also feeds the server a bundle made by agent.bundle when that is importable.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import tarfile
import uuid
from datetime import UTC, datetime
from typing import Any

PASSWORD = "correct horse battery"  # every test user's


def sign(token: str, manifest: bytes) -> bytes:
    key = hashlib.sha256(token.encode()).digest()
    return hmac.new(key, manifest, hashlib.sha256).hexdigest().encode()


def tar_gz(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def diagnosis(code: str, cause: str, category: str, verdict: str, confidence: float = 0.7) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "scheme": "iso8583",
            "known": True,
            "meaning": {"zh": "余额不足", "en": "insufficient funds"},
            "host_answer": True,
        },
        "probes": ["printer", "network"],
        "sweep": {"started_at": "2026-01-01T00:00:00Z", "wall_ms": 120.0},
        "causes": [
            {
                "id": cause,
                "category": category,
                "title": {"zh": "原因", "en": f"Cause {cause}"},
                "confidence": confidence,
                "evidence_for": [{"id": "printer.paper_out", "detail": "paper end sensor"}],
                "evidence_against": [],
                "actions": {
                    "merchant": [{"zh": "装纸", "en": "Load paper"}],
                    "technician": [{"zh": "检查传感器", "en": "Check the sensor"}],
                    "support": [{"zh": "无", "en": "Nothing remote"}],
                },
            },
            {
                "id": "card.other",
                "category": "card",
                "title": {"zh": "卡", "en": "Card"},
                "confidence": round(1 - confidence, 3),
                "evidence_for": [],
                "evidence_against": [],
                "actions": {"merchant": [], "technician": [], "support": []},
            },
        ],
        "other_findings": [],
        "dispatch": {"verdict": verdict, "reason": {"zh": "需要现场", "en": "needs hands"}},
    }


def make_bundle(
    token: str,
    terminal_id: str,
    *,
    bundle_id: str | None = None,
    code: str = "51",
    cause: str = "printer.paper_out",
    category: str = "printer",
    verdict: str = "onsite",
    trigger: str = "error",
    command_id: str | None = None,
    created_at: str | None = None,
    model: str = "A920",
    firmware: str = "1.2.3",
    log_text: str = "12:00:01 printer: paper end\n",
    probes: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
) -> tuple[str, bytes]:
    """(bundle_id, .tar.gz bytes)."""
    bundle_id = bundle_id or str(uuid.uuid4())
    body_members = [
        ("diagnosis.json", json.dumps(diagnosis(code, cause, category, verdict)).encode()),
        ("probes.json", json.dumps({"probes": probes if probes is not None else default_probes()}).encode()),
        ("system.json", json.dumps({"uptime_s": 1234}).encode()),
        ("history.jsonl", b'{"t": "2026-01-01T00:00:00Z", "ok": true}\n'),
        ("events.jsonl", json.dumps({"code": code}).encode() + b"\n"),
        ("logs/payment.log", log_text.encode()),
    ]
    manifest = {
        "schema": "posdiag.bundle/1",
        "bundle_id": bundle_id,
        "terminal": {"id": terminal_id, "serial": "SN1", "model": model, "firmware": firmware, "app_version": "5.0"}
        | ({"labels": labels} if labels is not None else {}),
        "agent_version": "0.1.0",
        "created_at": created_at or datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "trigger": {"kind": trigger, "code": code, "scheme": "iso8583", "command_id": command_id, "events": 1},
        "files": [{"path": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in body_members],
        "redaction": {"pan": 1},
        "truncated": {},
        "evicted": 0,
    }
    raw = json.dumps(manifest, sort_keys=True).encode()
    return bundle_id, tar_gz([("manifest.json", raw), *body_members, ("manifest.sig", sign(token, raw))])


def default_probes() -> list[dict[str, Any]]:
    return [
        {
            "name": "printer",
            "status": "fail",
            "findings": [{"id": "printer.paper_out", "severity": "fail", "detail": "paper end", "data": {}}],
            "metrics": {"latency_ms": 12},
            "duration_ms": 15.0,
        },
        {"name": "network", "status": "ok", "findings": [], "metrics": {"latency_ms": 40}, "duration_ms": 42.0},
    ]
