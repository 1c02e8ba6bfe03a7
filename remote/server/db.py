"""One schema for SQLite and PostgreSQL, created on start.

Times are stored as fixed-width UTC ISO-8601 strings (`2026-01-02T03:04:05.000000Z`): they
sort as text the same way on both databases and `substr(t, 1, 10)` is the day.
`schema_version` records what has been applied, so a later release has a place to migrate from.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

SCHEMA_VERSION = 1
POOL_SIZE = 10  # PostgreSQL connections per server process
TIME = sa.String(27)

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_at", TIME, nullable=False),
)

server_keys = sa.Table(
    "server_keys",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),
)

terminals = sa.Table(
    "terminals",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("revoked_at", TIME),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("password_hash", sa.String(256), nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    # Who a session belongs to (auth.py): a random identity, new for every user created (a
    # user re-created under a removed user's name is someone else), and a generation that a
    # password or role change raises (NULL reads as 0). Nullable: added to older databases.
    sa.Column("uid", sa.String(32)),
    sa.Column("generation", sa.Integer),
    sa.Index("ix_users_uid", "uid", unique=True),
)


def _fill_user_ids(conn: sa.Connection) -> None:
    """Users made before identities were kept get one each (their old cookies named them
    by name only, and are no longer read)."""
    for name in conn.execute(sa.select(users.c.name).where(users.c.uid.is_(None))).scalars().all():
        conn.execute(users.update().where(users.c.name == name).values(uid=secrets.token_hex(16), generation=0))


users.c.uid.info["fill"] = _fill_user_ids

# Per-user page settings; a table of its own so that adding one needs no change to `users`.
user_prefs = sa.Table(
    "user_prefs",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("lang", sa.String(8), nullable=False),
)

bundles = sa.Table(
    "bundles",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("terminal_id", sa.String(128), nullable=False),
    sa.Column("serial", sa.String(128), nullable=False),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("firmware", sa.String(128), nullable=False),
    sa.Column("app_version", sa.String(128), nullable=False),
    sa.Column("agent_version", sa.String(64), nullable=False),
    sa.Column("trigger_kind", sa.String(16), nullable=False),
    sa.Column("code", sa.String(64)),
    sa.Column("scheme", sa.String(32)),
    sa.Column("command_id", sa.String(36)),
    sa.Column("top_cause", sa.String(128)),
    sa.Column("top_category", sa.String(32)),
    sa.Column("top_confidence", sa.Float),
    sa.Column("verdict", sa.String(16)),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("received_at", TIME, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("clock_flag", sa.String(8)),  # ahead | behind: created_at implausible at receipt
    sa.Index("ix_bundles_created", "created_at", "id"),
    # the home page's day of bundles by verdict and failing terminals per hour, from the index alone
    sa.Index("ix_bundles_created_verdict", "created_at", "verdict", "terminal_id"),
    sa.Index("ix_bundles_terminal", "terminal_id", "created_at"),
    sa.Index("ix_bundles_code", "code", "created_at"),
    sa.Index("ix_bundles_cause", "top_cause", "created_at"),
    sa.Index("ix_bundles_category", "top_category", "created_at"),
    sa.Index("ix_bundles_sha256", "sha256"),
    sa.Index("ix_bundles_received", "received_at"),
)

# Digests whose rows retention removed: `pending` until the blob is deleted (or found still
# named), then `deleted` for a day, which tells an upload of the same bytes that began
# before the deletion to write its blob again (remote/server/retention.py).
blob_orphans = sa.Table(
    "blob_orphans",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("since", TIME, nullable=False),
)

# Named leases with an expiry: one SQLite server, one retention pass (remote/server/leases.py).
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(256), nullable=False),
    sa.Column("expires_at", TIME, nullable=False),
)

commands = sa.Table(
    "commands",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("terminal_id", sa.String(128), nullable=False),
    sa.Column("probes", sa.Text),  # JSON list of probe names; NULL: all probes
    sa.Column("code", sa.String(64)),
    sa.Column("status", sa.String(16), nullable=False),  # queued | delivered | done
    sa.Column("requested_by", sa.String(128), nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("delivered_at", TIME),
    sa.Column("done_at", TIME),
    sa.Column("bundle_id", sa.String(36)),
    sa.Index("ix_commands_terminal", "terminal_id", "status", "created_at"),
)


# A bundle as the API and pages show it, redacted once at ingest (JSON, see bundleview.py).
bundle_views = sa.Table(
    "bundle_views",
    metadata,
    sa.Column("bundle_id", sa.String(36), primary_key=True),
    sa.Column("view", sa.Text, nullable=False),
)

# Failed sign-ins per key ("user:NAME", "addr:IP") in a fixed window, shared by every server.
signin_failures = sa.Table(
    "signin_failures",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("window_start", TIME, nullable=False),
    sa.Column("failures", sa.Integer, nullable=False),
)

# Administration actions (remote/server/audit.py): who, when, from where, what, to which object.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", TIME, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("source", sa.String(8), nullable=False),  # web | api | cli
    sa.Column("action", sa.String(32), nullable=False),  # user.add, terminal.revoke, ...
    sa.Column("object_kind", sa.String(16), nullable=False),  # user | terminal
    sa.Column("object_id", sa.String(128), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),  # JSON object: what changed, never a secret
    sa.Index("ix_audit_at", "at", "id"),
    sa.Index("ix_audit_object", "object_kind", "object_id", "at"),
)

# Sessions ended by sign-out before their cookie expires.
revoked_sessions = sa.Table(
    "revoked_sessions",
    metadata,
    sa.Column("sid", sa.String(64), primary_key=True),
    sa.Column("expires_at", TIME, nullable=False),
)


def now() -> str:
    return stamp(datetime.now(UTC))


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """ISO-8601 with a zone (Z or an offset) to an aware datetime; ValueError otherwise."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("time without a zone")
    return moment


def make_engine(url: str) -> Engine:
    """An engine for `sqlite:///path` or `postgresql://...` (driven by psycopg 3)."""
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # No pre-ping (a round trip per checkout, ~8 % of ingest throughput): after a database
    # restart the first statement of a worker fails, SQLAlchemy then drops the whole pool,
    # and the terminal's client retries the 5xx.
    # At most POOL_SIZE connections per worker process, no overflow: with 20 more allowed,
    # two servers of two workers opened up to 120 under load, past PostgreSQL's default
    # max_connections (100), and uploads failed with "too many clients" (500). A request
    # now waits for a pooled connection instead.
    return sa.create_engine(url, pool_size=POOL_SIZE, max_overflow=0, pool_timeout=60, pool_recycle=1800)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers run beside the one writer; NORMAL sync in WAL mode is crash-safe
    # (a power cut may lose the last commits, never corrupt); busy_timeout queues writers
    # of several worker processes instead of failing them.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


_SQLITE_WRITERS: dict[str | int, threading.Lock] = {}
_WRITERS_LOCK = threading.Lock()


@contextlib.contextmanager
def writing(engine: Engine) -> Iterator[sa.Connection]:
    """engine.begin(), with SQLite writers taking turns on locks first.

    SQLite admits one writer; others wait in its busy handler, which sleeps in growing
    steps (up to 100 ms a step) and makes the tail latency long: two server processes
    storing uploads met it on most transactions (issue 22). Threads of a process queue on
    a lock, and processes on an flock of `DATABASE-writer.lock` beside the database file, so
    a writer waits only as long as the one before it writes."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            yield conn
        return
    lock, path = _sqlite_writer(engine)
    with lock:
        # Opened per transaction (two system calls): a descriptor kept per database would
        # pile up in a process that opens many (a test session).
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600) if path else None
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            with engine.begin() as conn:
                yield conn
        finally:
            if fd is not None:
                os.close(fd)  # releases the flock


def _sqlite_writer(engine: Engine) -> tuple[threading.Lock, str | None]:
    """This process's lock of the database file and the path of its lock file (one lock per
    file, whichever engines open it; an in-memory database has a lock per engine, no file)."""
    path = engine.url.database
    on_disk = bool(path) and path != ":memory:" and not str(path).startswith("file:")
    key: str | int = os.path.abspath(path) if on_disk else id(engine)
    lock = _SQLITE_WRITERS.get(key)
    if lock is None:
        with _WRITERS_LOCK:
            lock = _SQLITE_WRITERS.setdefault(key, threading.Lock())
    return lock, f"{key}-writer.lock" if on_disk else None


def lock_for_writing(conn: sa.Connection) -> None:
    """On SQLite, take the database's write lock now, before the transaction's reads: the
    driver begins a transaction only at its first write, so reads before it see a moment that
    another process's commit may already have changed (PostgreSQL: SELECT ... FOR UPDATE)."""
    if conn.dialect.name == "sqlite":
        conn.execute(server_keys.update().where(sa.false()).values(value=server_keys.c.value))


def create_schema(engine: Engine) -> None:
    """Idempotent: several servers may start at once on one PostgreSQL."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Serialise concurrent create_all of several servers starting together.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7263001)"))
        metadata.create_all(conn)
        added = _add_missing_columns(conn)
        _widen_columns(conn)
        for table in metadata.sorted_tables:  # indexes added to a table an older release made
            for index in table.indexes:
                index.create(conn, checkfirst=True)
        for column in added:  # a rollup column is filled from what the database holds
            if "fill" in column.info:
                column.info["fill"](conn)
        have = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()
        if have is None:
            conn.execute(schema_version.insert().values(version=SCHEMA_VERSION, applied_at=now()))
        elif have > SCHEMA_VERSION:
            raise RuntimeError(f"database schema {have} is newer than this server ({SCHEMA_VERSION})")


def _widen_columns(conn: sa.Connection) -> None:
    """A VARCHAR a later release made longer is widened on PostgreSQL (SQLite does not
    enforce lengths)."""
    if conn.dialect.name != "postgresql":
        return
    inspector = sa.inspect(conn)
    for table in metadata.sorted_tables:
        have = {c["name"]: c["type"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            want, got = getattr(column.type, "length", None), getattr(have.get(column.name), "length", None)
            if isinstance(column.type, sa.String) and want and got and got < want:
                conn.execute(sa.text(f"ALTER TABLE {table.name} ALTER COLUMN {column.name} TYPE VARCHAR({want})"))


def _add_missing_columns(conn: sa.Connection) -> list[sa.Column]:
    """create_all makes missing tables, not missing columns: a nullable column added to a
    table in a later release is added here to a database made before it. The added columns."""
    inspector = sa.inspect(conn)
    added = []
    for table in metadata.sorted_tables:
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have and column.nullable:
                kind = column.type.compile(dialect=conn.dialect)
                conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}'))
                added.append(column)
    return added

def _widen_columns(conn: sa.Connection) -> None:
    """A text column made wider in a later release (incidents.status for `dismissed`) is
    widened in a PostgreSQL database made before it; SQLite does not enforce lengths."""
    if conn.dialect.name != "postgresql":
        return
    inspector = sa.inspect(conn)
    for table in metadata.sorted_tables:
        have = {c["name"]: c["type"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            length, stored = getattr(column.type, "length", None), getattr(have.get(column.name), "length", None)
            if length and stored and stored < length:
                conn.execute(sa.text(f"ALTER TABLE {table.name} ALTER COLUMN {column.name} TYPE VARCHAR({length})"))
