"""The fleet layer at size: a synthetic fleet loaded straight into PostgreSQL, then the
latency of what support and terminals ask of `posdiag-support serve`.

    .venv/bin/python bench/fleet.py [--terminals 100000] [--bundles 1000000] [--days 30]
        [--heartbeat-days 2] [--requests 40] [--keep]

Loading: terminals, labels, bundles and their fleet rows go in by COPY (generated here);
hourly heartbeats of the last --heartbeat-days are generated inside PostgreSQL; rollups
(problems, their hits, terminal-days) are built by SQL from the loaded rows, as ingest
would have built them one by one; the per-value problem counts, the daily bundle counts and
the outage baseline's hourly counts by the server's own rebuilds (those an older database
gets on upgrade). The database is a fresh one on 127.0.0.1:5432 (dropped at the end unless
--keep).

Printed: load times, row counts, then p50/p95 (ms) of the home page, the overview, problems
(API and page, unfiltered and by label), incidents and one incident, the bundle list with filters, the terminal page
and inventory, and ingest of new bundles at that size, next to ingest on an empty database.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "server"))
sys.path.insert(0, str(ROOT / "bench"))

from _util import BIN  # noqa: E402
from server_bundles import PASSWORD, make_bundle  # noqa: E402

from remote.server import auth, daily, db, store  # noqa: E402
from remote.server.fleet import baseline, inventory, problems  # noqa: E402
from remote.server.fleet.schema import incidents  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
ACQUIRERS = ["A", "B", "C", "D", "E"]
REGIONS = [f"r{i:02d}" for i in range(20)]
CARRIERS = ["X", "Y", "Z"]
MODELS = {"A920": ["1.0", "1.1", "1.2"], "P2": ["2.0", "2.1"], "N910": ["3.0", "3.1", "3.2"]}
CAUSES = [  # code, top cause, category, weight
    ("51", "card.insufficient_funds", "card", 30), ("55", "card.wrong_pin", "card", 15),
    ("E3", "printer.paper_out", "printer", 12), ("3000", "reader.no_response", "reader", 6),
    ("96", "host.unreachable", "host", 8), ("91", "host.issuer_unavailable", "host", 4),
    ("ConnectError", "network.no_data_session", "network", 10), ("ConnectError", "network.dns_failed", "network", 5),
    ("E9", "storage.disk_full", "storage", 3), ("E1", "power.battery_low", "power", 7),
]  # fmt: skip
FINDINGS = ["", "printer.paper_near_end", "network.weak_signal", "power.battery_low", "storage.disk_low"]


def fresh_database() -> str:
    import psycopg

    name = f"posdiag_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def timed(label: str, fn, *args) -> object:
    started = time.perf_counter()
    out = fn(*args)
    print(f"  {label:<44}{time.perf_counter() - started:8.1f} s", flush=True)
    return out


# -- loading ----------------------------------------------------------------------------------


def terminal_rows(n: int, rng: random.Random) -> list[dict]:
    out = []
    for i in range(n):
        model = rng.choice(list(MODELS))
        labels = {"acquirer": rng.choice(ACQUIRERS), "region": rng.choice(REGIONS), "merchant": f"m{rng.randrange(5000)}"}
        if rng.random() < 0.8:
            labels.update(link="cellular", carrier=rng.choice(CARRIERS))
        else:
            labels["link"] = "wifi"
        out.append({"id": f"T{i:06d}", "model": model, "firmware": rng.choice(MODELS[model]), "labels": labels})
    return out


def load_terminals(conn, terminals: list[dict], settings, now: datetime) -> None:
    created = db.stamp(now - timedelta(days=60))
    with conn.cursor().copy("COPY terminals (id, token_sha256, created_at) FROM STDIN") as copy:
        for t in terminals:
            copy.write_row((t["id"], hashlib.sha256(t["id"].encode()).hexdigest(), created))
    with conn.cursor().copy("COPY terminal_labels (terminal_id, key, value) FROM STDIN") as copy:
        for t in terminals:
            for k, v in t["labels"].items():
                copy.write_row((t["id"], k, v))
    with conn.cursor().copy("COPY operator_labels (terminal_id, key, value, set_at, source) FROM STDIN") as copy:
        for t in terminals:  # the operator's labels, as a TMS import leaves them
            for k, v in t["labels"].items():
                if k not in settings.fleet.observed_label_keys:
                    copy.write_row((t["id"], k, v, created, "import"))
    with conn.cursor().copy("COPY scope_members (scope_key, terminal_id) FROM STDIN") as copy:
        for t in terminals:
            for key in inventory.scopes_of(t["labels"], settings.fleet):
                copy.write_row((key, t["id"]))
    seen = db.stamp(now - timedelta(minutes=30))
    with conn.cursor().copy(
        "COPY fleet_terminals (id, model, firmware, app_version, agent_version, labels, claimed_labels, last_heartbeat_at, last_seen_at, risk, risk_metric) FROM STDIN"
    ) as copy:
        for i, t in enumerate(terminals):
            risk = None
            if i % 200 == 0:
                risk = json.dumps({"metric": "battery_wear_ratio", "value": 0.62, "threshold": 0.6, "projected_at": seen,
                                   "reason": {"en": "battery health trending down", "zh": "电池健康度下降"}})  # fmt: skip
            missing = i % 97 == 0
            at = db.stamp(now - timedelta(days=3)) if missing else seen
            labels = json.dumps(t["labels"], sort_keys=True)
            copy.write_row((t["id"], t["model"], t["firmware"], "5.0", "0.1.0", labels, labels, at, at,
                            risk, "battery_wear_ratio" if risk else None))  # fmt: skip


def load_bundles(conn, terminals: list[dict], count: int, days: int, settings, rng: random.Random, now: datetime) -> None:
    weights = [c[3] for c in CAUSES]
    start = now - timedelta(days=days)
    span = days * 86400
    fields = settings.fleet.signature_fields
    signatures: dict[str, tuple[str, dict]] = {}
    cols_b = "id, terminal_id, serial, model, firmware, app_version, agent_version, trigger_kind, code, scheme, top_cause, top_category, top_confidence, verdict, created_at, received_at, sha256, size"
    cols_f = "bundle_id, terminal_id, event_at, clock_clamped, problem_id, top_category, model, firmware, app_version"
    rows_b, rows_f, rows_o = [], [], []
    for _ in range(count):
        t = terminals[int(rng.paretovariate(1.2)) % len(terminals)] if rng.random() < 0.3 else rng.choice(terminals)
        code, cause, category, _w = rng.choices(CAUSES, weights)[0]
        at = db.stamp(start + timedelta(seconds=rng.random() * span))
        bid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        index = {"scheme": "iso8583", "code": code, "top_cause": cause, "top_category": category, "model": t["model"], "firmware": t["firmware"], "app_version": "5.0"}
        finding = rng.choice(FINDINGS)
        text = problems.signature(index, [finding] if finding else [], fields)
        pid = problems.problem_id(text)
        signatures.setdefault(pid, (text, index))
        rows_b.append((bid, t["id"], "SN", t["model"], t["firmware"], "5.0", "0.1.0", "error", code, "iso8583", cause, category,
                       0.7, "remote", at, at, "0" * 64, 2048))  # fmt: skip
        rows_f.append((bid, t["id"], at, False, pid, category, t["model"], t["firmware"], "5.0"))
        if category in settings.fleet.outage_categories:
            rows_o += [(bid, key, t["id"], at) for key in inventory.scopes_of(t["labels"], settings.fleet)]
    # one COPY at a time: a connection carries one COPY stream
    for table, cols, rows in (("bundles", cols_b, rows_b), ("bundle_fleet", cols_f, rows_f),
                              ("outage_events", "bundle_id, scope_key, terminal_id, event_at", rows_o)):  # fmt: skip
        with conn.cursor().copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    with conn.cursor().copy("COPY bench_signatures (id, signature, scheme, code, top_cause, top_category) FROM STDIN") as copy:
        for pid, (text, index) in signatures.items():
            copy.write_row((pid, text, index["scheme"], index["code"], index["top_cause"], index["top_category"]))


ROLLUPS = [
    ("heartbeats (hourly, last days)", """
        INSERT INTO heartbeats (terminal_id, sent_at, received_at, clock_clamped, battery_pct, battery_wear_ratio,
                                emmc_life_used_pct, free_mib, signal_dbm, max_temp_c, memory_available_mib, counters)
        SELECT f.id, s.t, s.t, false, 20 + random() * 80, 0.9 - random() * 0.05, 20, 200 + random() * 700,
               -95 + random() * 35, 35 + random() * 20, 180, '{}'
        FROM fleet_terminals f
        CROSS JOIN LATERAL (
            SELECT to_char(g AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t
            FROM generate_series(%(hb_start)s::timestamptz, %(now)s::timestamptz, interval '1 hour') AS g
        ) s
        WHERE f.last_seen_at >= %(hb_cut)s"""),
    ("terminal_days", """
        INSERT INTO terminal_days (terminal_id, day, model, firmware, app_version)
        SELECT terminal_id, substr(event_at, 1, 10), min(model), min(firmware), min(app_version)
        FROM bundle_fleet GROUP BY terminal_id, substr(event_at, 1, 10)
        ON CONFLICT DO NOTHING"""),
    ("terminal_days from heartbeats", """
        INSERT INTO terminal_days (terminal_id, day, model, firmware, app_version)
        SELECT DISTINCT h.terminal_id, substr(h.sent_at, 1, 10), f.model, f.firmware, f.app_version
        FROM heartbeats h JOIN fleet_terminals f ON f.id = h.terminal_id
        ON CONFLICT DO NOTHING"""),
    ("problems", """
        INSERT INTO problems (id, signature, scheme, code, top_cause, top_category, first_seen, last_seen, bundles, terminals_affected)
        SELECT s.id, s.signature, s.scheme, s.code, s.top_cause, s.top_category, min(b.event_at), max(b.event_at),
               count(*), count(DISTINCT b.terminal_id)
        FROM bundle_fleet b JOIN bench_signatures s ON s.id = b.problem_id GROUP BY s.id"""),
    ("problem_hits", """
        INSERT INTO problem_hits (problem_id, terminal_id, day, model, firmware, bundles)
        SELECT problem_id, terminal_id, substr(event_at, 1, 10), min(model), min(firmware), count(*)
        FROM bundle_fleet GROUP BY problem_id, terminal_id, substr(event_at, 1, 10)"""),
    ("vacuum and analyze", "VACUUM ANALYZE"),  # the visibility map autovacuum keeps on a live database
]


def load(url: str, args: argparse.Namespace, settings) -> list[dict]:
    import psycopg

    from remote.server import db as server_db

    engine = server_db.make_engine(url)
    server_db.create_schema(engine)
    rng = random.Random(13)
    now = datetime.now(UTC)
    terminals = terminal_rows(args.terminals, rng)
    params = {
        "now": now.isoformat(), "hb_start": (now - timedelta(days=args.heartbeat_days)).isoformat(),
        "hb_cut": db.stamp(now - timedelta(days=1)),
    }  # fmt: skip
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE bench_signatures (id varchar(32) PRIMARY KEY, signature text, scheme text, code text, top_cause text, top_category text)")
        timed(f"COPY {args.terminals} terminals, labels, scopes", load_terminals, conn, terminals, settings, now)
        timed(f"COPY {args.bundles} bundles (+ fleet rows, outage events)", load_bundles, conn, terminals, args.bundles, args.days, settings, rng, now)
        conn.commit()
        for label, statement in ROLLUPS:
            if label == "vacuum and analyze":
                conn.commit()
                conn.autocommit = True
            timed(label, conn.execute, statement, params if "%(" in statement else None)
        conn.autocommit = True
        conn.execute("DROP TABLE bench_signatures")
    with engine.begin() as sa_conn:  # the server's own rebuilds, as an upgraded database gets them
        timed("problem_counts and breakdowns", problems.rebuild_counts, sa_conn)
        timed("problems' verdicts", problems.fill_verdicts, sa_conn)
        timed("bundle_days (the overview's daily counts)", daily.rebuild, sa_conn)
        timed("scope_hours and scope members' seen_at", baseline.rebuild, sa_conn)
    engine.dispose()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE problem_counts")
        for table in ("bundle_days", "scope_hours", "scope_members"):
            conn.execute(f"ANALYZE {table}")
        for table in ("terminals", "bundles", "bundle_days", "heartbeats", "problems", "problem_hits", "problem_counts", "outage_events", "terminal_days"):
            count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            print(f"  rows in {table:<36}{count:>10}")
    return terminals


def add_closed_outage(engine) -> str:
    """One closed outage, so that the incidents page has a row to show; its id."""
    when = datetime.now(UTC) - timedelta(days=3)
    incident_id = str(uuid.uuid4())
    with engine.begin() as conn:
        conn.execute(incidents.insert().values(
            id=incident_id, kind="outage", status="closed", scope_key="acquirer=B", open_key=None,
            scope=json.dumps({"acquirer": "B"}), categories='["host"]', codes='["96"]', started_at=db.stamp(when),
            detected_at=db.stamp(when), last_hit_at=db.stamp(when + timedelta(minutes=40)),
            ended_at=db.stamp(when + timedelta(minutes=40)), terminals_affected=120, terminals_in_scope=20000,
            bundles=300, expected=3.1, p_value=1e-30,
            summary=json.dumps({"en": "Host outage on acquirer B (bench)", "zh": "收单机构 B 主机故障（基准）"}, ensure_ascii=False),
        ))  # fmt: skip
    return incident_id


# -- measuring --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(url: str, data: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "posdiag-support"), "--db", url, "--data", str(data), "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "/healthz", timeout=2).status_code == 200:
                return proc, base
        except requests.ConnectionError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("posdiag-support did not start: " + proc.stderr.read().decode()[-2000:])


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2] * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000


def measure(label: str, fn, n: int) -> None:
    fn()  # warm
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        status = fn()
        samples.append(time.perf_counter() - started)
        if status >= 400:
            raise SystemExit(f"{label}: HTTP {status}")
    p50, p95 = percentiles(samples)
    flag = "" if p95 < 300 else "  over 300 ms"
    print(f"  {label:<48}{p50:8.1f}{p95:9.1f}{flag}", flush=True)


def ingest_samples(base: str, engine, terminals: list[dict], n: int, prefix: str) -> None:
    from server_harness import default_settings

    labels = terminals[0]["labels"] if terminals else {"acquirer": "A"}
    tokens = [(f"{prefix}{i}", store.add_terminal(engine, f"{prefix}{i}", labels, default_settings().fleet)) for i in range(10)]
    http = requests.Session()
    rng = random.Random(5)

    def one() -> int:
        tid, token = rng.choice(tokens)
        code, cause, category, _ = rng.choice(CAUSES)
        bundle_id, body = make_bundle(token, tid, code=code, cause=cause, category=category, labels=labels)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/gzip", "Idempotency-Key": bundle_id}
        return http.post(f"{base}/api/v1/bundles", data=body, headers=headers, timeout=60).status_code

    measure("ingest of a new bundle (POST /api/v1/bundles)", one, n)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--terminals", type=int, default=100_000)
    parser.add_argument("--bundles", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--heartbeat-days", type=float, default=2.0)
    parser.add_argument("--requests", type=int, default=40, help="samples per figure")
    parser.add_argument("--keep", action="store_true", help="keep the database (its name is printed)")
    args = parser.parse_args()
    from server_harness import default_settings

    from remote.server import db as server_db

    settings = default_settings()
    name = fresh_database()
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    print(f"database {name}")
    empty = fresh_database()
    empty_url = f"postgresql://postgres@127.0.0.1:5432/{empty}"
    procs = []
    try:
        print("loading")
        terminals = load(url, args, settings)
        engine = server_db.make_engine(url)
        store.add_user(engine, "bench", "support", PASSWORD)
        outage_id = add_closed_outage(engine)
        secret = store.server_secret(engine)
        bench_user = store.get_user(engine, "bench")
        cookie = {"posdiag_session": auth.Signer(secret).session_cookie(bench_user["uid"], bench_user["generation"], 3600)}
        with tempfile.TemporaryDirectory() as tmp:
            proc, base = serve(url, Path(tmp) / "data")
            procs.append(proc)
            http = requests.Session()
            http.auth = ("bench", PASSWORD)
            page = requests.Session()
            page.cookies.update(cookie)
            rng = random.Random(3)
            some = [t["id"] for t in rng.sample(terminals, 50)]
            n = args.requests
            print(f"\n  {'p50 / p95 in ms, ' + str(n) + ' requests each':<48}{'p50':>8}{'p95':>9}")
            measure("home page (/: open incidents, 24 h counts, failing per hour)", lambda: page.get(base + "/", timeout=60).status_code, n)
            measure("overview page (/overview)", lambda: page.get(base + "/overview", timeout=60).status_code, n)
            measure("problems API, unfiltered", lambda: http.get(base + "/api/v1/problems", timeout=60).status_code, n)
            measure("problems API, label.acquirer=B", lambda: http.get(base + "/api/v1/problems?label.acquirer=B", timeout=60).status_code, n)
            measure("problems API, label.region=r03 + last 7 days", lambda: http.get(base + "/api/v1/problems", params={"label.region": "r03", "since": db.stamp(datetime.now(UTC) - timedelta(days=7))}, timeout=60).status_code, n)
            for days in (7, 30):
                since = db.stamp(datetime.now(UTC) - timedelta(days=days))
                measure(f"problems API, last {days} days", lambda since=since: http.get(base + "/api/v1/problems", params={"since": since}, timeout=60).status_code, n)
            measure("problems API, model=P2&firmware=2.1", lambda: http.get(base + "/api/v1/problems?model=P2&firmware=2.1", timeout=60).status_code, n)
            measure("problems page", lambda: page.get(base + "/problems", timeout=60).status_code, n)
            measure("incidents API", lambda: http.get(base + "/api/v1/incidents", timeout=60).status_code, n)
            measure("incidents page", lambda: page.get(base + "/incidents", timeout=60).status_code, n)
            measure("incident page", lambda: page.get(base + f"/incidents/{outage_id}", timeout=60).status_code, n)
            measure("bundles API, code=96&model=P2", lambda: http.get(base + "/api/v1/bundles?code=96&model=P2", timeout=60).status_code, n)
            measure("bundles API, category=host, last day", lambda: http.get(base + "/api/v1/bundles", params={"category": "host", "since": db.stamp(datetime.now(UTC) - timedelta(days=1))}, timeout=60).status_code, n)
            measure("bundles page, terminal filter", lambda: page.get(base + f"/bundles?terminal={rng.choice(some)}", timeout=60).status_code, n)
            measure("terminal page", lambda: page.get(base + f"/terminals/{rng.choice(some)}", timeout=60).status_code, n)
            measure("terminals API, status=at_risk", lambda: http.get(base + "/api/v1/terminals?status=at_risk", timeout=60).status_code, n)
            measure("terminals API, status=missing&label.acquirer=C", lambda: http.get(base + "/api/v1/terminals?status=missing&label.acquirer=C", timeout=60).status_code, n)
            measure("terminals page, status=missing", lambda: page.get(base + "/terminals?status=missing", timeout=60).status_code, n)
            ingest_samples(base, engine, terminals, n, "BENCH-")
            proc.terminate()
            proc.wait(30)
            server_db.create_schema(server_db.make_engine(empty_url))
            proc, base = serve(empty_url, Path(tmp) / "data2")
            procs.append(proc)
            print("  on an empty database:")
            ingest_samples(base, server_db.make_engine(empty_url), [], n, "EMPTY-")
            proc.terminate()
            proc.wait(30)
        engine.dispose()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        drop_database(empty)
        if not args.keep:
            drop_database(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
