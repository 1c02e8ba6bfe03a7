"""The resident's side of its workers (agent/worker.py has the protocol): a Lane is one
line of work (diagnoses; the routine of snapshots and exchanges with the server) done by
at most one worker process at a time, one job after another.

A lane starts its worker on demand, or ahead of demand (`warm`: a burst is settling, the
worker loads the knowledge base meanwhile); keeps it `linger_s` after its last job, so a
burst of work costs one start; then closes its stdin and the worker exits. A job that
goes without a word (result or progress note) for its deadline gets its worker killed
(SIGKILL): the job fails like any other failed job and its caller decides what to redo.

Started with posix_spawn and read with select, not with subprocess: the resident stays
small (agent/resident.py). Only the lane's own thread calls run, warm and expire; close
may come from another thread (the resident stopping).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable

from agent.worker import command, decode, encode

TYPE_CHECKING = False  # typing's, without importing typing (0.4 MB): agent/resident.py says why
if TYPE_CHECKING:
    from typing import Any

log = logging.getLogger("posdiag.lane")
SETUP_DEADLINE_S = 60.0  # start, imports, reading and checking the config (seconds under qemu)
EXIT_GRACE_S = 1.0  # a worker whose stdin closed exits at once; past this it is killed


class WorkerFailed(Exception):
    """A job that did not complete: the worker reported an exception, died, or was killed
    at its deadline. `kind` is the exception's type name (or WorkerDied, Deadline)."""

    def __init__(self, message: str, kind: str, traceback: str = "", exit_code: int = 2) -> None:
        super().__init__(message)
        self.kind = kind
        self.traceback = traceback
        self.exit_code = exit_code


class Process:
    """One worker process and the two ends of its pipes."""

    def __init__(self) -> None:
        to_child, self.stdin = os.pipe()
        self.stdout, from_child = os.pipe()
        try:
            argv = command()
            self.pid = os.posix_spawn(
                argv[0], argv, os.environ,
                file_actions=[(os.POSIX_SPAWN_DUP2, to_child, 0), (os.POSIX_SPAWN_DUP2, from_child, 1)],
            )  # fmt: skip
        except OSError:
            os.close(self.stdin)
            os.close(self.stdout)
            raise
        finally:
            os.close(to_child)
            os.close(from_child)
        os.set_blocking(self.stdin, False)
        self.pending = b""
        self.view: dict[str, Any] | None = None
        self.next_id = 0

    def send(self, message: dict[str, Any], deadline: float) -> None:
        data = memoryview(encode(message))
        while data:
            if not select.select([], [self.stdin], [], max(0.0, deadline - time.monotonic()))[1]:
                raise WorkerFailed("the worker took no input within its deadline", "Deadline")
            try:
                data = data[os.write(self.stdin, data) :]
            except BlockingIOError:
                continue
            except OSError as exc:  # EPIPE: it is gone
                raise WorkerFailed(f"the worker is gone ({exc.strerror})", "WorkerDied") from None

    def receive(self, deadline: float) -> dict[str, Any]:
        """The next message; WorkerFailed when none came before `deadline` or it exited."""
        while b"\n" not in self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.stdout], [], [], remaining)[0]:
                raise WorkerFailed("no answer within the deadline", "Deadline")
            chunk = os.read(self.stdout, 65536)
            if not chunk:
                raise WorkerFailed("the worker exited without an answer", "WorkerDied")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        try:
            return decode(line)
        except ValueError:
            raise WorkerFailed("the worker answered something that is not a message", "WorkerDied") from None

    def end(self, kill: bool) -> int | None:
        """Close its stdin (it exits) or kill it; reap it. Its exit status, None if unknown."""
        for fd in (self.stdin, self.stdout):
            try:
                os.close(fd)
            except OSError:
                pass
        self.stdin = self.stdout = -1
        if kill:
            self.kill()
        deadline = time.monotonic() + EXIT_GRACE_S
        while True:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid:
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() > deadline:
                self.kill()
                deadline = float("inf")
                continue
            time.sleep(0.01)

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def exited(self) -> bool:
        """It ended while idle (killed, out of memory): reaped now."""
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return True
        return pid != 0


class Lane:
    def __init__(self, name: str, setup: Callable[[], dict[str, Any]], linger_s: float, on_stats: Callable[[str, dict[str, Any]], None]) -> None:
        """`setup()` is the worker's first message (config and overrides); `on_stats` hears
        each finished job's kind and stats."""
        self.name = name
        self.setup = setup
        self.linger_s = linger_s
        self.on_stats = on_stats
        self.process: Process | None = None
        self.generation = 0  # of the config; a worker of an older one is retired
        self.started_generation = 0
        self.idle_since = 0.0
        self.keep_until = 0.0  # a worker started ahead of its job waits for it at least this long
        self.lock = threading.Lock()
        self.closed = False

    def warm(self, prepare: list[str], keep_s: float) -> None:
        """Start the worker now, loading what `prepare` (job kinds) need, if none runs; it
        waits `keep_s` for its job even when the lane's linger is shorter."""
        with self.lock:
            if self.process is None and not self.closed:
                self._spawn(prepare)
                self.keep_until = time.monotonic() + keep_s

    def view(self) -> dict[str, Any]:
        """The worker's answer to its setup: the resident's part of the config (starting a
        worker if none runs). WorkerFailed with the config's error when it does not load."""
        process = self._ready([])
        assert process.view is not None
        return process.view

    def run(self, kind: str, args: dict[str, Any], deadline_s: float) -> dict[str, Any]:
        """Do one job; its result, or WorkerFailed."""
        process = self._ready([kind])
        process.next_id += 1
        job_id = process.next_id
        try:
            process.send({"id": job_id, "kind": kind, "args": args}, time.monotonic() + deadline_s)
            while True:
                message = process.receive(time.monotonic() + deadline_s)
                if message.get("id") == job_id and "progress" not in message:
                    break
        except WorkerFailed as exc:
            self._end(kill=True, why=f"{kind}: {exc}")
            if exc.kind == "Deadline":
                raise WorkerFailed(f"worker killed: {kind} went {deadline_s:.0f} s without an answer", "Deadline") from None
            raise
        self.idle_since = time.monotonic()
        self.keep_until = 0.0
        self.on_stats(kind, message.get("stats") or {})
        if not message.get("ok"):
            kind_name = str(message.get("kind") or "Exception")
            raise WorkerFailed(str(message.get("error") or kind_name), kind_name, str(message.get("traceback") or ""))
        result = message.get("result")
        return result if isinstance(result, dict) else {}

    def idle_hint(self) -> float | None:
        """Seconds until an idle worker is due to be closed; None when none runs."""
        if self.process is None:
            return None
        return max(0.0, max(self.idle_since + self.linger_s, self.keep_until) - time.monotonic())

    def expire(self) -> None:
        """Close a worker idle for `linger_s`, or one started under an older config."""
        if self.process is not None and (self.idle_hint() == 0.0 or self.started_generation != self.generation):
            self._end(kill=False, why="")

    def retire(self) -> None:
        """The config changed: the next job gets a worker that read the new one."""
        self.generation += 1

    def stop(self) -> None:
        """The agent is stopping: the worker is killed now, whatever it was doing (its job
        is redone after the restart). From any thread; the lane's own thread, if it waits
        for an answer, gets WorkerFailed at once."""
        self.closed = True
        process = self.process
        if process is not None:
            process.kill()

    def close(self) -> None:
        """End the worker (it exits once its stdin closes) and reap it."""
        self.closed = True
        self._end(kill=False, why="")

    def _ready(self, prepare: list[str]) -> Process:
        if self.process is not None and (self.started_generation != self.generation or self.process.exited()):
            self._end(kill=False, why="")
        with self.lock:
            if self.closed:
                raise WorkerFailed("the agent is stopping", "Stopping")
            process = self.process or self._spawn(prepare)
        if process.view is None:
            try:
                answer = process.receive(time.monotonic() + SETUP_DEADLINE_S)
            except WorkerFailed as exc:
                self._end(kill=True, why=f"setup: {exc}")
                raise
            if not answer.get("ok"):
                self._end(kill=False, why="")
                raise WorkerFailed(str(answer.get("error")), "ConfigError", exit_code=int(answer.get("exit_code") or 2))
            process.view = answer.get("view") or {}
        return process

    def _spawn(self, prepare: list[str]) -> Process:
        try:
            process = Process()
        except OSError as exc:
            raise WorkerFailed(f"cannot start a worker ({exc.strerror or exc})", "WorkerDied") from None
        try:
            process.send({**self.setup(), "prepare": prepare}, time.monotonic() + SETUP_DEADLINE_S)
        except WorkerFailed:
            process.end(kill=True)
            raise
        self.process = process
        self.started_generation = self.generation
        self.idle_since = time.monotonic()
        log.debug("%s worker %d started", self.name, self.process.pid)
        return self.process

    def _end(self, kill: bool, why: str) -> None:
        with self.lock:
            process, self.process = self.process, None
        if process is None:
            return
        status = process.end(kill)
        if why:
            log.debug("%s worker %d ended (%s), status %s", self.name, process.pid, why, status)
