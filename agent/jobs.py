"""What a worker does (agent/worker.py): one small function per job kind, in JOBS.

A job takes JSON arguments from the resident and returns a JSON result; it logs what a
person should read itself (its lines go to the same journal as the resident's). Adding a
job kind is a function here and a line in JOBS: what it does, its deadline and, if it is
worth doing before the job arrives, what to load while the worker waits.

A deadline is the longest a job may go without a word to the resident (its result, or a
progress note: an upload notes every attempt), derived from the timeouts the job itself
obeys plus MARGIN_S. Past it the resident kills the worker (agent/lane.py).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent import config as config_loader
from agent.config import Config
from agent.outbox import Outbox

log = logging.getLogger("posdiag")
MARGIN_S = 30.0  # imports, correlation, writing the bundle, on a loaded weak CPU
SNAPSHOT_S = 30.0  # a few kernel files; a hung sysfs read is what the deadline is for
Note = Callable[[str], None]


class Context:
    """What a job works with: the worker's config, and what the worker keeps between jobs
    (the outbox, the link to the server with its TLS session)."""

    def __init__(self, config: Config, note: Note) -> None:
        self.config = config
        self.note = note
        self._outbox: Outbox | None = None
        self._link: Any = None

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            self._outbox = Outbox.from_config(self.config)
        return self._outbox

    @property
    def link(self) -> Any:
        """One connection for the worker's life: a heartbeat and the poll after it share a
        TLS session."""
        from remote.commands import link_for

        if self._link is None:
            self._link = link_for(self.config.section("upload"))
        return self._link


def diagnose(ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
    """A burst of one code: probes, correlation, the bundle into the outbox. The bundle id is
    the first event's, so a redone burst stores nothing twice."""
    from agent import bundle, pipeline

    events = args["events"]
    trigger = bundle.Trigger("error", args["code"], args["scheme"], None, len(events))
    outcome = pipeline.run(ctx.config, ctx.outbox, trigger, args["bundle_id"], events, _history(ctx))
    return {"summary": outcome.summary(len(events)), "stored": outcome.stored}


def command(ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
    """A probe request from the support server (its bundle id derives from the command id)."""
    from agent.pipeline import run_command

    outcome = run_command(ctx.config, ctx.outbox, args["command"], _history(ctx))
    return {"bundle_id": outcome.bundle_id}


def snapshot(ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
    """A health snapshot, which the resident writes into its ring."""
    from agent.history import snapshot as take

    return {"snapshot": take(ctx.config)}


def flush(ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
    """Send what waits in the outbox, oldest first: the bundles, then the visit outcome
    records (agent/upload.py keeps the order and the outbox's rules; remote/client.py the
    retries and Retry-After)."""
    from agent.outbox import OutboxBusy
    from agent.upload import flush as send
    from remote.client import Client, Halt

    try:
        report = send(ctx.outbox, Client(ctx.config.section("upload")), lambda entry, state: ctx.note(f"{entry.bundle_id}: {state}"))
    except (OutboxBusy, Halt) as exc:
        log.info("upload postponed: %s", exc)
        return {"postponed": str(exc)}
    if report.sent or report.duplicates:
        log.info("uploaded %d bundle(s), %d already on the server", len(report.sent), len(report.duplicates))
    outcomes = report.outcomes
    if outcomes.sent or outcomes.duplicates:
        log.info("uploaded %d visit outcome(s), %d already on the server", len(outcomes.sent), len(outcomes.duplicates))
    if outcomes.dead:
        log.warning("%d visit outcome(s) refused by the server, moved to dead/: %s", len(outcomes.dead), " ".join(outcomes.dead))
    if report.stopped:
        log.warning("upload stopped, %d bundle(s) waiting: %s", report.remaining, report.stopped)
    elif outcomes.stopped and outcomes.remaining:
        log.warning("upload stopped, %d visit outcome(s) waiting: %s", outcomes.remaining, outcomes.stopped)
    return report.to_dict()


def poll(ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
    """Ask for the next probe request; the server being away is normal on a cellular link
    (any other exception is a fault: it fails the job, and the resident logs it)."""
    from remote.commands import PollError, fetch_next

    try:
        reply = fetch_next(ctx.link, ctx.config.section("terminal").id)
    except PollError as exc:
        log.info("probe requests not polled: %s", exc)
        return {"command": None}
    return {"command": _take(ctx, reply)}


def heartbeat(ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
    """The hourly health report from the newest snapshot and the resident's counters,
    carrying the poll due with it; one that cannot be sent is dropped (the next supersedes
    it) and the poll is made on its own. A learned table in the answer is kept for the next
    diagnosis (agent/learned_table.py)."""
    from agent.heartbeat import Counters, payload
    from agent.history import ring_for
    from agent.labels import labels_for
    from remote.commands import PollError, send_heartbeat

    snap = ring_for(ctx.config).latest()
    seen = {"link": snap["link"]} if snap and isinstance(snap.get("link"), str) else {}
    body = payload(ctx.config, snap, Counters(**args["counters"]), ctx.outbox, labels_for(ctx.config, seen))
    try:
        reply = send_heartbeat(ctx.link, body, poll=True)
    except PollError as exc:  # as for a poll
        log.info("heartbeat not sent: %s", exc)
        return {"sent": False, **poll(ctx, args)}
    if reply.learned is not None:
        _keep_learned(ctx, reply.learned)
    return {"sent": True, "command": _take(ctx, reply)}


def _keep_learned(ctx: Context, doc: dict[str, Any]) -> None:
    """Hold the learned table a heartbeat's answer carried; a bad one leaves the held one."""
    from agent.learned_table import TableError, store

    state_dir = ctx.config.section("daemon").state_dir
    try:
        table = store(state_dir, doc)
    except TableError as exc:
        log.warning("learned table from the server not kept: %s", exc)
    except OSError as exc:
        log.warning("learned table not saved in %s: %s", state_dir, exc.strerror)
    else:
        log.info("learned table %s version %d kept (%s, %d codes)", table.model, table.version, table.hash, len(table.codes))


def _take(ctx: Context, reply: Any) -> dict[str, Any] | None:
    """Keep the fleet incidents the answer names; the probe request it carries, if any."""
    from agent.incidents import IncidentMemory

    if reply.incidents is not None:
        try:
            IncidentMemory(ctx.config.section("daemon").state_dir).replace(reply.incidents)
        except OSError as exc:
            log.warning("fleet incidents not saved in %s: %s", ctx.config.section("daemon").state_dir, exc)
    if reply.command:
        log.info("probe request %s received", reply.command.get("command_id"))
    return reply.command


def _history(ctx: Context) -> list[dict[str, Any]]:
    from agent.history import ring_for

    return ring_for(ctx.config).read()


def _prepare_diagnosis(ctx: Context) -> None:
    from agent import knowledge, pipeline  # noqa: F401 - imported now, while the burst settles

    knowledge.load_for(ctx.config)


def _prepare_upload(ctx: Context) -> None:
    import remote.client  # noqa: F401 - requests and tenacity, while the diagnosis runs


def _diagnosis_deadline(config: Config) -> float:
    return config.section("runner").deadline_seconds + MARGIN_S


def _exchange_deadline(config: Config) -> float:
    upload = config.section("upload")
    return upload.connect_timeout_seconds + upload.read_timeout_seconds + MARGIN_S


def _upload_deadline(config: Config) -> float:
    """One attempt and the wait before the next: the client notes each attempt."""
    upload = config.section("upload")
    wait = max(upload.backoff_max_seconds, upload.retry_after_max_seconds) + 1.0  # + the client's jitter
    return upload.connect_timeout_seconds + upload.read_timeout_seconds + wait + MARGIN_S


@dataclasses.dataclass(frozen=True)
class Job:
    run: Callable[[Context, dict[str, Any]], dict[str, Any]]
    deadline_s: Callable[[Config], float]
    prepare: Callable[[Context], None] | None = None


JOBS: dict[str, Job] = {
    "diagnose": Job(diagnose, _diagnosis_deadline, _prepare_diagnosis),
    "command": Job(command, _diagnosis_deadline, _prepare_diagnosis),
    "snapshot": Job(snapshot, lambda config: SNAPSHOT_S),
    "flush": Job(flush, _upload_deadline, _prepare_upload),
    "poll": Job(poll, _exchange_deadline),
    "heartbeat": Job(heartbeat, lambda config: 2 * _exchange_deadline(config)),  # and the poll, if refused
}


class Worker:
    """The config a worker was started with, and the jobs it runs under it."""

    def __init__(self, setup: dict[str, Any]) -> None:
        """`setup` names the config file to read (`config`: as `posdiag run --config` got
        it), or carries the operator file's text the resident accepted (`operator`: name
        and text, or null for none), so that every worker runs the config the resident
        runs, even after the file was edited (SIGHUP makes an edit count)."""
        if "operator" in setup:
            operator = setup["operator"]
            self.operator = None if operator is None else (operator["name"], operator["text"])
        else:
            self.operator = config_loader.operator_text(setup.get("config"))
        self.config = config_loader.load_operator(self.operator, setup.get("overrides"))
        settings = self.config.section("daemon")
        from agent.journal import setup_logging

        setup_logging(settings.log_level)
        self.context = Context(self.config, lambda text: None)

    def view(self) -> dict[str, Any]:
        operator = None if self.operator is None else {"name": self.operator[0], "text": self.operator[1]}
        return {**resident_view(self.config), "operator": operator}

    def prepare(self, kinds: list[str]) -> None:
        """Load what these kinds of job need before the first of them arrives."""
        for prepare in dict.fromkeys(JOBS[k].prepare for k in kinds if k in JOBS and JOBS[k].prepare):
            try:
                prepare(self.context)  # type: ignore[misc]
            except Exception:  # noqa: BLE001 - the job itself will meet the same failure and report it
                log.debug("preparing failed", exc_info=True)

    def run(self, kind: Any, args: dict[str, Any], note: Note) -> dict[str, Any]:
        job = JOBS.get(kind) if isinstance(kind, str) else None
        if job is None:
            return {"ok": False, "kind": "UnknownJob", "error": f"no job kind {kind!r}", "traceback": ""}
        self.context.note = note
        try:
            return {"ok": True, "result": job.run(self.context, args)}
        except Exception as exc:  # noqa: BLE001 - reported to the resident, which logs and retries
            import traceback

            from remote.redact import Redactor

            text = Redactor().text("".join(traceback.format_exception(exc)))
            return {"ok": False, "kind": type(exc).__name__, "error": failure_text(exc), "traceback": text}


def resident_view(config: Config) -> dict[str, Any]:
    """What the resident needs of a config (agent/resident.py, ResidentConfig): its own
    settings, the jobs' deadlines, and what names this terminal in event ids. No secret:
    the token stays with the workers."""
    from agent.sources import terminal_identity_key

    daemon = config.section("daemon")
    outbox = config.section("outbox")
    return {
        "source": config.source,
        "terminal_id": config.section("terminal").id,
        "server_url": config.section("upload").server_url,
        "identity": terminal_identity_key(config, Path(daemon.state_dir)),
        "outbox": {"dir": outbox.dir, "max_bytes": int(outbox.max_mib * 1024 * 1024)},
        "daemon": dataclasses.asdict(daemon),
        "deadlines": {kind: job.deadline_s(config) for kind, job in JOBS.items()},
    }


def failure_text(exc: BaseException) -> str:
    """One line for people, without card data (an exception may quote what it choked on)."""
    from probes.contract.errors import PosdiagError
    from remote.redact import Redactor

    text = str(exc) if isinstance(exc, PosdiagError) else f"{type(exc).__name__}: {exc}"
    return Redactor().text(text)
