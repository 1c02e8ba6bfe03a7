"""The thundering herd (issue 22): after a simulated 2-hour carrier outage, N enrolled
terminals, each with 3 bundles queued during it, reconnect within a window and send them
through the agent's own client (remote/client.py: retries, Retry-After honoured with
jitter) to a real `posdiag-support serve`. The server is expected to shed load (429/503 with
Retry-After) rather than fall over, and to stay responsive meanwhile.

Printed: drain time (first reconnect until every bundle is stored and counted by the
fleet), peak fleet queue, 429/503 answers, /healthz and page p95 during the herd, stored
vs sent, and incidents opened by the backlog (the outage detector judges event time: the
queued bundles are spread over the two hours, so none should open). Exit 1 when a bundle
is lost or stored twice, an incident opens, or a target is missed (drain within
--drain-target seconds, pages and /healthz p95 under 1 s).

    .venv/bin/python bench/herd.py [--terminals 300] [--window 20] [--db sqlite|postgresql]
        [--workers 2] [--client-processes 4] [--drain-target 90] [--queue-max N] [--retry-after S]

The issue's full size: --terminals 5000 --window 120 --db postgresql (15,000 bundles).
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "server"))
sys.path.insert(0, str(ROOT / "bench"))

from ingest import CLI, drop_pg, free_port, pg_database, wait_up
from server_bundles import make_bundle

from remote.client import Client, UploadError
from remote.server import db, fleet_queue, store
from remote.server.fleet.schema import bundle_fleet, incidents

PER_TERMINAL = 3
PASSWORD = "herd-support-pass"
FAULTS = [("51", "printer.paper_out", "printer"), ("55", "card_reader.no_read", "card_reader"), ("57", "app.crash", "app")]


def queued_bundles(token: str, tid: str, labels: dict[str, str], firmware: str, outage_start: datetime, rng: random.Random):
    """Three bundles made during the outage, at event times spread over its two hours."""
    out = []
    for _ in range(PER_TERMINAL):
        code, cause, category = rng.choice(FAULTS)
        when = outage_start + timedelta(seconds=rng.uniform(0, 7200))
        out.append(make_bundle(token, tid, code=code, cause=cause, category=category, verdict="remote",
                               created_at=db.stamp(when), firmware=firmware, labels=labels))  # fmt: skip
    return out


def client_settings(base: str, token: str) -> SimpleNamespace:
    """The agent's [upload] defaults, with a longer patience: a herd is told to come back."""
    return SimpleNamespace(
        server_url=base, token=token, ca_file="", connect_timeout_seconds=10.0, read_timeout_seconds=60.0,
        max_attempts=40, backoff_initial_seconds=1.0, backoff_max_seconds=60.0, retry_after_max_seconds=120.0,
    )  # fmt: skip


def herd_process(base: str, fleet, window: float, seed: int, start_at: float, results) -> None:
    """One client process: a thread per terminal, each reconnecting at a random moment of
    the window and sending its queued bundles oldest first, as the agent's outbox does."""
    rng = random.Random(seed)
    outage_start = datetime.now(UTC) - timedelta(hours=2)
    work = {tid: queued_bundles(token, tid, labels, fw, outage_start, rng) for tid, token, labels, fw in fleet}
    answers: dict[str, int] = {}
    sent, failed = [], []
    lock = threading.Lock()

    def terminal(tid: str, token: str, delay: float) -> None:
        client = Client(client_settings(base, token))
        time.sleep(max(0.0, start_at + delay - time.time()))

        def note(text: str) -> None:
            code = text.split("HTTP ", 1)[1][:3] if "HTTP " in text else text.split("failed: ", 1)[-1].split(";")[0][:60]
            with lock:
                answers[code] = answers.get(code, 0) + 1

        for bundle_id, body in work[tid]:
            try:
                client.send(body, bundle_id, note)
                with lock:
                    sent.append(bundle_id)
            except UploadError as exc:
                with lock:
                    failed.append(f"{bundle_id}: {exc}")

    threads = [threading.Thread(target=terminal, args=(tid, token, rng.uniform(0, window))) for tid, token, _, _ in fleet]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put((sent, failed, answers))


class Watch:
    """Every 0.25 s during the herd: /healthz, a page (the bundle list, signed in before the
    herd, as a support person is) and the fleet queue's depth."""

    def __init__(self, base: str, engine: sa.Engine) -> None:
        self.base, self.engine = base, engine
        self.health: list[float] = []
        self.pages: list[float] = []
        self.peak = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._probe, args=(path, into), daemon=True)
                         for path, into in (("/healthz", self.health), ("/bundles", self.pages))]  # fmt: skip
        self._threads.append(threading.Thread(target=self._queue, daemon=True))
        for t in self._threads:
            t.start()

    def _probe(self, path: str, into: list[float]) -> None:
        session = signed_in(self.base)
        while not self._stop.wait(0.25):
            started = time.monotonic()
            try:
                session.get(self.base + path, timeout=30)
            except requests.RequestException:
                pass  # counted as the time it took to fail
            into.append(time.monotonic() - started)

    def _queue(self) -> None:
        while not self._stop.wait(0.25):
            self.peak = max(self.peak, fleet_queue.backlog(self.engine).depth)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def signed_in(base: str) -> requests.Session:
    session = requests.Session()
    page = session.get(base + "/login", timeout=30)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    done = session.post(base + "/login", data={"csrf": csrf, "name": "support", "password": PASSWORD, "next": "/bundles"},
                        allow_redirects=False, timeout=60)  # fmt: skip
    done.raise_for_status()
    return session


def p95(values: list[float]) -> float:
    ordered = sorted(values) or [0.0]
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def enrol(engine: sa.Engine, count: int) -> list[tuple[str, str, dict[str, str], str]]:
    """Terminals on two carriers, two acquirers and two firmware versions."""
    fleet = []
    for i in range(count):
        tid = f"HERD-{i:05d}"
        fleet.append((tid, store.add_terminal(engine, tid), {"carrier": "XY"[i % 2], "acquirer": "AB"[i // 2 % 2]}, ("1.2.3", "1.2.4")[i % 2]))
    return fleet


def run(url: str, data: Path, args: argparse.Namespace) -> bool:
    engine = db.make_engine(url)
    db.create_schema(engine)
    store.add_user(engine, "support", "support", PASSWORD)
    fleet = enrol(engine, args.terminals)
    config = data / "herd.toml"
    # Every simulated terminal connects from 127.0.0.1: no per-address cap (as behind a balancer).
    config.write_text("[server]\nmax_connections_per_client = 0\n" + (f"fleet_queue_max = {args.queue_max}\n" if args.queue_max else "")
                      + (f"shed_retry_after_seconds = {args.retry_after}\n" if args.retry_after else ""))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(CLI), "--db", url, "--data", str(data), "--config", str(config), "serve", "--port", str(port), "--workers", str(args.workers)],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    ctx = multiprocessing.get_context("fork")
    try:
        wait_up(base, server)
        with engine.connect() as conn:
            incidents_before = conn.execute(sa.select(sa.func.count()).select_from(incidents)).scalar_one()
        results = ctx.Queue()
        start_at = time.time() + 3 + args.terminals / 400  # every process has made its bundles by then
        procs = [ctx.Process(target=herd_process, args=(base, fleet[i :: args.client_processes], args.window, i, start_at, results))
                 for i in range(args.client_processes)]  # fmt: skip
        for p in procs:
            p.start()
        time.sleep(max(0.0, start_at - time.time()))
        watch = Watch(base, engine)
        parts = [results.get(timeout=3600) for _ in procs]
        answered = time.time()
        while fleet_queue.backlog(engine).depth:
            time.sleep(0.1)
        drained = time.time() - start_at
        watch.stop()
        for p in procs:
            p.join()
    finally:
        server.terminate()
        server.wait(30)
    sent = [b for part in parts for b in part[0]]
    failed = [f for part in parts for f in part[1]]
    answers: dict[str, int] = {}
    for part in parts:
        for code, n in part[2].items():
            answers[code] = answers.get(code, 0) + n
    with engine.connect() as conn:
        stored = set(conn.execute(sa.select(db.bundles.c.id).where(db.bundles.c.terminal_id.like("HERD-%"))).scalars())
        counted = conn.execute(sa.select(sa.func.count()).select_from(bundle_fleet)).scalar_one()
        opened = conn.execute(sa.select(sa.func.count()).select_from(incidents)).scalar_one() - incidents_before
    engine.dispose()
    total = args.terminals * PER_TERMINAL
    lost = total - len(stored & {b.lower() for b in sent})
    health, pages = p95(watch.health), p95(watch.pages)
    print(
        f"herd {args.db}: {args.terminals} terminals x {PER_TERMINAL} bundles reconnecting within {args.window:g} s, {args.workers} workers: "
        f"drained in {drained:.1f} s (answered {answered - start_at:.1f} s), peak fleet queue {watch.peak}, "
        f"429 {answers.get('429', 0)}, 503 {answers.get('503', 0)}, other retried {dict((c, n) for c, n in sorted(answers.items()) if c not in ('429', '503')) or 0}; "
        f"p95 /healthz {health * 1000:.0f} ms, page {pages * 1000:.0f} ms (median {statistics.median(watch.pages or [0]) * 1000:.0f} ms); "
        f"sent {total}, stored {len(stored)}, confirmed {len(sent)}, counted by the fleet {counted}, lost {lost}, gave up {len(failed)}; "
        f"incidents opened by the backlog {opened}"
    )
    problems = []
    if lost or len(stored) != total or counted != total or failed:
        problems.append("a bundle lost, stored or counted other than once")
    if opened:
        problems.append("the backlog opened an incident")
    if drained > args.drain_target:
        problems.append(f"drained in {drained:.0f} s, over {args.drain_target:g} s")
    if health >= 1.0 or pages >= 1.0:
        problems.append("pages or /healthz p95 of 1 s or more")
    for problem in problems:
        print(f"herd {args.db}: MISSED: {problem}")
    for line in failed[:5]:
        print(f"  gave up: {line}")
    return not problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--terminals", type=int, default=300)
    parser.add_argument("--window", type=float, default=20.0, help="seconds over which the terminals reconnect")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument("--drain-target", type=float, default=90.0, help="seconds from the first reconnect")
    parser.add_argument("--queue-max", type=int, default=0, help="[server] fleet_queue_max for this run (0: the default)")
    parser.add_argument("--retry-after", type=int, default=0, help="[server] shed_retry_after_seconds for this run (0: the default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="posdiag-herd-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        if args.db == "sqlite":
            return 0 if run(f"sqlite:///{data / 'herd.db'}", data, args) else 1
        made = pg_database()
        if not made:
            return 0
        try:
            return 0 if run(made[1], data, args) else 1
        finally:
            drop_pg(made[0])


if __name__ == "__main__":
    sys.exit(main())
