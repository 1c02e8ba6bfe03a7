"""The agent's footprint and reaction time: the resident process (`posdiag run`) and the
short-lived workers it starts (docs/agent.md, "Resident and workers").

1. Reaction: `posdiag run --simulate healthy`; a line with a response code is appended to
   the watched log; time until the support server (real, loopback, SQLite) has stored the
   bundle. Target: median under 1 s. The workers' own figures per job kind come from the
   agent's debug log (`worker job KIND: ... ms, cpu ... ms, peak RSS ... MB`).
2. Idle: `posdiag run` on this host (no simulation: the emulators would run inside the
   resident), following a quiet log, talking to a real support server over TLS through a
   byte-counting TCP proxy. First quiet: after the first round (a snapshot and a heartbeat)
   nothing is due for QUIET_S seconds: the resident's own idle RSS and CPU. Then busy:
   snapshots, polls and heartbeats come every few seconds, each round in a fresh worker
   (`worker_linger_seconds` = 1 s, as rounds minutes apart have in production): what a round
   costs in CPU (resident and workers: /proc/PID/stat counts reaped children), flash
   (write_bytes of /proc/PID/io, also counting reaped children; state on a disk, not tmpfs)
   and link (bytes on the wire both ways, TLS included: a worker cannot resume the previous
   worker's TLS session, so every round pays a full handshake). Per day: the production
   intervals of the packaged config/posdiag.toml. Targets: resident RSS <= 16 MB, CPU
   including workers <= 0.3 % of one core, flash <= 2 MiB/day, link <= 1 MiB/day.
3. The same idle run with the one-file executables when a dist directory has them
   (POSDIAG_BENCH_DIST, default dist/): x86_64 natively, aarch64 through qemu-user
   (binfmt_misc, and the arm64 Debian root `make dist` keeps, as QEMU_LD_PREFIX), as a
   ratio to x86_64. Under qemu the RSS includes the emulator and the times its slowness.
4. The resident's floor: what it imports, one by one, and what it leaves to the workers.

Modules are compiled first (compileall), as an installed package has them: compiling at
every start leaves the compiler's garbage in the RSS (this machine sets
PYTHONDONTWRITEBYTECODE). The machine may be shared: CPU and times are upper bounds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _util import BIN, ROOT, row

sys.path.insert(0, str(ROOT / "tests" / "server"))
from server_harness import start_server  # noqa: E402

QUIET_S = float(os.environ.get("POSDIAG_BENCH_QUIET_S", "30"))
BUSY_S = float(os.environ.get("POSDIAG_BENCH_IDLE_S", "90"))
REACTIONS = 10
TICKS = os.sysconf("SC_CLK_TCK")
DAY_S = 86400
# The busy phase's intervals. The poll interval is above uvicorn's 5 s keep-alive and the
# worker's linger, so every round is a new worker and a new connection, as in production.
BUSY = {"snapshot_interval_seconds": 6.0, "command_poll_seconds": 6.0, "heartbeat_seconds": 30.0, "worker_linger_seconds": 1.0}
QUIET = {"snapshot_interval_seconds": 3600.0, "command_poll_seconds": 3600.0, "heartbeat_seconds": 3600.0, "worker_linger_seconds": 1.0}
JOB_LINE = re.compile(r"worker job (?P<kind>\w+): (?P<ms>\d+) ms, cpu (?P<cpu>\d+) ms, peak RSS (?P<rss>[\d.]+) MB")


def production() -> dict[str, float]:
    """The daemon's intervals as the packaged config sets them (derived, not copied)."""
    from agent import config

    daemon = config.load_layers(None, None).section("daemon")
    return {
        "snapshot": daemon.snapshot_interval_seconds,
        "poll": daemon.command_poll_seconds,
        "heartbeat": daemon.heartbeat_seconds,
    }


def config_text(work: Path, server_url: str, terminal: str, token: str, ca_file: str = "", **daemon: float) -> str:
    log = work / "app.log"
    extra = "\n".join(f"{k} = {v}" for k, v in daemon.items())
    return f"""
[terminal]
id = "{terminal}"
[upload]
server_url = "{server_url}"
token = "{token}"
ca_file = "{ca_file}"
[outbox]
dir = "{work / 'outbox'}"
[logs]
files = ["{log}"]
[daemon]
state_dir = "{work / 'state'}"
start_jitter_seconds = 0.0
log_level = "debug"
{extra}
[[daemon.log_sources]]
path = "{log}"
patterns = ['response code: (?P<code>[0-9A-Z]{{2}})']
scheme = "iso8583"
"""


def stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """The process's CPU and that of its children: reaped ones (cutime, cstime) and live ones."""
    fields = stat_fields(pid)
    total = sum(int(f) for f in fields[11:15]) / TICKS
    for child in children(pid):
        with contextlib.suppress(OSError):
            total += sum(int(f) for f in stat_fields(child)[11:13]) / TICKS
    return total


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def agent_command(program: list[str], config: Path, simulate: bool) -> list[str]:
    return [*program, "run", "--config", str(config), *(["--simulate", "healthy"] if simulate else [])]


def resident_pid(proc: subprocess.Popen, program: list[str]) -> int:
    """The Python process that runs the agent: a one-file executable's bootloader starts it
    as its child (a small C process, not counted)."""
    if program[0].endswith("python"):
        return proc.pid
    deadline = time.monotonic() + 60
    while not children(proc.pid):
        if time.monotonic() > deadline:
            raise SystemExit("the one-file executable started no program")
        time.sleep(0.05)
    return children(proc.pid)[0]


def start_agent(program: list[str], config: Path, simulate: bool, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
    log = config.with_suffix(".log")
    proc = subprocess.Popen(agent_command(program, config, simulate), stderr=log.open("w"), env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 120
    while "agent running" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the agent did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    return proc, resident_pid(proc, program)


def job_stats(log: Path) -> dict[str, list[tuple[float, float, float]]]:
    """(wall ms, cpu ms, peak RSS MB) of each finished worker job, by kind."""
    found: dict[str, list[tuple[float, float, float]]] = collections.defaultdict(list)
    for m in JOB_LINE.finditer(log.read_text(errors="replace")):
        found[m["kind"]].append((float(m["ms"]), float(m["cpu"]), float(m["rss"])))
    return found


def worker_starts(log: Path) -> int:
    return len(re.findall(r"routine worker \d+ started", log.read_text(errors="replace")))


class CountingProxy:
    """A TCP proxy on loopback that counts the bytes of each connection, both ways."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connections: list[int] = []
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        counted = [0]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    counted[0] += len(data)
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.connections.append(counted[0])


def certificate(work: Path) -> tuple[str, str]:
    cert, key = work / "server.pem", work / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


def tls_server(work: Path, tls: tuple[str, str]):
    """A real support server (SQLite) over HTTPS; counts requests by path."""
    from remote.server import store
    from remote.server.app import create_app
    from remote.server.embedded import serving
    from server_harness import default_settings

    app = create_app(f"sqlite:///{work}/idle.db", work / "idle-blobs", default_settings())
    requests_by_path: collections.Counter[str] = collections.Counter()

    @app.middleware("http")
    async def count(request, call_next):
        requests_by_path[request.url.path.rsplit("/", 2)[-2] if "commands" in request.url.path else request.url.path] += 1
        return await call_next(request)

    terminal, token = "BENCH-IDLE", store.add_terminal(app.state.service.engine, "BENCH-IDLE")
    return serving(app, tls=tls), terminal, token, requests_by_path


class Idle:
    """One idle run's measurements."""

    def __init__(self) -> None:
        self.quiet_rss: list[float] = []
        self.after_error_rss: list[float] = []
        self.busy_rss: list[float] = []
        self.quiet_cpu_s = self.quiet_elapsed = 0.0
        self.busy_cpu_s = self.busy_elapsed = 0.0
        self.written = 0
        self.rounds = 0
        self.snapshots = 0
        self.connections: list[int] = []
        self.by_path: collections.Counter[str] = collections.Counter()
        self.jobs: dict[str, list[tuple[float, float, float]]] = {}


def sample(pid: int, seconds: float, into: list[float]) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        time.sleep(0.5)
        into.append(rss_mb(pid))
    return time.monotonic() - t0


def idle(work: Path, program: list[str], env: dict[str, str] | None = None) -> Idle:
    """The quiet and the busy phase (module docstring), one agent each."""
    found = Idle()
    state_disk = Path(tempfile.mkdtemp(prefix="posdiag-bench-state-", dir=ROOT / "bench"))  # a disk, not tmpfs
    try:
        tls = certificate(work)
        serving, terminal, token, by_path = tls_server(work, tls)
        with serving as url:
            proxy = CountingProxy(int(url.rsplit(":", 1)[1]))
            server_url = f"https://127.0.0.1:{proxy.port}"
            (state_disk / "app.log").write_text("")
            quiet = state_disk / "quiet.toml"
            quiet.write_text(config_text(state_disk, server_url, terminal, token, tls[0], **QUIET))
            proc, pid = start_agent(program, quiet, simulate=False, env=env)
            deadline = time.monotonic() + 120
            while "heartbeat" not in by_path and "/api/v1/heartbeats" not in by_path or children(pid):
                if time.monotonic() > deadline:
                    raise SystemExit("the first round did not end")
                time.sleep(0.2)  # the first round (snapshot, heartbeat) is over and its worker gone
            cpu0 = cpu_seconds(pid)
            found.quiet_elapsed = sample(pid, QUIET_S, found.quiet_rss)
            found.quiet_cpu_s = cpu_seconds(pid) - cpu0
            with (state_disk / "app.log").open("a", encoding="utf-8") as fh:  # the resident now redacts and groups an event
                fh.write("交易失败 txn response code: 51\n")  # a Chinese line: the redactor builds its compatibility table
            deadline = time.monotonic() + 120
            while "/api/v1/bundles" not in by_path or children(pid):
                if time.monotonic() > deadline:
                    raise SystemExit("the error was not uploaded")
                time.sleep(0.2)
            sample(pid, 5.0, found.after_error_rss)
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            proxy.connections.clear()
            by_path.clear()

            busy = state_disk / "busy.toml"
            busy.write_text(config_text(state_disk, server_url, terminal, token, tls[0], **BUSY))
            proc, pid = start_agent(program, busy, simulate=False, env=env)
            time.sleep(2.0)
            log = busy.with_suffix(".log")
            cpu0, io0, starts0 = cpu_seconds(pid), write_bytes(pid), worker_starts(log)
            connections0 = len(proxy.connections)
            found.busy_elapsed = sample(pid, BUSY_S, found.busy_rss)
            deadline = time.monotonic() + 30
            while children(pid) and time.monotonic() < deadline:  # the last round's worker: done and reaped
                time.sleep(0.1)
            found.busy_cpu_s = cpu_seconds(pid) - cpu0
            found.written = write_bytes(pid) - io0
            found.rounds = worker_starts(log) - starts0
            found.connections = proxy.connections[connections0:]
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            found.by_path = collections.Counter(by_path)
            found.jobs = job_stats(log)
            found.snapshots = len(found.jobs.get("snapshot", []))
    finally:
        subprocess.run(["rm", "-rf", str(state_disk)], check=False)
    return found


def per_day(found: Idle) -> dict[str, float]:
    """Production figures from one idle run: CPU %, flash and link bytes per day."""
    intervals = production()
    rounds_day = DAY_S / intervals["snapshot"]  # every round starts a worker; polls and heartbeats ride along
    heartbeats_day = DAY_S / intervals["heartbeat"]
    polls_day = max(0.0, DAY_S / intervals["poll"] - heartbeats_day)
    idle_cpu_s = found.quiet_cpu_s / found.quiet_elapsed * DAY_S
    round_cpu_s = found.busy_cpu_s / max(1, found.rounds)
    flash = found.written / max(1, found.snapshots) * (DAY_S / intervals["snapshot"])
    hb, poll = split_connections(found)
    return {
        "cpu_pct": (idle_cpu_s + round_cpu_s * rounds_day) / DAY_S * 100,
        "idle_cpu_pct": idle_cpu_s / DAY_S * 100,
        "round_cpu_ms": round_cpu_s * 1000,
        "flash": flash,
        "link": polls_day * poll + heartbeats_day * hb,
        "poll_b": poll,
        "heartbeat_b": hb,
        "rounds_day": rounds_day,
    }


def split_connections(found: Idle) -> tuple[float, float]:
    """Median bytes of a heartbeat round's connection and of a poll round's: each round is
    one connection; the heartbeats are the largest."""
    sizes = sorted(found.connections)
    heartbeats = found.by_path["/api/v1/heartbeats"]
    if not sizes:
        return 0.0, 0.0
    hb = sizes[-heartbeats:] if heartbeats else sizes[-1:]
    polls = sizes[: len(sizes) - len(hb)] or hb
    return statistics.median(hb), statistics.median(polls)


def report_idle(name: str, found: Idle) -> dict[str, float]:
    day = per_day(found)
    resident = max(found.quiet_rss + found.busy_rss + found.after_error_rss)
    print(f"idle agent, {name} (real host, no simulation; HTTPS through a counting proxy)")
    print(f"  resident RSS (max)  {resident:.1f} MB")
    row("resident RSS quiet / in rounds", f"{max(found.quiet_rss):.1f} MB", f"{max(found.busy_rss):.1f} MB", "target <= 16")
    row("resident RSS after an error", f"{max(found.after_error_rss):.1f} MB", "its bundle uploaded")
    row("resident CPU, quiet", f"{day['idle_cpu_pct']:.4f} %", f"{found.quiet_elapsed:.0f} s")
    row("CPU per round (resident + worker)", f"{day['round_cpu_ms']:.0f} ms", f"{found.rounds} rounds")
    row("CPU including workers, per day", f"{day['cpu_pct']:.3f} %", f"{day['rounds_day']:.0f} rounds", "target <= 0.3")
    row("flash per idle day", f"{day['flash'] / 2**20:.2f} MiB", f"{found.snapshots} snapshots", "target <= 2")
    row("poll round (full TLS handshake)", f"{day['poll_b']:.0f} B")
    row("heartbeat round (full TLS, + poll)", f"{day['heartbeat_b']:.0f} B")
    row("link per idle day", f"{day['link'] / 1024:.0f} KiB", f"{len(found.connections)} conns", "target <= 1024")
    report_jobs(found.jobs)
    return {"rss": resident, **day}


def report_jobs(jobs: dict[str, list[tuple[float, float, float]]]) -> None:
    for kind, samples in sorted(jobs.items()):
        walls, cpus, peaks = zip(*samples, strict=True)
        row(f"worker {kind}", f"{statistics.median(walls):.0f} ms", f"cpu {statistics.median(cpus):.0f} ms", f"peak {max(peaks):.1f} MB", f"n={len(samples)}")


FLOOR_STEPS = ("logging", "argparse", "json", "ctypes", "agent.sources", "agent.resident", "agent.commands.run")
AFTER_AN_EVENT = ("remote.redact", "socket")  # the redactor; the socket module when [daemon] listen is set
LEFT_TO_WORKERS = (
    "typing", "random", "datetime", "tomllib", "dataclasses", "hashlib", "ssl", "http.client", "serial",
    "agent.config", "agent.pipeline", "requests",
)  # fmt: skip
FLOOR_SCRIPT = """
import importlib, sys
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
print(f'interpreter {rss():.1f} {rss():.1f}')
for name in sys.argv[1:]:
    if name.startswith('--'):
        print(f'{name} --- ---')
        continue
    before = rss()
    importlib.import_module(name)
    print(f'{name} {rss() - before:.1f} {rss():.1f}')
"""


def floor() -> None:
    """What each import costs in RSS: the resident's, in the order it pays them, then what
    it leaves to its workers (remote.redact once an event arrives)."""
    out = subprocess.run(
        [str(BIN / "python"), "-c", FLOOR_SCRIPT, *FLOOR_STEPS, "--when-needed", *AFTER_AN_EVENT, "--workers-only", *LEFT_TO_WORKERS],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    print("resident RSS floor, import by import (MB: added, total); then what it adds when needed, and what only workers import")
    for line in out.stdout.splitlines():
        name, added, total = line.split()
        row(name, added, total)


def reaction(work: Path, config: Path, server) -> None:
    program = [str(BIN / "python"), str(BIN / "posdiag")]
    proc, _ = start_agent(program, config, simulate=True)
    log = work / "app.log"
    codes = ["51", "05", "96", "A0", "55", "14", "91", "30", "12", "03"]
    seconds = []
    for code in codes[:REACTIONS]:
        before = len(server.get("/api/v1/bundles?limit=500").json()["items"])
        t0 = time.monotonic()
        with log.open("a") as fh:
            fh.write(f"txn response code: {code}\n")
        while len(server.get("/api/v1/bundles?limit=500").json()["items"]) == before:
            if time.monotonic() - t0 > 30:
                raise SystemExit(f"no bundle for code {code} within 30 s")
            time.sleep(0.01)
        seconds.append(time.monotonic() - t0)
        time.sleep(1.5)  # past the debounce of a burst, and the upload worker's own poll
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    print(f"log line to bundle stored on the server ({len(seconds)} codes, simulated terminal)")
    row("median", f"{statistics.median(seconds) * 1000:.0f} ms", "target < 1000")
    row("max", f"{max(seconds) * 1000:.0f} ms")
    report_jobs({k: v for k, v in job_stats(config.with_suffix(".log")).items() if k in ("diagnose", "flush")})


def frozen_programs() -> list[tuple[str, list[str], dict[str, str]]]:
    """The one-file executables to measure, with the environment each needs to run here."""
    dist = Path(os.environ.get("POSDIAG_BENCH_DIST", ROOT / "dist"))
    found = []
    for path in sorted(dist.glob("posdiag-*-linux-x86_64")):
        found.append(("frozen x86_64", [str(path)], {}))
    for path in sorted(dist.glob("posdiag-*-linux-aarch64")):
        roots = sorted(Path(os.environ.get("POSDIAG_DIST_CACHE", "/var/cache/posdiag-dist"), "roots").glob("arm64-*"))
        if roots and Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
            found.append(("frozen aarch64 under qemu-user", [str(path)], {"QEMU_LD_PREFIX": str(roots[-1])}))
        else:
            print(f"{path.name}: not measured (needs binfmt_misc qemu-aarch64 and the arm64 root of `make dist`)")
    return found


def main() -> None:
    subprocess.run([str(BIN / "python"), "-m", "compileall", "-q", "agent", "probes", "remote", "config"], cwd=ROOT, check=True, capture_output=True)
    with tempfile.TemporaryDirectory(prefix="posdiag-bench-daemon-") as tmp:
        work = Path(tmp)
        gen = start_server(f"sqlite:///{work}/support.db", work / "blobs", "sqlite")
        server = next(gen)
        terminal, token = server.terminal("BENCH")
        config = work / "agent.toml"
        config.write_text(config_text(work, server.url, terminal, token))
        (work / "app.log").write_text("")
        reaction(work, config, server)
        next(gen, None)
        runs = [("venv x86_64", [str(BIN / "python"), str(BIN / "posdiag")], {}), *frozen_programs()]
        figures = {}
        for n, (name, program, env) in enumerate(runs):
            (work / f"idle-{n}").mkdir()
            figures[name] = report_idle(name, idle(work / f"idle-{n}", program, env))
        if "frozen x86_64" in figures and len(figures) > 2:
            base = figures["frozen x86_64"]
            for name, got in figures.items():
                if "aarch64" in name:
                    print(f"{name} as a ratio to frozen x86_64")
                    for key in ("rss", "round_cpu_ms", "cpu_pct", "link"):
                        row(key, f"{got[key] / base[key]:.2f} x" if base[key] else "-")
        floor()


if __name__ == "__main__":
    sys.exit(main())
