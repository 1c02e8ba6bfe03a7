"""A flood of wrong passwords does not slow a signed-in user (issue 12).

A real `posdiag-support serve` process (SQLite and PostgreSQL) is flooded by a separate
process of 8 threads sending wrong HTTP basic passwords as fast as they can (for `admin` and
for ever new names), while a user
signed in through the web form reads the API with their session: that user's median answer
time must stay under 50 ms. Each failed attempt is counted before any scrypt is spent, so
the flood meets 429 after the per-address limit, and scrypt never runs on the event loop.
The flood and the measurement run in different processes so neither competes for the
other's interpreter lock.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

import requests
from server_kit import Serve, db_url, prepare, signed_in  # noqa: F401 (db_url: a fixture)

SIGNED_IN_P50_MS = 50.0
FLOOD = """
import json, sys, threading, requests
from collections import Counter
url, stop, counts = sys.argv[1], threading.Event(), Counter()
def flood():
    with requests.Session() as s:
        for i in range(10**9):
            if stop.is_set():
                break
            name = "admin" if i % 2 else f"guess-{threading.get_ident()}-{i}"
            counts[s.get(url, auth=(name, "not the password"), timeout=30).status_code] += 1
threads = [threading.Thread(target=flood) for _ in range(8)]
[t.start() for t in threads]
sys.stdin.read()
stop.set()
[t.join() for t in threads]
print(json.dumps(counts))
"""


def test_a_wrong_password_flood_does_not_slow_a_signed_in_user(db_url, tmp_path):
    prepare(db_url, [])
    server = Serve(db_url, tmp_path / "data", tmp_path / "logs")
    server.start()
    try:
        user = signed_in(server.url, "support")
        quiet = [timed(user, server.url) for _ in range(30)]
        flood = subprocess.Popen(
            [sys.executable, "-c", FLOOD, server.url + "/api/v1/terminals"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            time.sleep(0.5)
            times = [timed(user, server.url) for _ in range(80)]
        finally:
            out, _ = flood.communicate("", timeout=60)
        outcomes = {int(k): v for k, v in json.loads(out).items()}
    finally:
        server.stop()
    p50, quiet_p50 = statistics.median(times), statistics.median(quiet)
    print(
        f"\nsigned-in p50 {p50:.1f} ms (before the flood {quiet_p50:.1f} ms) during a flood of "
        f"{sum(outcomes.values())} wrong sign-ins {outcomes}"
    )
    # 50 ms; on a machine so loaded that the quiet median is already past 25 ms, twice that.
    assert p50 < max(SIGNED_IN_P50_MS, 2 * quiet_p50)
    # scrypt ran for at most the per-address limit (50, packaged default), one at a time; the
    # rest met 429, each held a second.
    assert sum(outcomes.values()) >= 8 and outcomes.get(401, 0) <= 50
    assert "Traceback" not in server.output()


def timed(user: requests.Session, base: str) -> float:
    started = time.perf_counter()
    assert user.get(base + "/api/v1/terminals", timeout=30).status_code == 200
    elapsed = (time.perf_counter() - started) * 1000
    time.sleep(0.02)
    return elapsed
