"""Ingest amplification (issue 12): 24 uploads at once, each about 64 KB that unpacks to
~63 MiB, keep a real `posdiag-support serve` process under a stated memory bound.

Before, every member of every upload was held whole: 24 such uploads took the server from
69 MB to 1.7 GB. Now members stream past a hash and only the capped few the server reads are
held, and the bytes held by all uploads at once are budgeted. Half of the uploads carry the
63 MiB as a log of digit groups (whose newest 256 KiB are redacted and kept for viewing),
half as zeros in a member the server only hashes; all are validly signed.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psutil
import requests
from server_kit import ROOT, Serve, db_url, make_bundle, prepare, sign  # noqa: F401 (db_url: a fixture)

RSS_BOUND_MB = 300  # the whole process, peak, with 24 such uploads in flight
UNIT = ROOT / "config" / "posdiag-support.service"
UNPACKED = 63 << 20
FILL = {"logs/app.log": b"1111 ", "events.jsonl": b"\0"}  # digit groups (~96 KB packed), zeros (~64 KB)


def bomb(token: str, terminal_id: str, member: str) -> tuple[str, bytes]:
    """A signed bundle with one member of ~63 MiB that packs to 64-96 KB."""
    bundle_id, base = make_bundle(token, terminal_id, bundle_id=str(uuid.uuid4()))
    with tarfile.open(fileobj=io.BytesIO(base), mode="r:gz") as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]
    big = FILL[member] * (UNPACKED // len(FILL[member]))
    body = [m for m in members[1:-1] if m[0] != member] + [(member, big)]
    doc = json.loads(members[0][1])
    doc["files"] = [{"path": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in body]
    raw = json.dumps(doc).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=9) as tar:
        for name, data in [("manifest.json", raw), *body, ("manifest.sig", sign(token, raw))]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return bundle_id, out.getvalue()


def unit_environment() -> dict[str, str]:
    """`Environment=` of the shipped systemd unit: the server is measured as it is run."""
    lines = [line.removeprefix("Environment=") for line in UNIT.read_text().splitlines() if line.startswith("Environment=")]
    return dict(line.split("=", 1) for line in lines)


def test_24_concurrent_gzip_amplified_uploads_stay_under_the_memory_bound(db_url, tmp_path, monkeypatch):
    for key, value in unit_environment().items():
        monkeypatch.setenv(key, value)
    url = db_url
    tokens = prepare(url, ["BOMB-LOG", "BOMB-ZERO"], users=False)
    # Two bundles (one per kind), each sent 12 times at once: every copy is unpacked and
    # checked in full before the database says it is a repeat, so memory sees 24 uploads.
    kinds = {"BOMB-LOG": "logs/app.log", "BOMB-ZERO": "events.jsonl"}
    built = {tid: bomb(token, tid, kinds[tid]) for tid, token in tokens.items()}
    uploads = [(built[tid], tokens[tid]) for _ in range(12) for tid in tokens]
    bombs = list(built.values())
    assert max(len(body) for _, body in bombs) < 100_000 and min(len(body) for _, body in bombs) < 70_000
    server = Serve(url, tmp_path / "data", tmp_path / "logs")
    server.start()
    proc = psutil.Process(server.proc.pid)
    baseline = proc.memory_info().rss
    peak, done = baseline, threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()

    def upload(item: tuple[tuple[str, bytes], str]) -> int:
        (bundle_id, body), token = item
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": bundle_id}
        for _ in range(20):  # a shed upload (503 or 429 with Retry-After) is sent again, as the agent does
            answer = requests.post(server.url + "/api/v1/bundles", data=body, headers=headers, timeout=300)
            if answer.status_code not in (429, 503):
                break
            time.sleep(min(float(answer.headers.get("Retry-After", "1")), 5.0))
        return answer.status_code

    try:
        with ThreadPoolExecutor(24) as pool:
            statuses = list(pool.map(upload, uploads))
        took = time.monotonic() - started
        done.set()
        watcher.join(5)
    finally:
        server.stop()
    print(
        f"\n24 uploads of {len(bombs[0][1]) // 1000}-{len(bombs[1][1]) // 1000} KB unpacking to {UNPACKED >> 20} MiB each: {len(statuses)} "
        f"answered in {took:.1f} s; RSS {baseline >> 20} MiB before, peak {peak >> 20} MiB (bound {RSS_BOUND_MB} MB)"
    )
    assert sorted(statuses) == [200] * 22 + [201] * 2
    assert peak < RSS_BOUND_MB * 1_000_000
