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
from server_kit import PASSWORD, Serve, db_url, prepare, signed_in  # noqa: F401 (db_url: a fixture)

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


WIDE_FLOOD = """
import json, sys, threading, requests
from collections import Counter
from requests.adapters import HTTPAdapter
url, source, stop, counts = sys.argv[1], sys.argv[2], threading.Event(), Counter()
class FromSource(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (source, 0)
        super().init_poolmanager(*args, **kwargs)
def flood():
    with requests.Session() as s:
        s.mount("http://", FromSource())
        for i in range(10**9):
            if stop.is_set():
                break
            name = "admin" if i % 2 else f"guess-{threading.get_ident()}-{i}"
            counts[s.get(url, auth=(name, "not the password"), timeout=30).status_code] += 1
threads = [threading.Thread(target=flood) for _ in range(48)]
[t.start() for t in threads]
sys.stdin.read()
stop.set()
[t.join() for t in threads]
print(json.dumps(counts))
"""
FLOOD_ADDRESS = "127.0.0.5"
NEWCOMERS = 12


def test_a_wide_flood_is_counted_and_other_users_sign_in_fast_and_first_time(db_url, tmp_path):
    """Issue 21: 48 connections from one address flood wrong passwords. Before, attempts that
    found the hashing queue full got an instant 503, uncounted: 14,316 of them, the address
    limit never tripped, other users' sign-in p50 went from 5 to 98 ms and 3 of 29 first
    sign-ins were refused. Now every attempt is counted first and the queue keeps room for
    other addresses."""
    from remote.server import db as dbmod
    from remote.server import store

    prepare(db_url, [])
    engine = dbmod.make_engine(db_url)
    for i in range(NEWCOMERS):
        store.add_user(engine, f"newcomer-{i}", "support", f"newcomer-password-{i}")
    server = Serve(db_url, tmp_path / "data", tmp_path / "logs")
    server.start()
    try:
        with requests.Session() as user:
            user.auth = ("support", PASSWORD)
            quiet = [timed_basic(user, server.url) for _ in range(30)]
            flood = subprocess.Popen(
                [sys.executable, "-c", WIDE_FLOOD, server.url + "/api/v1/terminals", FLOOD_ADDRESS],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                time.sleep(1.0)
                firsts = []
                times = []
                for i in range(NEWCOMERS):
                    times += [timed_basic(user, server.url) for _ in range(6)]
                    started = time.perf_counter()
                    answer = requests.get(server.url + "/api/v1/terminals", auth=(f"newcomer-{i}", f"newcomer-password-{i}"), timeout=30)
                    firsts.append((answer.status_code, (time.perf_counter() - started) * 1000))
            finally:
                out, _ = flood.communicate("", timeout=90)
        outcomes = {int(k): v for k, v in json.loads(out).items()}
        with engine.connect() as conn:
            counted = conn.execute(
                dbmod.signin_failures.select().where(dbmod.signin_failures.c.key == f"addr:{FLOOD_ADDRESS}")
            ).mappings().first()  # fmt: skip
    finally:
        server.stop()
        engine.dispose()
    p50, quiet_p50 = statistics.median(times), statistics.median(quiet)
    print(
        f"\nanother address's sign-in p50 {p50:.1f} ms (before the flood {quiet_p50:.1f} ms); first sign-ins "
        f"{[code for code, _ in firsts]} in {statistics.median(ms for _, ms in firsts):.0f} ms (median); flood of "
        f"{sum(outcomes.values())} wrong sign-ins {outcomes}; counted for its address: {counted['failures'] if counted else 0}"
    )
    assert all(code == 200 for code, _ in firsts), firsts
    assert p50 < max(20.0, 2 * quiet_p50)
    assert counted is not None and counted["failures"] >= 50  # the address limit tripped
    assert outcomes.get(401, 0) <= 50 and outcomes.get(429, 0) > outcomes.get(503, 0)


def timed_basic(user: requests.Session, base: str) -> float:
    started = time.perf_counter()
    assert user.get(base + "/api/v1/terminals", timeout=30).status_code == 200
    elapsed = (time.perf_counter() - started) * 1000
    time.sleep(0.02)
    return elapsed
