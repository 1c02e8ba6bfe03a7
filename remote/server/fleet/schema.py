"""Fleet tables. Every page and API call reads these by index or rollup, never all bundles."""

from __future__ import annotations

import sqlalchemy as sa

from remote.server.db import TIME, metadata

fleet_terminals = sa.Table(
    "fleet_terminals",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("model", sa.String(128)),
    sa.Column("firmware", sa.String(128)),
    sa.Column("app_version", sa.String(128)),
    sa.Column("agent_version", sa.String(64)),
    sa.Column("labels", sa.Text, nullable=False, default="{}"),  # in force: the operator's and the observed (labels.py)
    sa.Column("claimed_labels", sa.Text),  # what the terminal last said of its labels, JSON: hints
    sa.Column("observed_changes", sa.Text),  # event times its observed labels changed at, JSON, the newest window
    sa.Column("last_heartbeat_at", TIME),
    sa.Column("last_seen_at", TIME),  # newest event time of a heartbeat or bundle
    sa.Column("health", sa.Text),  # newest heartbeat's health, JSON
    sa.Column("risk", sa.Text),  # JSON, or NULL
    sa.Column("risk_metric", sa.String(64)),
    sa.Column("clock_flagged_at", TIME),  # last receipt whose event time was clamped
    sa.Column("missing_notified_at", TIME),
    sa.Column("first_seen_at", TIME),  # oldest event time of a heartbeat or bundle: new terminals open no outage
    sa.Index("ix_fleet_terminals_seen", "last_seen_at"),
    sa.Index("ix_fleet_terminals_risk", "risk_metric"),
    sa.Index("ix_fleet_terminals_model", "model", "firmware"),
    sa.Index("ix_fleet_terminals_first_seen", "first_seen_at"),  # the fleet's first sighting (breadth.fleet_origin)
)

terminal_labels = sa.Table(
    "terminal_labels",
    metadata,
    sa.Column("terminal_id", sa.String(128), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),
    sa.Index("ix_terminal_labels_kv", "key", "value", "terminal_id"),
)

operator_labels = sa.Table(  # the labels the operator set: trusted, whatever the terminal says
    "operator_labels",
    metadata,
    sa.Column("terminal_id", sa.String(128), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),
    sa.Column("set_at", TIME, nullable=False),
    sa.Column("source", sa.String(16), nullable=False),  # enrolment, command, import, api
)

scope_members = sa.Table(
    "scope_members",
    metadata,
    sa.Column("scope_key", sa.String(400), primary_key=True),
    sa.Column("terminal_id", sa.String(128), primary_key=True),
    sa.Column("seen_at", TIME),  # the terminal's last_seen_at, refreshed in steps (baseline.py)
    sa.Index("ix_scope_members_terminal", "terminal_id"),
    sa.Index("ix_scope_members_seen", "scope_key", "seen_at"),
)

heartbeats = sa.Table(
    "heartbeats",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("terminal_id", sa.String(128), nullable=False),
    sa.Column("sent_at", TIME, nullable=False),  # event time, clamped
    sa.Column("received_at", TIME, nullable=False),
    sa.Column("clock_clamped", sa.Boolean, nullable=False, default=False),
    sa.Column("battery_pct", sa.Float),
    sa.Column("battery_wear_ratio", sa.Float),
    sa.Column("battery_full_pct", sa.Float),
    sa.Column("battery_cycle_count", sa.Float),
    sa.Column("emmc_life_used_pct", sa.Float),
    sa.Column("free_mib", sa.Float),
    sa.Column("signal_dbm", sa.Float),
    sa.Column("max_temp_c", sa.Float),
    sa.Column("memory_available_mib", sa.Float),
    sa.Column("counters", sa.Text),
    sa.Index("ix_heartbeats_terminal", "terminal_id", "sent_at"),
)

terminal_days = sa.Table(  # exposure: a terminal active on a day, on which versions
    "terminal_days",
    metadata,
    sa.Column("terminal_id", sa.String(128), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("firmware", sa.String(128), nullable=False),
    sa.Column("app_version", sa.String(128), nullable=False),
    sa.Index("ix_terminal_days_day", "day", "model"),
)

bundle_fleet = sa.Table(  # the fleet's view of one bundle, beside its row in `bundles`
    "bundle_fleet",
    metadata,
    sa.Column("bundle_id", sa.String(36), primary_key=True),
    sa.Column("terminal_id", sa.String(128), nullable=False),
    sa.Column("event_at", TIME, nullable=False),
    sa.Column("clock_clamped", sa.Boolean, nullable=False, default=False),
    sa.Column("problem_id", sa.String(32)),
    sa.Column("top_category", sa.String(32)),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("firmware", sa.String(128), nullable=False),
    sa.Column("app_version", sa.String(128), nullable=False),
    sa.Column("hold_incident", sa.String(36)),
    # why the bundle feeds no detector (a business or issuer outcome: signal.py); NULL: it does
    sa.Column("excluded", sa.String(48)),
    sa.Index("ix_bundle_fleet_event", "event_at"),
    sa.Index("ix_bundle_fleet_hold", "hold_incident"),
    sa.Index("ix_bundle_fleet_problem", "problem_id", "event_at"),
)

outage_events = sa.Table(  # host/network bundles, once per scope their terminal is in
    "outage_events",
    metadata,
    sa.Column("bundle_id", sa.String(36), primary_key=True),
    sa.Column("scope_key", sa.String(400), primary_key=True),
    sa.Column("terminal_id", sa.String(128), nullable=False),
    sa.Column("event_at", TIME, nullable=False),
    sa.Index("ix_outage_events_scope", "scope_key", "event_at"),
    sa.Index("ix_outage_events_terminal", "terminal_id", "event_at"),
)

failure_hours = sa.Table(  # the one host/network bundle per terminal and UTC hour that counts in a baseline
    "failure_hours",
    metadata,
    sa.Column("terminal_id", sa.String(128), primary_key=True),
    sa.Column("hour", sa.String(13), primary_key=True),
    sa.Column("bundle_id", sa.String(36), nullable=False),
    sa.Index("ix_failure_hours_bundle", "bundle_id"),
)

scope_hours = sa.Table(  # failing terminal-hours (failure_hours) per scope and UTC hour ("YYYY-MM-DDTHH"), and how many are held
    "scope_hours",
    metadata,
    sa.Column("scope_key", sa.String(400), primary_key=True),
    sa.Column("hour", sa.String(13), primary_key=True),
    sa.Column("events", sa.Integer, nullable=False),
    sa.Column("held", sa.Integer, nullable=False),
)

scope_seen_hours = sa.Table(  # members per scope by the UTC hour of their seen_at: active counts
    "scope_seen_hours",
    metadata,
    sa.Column("scope_key", sa.String(400), primary_key=True),
    sa.Column("hour", sa.String(13), primary_key=True),
    sa.Column("members", sa.Integer, nullable=False),
)

problems = sa.Table(
    "problems",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # sha256 of the signature, cut
    sa.Column("signature", sa.Text, nullable=False),
    sa.Column("scheme", sa.String(32)),
    sa.Column("code", sa.String(64)),
    sa.Column("top_cause", sa.String(128)),
    sa.Column("top_category", sa.String(32)),
    sa.Column("first_seen", TIME, nullable=False),
    sa.Column("last_seen", TIME, nullable=False),
    sa.Column("bundles", sa.Integer, nullable=False),
    sa.Column("terminals_affected", sa.Integer, nullable=False),
    sa.Column("breakdown", sa.Text),  # JSON {dim: [[key, count], ...]}, the top values per dimension
    sa.Column("verdict_rank", sa.Integer),  # the highest dispatch verdict of its bundles: 0 none .. 3 onsite
    sa.Index("ix_problems_rank", "terminals_affected", "id"),
)

problem_counts = sa.Table(  # dim: model, firmware, build (model + firmware), day, or label:KEY (key: the value)
    "problem_counts",
    metadata,
    sa.Column("problem_id", sa.String(32), primary_key=True),
    sa.Column("dim", sa.String(48), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),  # bundles
    sa.Column("terminals", sa.Integer),  # distinct terminals (on that day, for dim day)
    sa.Index("ix_problem_counts_top", "problem_id", "dim", "count"),
    sa.Index("ix_problem_counts_rank", "dim", "key", "terminals", "problem_id"),
)

problem_hits = sa.Table(  # one row per problem, terminal and day: filtered rankings
    "problem_hits",
    metadata,
    sa.Column("problem_id", sa.String(32), primary_key=True),
    sa.Column("terminal_id", sa.String(128), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("firmware", sa.String(128), nullable=False),
    sa.Column("bundles", sa.Integer, nullable=False),
    sa.Index("ix_problem_hits_day", "day", "problem_id"),
    sa.Index("ix_problem_hits_terminal", "terminal_id", "day"),
)

problem_terminals = sa.Table(  # one row per problem and terminal: rankings over the last days
    "problem_terminals",
    metadata,
    sa.Column("problem_id", sa.String(32), primary_key=True),
    sa.Column("terminal_id", sa.String(128), primary_key=True),
    sa.Column("last_day", sa.String(10), nullable=False),
)

problem_last_days = sa.Table(  # terminals per problem by their newest day with it: "the last N days"
    "problem_last_days",
    metadata,
    sa.Column("problem_id", sa.String(32), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("terminals", sa.Integer, nullable=False),
)

incidents = sa.Table(
    "incidents",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # open, closed, dismissed
    sa.Column("scope_key", sa.String(400), nullable=False),
    sa.Column("open_key", sa.String(420), unique=True),  # kind + scope while open: one open per scope
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("categories", sa.Text, nullable=False),
    sa.Column("codes", sa.Text, nullable=False),
    sa.Column("started_at", TIME, nullable=False),
    sa.Column("detected_at", TIME, nullable=False),
    sa.Column("last_hit_at", TIME, nullable=False),
    sa.Column("ended_at", TIME),
    sa.Column("terminals_affected", sa.Integer, nullable=False),
    sa.Column("terminals_in_scope", sa.Integer, nullable=False),
    sa.Column("bundles", sa.Integer, nullable=False),
    sa.Column("expected", sa.Float, nullable=False),
    sa.Column("p_value", sa.Float, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("acknowledged_at", TIME),  # a person confirmed the outage: a hold may cover more bundles
    sa.Column("acknowledged_by", sa.String(128)),
    sa.Index("ix_incidents_status", "status", "started_at"),
    sa.Index("ix_incidents_scope", "scope_key", "started_at"),
)

incident_actions = sa.Table(  # what support did to an incident, and its notes (incident_actions.py)
    "incident_actions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.String(36), nullable=False),
    sa.Column("at", TIME, nullable=False),
    sa.Column("by", sa.String(128), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),  # acknowledged | note | resolved | dismissed
    sa.Column("note", sa.Text),
    sa.Column("source", sa.String(8)),  # web | api: where it was done (the audit log shows it)
    sa.Index("ix_incident_actions_incident", "incident_id", "at"),
    sa.Index("ix_incident_actions_at", "at", "id"),
)

dismissed_terminals = sa.Table(  # the failing terminals of a dismissed outage: they open no new one
    "dismissed_terminals",
    metadata,
    sa.Column("incident_id", sa.String(36), primary_key=True),
    sa.Column("terminal_id", sa.String(128), primary_key=True),
    sa.Index("ix_dismissed_terminals_terminal", "terminal_id"),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dedupe", sa.String(200), nullable=False, unique=True),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("next_at", TIME, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("delivered_at", TIME),
    sa.Column("last_error", sa.String(300)),
    sa.Index("ix_webhook_due", "delivered_at", "next_at"),
)


def _claims_are_not_trusted(conn: sa.Connection) -> None:
    """A database from before operator labels (issue 21): every label in it is a terminal's
    claim, and none is trusted (docs/fleet.md, "Which labels are trusted"). The claims are
    kept as hints; each terminal's observed labels come back in force at its next heartbeat
    or bundle; `posdiag-support terminals claims` writes the claims as CSV to review and import."""
    conn.execute(fleet_terminals.update().values(claimed_labels=fleet_terminals.c.labels, labels="{}"))
    conn.execute(terminal_labels.delete())
    conn.execute(scope_members.delete())
    conn.execute(scope_seen_hours.delete())


fleet_terminals.c.claimed_labels.info["fill"] = _claims_are_not_trusted
