"""Bundles and outcome records for the outcome tests, built from the specs (docs/bundle-format.md,
docs/outcomes.md) without the agent."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from server_bundles import sign, tar_gz

from remote.outcome_wire import OUTCOME_SCHEMA, record_signature


def bundle(
    token: str,
    terminal_id: str,
    causes: list[str],
    *,
    code: str = "E3",
    scheme: str = "terminal",
    verdict: str = "onsite",
    model: str = "K300",
    created_at: datetime | None = None,
    learned_hash: str | None = None,
) -> tuple[str, bytes]:
    """(bundle_id, .tar.gz) whose diagnosis ranks `causes` in that order."""
    bundle_id = str(uuid.uuid4())
    diagnosis: dict[str, Any] = {
        "error": {"code": code, "scheme": scheme, "known": True, "meaning": {"zh": "错", "en": "error"}, "host_answer": False},
        "causes": [{"id": c, "category": c.split(".")[0], "confidence": round(0.6 / (i + 1), 3)} for i, c in enumerate(causes)],
        "dispatch": {"verdict": verdict, "reason": {"zh": "原因", "en": "reason"}},
        "learned": {"hash": learned_hash, "version": 3, "model": model, "applied": True} if learned_hash else None,
    }
    members = [("diagnosis.json", json.dumps(diagnosis).encode()), ("probes.json", b'{"probes": []}'), ("system.json", b"{}")]
    created = (created_at or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    manifest = {
        "schema": "posdiag.bundle/1",
        "bundle_id": bundle_id,
        "terminal": {"id": terminal_id, "serial": "SN", "model": model, "firmware": "2.0", "app_version": "1"},
        "agent_version": "0.1.0",
        "created_at": created,
        "trigger": {"kind": "error", "code": code, "scheme": scheme, "command_id": None, "events": 1},
        "files": [{"path": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in members],
        "redaction": {},
        "truncated": {},
        "evicted": 0,
    }
    raw = json.dumps(manifest, sort_keys=True).encode()
    return bundle_id, tar_gz([("manifest.json", raw), *members, ("manifest.sig", sign(token, raw))])


def uploaded(server, token: str, terminal_id: str, causes: list[str], **kw) -> str:
    bundle_id, body = bundle(token, terminal_id, causes, **kw)
    response = server.upload(token, body, bundle_id)
    assert response.status_code == 201, response.text
    return bundle_id


def record(token: str, terminal_id: str, found: str, *, bundle_id: str | None = None, fixed: bool | None = True,
           note: str = "", by: str = "li.wei", visited_at: str | None = None, outcome_id: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A signed posdiag.outcome/1 record."""
    doc = {
        "schema": OUTCOME_SCHEMA,
        "outcome_id": outcome_id or str(uuid.uuid4()),
        "terminal_id": terminal_id,
        "bundle_id": bundle_id,
        "found": found,
        "fixed": fixed,
        "note": note,
        "by": by,
        "visited_at": visited_at or datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    doc["signature"] = record_signature(hashlib.sha256(token.encode()).digest(), doc)
    return doc
