"""docs/bundle-format.md is enough to write a bundle: built here from the page alone, with the
standard library and no posdiag code, and uploaded to the real server."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import tarfile
import uuid
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "bundle-format.md"


def outside_bundle(terminal_id: str, token: str) -> tuple[str, bytes]:
    example = json.loads(re.search(r"```json\n(.*?)```", DOC.read_text(), re.S).group(1))
    bundle_id = str(uuid.uuid4())
    diagnosis = json.dumps({"error": {"code": "96", "scheme": "iso8583"}, "causes": [], "dispatch": {"verdict": "remote"}}).encode()
    members = {"diagnosis.json": diagnosis, "logs/app.log": b"96 at 10:00\n"}
    manifest = dict(example, bundle_id=bundle_id, terminal=dict(example["terminal"], id=terminal_id))
    manifest["files"] = [{"path": p, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for p, b in members.items()]
    manifest_bytes = json.dumps(manifest).encode()
    signature = hmac.new(hashlib.sha256(token.encode()).digest(), manifest_bytes, hashlib.sha256).hexdigest().encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.USTAR_FORMAT) as tar:
        for name, body in [("manifest.json", manifest_bytes), *members.items(), ("manifest.sig", signature)]:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return bundle_id, raw.getvalue()


def test_a_bundle_written_from_the_format_page_is_accepted(server):
    terminal_id, token = server.terminal("DOC")
    bundle_id, body = outside_bundle(terminal_id, token)
    answer = server.upload(token, body, bundle_id)
    assert answer.status_code == 201, answer.text
    detail = server.get(f"/api/v1/bundles/{bundle_id}").json()
    assert detail["record"]["code"] == "96" and detail["logs"] == {"app.log": "96 at 10:00\n"}
    assert server.upload(token, body, bundle_id).status_code == 200  # the id is the idempotency key
    wrong_key = server.upload(token + "x", body, bundle_id)
    assert wrong_key.status_code == 401
