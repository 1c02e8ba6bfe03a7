"""Fleet: what ingest and the heartbeat endpoint call, and the background sweep."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from remote.server import db, ingest
from remote.server.fleet import baseline, incidents, inventory, outage, problems, regression, signal, sql, timing, webhooks
from remote.server.fleet.models import Heartbeat
from remote.server.fleet.schema import bundle_fleet, fleet_terminals, outage_events
from remote.server.metrics import Metrics
from remote.server.outcomes import knowledge
from remote.server_settings import ServerSettings

log = logging.getLogger("posdiag.fleet")
TICK_SECONDS = 0.5
DEADLOCK_ATTEMPTS = 3
RETRIED_SQLSTATES = ("40P01", "40001")  # PostgreSQL: deadlock detected, serialization failure


def manifest_labels(manifest: dict[str, Any]) -> dict[str, str] | None:
    """terminal.labels of a manifest, card data masked, or None when the manifest has none
    (an older agent: the stored labels stay). Ingest refused any bad label (inputs.py)."""
    terminal = manifest.get("terminal")
    raw = terminal.get("labels") if isinstance(terminal, dict) else None
    if not isinstance(raw, dict):
        return None
    return {k: ingest.shown(v) for k, v in raw.items()}


class Fleet:
    def __init__(self, engine: Engine, settings: ServerSettings, metrics: Metrics | None = None) -> None:
        self.engine = engine
        self.settings = settings.fleet
        self.clock_ahead_seconds = settings.clock_ahead_seconds
        self.hooks = settings.webhooks
        self.knowledge = knowledge.load(tuple(settings.outcomes.knowledge_extra_paths))
        self.webhooks = webhooks.Worker(engine, settings.webhooks, metrics)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_sweep = 0.0

    # -- event time -----------------------------------------------------------------------

    def clamp(self, event_at: str, received_at: str) -> tuple[str, bool]:
        return timing.clamp(event_at, received_at, self.clock_ahead_seconds)

    # -- arrivals -------------------------------------------------------------------------

    def on_bundle(self, bundle: ingest.Bundle, record: dict[str, Any], clamped: bool) -> None:
        """Count a stored bundle into the inventory, its problem and the detectors, once:
        for a bundle counted before (an upload again) nothing changes."""
        self.count(lambda counting: counting.bundle(bundle, record, clamped))

    def on_heartbeat(self, beat: Heartbeat, event_at: str, clamped: bool, received_at: str) -> None:
        """Texts are masked as a bundle's are (ingest.shown); no labels: the stored stay."""
        self.count(lambda counting: counting.heartbeat(beat, event_at, clamped, received_at))

    def count(self, work: Callable[[Counting], object]) -> None:
        """`work` counts arrivals (Counting.bundle, .heartbeat) in one transaction: several
        arrivals share its commit and the rollups written once for all of them (the fleet
        queue's drainer counts a batch so), with the same result as one by one. Retried
        whole when PostgreSQL finds it locked rollup rows crosswise with another."""
        for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
            try:
                with db.writing(self.engine) as conn:
                    counting = Counting(self, conn)
                    work(counting)
                    counting.finish()
                return
            except sa.exc.OperationalError as exc:  # two arrivals locked rollup rows crosswise
                if attempt == DEADLOCK_ATTEMPTS or getattr(exc.orig, "sqlstate", None) not in RETRIED_SQLSTATES:
                    raise

    def notices(self, terminal_id: str) -> list[dict[str, Any]]:
        """Open incidents that cover the terminal, as it is told of them."""
        f = fleet_terminals.c
        with self.engine.connect() as conn:  # one connection: a heartbeat's answer reads both
            row = conn.execute(sa.select(f.model, f.firmware, f.app_version).where(f.id == terminal_id)).first()
            found = [] if row is None else incidents.covering(conn, terminal_id, row.model, row.firmware, row.app_version)
        return [incidents.notice(i) for i in found]

    def open_counts(self) -> dict[str, float]:
        """Open incidents by kind, for the Prometheus gauge (from the database: every
        worker process reports the same)."""
        table = incidents.incidents
        with self.engine.connect() as conn:
            rows = dict(conn.execute(sa.select(table.c.kind, sa.func.count()).where(table.c.status == "open").group_by(table.c.kind)).all())
        return {f'kind="{kind}"': float(rows.get(kind, 0)) for kind in ("outage", "regression")}

    # -- detectors ------------------------------------------------------------------------

    def _announce(self, conn: sa.Connection, touched: list[tuple[str, bool]], event: str = "incident.opened") -> None:
        for incident_id, new in touched:
            if new:
                row = conn.execute(sa.select(incidents.incidents).where(incidents.incidents.c.id == incident_id)).mappings().one()
                webhooks.enqueue(conn, self.hooks, event, incident_id, incidents.view(row))

    def _close_quiet(self, conn: sa.Connection) -> None:
        mark = conn.execute(sa.select(sa.func.max(fleet_terminals.c.last_seen_at))).scalar()
        if mark is None:
            return
        for incident_id in outage.close_quiet(conn, mark, self.settings):
            row = conn.execute(sa.select(incidents.incidents).where(incidents.incidents.c.id == incident_id)).mappings().one()
            webhooks.enqueue(conn, self.hooks, "incident.closed", incident_id, incidents.view(row))

    def sweep(self) -> None:
        """Regressions, quiet outages, missing terminals: what no single arrival triggers."""
        now = db.now()
        with db.writing(self.engine) as conn:
            mark = conn.execute(sa.select(sa.func.max(fleet_terminals.c.last_seen_at))).scalar()
            if mark is None:
                return
            self._announce(conn, regression.detect(conn, min(mark, now), self.settings, now), "regression.opened")
            incidents.settle_dismissed(conn)
            self._close_quiet(conn)
            self._missing(conn, now)

    def _missing(self, conn: sa.Connection, now: str) -> None:
        if not self.hooks.url or "terminal.missing" not in self.hooks.events:
            return
        cutoff = timing.shift(now, hours=-self.settings.missing_after_hours)
        f = fleet_terminals.c
        rows = conn.execute(
            sa.select(f.id, f.last_seen_at).where(f.last_seen_at < cutoff, sa.or_(f.missing_notified_at.is_(None), f.missing_notified_at < f.last_seen_at)).limit(1000)
        ).all()  # fmt: skip
        for r in rows:
            webhooks.enqueue(conn, self.hooks, "terminal.missing", f"{r.id}:{r.last_seen_at}", {"terminal_id": r.id, "last_seen_at": r.last_seen_at})
            conn.execute(fleet_terminals.update().where(f.id == r.id).values(missing_notified_at=now))

    # -- background -----------------------------------------------------------------------

    def start(self) -> None:
        """The sweep thread, and the webhook worker's (a slow receiver never delays a sweep)."""
        self._thread = threading.Thread(target=self._run, daemon=True, name="fleet-sweep")
        self._thread.start()
        self.webhooks.start()

    def stop(self) -> None:
        self._stop.set()
        self.webhooks.stop()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            try:
                if self._due():
                    self.sweep()
            except sa.exc.SQLAlchemyError as exc:  # a database restart: try again next tick
                log.warning("fleet sweep: %s", exc)

    def _due(self) -> bool:
        now = time.monotonic()
        if now - self._last_sweep < self.settings.sweep_seconds:
            return False
        self._last_sweep = now
        return True


class Counting:
    """Arrivals counted in one transaction (Fleet.count). What counting one arrival after
    another would do, with the work they share done once: a problem's breakdown is
    refreshed once at the end for the dimensions its bundles touched, and quiet outages are
    closed only before a bundle that may reach the outage detector (which reads the open
    ones) and at the end, as closing after every arrival would leave them. The rows a
    problem's bundles from every terminal share are summed and written at the end
    (problems.Pending)."""

    def __init__(self, fleet: Fleet, conn: sa.Connection) -> None:
        self.fleet, self.conn = fleet, conn
        self.rollups = problems.Pending()
        self.quiet_unchecked = False

    def bundle(self, bundle: ingest.Bundle, record: dict[str, Any], clamped: bool) -> None:
        """Count a stored bundle once (a bundle counted before changes nothing)."""
        conn, s = self.conn, self.fleet.settings
        t = record["created_at"]
        seen = inventory.Sighting(
            record["terminal_id"], t, record["model"], record["firmware"], record["app_version"], record["agent_version"],
            manifest_labels(bundle.manifest_raw), clamped, record["received_at"], heartbeat=False,
        )  # fmt: skip
        probes = _json(bundle.scan.kept.get("probes.json"))
        text = problems.signature(record, problems.fail_findings(probes), s.signature_fields)
        row = {
            "bundle_id": record["id"], "terminal_id": record["terminal_id"], "event_at": t, "clock_clamped": clamped,
            "problem_id": problems.problem_id(text) if text else None, "top_category": record["top_category"],
            "model": record["model"], "firmware": record["firmware"], "app_version": record["app_version"],
            "excluded": signal.excluded(record, self.fleet.knowledge, s),
        }  # fmt: skip
        if row["excluded"] is None and record["top_category"] in s.outage_categories:
            self._close_quiet()  # the outage detector may read the open outages: as the arrivals before left them
        if not sql.insert_new(conn, bundle_fleet, ["bundle_id"], [row]):
            return  # counted before
        labels, _ = inventory.record(conn, seen, s)
        if text:
            problems.add(conn, text, record, t, labels, self.rollups)
        if (row["excluded"] is None and record["top_category"] in s.outage_categories
                and inventory.counts_toward_outages(conn, record["terminal_id"], t, s)):  # fmt: skip
            scopes = inventory.scopes_of(labels, s)
            if scopes:
                repeat = outage.repeats(conn, record["terminal_id"], t, s)
                conn.execute(outage_events.insert(), [
                    {"bundle_id": record["id"], "scope_key": k, "terminal_id": record["terminal_id"], "event_at": t} for k in scopes
                ])  # fmt: skip
                baseline.count_failure(conn, record["terminal_id"], record["id"], scopes, t)
                outage.follow(conn, scopes, t, s)
                if not repeat:  # a terminal failing again near t changes no window's count of terminals
                    self.fleet._announce(conn, outage.evaluate(conn, scopes, t, s, db.now()))
        self.quiet_unchecked = True

    def heartbeat(self, beat: Heartbeat, event_at: str, clamped: bool, received_at: str) -> None:
        conn, fleet = self.conn, self.fleet
        seen = inventory.Sighting(
            beat.terminal_id, event_at, ingest.shown(beat.model), ingest.shown(beat.firmware),
            ingest.shown(beat.app_version), ingest.shown(beat.agent_version),
            {k: ingest.shown(v) for k, v in beat.labels.items()} or None, clamped, received_at, heartbeat=True,
            health=beat.health.model_dump(),
        )  # fmt: skip
        _, before = inventory.record(conn, seen, fleet.settings)
        inventory.add_heartbeat(conn, seen, beat.counters.model_dump())
        risk = inventory.assess_risk(conn, beat.terminal_id, fleet.settings, before["risk"])
        if risk and not before["risk_metric"]:
            webhooks.enqueue(conn, fleet.hooks, "terminal.at_risk", f"{beat.terminal_id}:{risk['metric']}:{risk['projected_at'][:10]}",
                             {"terminal_id": beat.terminal_id, "risk": risk})  # fmt: skip
        self.quiet_unchecked = True

    def _close_quiet(self) -> None:
        if self.quiet_unchecked:
            self.fleet._close_quiet(self.conn)
            self.quiet_unchecked = False

    def finish(self) -> None:
        self.rollups.write(self.conn)
        self._close_quiet()


def _json(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return ingest.load_json(data)
    except ValueError:
        return None
