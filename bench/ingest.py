"""Ingest throughput: N simulated terminals upload M distinct bundles each, at once, over
loopback to a real `posdiag-support serve` (uvicorn, several workers), on SQLite and on
PostgreSQL. Prints bundles/s, p50/p99 latency and stored vs sent.

    .venv/bin/python bench/ingest.py [--terminals 50] [--bundles 20] [--workers 2] [--db sqlite,postgresql]
        [--client-processes 4]

PostgreSQL: a fresh database on 127.0.0.1:5432 (user postgres), dropped afterwards; skipped
with a note when that server does not answer.
"""

from __future__ import annotations

import argparse
import multiprocessing
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

from server_bundles import make_bundle

from remote.server import db, store

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
CLI = Path(sys.executable).parent / "posdiag-support"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_database() -> tuple[str, str] | None:
    """A fresh database (name, URL), or None with a note when PostgreSQL does not answer."""
    import psycopg

    name = f"posdiag_bench_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        print(f"postgresql: skipped ({exc})")
        return None
    return name, f"postgresql://postgres@127.0.0.1:5432/{name}"


def drop_pg(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def client(base: str, fleet: list[tuple[str, str]], per_terminal: int, barrier, results) -> None:
    """One client process: a thread per terminal, each uploading its bundles one after another."""
    work = {tid: [make_bundle(token, tid, code=str(50 + j % 40)) for j in range(per_terminal)] for tid, token in fleet}
    latencies: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()
    ready = threading.Barrier(len(fleet) + 1)

    def terminal(tid: str, token: str) -> None:
        session = requests.Session()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/gzip"}
        ready.wait()
        for bundle_id, body in work[tid]:
            t0 = time.monotonic()
            response = session.post(
                f"{base}/api/v1/bundles", data=body, headers=dict(headers, **{"Idempotency-Key": bundle_id}), timeout=60
            )
            with lock:
                latencies.append(time.monotonic() - t0)
                if response.status_code != 201:
                    failures.append(response.status_code)

    threads = [threading.Thread(target=terminal, args=pair) for pair in fleet]
    for t in threads:
        t.start()
    barrier.wait()  # every process has built its bundles
    started = time.monotonic()
    ready.wait()
    for t in threads:
        t.join()
    results.put((started, time.monotonic(), latencies, failures))


def run_one(label: str, url: str, data: Path, terminals: int, per_terminal: int, workers: int, procs: int) -> None:
    engine = db.make_engine(url)
    db.create_schema(engine)
    fleet = [(f"BENCH-{i:03d}", store.add_terminal(engine, f"BENCH-{i:03d}")) for i in range(terminals)]
    port = free_port()
    server = subprocess.Popen(
        [str(CLI), "--db", url, "--data", str(data), "serve", "--port", str(port), "--workers", str(workers)],
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    ctx = multiprocessing.get_context("fork")
    try:
        wait_up(base, server)
        barrier, results = ctx.Barrier(procs), ctx.Queue()
        clients = [ctx.Process(target=client, args=(base, fleet[i::procs], per_terminal, barrier, results)) for i in range(procs)]
        for c in clients:
            c.start()
        parts = [results.get(timeout=600) for _ in clients]
        for c in clients:
            c.join()
    finally:
        server.terminate()
        server.wait(30)
    wall = max(p[1] for p in parts) - min(p[0] for p in parts)
    latencies = sorted(x for p in parts for x in p[2])
    failures = [x for p in parts for x in p[3]]
    sent = terminals * per_terminal
    with engine.connect() as conn:
        stored = conn.execute(sa.select(sa.func.count()).select_from(db.bundles)).scalar_one()
    engine.dispose()
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
    parser.add_argument("--client-processes", type=int, default=4, help="the terminals are shared out among these")
    args = parser.parse_args()
    for kind in args.db.split(","):
        with tempfile.TemporaryDirectory(prefix="posdiag-bench-") as tmp:
            data = Path(tmp) / "data"
            if kind == "sqlite":
                data.mkdir()
                run_one("sqlite", f"sqlite:///{data / 'bench.db'}", data, args.terminals, args.bundles, args.workers, args.client_processes)
            elif kind == "postgresql":
                made = pg_database()
                if made:
                    try:
                        run_one("postgresql", made[1], data, args.terminals, args.bundles, args.workers, args.client_processes)
                    finally:
                        drop_pg(made[0])
            else:
                parser.error(f"unknown database {kind!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
