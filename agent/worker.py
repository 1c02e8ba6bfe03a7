"""`posdiag worker`: a short-lived helper process of the resident agent (`posdiag run`).

The resident (agent/resident.py) only waits and decides; whatever needs heavy imports is
a job for a worker: reading and checking the config, a diagnosis and its bundle, a health
snapshot (it reads through the probe modules), and every exchange with the support server
(uploads, polls, heartbeats: TLS). The job kinds are agent/jobs.py; the resident's side,
which starts workers and holds them to their deadlines, is agent/lane.py.

The protocol is one JSON object per line, on the worker's stdin and stdout:

    resident -> worker   {"config": PATH or null, "overrides": {...} or null, "prepare": [KIND, ...]}
                         or {"operator": {"name": ..., "text": ...} or null, "overrides": ..., "prepare": ...}
    worker -> resident   {"ok": true, "view": {...}}                    the config checked, the
                         {"ok": false, "error": "...", "exit_code": 2}  resident's part of it
    resident -> worker   {"id": N, "kind": KIND, "args": {...}}
    worker -> resident   {"id": N, "progress": "..."}                   any number, each one
                                                                        restarts the deadline
                         {"id": N, "ok": true, "result": {...}, "stats": {...}}
                         {"id": N, "ok": false, "kind": TYPE, "error": "...", "traceback": "...", "stats": {...}}

The first message is the setup. A worker that reads the config for the resident (at the
start, at SIGHUP) gets the file as `posdiag run --config` named it (it finds it the same way,
through the same environment) and answers with its text; every other worker gets that text,
so all of them run the config the resident accepted, not a file edited since. The setup
also carries the simulated terminal's overrides. Then jobs, one at a time.
A job's arguments carry what lives only in the resident's memory (the events of a burst,
the counters, a probe request); what is on disk (the outbox, the health history, fleet
incidents, labels) the worker reads from disk. `stats` (wall and CPU milliseconds, peak
RSS) is logged by the resident at debug level and read by bench/daemon.py.

A worker exits when its stdin closes: the resident closes it once the worker has been idle
for `worker_linger_seconds`, and at stop; and it closes by itself when the resident dies,
even by SIGKILL. The worker then exits at once, also in the middle of a job: every job is
safe to cut short and to redo (docs/agent.md, "Exactly once"), so a worker never outlives
its resident and never races a successor.

Everything the worker's code or a library prints goes to stderr (the journal): the protocol
has the original stdout to itself.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import threading
import time

TYPE_CHECKING = False  # typing's, without importing typing (0.4 MB): agent/resident.py says why
if TYPE_CHECKING:
    from typing import Any


def command() -> list[str]:
    """The command line that starts a worker: the frozen executable itself (PyInstaller's
    bootloader lets a child reuse the resident's unpacked files), else this interpreter."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "worker"]
    return [sys.executable, "-m", "agent.cli", "worker"]


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("a message is a JSON object")
    return message


def main() -> int:
    """The worker process: the setup, then jobs until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C or SIGHUP is the resident's to act on
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    out = Output(os.dup(1))
    os.dup2(2, 1)
    inbox: queue.Queue[dict[str, Any]] = queue.Queue()
    threading.Thread(target=read_stdin, args=(inbox,), name="stdin", daemon=True).start()
    from agent import jobs

    setup = inbox.get()
    try:
        worker = jobs.Worker(setup)
        view = worker.view()
    except Exception as exc:  # noqa: BLE001 - told to the resident, which says it and stops or keeps its config
        out.send({"ok": False, "error": jobs.failure_text(exc), "exit_code": getattr(exc, "exit_code", 2)})
        return 2
    out.send({"ok": True, "view": view})
    worker.prepare(setup.get("prepare") or [])
    while True:
        message = inbox.get()
        started, cpu = time.monotonic(), time.process_time()
        job_id = message.get("id")
        answer = worker.run(message.get("kind"), message.get("args") or {}, lambda text: out.send({"id": job_id, "progress": text}))
        stats = {"ms": round((time.monotonic() - started) * 1000), "cpu_ms": round((time.process_time() - cpu) * 1000), "peak_rss_kb": peak_rss_kb()}
        out.send({"id": job_id, **answer, "stats": stats})


def read_stdin(inbox: queue.Queue[dict[str, Any]]) -> None:
    """Messages into `inbox`; at the end of stdin the process ends, whatever it was doing."""
    stdin = os.fdopen(0, "rb", buffering=0)
    pending = b""
    while True:
        try:
            chunk = stdin.read(65536)
        except OSError:
            chunk = b""
        if not chunk:
            os._exit(0)
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            try:
                inbox.put(decode(line))
            except ValueError:  # not the resident speaking: nothing else writes here
                os._exit(2)


class Output:
    """The protocol's half of stdout; a resident that is gone ends the worker."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        data = memoryview(encode(message))
        with self.lock:
            try:
                while data:
                    data = data[os.write(self.fd, data) :]
            except OSError:  # the resident died: nobody waits for this answer
                os._exit(0)


def peak_rss_kb() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0
