"""Outcome and learning tables (docs/outcomes.md). Created with the rest by db.create_schema.

`outcomes` holds one current outcome per bundle, with what the bundle predicted copied in
when the outcome was recorded (so measures never reopen a bundle); `outcome_history` holds
every outcome ever recorded, the current one included. The current outcome is the one of
the latest visit: `rank_key` (visited_at, recorded_at, outcome_id, fixed width) orders them,
and one conditional upsert keeps the greatest, atomically on both databases.
"""

from __future__ import annotations

import sqlalchemy as sa

from remote.server.db import TIME, metadata

outcomes = sa.Table(
    "outcomes",
    metadata,
    sa.Column("bundle_id", sa.String(36), primary_key=True),
    sa.Column("outcome_id", sa.String(36), nullable=False),
    sa.Column("rank_key", sa.String(100), nullable=False),
    sa.Column("terminal_id", sa.String(128), nullable=False),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("firmware", sa.String(128), nullable=False),
    sa.Column("scheme", sa.String(32)),
    sa.Column("code", sa.String(64)),
    sa.Column("verdict", sa.String(16)),
    sa.Column("predicted", sa.Text, nullable=False),  # JSON list: the bundle's first three cause ids
    sa.Column("learned_hash", sa.String(16)),  # the learned table the bundle's diagnosis applied
    sa.Column("found", sa.String(128), nullable=False),  # a cause id, nothing or other
    sa.Column("fixed", sa.Boolean),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("by_name", sa.String(128), nullable=False),
    sa.Column("via", sa.String(16), nullable=False),  # api | terminal | page
    sa.Column("visited_at", TIME, nullable=False),
    sa.Column("recorded_at", TIME, nullable=False),
    sa.Index("ix_outcomes_visited", "visited_at"),
    sa.Index("ix_outcomes_model_code", "model", "scheme", "code"),
)

outcome_history = sa.Table(
    "outcome_history",
    metadata,
    sa.Column("outcome_id", sa.String(36), primary_key=True),
    sa.Column("bundle_id", sa.String(36), nullable=False),
    sa.Column("rank_key", sa.String(100), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),  # of what was said: a replay must say the same
    sa.Column("found", sa.String(128), nullable=False),
    sa.Column("fixed", sa.Boolean),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("by_name", sa.String(128), nullable=False),
    sa.Column("via", sa.String(16), nullable=False),
    sa.Column("visited_at", TIME, nullable=False),
    sa.Column("recorded_at", TIME, nullable=False),
    sa.Index("ix_outcome_history_bundle", "bundle_id", "rank_key"),
)

# Every table built for a model ("*": the fleet-wide one, for models without their own).
learned_tables = sa.Table(
    "learned_tables",
    metadata,
    sa.Column("model", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("hash", sa.String(16), nullable=False),
    sa.Column("content", sa.Text, nullable=False),  # JSON: {code key: {n, N, f: {cause: factor}}}
    sa.Column("origin", sa.String(32), nullable=False),  # learned | revert:VERSION
    sa.Column("visits", sa.Integer, nullable=False),
    sa.Column("built_at", TIME, nullable=False),
    sa.Column("built_by", sa.String(128), nullable=False),
)

# The operator's switches: scope "*" for the whole fleet, or a model. A model pinned to a
# version serves it and is not rebuilt until resumed.
learning_control = sa.Table(
    "learning_control",
    metadata,
    sa.Column("scope", sa.String(128), primary_key=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("pinned", sa.Integer),
    sa.Column("changed_by", sa.String(128), nullable=False),
    sa.Column("changed_at", TIME, nullable=False),
)
