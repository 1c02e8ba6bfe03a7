"""A real `posdiag run` subprocess on the simulated terminal, uploading to a real support
server (tests/server/server_harness.py), for end-to-end and reliability tests."""

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from agent import bundle, outbox
from agent.state import StateFile
from tests.conftest import POSDIAG

PATTERN = r"(?:response code|应答码)[:=]\s*(?P<code>[0-9A-Z]{2})"


class Agent:
    def __init__(self, server, workdir: Path, env: dict | None = None, **daemon):
        self.server = server
        self.workdir = workdir
        self.terminal, self.token = server.terminal("D")
        self.log = workdir / "logs" / "app.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.write_text("")
        self.config = workdir / "agent.toml"
        self.outbox = workdir / "outbox"
        self.daemon = {"command_poll_seconds": 60.0, "start_jitter_seconds": 0.0, **daemon}
        self.write_config()
        self.proc: subprocess.Popen | None = None
        self.stderr = workdir / "agent.log"
        self.env = env

    def write_config(self, extra: str = "") -> None:
        daemon = "\n".join(f"{k} = {json.dumps(v)}" for k, v in self.daemon.items())
        self.config.write_text(
            f"""
[terminal]
id = "{self.terminal}"
model = "SIM-POS"
[upload]
server_url = "{self.server.url}"
token = "{self.token}"
backoff_initial_seconds = 0.1
backoff_max_seconds = 0.5
[outbox]
dir = "{self.outbox}"
[logs]
files = ["{self.log}"]
[daemon]
state_dir = "{self.workdir / 'state'}"
{daemon}
[[daemon.log_sources]]
path = "{self.log}"
patterns = ['{PATTERN}']
scheme = "iso8583"
{extra}
"""
        )

    @property
    def state(self) -> Path:
        """Where the agent saves its log positions."""
        return self.workdir / "state" / "sources.json"

    def start(self) -> None:
        """Start `posdiag run` and return once it follows its log: its first look at the log
        saves the position it starts from (on a first start, the log's end: lines written
        before then are not new errors), which replaces the state file."""
        before = inode(self.state)
        self.proc = subprocess.Popen(
            [str(POSDIAG), "run", "--config", str(self.config), "--simulate", "healthy"],
            stderr=self.stderr.open("ab"),
            env={**os.environ, **(self.env or {})},
        )
        self.wait_until(
            lambda: "agent running" in self.stderr.read_text(errors="replace") and inode(self.state) != before,
            15, "the agent to start and save its log position",
        )  # fmt: skip

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `condition` until it holds; fail naming `what`, with the agent's log, if it
        does not within `timeout` seconds or the agent exits first."""
        deadline = time.monotonic() + timeout
        while not condition():
            running = self.proc is not None and self.proc.poll() is None
            assert running and time.monotonic() < deadline, f"waited for {what}: {self.stderr.read_text(errors='replace')[-3000:]}"
            time.sleep(0.05)

    def wait_for_log(self, text: str, timeout: float) -> None:
        self.wait_until(lambda: text in self.stderr.read_text(errors="replace"), timeout, repr(text))

    def wait_idle(self, timeout: float) -> None:
        """Until the agent is done with everything it was given: every line of its log
        committed (which happens only once its bundle is in the outbox) and the outbox empty
        (a bundle leaves it only when the server has confirmed it). Nothing more reaches the
        server after this unless something new happens: a test that counts bundles waits for
        this, not for a while."""

        def idle() -> bool:
            committed = StateFile(self.state).load().get(f"log:{self.log}", {}).get("offset")
            return committed == self.log.stat().st_size and not outbox.scan(self.outbox)

        self.wait_until(idle, timeout, "the agent to commit its log and empty its outbox")

    def stop(self, sig=signal.SIGTERM) -> float:
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        self.proc.wait(10)
        return time.monotonic() - t0

    def write(self, *lines: str) -> None:
        with self.log.open("a", encoding="utf-8") as fh:
            fh.writelines(line + "\n" for line in lines)

    def bundles(self) -> list[dict]:
        answer = self.server.get(f"/api/v1/bundles?terminal={self.terminal}&limit=500")
        assert answer.status_code == 200, answer.text
        return answer.json()["items"]

    def wait_for(self, count: int, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.bundles()
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def detail(self, bundle_id: str) -> dict:
        return self.server.get(f"/api/v1/bundles/{bundle_id}").json()

    def events_of(self, bundle_id: str) -> list[dict]:
        raw = self.server.get(f"/api/v1/bundles/{bundle_id}/download").content
        _, members = bundle.read(raw)
        return [json.loads(line) for line in members["events.jsonl"].decode().splitlines() if line]


def inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None
