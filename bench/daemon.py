"""The agent's footprint and reaction time.

1. Idle: `posdiag run` on this host (no simulation: the emulators' own threads would be
   counted as the agent's) following a quiet log, talking to a real support server over
   TLS through a byte-counting TCP proxy, for IDLE_S seconds. Polls, heartbeats and health
   snapshots come faster than in production so that a minute holds many of each; the
   per-day figures scale each measured exchange and snapshot to production intervals
   (polls every 300 s, a heartbeat every 3600 s that carries that hour's poll, a snapshot
   every 300 s). Targets: RSS <= 25 MB, CPU <= 0.5 % of one core, flash <= 2 MiB/day
   (write_bytes of /proc/PID/io: what reached the block layer, state on a disk, not tmpfs),
   link <= 1 MiB/day (bytes on the wire both ways, TLS included).
2. Reaction: `posdiag run --simulate healthy`; a line with a response code is appended to
   the watched log; time until the support server (real, loopback, SQLite) has stored the
   bundle. Target: under 2 s.
"""

from __future__ import annotations

import asyncio
import collections
import os
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

IDLE_S = float(os.environ.get("POSDIAG_BENCH_IDLE_S", "90"))
REACTIONS = 10
TICKS = os.sysconf("SC_CLK_TCK")
# Idle-run intervals. The poll interval is above uvicorn's 5 s keep-alive, so every
# exchange opens a new connection, as a 300 s poll does in production.
IDLE_POLL_S, IDLE_HEARTBEAT_S, IDLE_SNAPSHOT_S = 6.0, 30.0, 5.0
DAY_S, POLL_S, HEARTBEAT_S, SNAPSHOT_S = 86400, 300, 3600, 300


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
{extra}
[[daemon.log_sources]]
path = "{log}"
patterns = ['response code: (?P<code>[0-9A-Z]{{2}})']
scheme = "iso8583"
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


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


def start_agent(config: Path, simulate: bool) -> subprocess.Popen:
    args = [str(BIN / "python"), str(BIN / "posdiag"), "run", "--config", str(config)]
    log = config.with_suffix(".log")
    proc = subprocess.Popen(args + (["--simulate", "healthy"] if simulate else []), stderr=log.open("w"))
    deadline = time.monotonic() + 30
    while "agent running" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the agent did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    return proc


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
    )
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


def idle(work: Path) -> None:
    state_disk = Path(tempfile.mkdtemp(prefix="posdiag-bench-state-", dir=ROOT / "bench"))  # a disk, not tmpfs
    try:
        tls = certificate(work)
        serving, terminal, token, by_path = tls_server(work, tls)
        with serving as url:
            proxy = CountingProxy(int(url.rsplit(":", 1)[1]))
            config = state_disk / "agent.toml"
            (state_disk / "app.log").write_text("")
            config.write_text(config_text(
                state_disk, f"https://127.0.0.1:{proxy.port}", terminal, token, tls[0],
                command_poll_seconds=IDLE_POLL_S, heartbeat_seconds=IDLE_HEARTBEAT_S, snapshot_interval_seconds=IDLE_SNAPSHOT_S,
            ))
            proc = start_agent(config, simulate=False)
            time.sleep(2.0)
            cpu0, io0, t0 = cpu_seconds(proc.pid), write_bytes(proc.pid), time.monotonic()
            rss = []
            while time.monotonic() - t0 < IDLE_S:
                time.sleep(1.0)
                rss.append(rss_mb(proc.pid))
            elapsed = time.monotonic() - t0
            cpu = (cpu_seconds(proc.pid) - cpu0) / elapsed * 100
            written = write_bytes(proc.pid) - io0
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        report_idle(rss, cpu, written, elapsed, proxy.connections, by_path)
    finally:
        subprocess.run(["rm", "-rf", str(state_disk)], check=False)


def report_idle(rss: list[float], cpu: float, written: int, elapsed: float, connections: list[int], by_path: collections.Counter) -> None:
    heartbeats, polls = by_path["/api/v1/heartbeats"], by_path["commands"]
    snapshots = max(1, round(elapsed / IDLE_SNAPSHOT_S))
    print(f"idle agent over {elapsed:.0f} s (real host, no simulation; HTTPS through a counting proxy)")
    row("RSS (max)", f"{max(rss):.1f} MB", "target <= 25")
    row("CPU", f"{cpu:.3f} %", "target <= 0.5")
    flash_day = written / snapshots * (DAY_S / SNAPSHOT_S)
    row("flash written", f"{written / 1024:.0f} KiB", f"{snapshots} snapshots")
    row("flash per idle day", f"{flash_day / 2**20:.2f} MiB", "target <= 2")
    sizes = sorted(connections)
    if not sizes or not (heartbeats or polls):
        row("link", "no exchange seen")
        return
    # every exchange opened its own connection (poll interval > server keep-alive): the
    # heartbeats are the largest, the first connection carries the one full handshake
    first, rest = connections[0], sorted(connections[1:])
    hb = rest[-heartbeats:] if heartbeats else []
    pl = rest[: len(rest) - len(hb)] or [first]
    poll_b, hb_b = statistics.median(pl), (statistics.median(hb) if hb else statistics.median(pl))
    per_day = (DAY_S / POLL_S - DAY_S / HEARTBEAT_S) * poll_b + (DAY_S / HEARTBEAT_S) * hb_b + first
    row("exchanges seen", f"{polls} polls", f"{heartbeats} heartbeats", f"{len(connections)} conns")
    row("first connection (full TLS)", f"{first} B")
    row("poll (TLS resumed)", f"{poll_b:.0f} B")
    row("heartbeat + poll (resumed)", f"{hb_b:.0f} B")
    row("link per idle day", f"{per_day / 1024:.0f} KiB", "target <= 1024")
    print("  anchors: memfaultd uploads hourly (24 exchanges/day); a TMS heartbeat is often daily")


FLOOR_STEPS = (
    "logging", "dataclasses", "tomllib", "hashlib", "ssl", "http.client", "serial",
    "agent.config", "probes.modem", "agent.history", "agent.daemon", "remote.commands", "remote.redact", "requests",
)
FLOOR_SCRIPT = """
import importlib, sys
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
print(f'interpreter {rss():.1f} {rss():.1f}')
for name in sys.argv[1:]:
    before = rss()
    importlib.import_module(name)
    print(f'{name} {rss() - before:.1f} {rss():.1f}')
"""


def floor() -> None:
    """What each import costs in RSS, in the order the idle agent pays it (the last two only
    when an error or an upload comes)."""
    out = subprocess.run([str(BIN / "python"), "-c", FLOOR_SCRIPT, *FLOOR_STEPS], capture_output=True, text=True, check=True)
    print("idle RSS floor, import by import (MB: added, total)")
    for line in out.stdout.splitlines():
        name, added, total = line.split()
        row(name, added, total)


def reaction(work: Path, config: Path, server) -> None:
    proc = start_agent(config, simulate=True)
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
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    print(f"log line to bundle stored on the server ({len(seconds)} codes, simulated terminal)")
    row("median", f"{statistics.median(seconds) * 1000:.0f} ms")
    row("max", f"{max(seconds) * 1000:.0f} ms")


def main() -> None:
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
        idle(work)
        floor()


if __name__ == "__main__":
    sys.exit(main())
