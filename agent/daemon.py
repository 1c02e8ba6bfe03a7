"""`posdiag run`: the agent that checks the terminal right after an error, unattended.

Threads, each blocking on something (no busy polling):
    main      signals (SIGTERM stops within 2 s, SIGHUP reloads), health snapshots
    watcher   inotify on the log and last-error files' directories -> events
    socket    the local event socket -> events (answers with the diagnosis summary)
    worker    events -> Gate (debounce, hourly cap) -> pipeline (probes, bundle, outbox);
              also runs probe requests from the support server, one job at a time so
              two diagnoses never share a device
    uploader  flushes the outbox after each bundle and on a timer, then polls for
              probe requests; sends the hourly heartbeat (which carries a poll due with it)

A crash at any point loses nothing that was diagnosed: bundles are in the outbox before
a log offset is committed, and redone work yields the same bundle id.

What only a diagnosis or an upload needs (probes, knowledge base, bundle format, requests)
is imported when the first one happens, so an agent that has seen no error stays small.
"""

from __future__ import annotations

import logging
import queue
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config import Config
from agent.heartbeat import Counters
from agent.history import ring_for, snapshot
from agent.incidents import IncidentMemory
from agent.local_socket import LocalSocket
from agent.outbox import Outbox, OutboxBusy
from agent.sources import ErrorEvent, LastErrorFile, LogFollower, terminal_identity_key
from agent.state import StateFile
from agent.triggers import Gate, Group
from agent.watch import DirectoryWatcher
from probes.contract.errors import ConfigError

log = logging.getLogger("posdiag")
STOP_GRACE_S = 1.5


class JournalFormatter(logging.Formatter):
    """`<N>` syslog priority prefixes, which journald reads from stderr; no timestamps
    (journald adds them)."""

    PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self.PRIORITY.get(record.levelno, 6)}>{record.name}: {super().format(record)}"


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class Sources:
    """The file sources of one config, their saved positions, and the watcher thread."""

    def __init__(self, config: Config, state: StateFile, submit: Any) -> None:
        settings = config.section("daemon")
        self.state = state
        self.submit = submit
        self.stop = threading.Event()
        self.lock = threading.Lock()
        saved = state.load()
        self.saved_positions: dict[str, Any] = {}
        self.followers: list[Any] = []
        identity = terminal_identity_key(config, state.path.parent)
        for source in settings.log_sources:
            patterns = [re.compile(p) for p in source.patterns]
            path = Path(source.path)
            self.followers.append(
                LogFollower(path, patterns, source.scheme or None, saved.get(f"log:{path}", {}), identity, tuple(source.rotated))
            )
        if settings.last_error_file:
            path = Path(settings.last_error_file)
            self.followers.append(LastErrorFile(path, saved.get(f"file:{path}", {}), identity))
        directories = [f.path.parent for f in self.followers]
        self.watcher = DirectoryWatcher(directories, settings.file_poll_seconds)
        for directory in self.watcher.unwatched:
            log.warning("%s does not exist (yet): its files are polled every %.0f s", directory, settings.file_poll_seconds)
        self.poll_s = settings.file_poll_seconds
        self.thread = threading.Thread(target=self.loop, name="watcher", daemon=True)

    def save(self) -> None:
        """Persist the followers' committed positions (when they moved). The worker calls
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
                except Exception as exc:  # the watcher must outlive any one file
                    log.error("reading %s failed: %s: %s", follower.path, type(exc).__name__, exc)
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


class Daemon:
    def __init__(self, config: Config, load: Callable[[], Config]) -> None:
        """`load()` reads the config afresh (on SIGHUP)."""
        self.load = load
        self.config = config
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.kick = threading.Event()
        self.jobs: queue.Queue[Any] = queue.Queue()
        self.worker = threading.Thread(target=self.work, name="worker", daemon=True)
        self.uploader = threading.Thread(target=self.upload_loop, name="uploader", daemon=True)
        self.reload_requested = False
        self.retries: list[tuple[float, Group]] = []
        self.socket: LocalSocket | None = None
        self.counters = Counters()
        self.link: Any = None
        settings = config.section("daemon")
        self.gate = Gate(settings.settle_seconds, settings.max_wait_seconds, settings.debounce_seconds, settings.max_diagnoses_per_hour)
        self._apply(config, *self._parts(config))

    def _parts(self, config: Config) -> tuple[LocalSocket | None, Outbox, Sources]:
        """What a config needs opened: the event socket (the running one when its address
        is unchanged), the outbox and the file sources. OSError when one cannot be had."""
        settings = config.section("daemon")
        socket = self.socket
        if socket is None or socket.listen != settings.listen:
            socket = LocalSocket(settings.listen, self.jobs.put, settings.reply_timeout_seconds) if settings.listen else None
        try:
            outbox = Outbox.from_config(config)
            sources = Sources(config, StateFile(Path(settings.state_dir) / "sources.json"), self.jobs.put)
        except OSError:
            if socket is not None and socket is not self.socket:
                socket.close()
            raise
        return socket, outbox, sources

    def _apply(self, config: Config, socket: LocalSocket | None, outbox: Outbox, sources: Sources) -> None:
        settings = config.section("daemon")
        self.config = config
        self.outbox = outbox
        self.sources = sources
        self.socket = socket
        self.history = ring_for(config)
        self.incidents = IncidentMemory(settings.state_dir)
        if self.link is not None:
            self.link.close()
        self.link = None  # reopened for the (maybe changed) [upload] section on the next exchange
        if socket is not None:
            socket.reply_timeout_s = settings.reply_timeout_seconds
        # The gate keeps its open groups and its hourly count across a reload.
        self.gate.settle_s, self.gate.max_wait_s = settings.settle_seconds, settings.max_wait_seconds
        self.gate.debounce_s, self.gate.max_per_hour = settings.debounce_seconds, settings.max_diagnoses_per_hour

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        self._start_sources()
        self.worker.start()
        self.uploader.start()
        log.info("posdiag agent running for terminal %s", self.config.section("terminal").id)
        next_snapshot = time.monotonic()
        while not self.stop.is_set():
            if self.reload_requested:
                self.reload_requested = False
                self.reload()
            if time.monotonic() >= next_snapshot:
                self.take_snapshot()
                next_snapshot = time.monotonic() + self.config.section("daemon").snapshot_interval_seconds
            self.wake.wait(max(0.0, next_snapshot - time.monotonic()))
            self.wake.clear()
        self._stop_sources()
        self.jobs.put(None)
        self.worker.join(STOP_GRACE_S)
        log.info("posdiag agent stopped")
        return 0

    def _on_stop(self, *_: Any) -> None:
        self.stop.set()
        self.kick.set()
        self.wake.set()

    def _on_reload(self, *_: Any) -> None:
        self.reload_requested = True
        self.wake.set()

    def _start_sources(self) -> None:
        self.sources.start()
        if self.socket:
            self.socket.start()

    def _stop_sources(self) -> None:
        self.sources.close()
        if self.socket:
            self.socket.close()

    def reload(self) -> None:
        """Apply a changed config; one that does not validate, or whose socket, outbox or
        state directory cannot be opened, is refused and the running one kept."""
        try:
            config = self.load()
            socket, outbox, sources = self._parts(config)
        except (ConfigError, OSError) as exc:
            log.error("config reload refused, keeping the running config: %s", exc)
            return
        from agent import knowledge

        knowledge.load.cache_clear()  # an operator's knowledge-base files may have changed too
        old_sources, old_socket = self.sources, self.socket
        old_sources.close()
        if old_socket is not None and old_socket is not socket:
            old_socket.close()
        self._apply(config, socket, outbox, sources)
        sources.start()
        if socket is not None and socket is not old_socket:
            socket.start()
        log.info("config reloaded")

    def take_snapshot(self) -> None:
        try:
            self.history.append(snapshot(self.config))
        except OSError as exc:
            log.warning("health snapshot not written: %s", exc)

    def work(self) -> None:
        while True:
            waits = [w for w in (self.gate.wait_hint(), self._retry_hint()) if w is not None]
            try:
                job = self.jobs.get(timeout=min(waits) if waits else None)
            except queue.Empty:
                job = False
            if job is None:
                return
            try:
                self._handle(job)
            except Exception as exc:  # the worker must outlive any one job
                log.error("worker: %s: %s", type(exc).__name__, exc)

    def _handle(self, job: Any) -> None:
        if isinstance(job, ErrorEvent):
            self.counters.errors += 1
            self.gate.add(job)
        elif isinstance(job, dict):
            self.run_command(job)
        for group in self.gate.due() + self._retries_due():
            self.diagnose_group(group)
        self.sources.save()

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
        """Diagnose, bundle and store one group. When that fails (a full or read-only disk,
        say) the group is tried again after `upload_retry_seconds`; its events stay
        uncommitted meanwhile, so even a restart does not lose them."""
        from agent import bundle, pipeline

        first = group.events[0]
        trigger = bundle.Trigger("error", group.code, group.scheme, None, len(group.events))
        try:
            outcome = pipeline.run(
                self.config, self.outbox, trigger, first.id, [e.record() for e in group.events], self.history.read()
            )
        except Exception as exc:  # the agent keeps running
            retry_s = self.config.section("daemon").upload_retry_seconds
            log.error("diagnosis of code %s failed, retrying in %.0f s: %s: %s", group.code, retry_s, type(exc).__name__, exc)
            self._reply(group.events, {"ok": False, "error": f"diagnosis failed ({type(exc).__name__}), retrying in {retry_s:.0f} s"})
            for event in group.events:
                event.reply = None
            self.retries.append((time.monotonic() + retry_s, group))
            return
        for event in group.events:
            event.done()
        self.counters.diagnoses += 1
        summary = outcome.summary(len(group.events))
        top = summary["top_cause"]
        log.info(
            "code %s x%d: %s (%s), dispatch %s, bundle %s",
            group.code, len(group.events), top["id"] if top else "no cause", f"{top['confidence']:.0%}" if top else "-",
            summary["dispatch"]["verdict"], outcome.bundle_id,
        )
        self._reply(group.events, {"diagnosis": summary})
        self.kick.set()

    @staticmethod
    def _reply(events: list[ErrorEvent], answer: dict[str, Any]) -> None:
        for event in events:
            if event.reply:
                event.reply(answer)

    def run_command(self, command: dict[str, Any]) -> None:
        from agent.pipeline import run_command

        try:
            outcome = run_command(self.config, self.outbox, command, self.history.read())
        except Exception as exc:
            log.error("probe request %s failed: %s: %s", command.get("command_id"), type(exc).__name__, exc)
            return
        log.info("probe request %s done, bundle %s", command.get("command_id"), outcome.bundle_id)
        self.kick.set()

    def upload_loop(self) -> None:
        """Flush and poll after each new bundle at once; otherwise every
        `command_poll_seconds` (+-10 %), and send a heartbeat every `heartbeat_seconds`
        (+-10 %) that carries the poll with it. The first round comes after a random part
        of `start_jitter_seconds`, so a fleet that reboots together does not call in at once."""
        settings = self.config.section("daemon")
        next_poll = time.monotonic() + random.uniform(0, settings.start_jitter_seconds)
        next_heartbeat = next_poll
        while not self.stop.is_set():
            next_due = min(next_poll, next_heartbeat)
            self.kick.wait(min(settings.upload_retry_seconds, max(0.0, next_due - time.monotonic())))
            kicked = self.kick.is_set()
            self.kick.clear()
            if self.stop.is_set():
                return
            try:
                self.flush()
                now = time.monotonic()
                if now >= next_heartbeat:
                    if not self.heartbeat():
                        self.poll_commands()
                    next_heartbeat = now + settings.heartbeat_seconds * random.uniform(0.9, 1.1)
                    next_poll = now + settings.command_poll_seconds * random.uniform(0.9, 1.1)
                elif kicked or now >= next_poll:
                    self.poll_commands()
                    next_poll = now + settings.command_poll_seconds * random.uniform(0.9, 1.1)
            except Exception as exc:  # a read-only outbox, say: the thread must outlive it
                log.error("upload round failed, trying again later: %s: %s", type(exc).__name__, exc)
            settings = self.config.section("daemon")

    def flush(self) -> None:
        if not self.outbox.entries() or not self.config.section("upload").server_url:
            return
        from agent.upload import flush
        from remote.client import Client, Halt

        try:
            report = flush(self.outbox, Client(self.config.section("upload")))
        except (OutboxBusy, Halt) as exc:
            log.info("upload postponed: %s", exc)
            return
        if report.sent or report.duplicates:
            log.info("uploaded %d bundle(s), %d already on the server", len(report.sent), len(report.duplicates))
        if report.stopped:
            log.warning("upload stopped, %d bundle(s) waiting: %s", report.remaining, report.stopped)

    def _link(self) -> Any:
        from remote.commands import link_for

        if self.link is None:
            self.link = link_for(self.config.section("upload"))
        return self.link

    def poll_commands(self) -> None:
        if not self.config.section("upload").server_url:
            return
        from remote.commands import fetch_next

        try:
            reply = fetch_next(self._link(), self.config.section("terminal").id)
        except Exception as exc:  # the server being away is normal on a cellular link
            log.info("probe requests not polled: %s", exc)
            return
        self._take(reply)

    def heartbeat(self) -> bool:
        """Send the health report, True when the server took it (and the poll it carries).
        One that cannot be sent is dropped: the next supersedes it."""
        if not self.config.section("upload").server_url:
            return True
        from agent.heartbeat import payload
        from agent.labels import labels_for
        from remote.commands import send_heartbeat

        try:
            snap = self.history.latest()
            seen = {"link": snap["link"]} if snap and isinstance(snap.get("link"), str) else {}
            body = payload(self.config, snap, self.counters, self.outbox, labels_for(self.config, seen))
            reply = send_heartbeat(self._link(), body, poll=True)
        except Exception as exc:
            log.info("heartbeat not sent: %s", exc)
            return False
        self._take(reply)
        return True

    def _take(self, reply: Any) -> None:
        if reply.incidents is not None:
            try:
                self.incidents.replace(reply.incidents)
            except OSError as exc:
                log.warning("fleet incidents not saved in %s: %s", self.config.section("daemon").state_dir, exc)
        if reply.command:
            log.info("probe request %s received", reply.command.get("command_id"))
            self.jobs.put(reply.command)
