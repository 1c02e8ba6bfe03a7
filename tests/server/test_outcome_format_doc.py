"""docs/bundle-format.md is enough to write an outcome record and to check a learned table:
done here from the page alone, with the standard library and no posdiag code, against the
real server."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from pathlib import Path

import requests
from outcome_bundles import uploaded

DOC = (Path(__file__).resolve().parents[2] / "docs" / "bundle-format.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    return DOC.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_an_outcome_record_written_from_the_format_page_is_accepted(server):
    tid, token = server.terminal("DOCO")
    bid = uploaded(server, token, tid, ["printer.mechanism_fault"])
    example = json.loads(re.search(r"```json\n(.*?)```", section("Outcome records"), re.S).group(1).replace('"<64 hex>"', '""'))
    record = dict(example, outcome_id=str(uuid.uuid4()), terminal_id=tid, bundle_id=bid, note="刀片已更换")
    del record["signature"]
    record["signature"] = hmac.new(hashlib.sha256(token.encode()).digest(), canonical(record), hashlib.sha256).hexdigest()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Idempotency-Key": record["outcome_id"]}
    answer = requests.post(f"{server.url}/api/v1/outcomes", data=json.dumps(record).encode(), headers=headers, timeout=30)
    assert answer.status_code == 201, answer.text
    assert answer.json()["note"] == "刀片已更换"


def test_a_learned_table_checks_out_by_the_format_pages_hash_rule(server):
    fleet = [server.terminal("DOCL") for _ in range(4)]
    model = f"DOC-{uuid.uuid4().hex[:6]}"
    for i in range(10):
        tid, token = fleet[i % 4]
        bid = uploaded(server, token, tid, ["printer.mechanism_fault"], model=model)
        server.post(f"/api/v1/bundles/{bid}/outcome", json={"found": "printer.not_connected", "fixed": True})
    tid, token = fleet[0]
    raw = requests.get(f"{server.url}/api/v1/terminals/{tid}/learned", headers={"Authorization": f"Bearer {token}"}, timeout=30).content
    table = json.loads(raw)
    assert len(raw) <= 4096 and table["schema"] == "posdiag.learned/1" and table["codes"]
    assert table["hash"] == hashlib.sha256(canonical({"codes": table["codes"], "model": table["model"]})).hexdigest()[:16]
