"""Fleet simulation over loopback: terminals upload bundles and poll for probe requests at
their own pace while a support user requests probes, against real `posdiag-support serve`.

    .venv/bin/python bench/load.py [--terminals 200] [--duration 60] [--configs one,two]
        [--workers 2] [--poll-seconds 5] [--upload-seconds 2] [--probe-every 1]
        [--client-processes 4] [--plot bench/out/load.png]

Configurations: `one` is one server (--workers N) on SQLite, the single-box set-up; `two`
is two servers (--workers N each) sharing a fresh PostgreSQL database and one blob
directory, the terminals split between them. Each terminal is a thread (shared out among
a few client processes): it polls its command queue every --poll-seconds (first poll at a
random offset) and uploads a bundle at exponentially distributed intervals (mean
--upload-seconds); a probe request it receives is answered at once by a bundle naming the
command. An upload that fails (connection error, 5xx, 429) is retried with backoff until a
server confirms it. Printed per configuration: sustained bundles/s, upload p50/p99, polls,
errors, probe requests answered, and stored versus sent with lost and duplicated counts.
The PNG shows confirmed bundles/s and upload p50/p99 latency per second, per configuration.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "server"))
sys.path.insert(0, str(ROOT / "bench"))

from ingest import CLI, drop_pg, free_port, pg_database, wait_up  # noqa: E402
from server_bundles import make_bundle  # noqa: E402

from remote.server import db, store  # noqa: E402

SUPPORT_PASSWORD = "load-bench-password"


def terminal(tid: str, token: str, base: str, t0: float, end: float, args: argparse.Namespace, out: list, lock) -> None:
    """One terminal: polls and uploads until `end` (wall clock), then finishes what it sent."""
    rng = random.Random(tid)
    session = requests.Session()
    auth = {"Authorization": f"Bearer {token}"}
    next_poll = t0 + rng.uniform(0, args.poll_seconds)
    next_upload = t0 + rng.expovariate(1 / args.upload_seconds)

    def record(kind: str, started: float, status: object, extra: str = "") -> None:
        with lock:
            out.append((kind, started, time.time() - started, status, extra))

    def upload(command_id: str | None = None) -> None:
        bundle_id, body = make_bundle(
            token, tid, code=str(rng.randint(1, 99)), trigger="remote" if command_id else "error", command_id=command_id
        )
        record("sent", time.time(), None, bundle_id)
        delay = 0.1
        while True:
            started = time.time()
            try:
                status = session.post(
                    f"{base}/api/v1/bundles", data=body, timeout=30,
                    headers=dict(auth, **{"Idempotency-Key": bundle_id, "Content-Type": "application/gzip"}),
                ).status_code  # fmt: skip
            except requests.RequestException as exc:
                status = type(exc).__name__
                record("error", started, status, f"upload: {str(exc)[:160]}")
            record("upload", started, status, bundle_id)
            if isinstance(status, int) and 200 <= status < 300:
                return
            if isinstance(status, int) and status < 500 and status not in (408, 429):
                return  # refused: a bug in this bench, counted as an error
            if time.time() > end + 60:
                return  # given up: counted as lost
            time.sleep(delay * rng.uniform(0.5, 1.5))
            delay = min(delay * 2, 2.0)

    while True:
        now = time.time()
        if now >= end:
            return
        wake = min(next_poll, next_upload, end)
        if wake > now:
            time.sleep(wake - now)
            continue
        if next_poll <= now:
            next_poll += args.poll_seconds
            started = time.time()
            try:
                answer = session.get(f"{base}/api/v1/terminals/{tid}/commands/next", headers=auth, timeout=30)
                status: object = answer.status_code
            except requests.RequestException as exc:
                answer, status = None, type(exc).__name__
                record("error", started, status, f"poll: {str(exc)[:160]}")
            record("poll", started, status)
            if answer is not None and answer.status_code == 200:
                upload(answer.json()["command_id"])
        if next_upload <= time.time():
            next_upload = time.time() + rng.expovariate(1 / args.upload_seconds)
            upload()


def client_process(fleet: list[tuple[str, str, str]], t0: float, end: float, args: argparse.Namespace, results) -> None:
    out: list = []
    lock = threading.Lock()
    threads = [threading.Thread(target=terminal, args=(tid, token, base, t0, end, args, out, lock)) for tid, token, base in fleet]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put(out)


def support_user(bases: list[str], tids: list[str], t0: float, stop_at: float, every: float, out: list) -> None:
    """Requests probes for a random terminal every `every` seconds, on alternating servers."""
    rng = random.Random(7)
    session = requests.Session()
    session.auth = ("support", SUPPORT_PASSWORD)
    time.sleep(max(0.0, t0 - time.time()))
    i = 0
    while time.time() < stop_at:
        tid = rng.choice(tids)
        answer = session.post(f"{bases[i % len(bases)]}/api/v1/terminals/{tid}/commands", json={"probes": ["printer"]}, timeout=30)
        out.append(answer.json()["id"] if answer.status_code == 201 else f"error {answer.status_code}")
        i += 1
        time.sleep(every)


def run_config(label: str, url: str, data: Path, servers: int, args: argparse.Namespace) -> dict:
    engine = db.make_engine(url)
    db.create_schema(engine)
    store.add_user(engine, "support", "support", SUPPORT_PASSWORD)
    tokens = [(f"LOAD-{i:04d}", store.add_terminal(engine, f"LOAD-{i:04d}")) for i in range(args.terminals)]
    ports = [free_port() for _ in range(servers)]
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    logs = [data / f"server-{p}.log" for p in ports]
    procs = [
        subprocess.Popen(
            [str(CLI), "--db", url, "--data", str(data), "serve", "--port", str(p), "--workers", str(args.workers)],
            stderr=log.open("wb"),
        )
        for p, log in zip(ports, logs, strict=True)
    ]
    ctx = multiprocessing.get_context("fork")
    try:
        for base, proc in zip(bases, procs, strict=True):
            wait_up(base, proc)
        fleet = [(tid, token, bases[i % servers]) for i, (tid, token) in enumerate(tokens)]
        t0 = time.time() + 2.0
        end = t0 + args.duration
        results = ctx.Queue()
        clients = [
            ctx.Process(target=client_process, args=(fleet[i :: args.client_processes], t0, end, args, results))
            for i in range(args.client_processes)
        ]
        for c in clients:
            c.start()
        requested: list[str] = []
        # Probe requests stop two poll periods before the end, so each can be answered in time.
        support = threading.Thread(
            target=support_user,
            args=(bases, [t for t, _ in tokens], t0, end - 2 * args.poll_seconds, args.probe_every, requested),
        )
        support.start()
        records = [r for _ in clients for r in results.get(timeout=args.duration + 300)]
        for c in clients:
            c.join()
        support.join()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
    with engine.connect() as conn:
        stored = [r[0] for r in conn.execute(sa.select(db.bundles.c.id))]
        states = Counter(
            r[0] for r in conn.execute(sa.select(db.commands.c.status).where(db.commands.c.id.in_(requested)))
        ) if requested else Counter()  # fmt: skip
    engine.dispose()
    summary = summarise(label, records, stored, requested, states, t0, args)
    problems = Counter(
        line for log in logs for line in log.read_text(errors="replace").splitlines() if "Error" in line and "Traceback" not in line
    )
    for line, count in problems.most_common(3):
        print(f"    server: {count} x {line[:200]}")
    return summary


def summarise(label: str, records: list, stored: list[str], requested: list[str], states: Counter, t0: float, args) -> dict:
    sent = {r[4] for r in records if r[0] == "sent"}
    uploads = [r for r in records if r[0] == "upload"]
    ok = [r for r in uploads if isinstance(r[3], int) and 200 <= r[3] < 300]
    polls = [r for r in records if r[0] == "poll"]
    errors = Counter(str(r[3]) for r in uploads + polls if not (isinstance(r[3], int) and (200 <= r[3] < 300)))
    latencies = sorted(r[2] for r in uploads)
    poll_latencies = sorted(r[2] for r in polls)
    stored_set = set(stored)
    per_second: dict[int, list[float]] = defaultdict(list)
    for r in ok:
        per_second[int(r[1] + r[2] - t0)].append(r[2])
    summary = {
        "label": label,
        "sent": len(sent),
        "stored": len(stored),
        "lost": len(sent - stored_set),
        "duplicated": len(stored) - len(stored_set),
        "unexpected": len(stored_set - sent),
        "bundles_per_s": len(ok) / args.duration,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "poll_p99_ms": pct(poll_latencies, 0.99) * 1000,
        "polls": len(polls),
        "errors": dict(errors),
        "already_stored_200": sum(1 for r in ok if r[3] == 200),
        "probes_requested": len(requested),
        "probes_answered": states.get("done", 0),
        "series": {s: (len(v), pct(sorted(v), 0.5) * 1000, pct(sorted(v), 0.99) * 1000) for s, v in sorted(per_second.items())},
    }
    print(
        f"{label}: {args.terminals} terminals, {args.duration:.0f} s: {summary['bundles_per_s']:.1f} bundles/s, "
        f"upload p50 {summary['p50_ms']:.1f} ms p99 {summary['p99_ms']:.1f} ms, {len(polls)} polls "
        f"(p99 {summary['poll_p99_ms']:.1f} ms), errors {sum(errors.values())} {dict(errors) or ''}\n"
        f"    sent {summary['sent']}  stored {summary['stored']}  lost {summary['lost']}  "
        f"duplicated {summary['duplicated']}  unexpected {summary['unexpected']}  "
        f"probe requests {summary['probes_requested']}, answered by a bundle {summary['probes_answered']}",
        flush=True,
    )
    for what, count in Counter(r[4] for r in records if r[0] == "error").most_common(3):
        print(f"    {count} x {what}")
    return summary


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def plot(summaries: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for i, s in enumerate(summaries):
        seconds, color = list(s["series"]), f"C{i}"
        top.plot(seconds, [s["series"][t][0] for t in seconds], color=color, label=s["label"])
        bottom.plot(seconds, [s["series"][t][1] for t in seconds], color=color, label=f"{s['label']} p50")
        bottom.plot(seconds, [s["series"][t][2] for t in seconds], color=color, linestyle="--", label=f"{s['label']} p99")
    top.set_ylabel("bundles confirmed / s")
    top.legend()
    bottom.set_ylabel("upload latency (ms)")
    bottom.set_xlabel("seconds since start")
    bottom.legend()
    fig.suptitle("posdiag-support under a simulated fleet")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"plot: {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--terminals", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of simulated traffic")
    parser.add_argument("--configs", default="one,two", help="one (SQLite), two (PostgreSQL), or both")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per server")
    parser.add_argument("--poll-seconds", type=float, default=5.0, help="each terminal polls its queue this often")
    parser.add_argument("--upload-seconds", type=float, default=2.0, help="mean interval between a terminal's uploads")
    parser.add_argument("--probe-every", type=float, default=1.0, help="the support user requests probes this often (s)")
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument("--plot", type=Path, default=ROOT / "bench" / "out" / "load.png")
    args = parser.parse_args()
    summaries = []
    failed = False
    for config in args.configs.split(","):
        with tempfile.TemporaryDirectory(prefix="posdiag-load-") as tmp:
            data = Path(tmp) / "data"
            data.mkdir()
            if config == "one":
                summary = run_config("one server (SQLite)", f"sqlite:///{data / 'load.db'}", data, 1, args)
            elif config == "two":
                made = pg_database()
                if made is None:
                    continue
                try:
                    summary = run_config("two servers (PostgreSQL)", made[1], data, 2, args)
                finally:
                    drop_pg(made[0])
            else:
                parser.error(f"unknown configuration {config!r}")
        summaries.append(summary)
        failed |= bool(summary["lost"] or summary["duplicated"] or summary["unexpected"])
    if summaries:
        plot(summaries, args.plot)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
