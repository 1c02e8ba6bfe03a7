"""What `serve` verifies before it starts, and what `check` reports.

Several servers must see one database and one blob store. The database records the id of
the blob store its rows were written to (server_keys `blob_store`), and the store carries
the same id in its marker: a server whose store has no marker, or another one, is looking
at a different store (a local directory on another machine) and is refused. The workers
of one server share its directory (same machine, same path), so they need no proof.
SQLite serves one server: a lease row names the server that has it.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from remote.server import db, leases
from remote.server.blobs import BlobError, BlobStore
from remote.server.db import server_keys

SERVER_LEASE = "sqlite-server"
LEASE_SECONDS = 30.0


class Refused(Exception):
    """A set-up `serve` will not run on; the message says why and what to do."""


_RECORDED = sa.select(server_keys.c.value).where(server_keys.c.name == "blob_store")


def recorded_store(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return conn.execute(_RECORDED).scalar()


def verify_store(engine: Engine, blobs: BlobStore) -> str:
    """The store's id, recorded in the database on first use; Refused if it is not the
    store the database's rows were written to.

    Servers started at once on a new database and store take turns here (a lock in the
    database): two that each found neither an id nor a marker wrote a marker each, and one
    of them then found the other's id recorded and refused to start."""
    with db.writing(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7263002)"))  # until this transaction ends
        else:
            db.lock_for_writing(conn)
        known = conn.execute(_RECORDED).scalar()
        mark = blobs.marker(create=known is None)
        if known is None and mark is not None:
            conn.execute(server_keys.insert().values(name="blob_store", value=mark))
            known = mark
    if mark != known:
        raise Refused(
            f"the blob store {blobs.describe()} is not the one this database's bundles are in "
            f"(its marker {mark or 'is missing'}, the database names {known}); several servers need one "
            "shared store: --blobs s3://BUCKET, or the same shared directory on every server"
        )
    return mark


def hold_sqlite(engine: Engine) -> threading.Event | None:
    """On SQLite: take the one-server lease and renew it in a thread until the returned event
    is set; Refused if another live server holds it. None on PostgreSQL."""
    if engine.dialect.name != "sqlite":
        return None
    holder = leases.take(engine, SERVER_LEASE, LEASE_SECONDS)
    if holder is not None:
        raise Refused(
            f"another server ({holder}) is serving this SQLite database; SQLite serves one server "
            "(with any number of --workers): use --db postgresql://... for several"
        )
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(LEASE_SECONDS / 3):
            leases.take(engine, SERVER_LEASE, LEASE_SECONDS)
        leases.release(engine, SERVER_LEASE)

    threading.Thread(target=renew, name="sqlite-lease", daemon=True).start()
    return stop


@dataclass
class Report:
    """`check`'s findings: (what, found) lines and the problems among them."""

    lines: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, what: str, found: str, problem: bool = False) -> None:
        self.lines.append((what, found))
        if problem:
            self.problems.append(f"{what}: {found}")


def check_database(engine: Engine, report: Report) -> bool:
    try:
        if not sa.inspect(engine).has_table("schema_version"):
            report.add("database", f"{engine.url.render_as_string(hide_password=True)}: no posdiag tables (serve creates them)", True)
            return False
        with engine.connect() as conn:
            version = conn.execute(sa.select(sa.func.max(db.schema_version.c.version))).scalar()
            count = conn.execute(sa.select(sa.func.count()).select_from(db.bundles)).scalar()
            server = conn.execute(sa.text("SELECT version()" if engine.dialect.name == "postgresql" else "SELECT sqlite_version()")).scalar()
    except sa.exc.SQLAlchemyError as exc:
        report.add("database", f"{engine.url.render_as_string(hide_password=True)}: {str(exc).splitlines()[0]}", True)
        return False
    report.add("database", f"{engine.dialect.name} {str(server).split(' on ')[0]} at {engine.url.render_as_string(hide_password=True)}")
    report.add("schema", f"version {version} (this server: {db.SCHEMA_VERSION})", version != db.SCHEMA_VERSION)
    report.add("bundles", str(count))
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            row = conn.execute(sa.select(db.leases).where(db.leases.c.name == SERVER_LEASE)).mappings().first()
        report.add("sqlite server", f"held by {row['holder']} until {row['expires_at']}" if row else "none running")
    return True


def check_blobs(engine: Engine | None, blobs: BlobStore, report: Report) -> None:
    report.add("blob store", f"{blobs.kind} {blobs.describe()}")
    probe = b"posdiag-support check\n"
    digest = hashlib.sha256(probe).hexdigest()
    try:
        had = blobs.exists(digest)
        blobs.put(probe)
        ok = blobs.get(digest) == probe
        if not had:
            blobs.delete(digest)
        report.add("blob write/read", "ok" if ok else "read back different bytes", not ok)
        mark = blobs.marker(create=False)
    except BlobError as exc:
        report.add("blob write/read", str(exc).splitlines()[0], True)
        return
    if engine is None:
        return
    try:
        known = recorded_store(engine)
    except sa.exc.SQLAlchemyError:
        return
    if known is None:
        report.add("blob store id", f"{mark or 'none yet'} (the database records none yet)")
    else:
        report.add("blob store id", f"{mark or 'missing'} (database: {known})", mark != known)
