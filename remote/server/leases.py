"""One holder at a time, across servers: a PostgreSQL advisory lock, or a lease row on SQLite.

A lease row names its holder (`host:pid`) and expires unless renewed; a holder on this
host whose process is gone is stale at once, so a server killed and restarted on the same
machine does not wait for the expiry.
"""

from __future__ import annotations

import contextlib
import os
import socket
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from remote.server import db
from remote.server.db import leases


def me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _dead_here(holder: str) -> bool:
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def take(engine: Engine, name: str, seconds: float, holder: str | None = None) -> str | None:
    """Take or renew the lease `name`; None if taken, else the live holder's name."""
    holder = holder or me()
    now = datetime.now(UTC)
    until = db.stamp(now + timedelta(seconds=seconds))
    try:
        with db.writing(engine) as conn:
            conn.execute(leases.insert().values(name=name, holder=holder, expires_at=until))
        return None
    except IntegrityError:
        pass  # held, or held before: compare and set below
    with engine.connect() as conn:
        row = conn.execute(sa.select(leases).where(leases.c.name == name)).mappings().first()
    if row is None:  # released in between: try again
        return take(engine, name, seconds, holder)
    free = row["holder"] == holder or row["expires_at"] < db.stamp(now) or _dead_here(row["holder"])
    if not free:
        return row["holder"]
    with db.writing(engine) as conn:
        taken = conn.execute(
            leases.update()
            .where(leases.c.name == name, leases.c.holder == row["holder"], leases.c.expires_at == row["expires_at"])
            .values(holder=holder, expires_at=until)
        ).rowcount
    return None if taken else row["holder"]


def release(engine: Engine, name: str, holder: str | None = None) -> None:
    with db.writing(engine) as conn:
        conn.execute(leases.delete().where(leases.c.name == name, leases.c.holder == (holder or me())))


@contextlib.contextmanager
def exclusive(engine: Engine, name: str, seconds: float) -> Iterator[bool]:
    """Yields True while this process alone holds `name` (for work shorter than `seconds`
    on SQLite; a PostgreSQL advisory lock lasts as long as its connection)."""
    if engine.dialect.name == "postgresql":
        key = zlib.crc32(name.encode())
        with engine.connect() as conn:
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            conn.commit()
            try:
                yield bool(got)
            finally:
                if got:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
        return
    got = take(engine, name, seconds) is None
    try:
        yield got
    finally:
        if got:
            release(engine, name)
