"""Ingest throughput: N simulated terminals upload M distinct bundles each, at once, over
loopback to a real `posdiag-support serve` (uvicorn, several workers), on SQLite and on
PostgreSQL. Prints bundles/s, p50/p99 latency and stored vs sent.

    .venv/bin/python bench/ingest.py [--terminals 50] [--bundles 20] [--workers 2] [--db sqlite,postgresql]

PostgreSQL: a fresh database on 127.0.0.1:5432 (user postgres), dropped afterwards; skipped
with a note when that server does not answer.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "server"))

from server_bundles import make_bundle  # noqa: E402

from remote.server import db, store  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
CLI = Path(sys.executable).parent / "posdiag-support"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_database() -> tuple[str, str] | None:
    try:
        import psycopg

        name = f"posdiag_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name, f"postgresql://postgres@127.0.0.1:5432/{name}"
    except Exception as exc:  # no PostgreSQL here: say so and go on with SQLite
        print(f"postgresql: skipped ({exc})")
        return None


def drop_pg(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_one(label: str, url: str, data: Path, terminals: int, per_terminal: int, workers: int) -> None:
    engine = db.make_engine(url)
    db.create_schema(engine)
    fleet = [(f"BENCH-{i:03d}", store.add_terminal(engine, f"BENCH-{i:03d}")) for i in range(terminals)]
    work = {tid: [make_bundle(token, tid, code=str(50 + j % 40)) for j in range(per_terminal)] for tid, token in fleet}
    tokens = dict(fleet)
    port = free_port()
    server = subprocess.Popen(
        [str(CLI), "--db", url, "--data", str(data), "serve", "--port", str(port), "--workers", str(workers)],
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(base, server)
        latencies: list[float] = []
        failures: list[int] = []
        lock = threading.Lock()
        start = threading.Barrier(terminals + 1)

        def terminal(tid: str) -> None:
            session = requests.Session()
            headers = {"Authorization": f"Bearer {tokens[tid]}", "Content-Type": "application/gzip"}
            start.wait()
            for bundle_id, body in work[tid]:
                t0 = time.perf_counter()
                response = session.post(
                    f"{base}/api/v1/bundles", data=body, headers=dict(headers, **{"Idempotency-Key": bundle_id}), timeout=60
                )
                took = time.perf_counter() - t0
                with lock:
                    latencies.append(took)
                    if response.status_code != 201:
                        failures.append(response.status_code)

        threads = [threading.Thread(target=terminal, args=(tid,)) for tid in tokens]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(30)
    sent = terminals * per_terminal
    with engine.connect() as conn:
        stored = conn.execute(sa.select(sa.func.count()).select_from(db.bundles)).scalar_one()
    engine.dispose()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"{label:<11} {terminals} terminals x {per_terminal} bundles, {workers} workers: "
        f"{sent / wall:7.1f} bundles/s  p50 {statistics.median(latencies) * 1000:6.1f} ms  "
        f"p99 {p99 * 1000:6.1f} ms  sent {sent}  stored {stored}  non-201 {len(failures)}"
        + ("" if stored == sent else "  LOST BUNDLES")
    )


def wait_up(base: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("posdiag-support serve exited")
        try:
            if requests.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise SystemExit("posdiag-support serve did not come up")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--terminals", type=int, default=50)
    parser.add_argument("--bundles", type=int, default=20, help="per terminal")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--db", default="sqlite,postgresql")
    args = parser.parse_args()
    for kind in args.db.split(","):
        with tempfile.TemporaryDirectory(prefix="posdiag-bench-") as tmp:
            data = Path(tmp) / "data"
            if kind == "sqlite":
                data.mkdir()
                run_one("sqlite", f"sqlite:///{data / 'bench.db'}", data, args.terminals, args.bundles, args.workers)
            elif kind == "postgresql":
                made = pg_database()
                if made:
                    try:
                        run_one("postgresql", made[1], data, args.terminals, args.bundles, args.workers)
                    finally:
                        drop_pg(made[0])
            else:
                parser.error(f"unknown database {kind!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
