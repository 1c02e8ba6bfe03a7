"""Ingest throughput beside its floor: N simulated terminals send M distinct bundles, then K
heartbeats each, at once, over loopback, first to the floor of this stack (bench/ingest_floor.py:
the same uvicorn workers reading the body, checking its HMAC, writing it with fsync and
inserting one row), then to a real `posdiag-support serve`, on SQLite and on PostgreSQL.
Prints bundles/s and heartbeats/s, p50/p99 latency, posdiag as a ratio to the floor, and
stored vs sent.

    .venv/bin/python bench/ingest.py [--terminals 50] [--bundles 20] [--heartbeats 40] [--workers 2]
        [--db sqlite,postgresql] [--client-processes 4] [--min-ratio 0.5] [--profile DIR [--profile-raw]]

--min-ratio: exit 1 when posdiag serves less than that share of the floor (or loses a
bundle). --profile: py-spy flame graphs of posdiag's server, DIR/sqlite.svg and
DIR/postgresql.svg; with --profile-raw, collapsed stacks per thread instead (DIR/sqlite.txt,
one stack and its sample count a line, to sum by frame). PostgreSQL: a fresh database on
127.0.0.1:5432 (user postgres), dropped afterwards; skipped with a note when that server
does not answer.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "server"))
sys.path.insert(0, str(ROOT / "bench"))

import ingest_floor
from server_bundles import make_bundle

from remote.server import db, fleet_queue, store

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


def work_for(kind: str, fleet: list[tuple[str, str]], per_terminal: int, sign: bool) -> dict[str, list[tuple[dict, bytes]]]:
    """Per terminal, its requests (headers, body): distinct bundles, or heartbeats a minute apart."""
    work: dict[str, list[tuple[dict, bytes]]] = {}
    now = datetime.now(UTC)
    for tid, token in fleet:
        items = []
        for j in range(per_terminal):
            if kind == "bundles":
                bundle_id, body = make_bundle(token, tid, code=str(50 + j % 40))
                headers = {"Content-Type": "application/gzip", "Idempotency-Key": bundle_id}
            else:
                sent = db.stamp(now - timedelta(minutes=per_terminal - j))
                body = json.dumps({"terminal_id": tid, "sent_at": sent, "model": "A920", "firmware": "1.2.3",
                                   "health": {"disk_free_pct": 50 + j % 10}, "counters": {}}).encode()  # fmt: skip
                headers = {"Content-Type": "application/json"}
            headers["Authorization"] = f"Bearer {token}"
            if sign:
                headers["X-Signature"] = ingest_floor.signature(token, body)
            items.append((headers, body))
        work[tid] = items
    return work


def client(url: str, fleet, kind: str, per_terminal: int, sign: bool, barrier, results) -> None:
    """One client process: a thread per terminal, each sending its requests one after another."""
    work = work_for(kind, fleet, per_terminal, sign)
    latencies: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()
    ready = threading.Barrier(len(fleet) + 1)

    def terminal(tid: str) -> None:
        session = requests.Session()
        ready.wait()
        for headers, body in work[tid]:
            t0 = time.monotonic()
            response = session.post(url, data=body, headers=headers, timeout=60)
            with lock:
                latencies.append(time.monotonic() - t0)
                if response.status_code not in (201, 202):
                    failures.append(response.status_code)

    threads = [threading.Thread(target=terminal, args=(tid,)) for tid, _ in fleet]
    for t in threads:
        t.start()
    barrier.wait()  # every process has built its requests
    started = time.monotonic()
    ready.wait()
    for t in threads:
        t.join()
    results.put((started, time.monotonic(), latencies, failures))


@dataclass
class Run:
    """One side's requests of one kind, over its rounds."""

    sent: int = 0
    wall: float = 0.0
    failures: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.sent / self.wall

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


WARM_UP = 4  # requests of each kind a warm-up terminal sends before the measured rounds
ROUNDS = ("floor", "posdiag", "posdiag", "floor")  # drift in the machine's load falls on both alike


def warm_up(url: str, terminal: tuple[str, str], kind: str, sign: bool) -> None:
    """Every worker imports, connects and compiles its statements before the clock starts."""
    with requests.Session() as session:
        for headers, body in work_for(kind, [terminal], WARM_UP, sign)[terminal[0]]:
            session.post(url, data=body, headers=headers, timeout=60).raise_for_status()


def measure(url: str, fleet: list[tuple[str, str]], kind: str, per_terminal: int, sign: bool, procs: int, into: Run) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    clients = [ctx.Process(target=client, args=(url, fleet[i::procs], kind, per_terminal, sign, barrier, results)) for i in range(procs)]
    for c in clients:
        c.start()
    parts = [results.get(timeout=600) for _ in clients]
    for c in clients:
        c.join()
    into.wall += max(p[1] for p in parts) - min(p[0] for p in parts)
    into.sent += len(fleet) * per_terminal
    into.latencies += [x for p in parts for x in p[2]]
    into.failures += sum(len(p[3]) for p in parts)


class QueueWatch:
    """The fleet queue's depth and lag, read every 0.1 s while posdiag is measured."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.peak_depth = 0
        self.lags: list[float] = []
        self.tails: list[float] = []  # after a round: seconds until the fleet had counted it all
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            found = fleet_queue.backlog(self.engine)
            self.peak_depth = max(self.peak_depth, found.depth)
            self.lags.append(found.lag_seconds)

    def settle(self) -> None:
        started = time.monotonic()
        while fleet_queue.backlog(self.engine).depth:
            time.sleep(0.05)
        self.tails.append(time.monotonic() - started)

    def stop(self) -> str:
        self._stop.set()
        self._thread.join()
        lags = sorted(self.lags) or [0.0]
        p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
        return f"fleet queue: peak {self.peak_depth}, lag p99 {p99:.1f} s, max {lags[-1]:.1f} s, counted {max(self.tails, default=0):.1f} s after the last answer"


@contextlib.contextmanager
def serving(command: list[str], env: dict[str, str], base: str, profile: Path | None) -> Iterator[None]:
    server = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    spy = None
    try:
        wait_up(base, server)
        if profile is not None:
            spy = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--subprocesses", "--threads", "--rate", "50", "--format", PROFILE_FORMATS[profile.suffix],
                 "-o", str(profile), "--pid", str(server.pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        yield
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        server.terminate()
        server.wait(30)


PROFILE_FORMATS = {".svg": "flamegraph", ".txt": "raw"}  # raw: collapsed stacks, one line each, to sum by frame


def count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def run_one(label: str, url: str, data: Path, args: argparse.Namespace) -> dict[str, float]:
    """The floor and posdiag served side by side on one database, measured in turns (floor,
    posdiag, posdiag, floor) for the bundles, then the heartbeats; after each posdiag turn
    the fleet queue is left to drain. The ratios of posdiag to the floor."""
    engine = db.make_engine(url)
    db.create_schema(engine)
    ingest_floor.metadata.create_all(engine)
    fleet = [(f"BENCH-{i:03d}", store.add_terminal(engine, f"BENCH-{i:03d}")) for i in range(args.terminals)]
    warm = ("BENCH-WARM", store.add_terminal(engine, "BENCH-WARM"))
    keys = data / "floor-keys.json"
    keys.write_text(json.dumps({hashlib.sha256(token.encode()).hexdigest(): tid for tid, token in fleet + [warm]}))
    (data / "floor").mkdir()
    workers, procs, per = str(args.workers), args.client_processes, {"bundles": args.bundles, "heartbeats": args.heartbeats}
    env = dict(os.environ, FLOOR_DB=url, FLOOR_DATA=str(data / "floor"), FLOOR_KEYS=str(keys), PYTHONPATH=f"{ROOT / 'bench'}:{ROOT}")
    floor_port, port = free_port(), free_port()
    floor_cmd = [sys.executable, "-m", "uvicorn", "ingest_floor:app", "--port", str(floor_port), "--workers", workers, "--no-access-log", "--log-level", "warning"]
    serve_cmd = [str(CLI), "--db", url, "--data", str(data), "serve", "--port", str(port), "--workers", workers]
    urls = {
        ("floor", "bundles"): f"http://127.0.0.1:{floor_port}/floor", ("floor", "heartbeats"): f"http://127.0.0.1:{floor_port}/floor",
        ("posdiag", "bundles"): f"http://127.0.0.1:{port}/api/v1/bundles", ("posdiag", "heartbeats"): f"http://127.0.0.1:{port}/api/v1/heartbeats",
    }  # fmt: skip
    runs = {key: Run() for key in urls}
    profile = args.profile / f"{label}.{'txt' if args.profile_raw else 'svg'}" if args.profile else None
    with serving(floor_cmd, env, f"http://127.0.0.1:{floor_port}", None), serving(serve_cmd, dict(os.environ), f"http://127.0.0.1:{port}", profile):
        watch = QueueWatch(engine)
        for kind in per:
            for who in ("floor", "posdiag"):
                warm_up(urls[who, kind], warm, kind, who == "floor")
            watch.settle()
            for who in ROUNDS:
                measure(urls[who, kind], fleet, kind, max(1, per[kind] // 2), who == "floor", procs, runs[who, kind])
                if who == "posdiag":
                    watch.settle()
        queue = watch.stop()
    stored = {"bundles": count(engine, db.bundles), "floor": count(engine, ingest_floor.received)}
    engine.dispose()
    ratios = {}
    for kind in per:
        floor, mine = runs["floor", kind], runs["posdiag", kind]
        ratios[kind] = mine.per_second / floor.per_second
        for who, run in (("floor", floor), ("posdiag", mine)):
            extra = f"  {ratios[kind]:.2f} x floor" if who == "posdiag" else ""
            print(
                f"{label:<11} {who:<8} {args.terminals} terminals x {run.sent // args.terminals} {kind}, {args.workers} workers: "
                f"{run.per_second:7.1f} {kind}/s  p50 {run.quantile(0.5):6.1f} ms  p99 {run.quantile(0.99):6.1f} ms  "
                f"sent {run.sent}  non-2xx {run.failures}{extra}"
            )
    sent = runs["posdiag", "bundles"].sent + WARM_UP
    floor_sent = runs["floor", "bundles"].sent + runs["floor", "heartbeats"].sent + 2 * WARM_UP
    lost = stored["bundles"] != sent or stored["floor"] != floor_sent
    print(f"{label:<11} {queue}; stored: posdiag {stored['bundles']} of {sent} bundles, floor {stored['floor']} of {floor_sent}"
          + ("  LOST OR DUPLICATED" if lost else ""))  # fmt: skip
    if lost:
        ratios["lost"] = 1.0
    return ratios


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
    parser.add_argument("--heartbeats", type=int, default=40, help="per terminal")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--client-processes", type=int, default=4, help="the terminals are shared out among these")
    parser.add_argument("--min-ratio", type=float, default=0.0, help="exit 1 when posdiag serves less than this share of the floor")
    parser.add_argument("--profile", type=Path, help="a directory: py-spy flame graphs of posdiag's server, one per database")
    parser.add_argument("--profile-raw", action="store_true", help="with --profile: collapsed stacks (DIR/sqlite.txt) instead of SVG, per thread")
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    failed = False
    for kind in args.db.split(","):
        with tempfile.TemporaryDirectory(prefix="posdiag-bench-") as tmp:
            data = Path(tmp) / "data"
            data.mkdir()
            if kind == "sqlite":
                ratios = run_one("sqlite", f"sqlite:///{data / 'bench.db'}", data, args)
            elif kind == "postgresql":
                made = pg_database()
                if not made:
                    continue
                try:
                    ratios = run_one("postgresql", made[1], data, args)
                finally:
                    drop_pg(made[0])
            else:
                parser.error(f"unknown database {kind!r}")
            failed |= "lost" in ratios or min(ratios.values()) < args.min_ratio
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
