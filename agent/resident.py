"""`posdiag run`: the resident agent, which waits for errors and decides what to do; its
workers (agent/worker.py, agent/jobs.py) do whatever needs heavy imports.

Threads of the resident, each blocking on something (no busy polling):
    main      signals (SIGTERM stops within 2 s, SIGHUP reloads the config)
    watcher   inotify on the log and last-error files' directories -> events
    socket    the local event socket -> events (answers with the diagnosis summary)
    decider   events -> Gate (debounce, hourly cap) -> the diagnosis lane; probe requests
              too, one job at a time so two diagnoses never share a device; commits the
              log offsets once a group's bundle is in the outbox (the exactly-once ledger)
    routine   health snapshots (written into the history ring here), uploads, polls and
              heartbeats on their timers, through the routine lane

What the resident keeps is small and its own: the followers' offsets, the open bursts, the
hourly count, the retry list, the counters, the schedule. It passes a worker what lives only
in its memory (a burst's events, the counters, a probe request); what is on disk (outbox,
history ring, incidents, labels) the worker reads there. A crash of either process loses
nothing that was diagnosed: bundles are in the outbox before a log offset is committed, and
redone work yields the same bundle id (docs/agent.md).

The resident must stay small (docs/agent.md: 16 MB on a terminal with 256 MB for the payment
app, its services and us). It imports no hashlib (agent/digest.py hashes without OpenSSL),
ssl, requests, tomllib, dataclasses (inspect), knowledge base, bundle writer or probe; and
of the standard library's lighter modules not typing (its modules set TYPE_CHECKING
themselves), random, datetime, uuid, shutil, subprocess or tempfile, nor socket while no
event socket is configured. bench/daemon.py prints what it weighs and what each would add;
tests/test_worker.py fails when one comes back.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import select
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from agent.history import HistoryRing
from agent.journal import Failures, setup_logging
from agent.lane import Lane, WorkerFailed
from agent.outbox import Outbox
from agent.sources import ErrorEvent, LastErrorFile, LogFollower
from agent.state import StateFile
from agent.triggers import Gate, Group
from agent.watch import DirectoryWatcher

TYPE_CHECKING = False  # typing's, without importing typing (0.4 MB), as the module docstring says
if TYPE_CHECKING:
    from typing import Any

    from agent.local_socket import LocalSocket

log = logging.getLogger("posdiag")
STOP_GRACE_S = 1.5
SLACK = 0.2  # a routine job due within this share of its interval joins a round that starts anyway


class ResidentConfig:
    """The resident's part of the config, as the worker that read and checked the whole
    file sent it (agent/jobs.py, resident_view). `daemon` has the keys of [daemon]
    (agent/settings.py, DaemonSettings) as attributes."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.source: str = doc["source"]
        self.terminal_id: str = doc["terminal_id"]
        self.server_url: str = doc["server_url"]
        self.identity: str = doc["identity"]
        self.outbox_dir: str = doc["outbox"]["dir"]
        self.outbox_max_bytes: int = doc["outbox"]["max_bytes"]
        self.deadlines: dict[str, float] = doc["deadlines"]
        daemon = dict(doc["daemon"])
        daemon["log_sources"] = [SimpleNamespace(**source) for source in daemon["log_sources"]]
        self.daemon: Any = SimpleNamespace(**daemon)


class Sources:
    """The file sources of one config, their saved positions, and the watcher thread."""

    def __init__(self, config: ResidentConfig, state: StateFile, submit: Any, failures: Failures | None = None) -> None:
        settings = config.daemon
        self.state = state
        self.submit = submit
        self.failures = failures or Failures(log)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        saved = state.load()
        self.saved_positions: dict[str, Any] = {}
        self.followers: list[Any] = []
        for source in settings.log_sources:
            patterns = [re.compile(p) for p in source.patterns]
            path = Path(source.path)
            self.followers.append(
                LogFollower(path, patterns, source.scheme or None, saved.get(f"log:{path}", {}), config.identity, tuple(source.rotated))
            )
        if settings.last_error_file:
            path = Path(settings.last_error_file)
            self.followers.append(LastErrorFile(path, saved.get(f"file:{path}", {}), config.identity))
        directories = [f.path.parent for f in self.followers]
        self.watcher = DirectoryWatcher(directories, settings.file_poll_seconds)
        for directory in self.watcher.unwatched:
            log.warning("%s does not exist (yet): its files are polled every %.0f s", directory, settings.file_poll_seconds)
        self.poll_s = settings.file_poll_seconds
        self.thread = threading.Thread(target=self.loop, name="watcher", daemon=True)

    def save(self) -> None:
        """Persist the followers' committed positions (when they moved). The decider calls
        this after a whole group is in the outbox, so a group commits all or nothing."""
        with self.lock:
            positions = {f.key: f.position() for f in self.followers if f.position() is not None}
            if positions == self.saved_positions:
                return
            try:
                self.state.save(positions)
            except OSError as exc:  # a read-only or full state dir: tried again at the next save
                log.error("log positions not saved in %s: %s", self.state.path.parent, exc)
                return
            self.saved_positions = positions

    def loop(self) -> None:
        first = True
        while not self.stop.is_set():
            for follower in self.followers:
                try:
                    events = follower.poll(first=first)
                except Exception as exc:  # noqa: BLE001 - the watcher must outlive any one file
                    self.failures.exception(f"reading {follower.path}", f"reading {follower.path} failed", exc)
                    continue
                for event in events:
                    self.submit(event)
            if first:
                self.save()
            first = False
            self.watcher.wait(self.poll_s)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.watcher.interrupt()
        self.thread.join(0.5)
        self.watcher.close()
        for follower in self.followers:
            if isinstance(follower, LogFollower):
                follower.close()

    def describe(self) -> str:
        return ", ".join(str(f.path) for f in self.followers) or "no files"


class Signals:
    """SIGTERM, SIGINT and SIGHUP as bytes on a pipe (signal.set_wakeup_fd), which the main
    thread reads in its own time. A Python signal handler runs between any two bytecodes of
    the main thread: one that set an Event could wait forever for a lock the main thread was
    holding at that moment, and a signal the kernel hands to another thread would not wake a
    main thread blocked on a lock. A byte on a pipe wakes `select` whichever thread took it."""

    WATCHED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self.read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for signum in self.WATCHED:
            signal.signal(signum, self._noted)

    @staticmethod
    def _noted(signum: int, frame: Any) -> None:
        """Nothing: the wakeup fd carries the signal (and the default action must not run)."""

    def wait(self) -> bytes:
        """The numbers of the signals that came (blocks until one does)."""
        select.select([self.read_fd], [], [])
        return os.read(self.read_fd, 512)


class Resident:
    def __init__(self, source: dict[str, Any], view: dict[str, Any], routine: Lane) -> None:
        """`source` says where the config is (`--config`, the simulated terminal's overrides):
        a worker reads it there at the start and at SIGHUP. `view` is that worker's answer
        and `routine` its lane (it serves the first round)."""
        self.source = source
        self.setup = self._setup(view)  # every other worker's first message
        config = ResidentConfig(view)
        self.config = config
        self.failures = Failures(log)
        self.stop = threading.Event()
        self.wake_routine = threading.Event()
        self.kick = threading.Event()  # a new bundle: upload it and poll now
        self.warm_routine = threading.Event()  # a burst opened: have an upload worker ready
        self.jobs: queue.Queue[Any] = queue.Queue()
        self.retries: list[tuple[float, Group]] = []
        self.socket: LocalSocket | None = None
        self.counters = {"errors": 0, "diagnoses": 0}  # since the start, for heartbeats
        linger = config.daemon.worker_linger_seconds
        self.routine = routine
        self.routine.setup = lambda: self.setup
        self.routine.linger_s = linger
        self.diagnosis = Lane("diagnosis", lambda: self.setup, linger, log_stats)
        self.decider = threading.Thread(target=self.work, name="decider", daemon=True)
        self.routine_thread = threading.Thread(target=self.routine_loop, name="routine", daemon=True)
        settings = config.daemon
        self.gate = Gate(settings.settle_seconds, settings.max_wait_seconds, settings.debounce_seconds, settings.max_diagnoses_per_hour)
        self._apply(config, *self._parts(config))

    @classmethod
    def start(cls, source: dict[str, Any]) -> Resident:
        """The resident for a config (read and checked by a first worker); WorkerFailed
        when the config does not load, OSError when its socket, outbox or state directory
        cannot be had."""
        routine = Lane("routine", lambda: source, 0.0, log_stats)
        try:
            view = routine.view()
            setup_logging(view["daemon"]["log_level"])
            return cls(source, view, routine)
        except BaseException:
            routine.close()
            raise

    def _setup(self, view: dict[str, Any]) -> dict[str, Any]:
        return {"operator": view["operator"], "overrides": self.source.get("overrides")}

    def _parts(self, config: ResidentConfig) -> tuple[LocalSocket | None, Outbox, Sources]:
        """What a config needs opened: the event socket (the running one when its address
        is unchanged), the outbox and the file sources. OSError when one cannot be had."""
        settings = config.daemon
        socket = self.socket
        if settings.listen and (socket is None or socket.listen != settings.listen):
            from agent.local_socket import LocalSocket  # the socket module only when there is a socket

            socket = LocalSocket(settings.listen, self.jobs.put, settings.reply_timeout_seconds)
        elif not settings.listen:
            socket = None
        try:
            outbox = Outbox(config.outbox_dir, config.outbox_max_bytes)
            sources = Sources(config, StateFile(Path(settings.state_dir) / "sources.json"), self.jobs.put, self.failures)
        except OSError:
            if socket is not None and socket is not self.socket:
                socket.close()
            raise
        return socket, outbox, sources

    def _apply(self, config: ResidentConfig, socket: LocalSocket | None, outbox: Outbox, sources: Sources) -> None:
        settings = config.daemon
        self.config = config
        self.outbox = outbox
        self.sources = sources
        self.socket = socket
        self.history = HistoryRing(Path(settings.state_dir) / "history.jsonl", settings.history_snapshots)
        if socket is not None:
            socket.reply_timeout_s = settings.reply_timeout_seconds
        for lane in (self.diagnosis, self.routine):
            lane.linger_s = settings.worker_linger_seconds
        # The gate keeps its open groups and its hourly count across a reload.
        self.gate.settle_s, self.gate.max_wait_s = settings.settle_seconds, settings.max_wait_seconds
        self.gate.debounce_s, self.gate.max_per_hour = settings.debounce_seconds, settings.max_diagnoses_per_hour

    def run(self) -> int:
        signals = Signals()
        self._start_sources()
        self.decider.start()
        self.routine_thread.start()
        self._announce("posdiag agent running")
        while True:
            received = signals.wait()
            if signal.SIGTERM in received or signal.SIGINT in received:
                break
            if signal.SIGHUP in received:
                self.reload()
        self.stop.set()
        self._stop_sources()
        self.jobs.put(None)
        self.wake_routine.set()
        for lane in (self.diagnosis, self.routine):
            lane.stop()  # a diagnosis in flight is abandoned: its offsets stay uncommitted
        self.decider.join(STOP_GRACE_S)
        self.routine_thread.join(0.2)
        for lane in (self.diagnosis, self.routine):
            lane.close()
        log.info("posdiag agent stopped")
        return 0

    def _announce(self, what: str) -> None:
        """The start line names the terminal, the server and what is followed; the config
        that leaves the agent without a server says what that means."""
        config = self.config
        listen = f"socket {config.daemon.listen}" if config.daemon.listen else "no socket"
        server = f"server {config.server_url}" if config.server_url else "no server"
        log.info("%s for terminal %s (config %s): %s; follows %s; %s", what, config.terminal_id, config.source, server, self.sources.describe(), listen)
        if not config.server_url:
            log.warning(
                "[upload] server_url is empty: bundles stay in the outbox (%s); no heartbeats, no probe requests", config.outbox_dir
            )

    def _start_sources(self) -> None:
        self.sources.start()
        if self.socket:
            self.socket.start()

    def _stop_sources(self) -> None:
        self.sources.close()
        if self.socket:
            self.socket.close()

    def reload(self) -> None:
        """Apply a changed config, read and checked by a worker; one that does not
        validate, or whose socket, outbox or state directory cannot be opened, is refused
        and the running one kept. Workers started under the old config are retired."""
        reader = Lane("config", lambda: self.source, 0.0, log_stats)
        try:
            view = reader.view()
            config = ResidentConfig(view)
            socket, outbox, sources = self._parts(config)
        except (WorkerFailed, OSError) as exc:
            log.error("config reload refused, keeping the running config: %s", exc)
            return
        finally:
            reader.close()
        old_sources, old_socket = self.sources, self.socket
        old_sources.close()
        if old_socket is not None and old_socket is not socket:
            old_socket.close()
        self._apply(config, socket, outbox, sources)
        self.setup = self._setup(view)
        setup_logging(config.daemon.log_level)
        for lane in (self.diagnosis, self.routine):
            lane.retire()  # an operator's knowledge-base files may have changed too
        sources.start()
        if socket is not None and socket is not old_socket:
            socket.start()
        self._announce("config reloaded")

    # The decider: events and probe requests, through the diagnosis lane.

    def work(self) -> None:
        while True:
            waits = [w for w in (self.gate.wait_hint(), self._retry_hint(), self.diagnosis.idle_hint()) if w is not None]
            try:
                job = self.jobs.get(timeout=min(waits) if waits else None)
            except queue.Empty:
                job = False
            if job is None:
                return
            try:
                self._handle(job)
            except Exception as exc:  # noqa: BLE001 - the decider must outlive any one job
                self.failures.exception("decider", "decider", exc)
            self.diagnosis.expire()

    def _handle(self, job: Any) -> None:
        self._take(job)
        self._drain()  # events that came during the last diagnosis join their groups first
        for group in self.gate.due() + self._retries_due():
            self.diagnose_group(group)
        self.sources.save()

    def _take(self, job: Any) -> None:
        if isinstance(job, ErrorEvent):
            self.counters["errors"] += 1
            if self.gate.add(job):  # a burst opened: start its workers while it settles
                self.diagnosis.warm(["diagnose"], self._warm_keep_s())
                self.warm_routine.set()
                self.wake_routine.set()
        elif isinstance(job, dict):
            self.run_command(job)

    def _drain(self) -> None:
        """Add the events waiting in the queue (a group is quiet only if none of its code
        waits); a probe request among them runs now, in its turn."""
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return
            if job is None:  # the stop: left for the loop to see
                self.jobs.put(None)
                return
            self._take(job)

    def _warm_keep_s(self) -> float:
        """How long a worker started for a burst waits for its job: the burst's longest
        settling and its diagnosis."""
        return self.config.daemon.max_wait_seconds + self.config.deadlines["diagnose"]

    def _retry_hint(self) -> float | None:
        if not self.retries:
            return None
        return max(0.0, min(at for at, _ in self.retries) - time.monotonic())

    def _retries_due(self) -> list[Group]:
        now = time.monotonic()
        due = [g for at, g in self.retries if at <= now]
        self.retries = [(at, g) for at, g in self.retries if at > now]
        return due

    def diagnose_group(self, group: Group) -> None:
        """Diagnose, bundle and store one group, in a worker. When that fails (a full or
        read-only disk, a worker killed at its deadline) the group is tried again after
        `upload_retry_seconds`; its events stay uncommitted meanwhile, so even a restart
        does not lose them."""
        first = group.events[0]
        args = {"code": group.code, "scheme": group.scheme, "bundle_id": first.id, "events": [e.record() for e in group.events]}
        try:
            result = self.diagnosis.run("diagnose", args, self.config.deadlines["diagnose"])
        except WorkerFailed as exc:
            if self.stop.is_set():  # stopping: its events stay uncommitted, redone after the restart
                return
            retry_s = self.config.daemon.upload_retry_seconds
            self.failures("diagnosis", exc.kind, f"diagnosis of code {group.code} failed, retrying in {retry_s:.0f} s: {exc}", exc.traceback)
            self._reply(group.events, {"ok": False, "error": f"diagnosis failed ({exc.kind}), retrying in {retry_s:.0f} s"})
            for event in group.events:
                event.reply = None
            self.retries.append((time.monotonic() + retry_s, group))
            return
        for event in group.events:
            event.done()
        self.counters["diagnoses"] += 1
        summary = result["summary"]
        top = summary["top_cause"]
        log.info(
            "code %s x%d: %s (%s), dispatch %s, bundle %s",
            group.code, len(group.events), top["id"] if top else "no cause", f"{top['confidence']:.0%}" if top else "-",
            summary["dispatch"]["verdict"], summary["bundle_id"],
        )  # fmt: skip
        self._reply(group.events, {"diagnosis": summary})
        self.kick.set()
        self.wake_routine.set()

    @staticmethod
    def _reply(events: list[ErrorEvent], answer: dict[str, Any]) -> None:
        for event in events:
            if event.reply:
                event.reply(answer)

    def run_command(self, command: dict[str, Any]) -> None:
        try:
            result = self.diagnosis.run("command", {"command": command}, self.config.deadlines["command"])
        except WorkerFailed as exc:
            if self.stop.is_set():  # a probe request is delivered again until it is done
                return
            self.failures("probe request", exc.kind, f"probe request {command.get('command_id')} failed: {exc}", exc.traceback)
            return
        log.info("probe request %s done, bundle %s", command.get("command_id"), result["bundle_id"])
        self.kick.set()
        self.wake_routine.set()

    # The routine: snapshots, uploads, polls, heartbeats, through the routine lane.

    def routine_loop(self) -> None:
        """A snapshot every `snapshot_interval_seconds` (the first at once); the outbox sent
        after each new bundle and every `upload_retry_seconds` while bundles or visit
        outcome records wait; a poll every `command_poll_seconds` (+-10 %) and after each
        new bundle; a heartbeat every `heartbeat_seconds` (+-10 %) carrying the poll due
        with it. The first poll and heartbeat wait a random part of `start_jitter_seconds`,
        so a fleet that reboots together does not call in at once. Whatever is due within a
        fifth of its interval joins a round that starts anyway: one worker start serves
        them all."""
        settings = self.config.daemon
        now = time.monotonic()
        plan = {"snapshot": now, "poll": now + uniform(0, settings.start_jitter_seconds), "flush": now}
        plan["heartbeat"] = plan["poll"]
        while not self.stop.is_set():
            settings = self.config.daemon
            linked = bool(self.config.server_url)
            waiting = linked and self._waiting()
            due = [plan["snapshot"]] + ([plan["poll"], plan["heartbeat"]] if linked else []) + ([plan["flush"]] if waiting else [])
            waits = [max(0.0, min(due) - time.monotonic())]
            if self.routine.idle_hint() is not None:
                waits.append(self.routine.idle_hint() or 0.0)
            self.wake_routine.wait(min(waits))
            self.wake_routine.clear()
            if self.stop.is_set():
                return
            kicked = self.kick.is_set()
            self.kick.clear()
            try:
                if self.warm_routine.is_set():
                    self.warm_routine.clear()
                    if linked:
                        self.routine.warm(["flush"], self._warm_keep_s())
                self._round(plan, kicked)
            except Exception as exc:  # noqa: BLE001 - the routine must outlive any one round
                self.failures.exception("routine", "routine round", exc)
            self.routine.expire()

    def _round(self, plan: dict[str, float], kicked: bool) -> None:
        settings = self.config.daemon
        linked = bool(self.config.server_url)
        now = time.monotonic()
        waiting = linked and self._waiting()
        started = kicked or now >= plan["snapshot"] or (waiting and now >= plan["flush"])
        started = started or (linked and now >= min(plan["poll"], plan["heartbeat"]))
        if not started:
            return
        if now >= plan["snapshot"] - SLACK * settings.snapshot_interval_seconds:
            plan["snapshot"] = now + settings.snapshot_interval_seconds
            self.take_snapshot()
        if not linked:
            return
        if waiting:
            plan["flush"] = now + settings.upload_retry_seconds
            self._routine_job("flush", {})
        command = None
        if now >= plan["heartbeat"] - SLACK * settings.heartbeat_seconds:
            answer = self._routine_job("heartbeat", {"counters": dict(self.counters)})
            command = answer.get("command") if answer else None
            plan["heartbeat"] = now + settings.heartbeat_seconds * uniform(0.9, 1.1)
            plan["poll"] = now + settings.command_poll_seconds * uniform(0.9, 1.1)
        elif kicked or now >= plan["poll"] - SLACK * settings.command_poll_seconds:
            answer = self._routine_job("poll", {})
            command = answer.get("command") if answer else None
            plan["poll"] = now + settings.command_poll_seconds * uniform(0.9, 1.1)
        if command:
            self.jobs.put(command)

    def _routine_job(self, kind: str, args: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return self.routine.run(kind, args, self.config.deadlines[kind])
        except WorkerFailed as exc:
            if not self.stop.is_set():
                self.failures(kind, exc.kind, f"{kind} failed, trying again later: {exc}", exc.traceback)
            return None

    def _waiting(self) -> bool:
        try:
            return self.outbox.waiting()
        except OSError:
            return False

    def take_snapshot(self) -> None:
        answer = self._routine_job("snapshot", {})
        if answer is None:
            return
        try:
            self.history.append(answer["snapshot"])
        except OSError as exc:
            log.warning("health snapshot not written: %s", exc)


def log_stats(kind: str, stats: dict[str, Any]) -> None:
    """A finished job's cost, for people tuning a terminal and for bench/daemon.py."""
    log.debug(
        "worker job %s: %s ms, cpu %s ms, peak RSS %.1f MB",
        kind, stats.get("ms"), stats.get("cpu_ms"), (stats.get("peak_rss_kb") or 0) / 1024,
    )  # fmt: skip


def uniform(low: float, high: float) -> float:
    """random.uniform for the schedule's jitter, from the kernel's randomness: the random
    module costs the resident 0.3 MB for this alone."""
    return low + (high - low) * (int.from_bytes(os.urandom(7), "big") >> 3) / (1 << 53)
