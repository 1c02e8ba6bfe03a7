"""The agent's footprint and reaction time.

1. Idle: `posdiag run` on this host (no simulation: the emulators' own threads would be
   counted as the agent's) following a quiet log, for IDLE_S seconds: RSS and CPU from
   /proc. Targets: RSS <= 35 MB, CPU <= 0.5 % of one core.
2. Reaction: `posdiag run --simulate healthy`; a line with a response code is appended to
   the watched log; time until the support server (real, loopback, SQLite) has stored the
   bundle. Target: under 2 s.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import BIN, ROOT, row

sys.path.insert(0, str(ROOT / "tests" / "server"))
from server_harness import start_server  # noqa: E402

IDLE_S = float(os.environ.get("POSDIAG_BENCH_IDLE_S", "60"))
REACTIONS = 10
TICKS = os.sysconf("SC_CLK_TCK")


def config_text(work: Path, server_url: str, terminal: str, token: str) -> str:
    log = work / "app.log"
    return f"""
[terminal]
id = "{terminal}"
[upload]
server_url = "{server_url}"
token = "{token}"
[outbox]
dir = "{work / 'outbox'}"
[logs]
files = ["{log}"]
[daemon]
state_dir = "{work / 'state'}"
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


def idle(work: Path, config: Path) -> None:
    proc = start_agent(config, simulate=False)
    time.sleep(2.0)
    cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
    rss = []
    while time.monotonic() - t0 < IDLE_S:
        time.sleep(1.0)
        rss.append(rss_mb(proc.pid))
    cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    print(f"idle agent over {IDLE_S:.0f} s (real host, no simulation)")
    row("RSS (max)", f"{max(rss):.1f} MB")
    row("CPU", f"{cpu:.3f} % of one core")


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
        idle(work, config)
        next(gen, None)


if __name__ == "__main__":
    sys.exit(main())
