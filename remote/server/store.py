"""Every read and write of the database. Functions take the engine; rows come back as dicts."""

from __future__ import annotations

import base64
import json
import re
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import sqlalchemy.dialects.postgresql
import sqlalchemy.dialects.sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from remote.server import auth, daily, db, retention
from remote.server.fleet import inventory
from remote.server.fleet import labels as fleet_labels
from remote.server.fleet.schema import bundle_fleet
from remote.server.db import (
    bundle_views,
    bundles,
    commands,
    revoked_sessions,
    server_keys,
    signin_failures,
    terminals,
    user_prefs,
    users,
)
from remote.server_settings import FleetSettings
from remote.wire import terminal_id_problem

STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
LANGS = ("zh", "en")
STATS = {  # stats answer field -> counted dimension (daily.DIMS)
    "by_code": "code", "by_cause": "cause", "by_category": "category", "by_model": "model",
    "by_firmware": "firmware", "by_verdict": "verdict", "top_terminals": "terminal",
}  # fmt: skip


class StoreError(Exception):
    """A request the data does not allow (unknown name, duplicate); `code` is short."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def server_secret(engine: Engine) -> bytes:
    """The signing key for sessions and CSRF, created once and shared by every server."""
    query = sa.select(server_keys.c.value).where(server_keys.c.name == "session")
    with engine.begin() as conn:
        value = conn.execute(query).scalar()
    if value is None:
        try:
            with engine.begin() as conn:
                conn.execute(server_keys.insert().values(name="session", value=secrets.token_hex(32)))
        except IntegrityError:
            pass  # another server created it first
        with engine.begin() as conn:
            value = conn.execute(query).scalar_one()
    return bytes.fromhex(value)


# -- terminals ----------------------------------------------------------------------------


def add_terminal(
    engine: Engine, terminal_id: str, labels: dict[str, str] | None = None, fleet: FleetSettings | None = None,
) -> str:  # fmt: skip
    """Enrol (or re-enrol a revoked) terminal, with the operator's labels if given (trusted:
    fleet/labels.py); the token is returned once and not kept."""
    problem = terminal_id_problem(terminal_id)
    if problem:
        raise StoreError("bad_terminal_id", f"a terminal id is {problem}")
    try:
        fleet_labels.check(labels or {})
    except fleet_labels.LabelError as exc:
        raise StoreError("bad_label", f"labels.{exc}") from None
    token = auth.new_terminal_token()
    digest = auth.token_digest(token)
    with engine.begin() as conn:
        row = conn.execute(sa.select(terminals).where(terminals.c.id == terminal_id)).mappings().first()
        if row is None:
            try:
                conn.execute(terminals.insert().values(id=terminal_id, token_sha256=digest, created_at=db.now()))
            except IntegrityError:
                raise StoreError("terminal_exists", f"terminal {terminal_id!r} is already enrolled") from None
        elif row["revoked_at"] is None:
            raise StoreError("terminal_exists", f"terminal {terminal_id!r} is already enrolled; revoke it first")
        else:
            conn.execute(
                terminals.update()
                .where(terminals.c.id == terminal_id)
                .values(token_sha256=digest, revoked_at=None, created_at=db.now())
            )
        if labels:
            assert fleet is not None, "labels are cut into scopes by [server.fleet]"
            try:
                inventory.relabel(conn, terminal_id, dict(labels), "enrolment", fleet)
            except fleet_labels.LabelError as exc:
                raise StoreError("bad_label", f"labels: {exc}") from None
    return token


def revoke_terminal(engine: Engine, terminal_id: str) -> None:
    with engine.begin() as conn:
        done = conn.execute(
            terminals.update()
            .where(terminals.c.id == terminal_id, terminals.c.revoked_at.is_(None))
            .values(revoked_at=db.now())
        ).rowcount
    if not done:
        raise StoreError("no_terminal", f"no enrolled terminal {terminal_id!r}")


def list_terminals(engine: Engine, terminal_id: str | None = None) -> list[dict[str, Any]]:
    """Terminals with their bundle count and last upload (from the bundles, so that an
    upload writes one row only)."""
    counts = (
        sa.select(
            bundles.c.terminal_id,
            sa.func.count().label("bundles"),
            sa.func.max(bundles.c.received_at).label("last_seen_at"),
        )
        .group_by(bundles.c.terminal_id)
        .subquery()
    )
    query = (
        sa.select(
            terminals.c.id,
            terminals.c.created_at,
            terminals.c.revoked_at,
            counts.c.last_seen_at,
            sa.func.coalesce(counts.c.bundles, 0).label("bundles"),
        )
        .select_from(terminals.outerjoin(counts, counts.c.terminal_id == terminals.c.id))
        .order_by(terminals.c.id)
    )
    if terminal_id is not None:
        query = query.where(terminals.c.id == terminal_id)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def get_terminal(engine: Engine, terminal_id: str) -> dict[str, Any] | None:
    found = list_terminals(engine, terminal_id)
    return found[0] if found else None


def terminal_for_token(engine: Engine, token: str) -> dict[str, Any] | None:
    """The active terminal the bearer token belongs to, or None."""
    with engine.connect() as conn:
        return terminal_of_token(conn, token)


# The active terminal a token's digest (the parameter `digest`) names: every request of a terminal asks it.
ACTIVE_TOKEN = sa.and_(terminals.c.token_sha256 == sa.bindparam("digest"), terminals.c.revoked_at.is_(None))
_TERMINAL_OF_TOKEN = sa.select(terminals.c.id, terminals.c.token_sha256).where(ACTIVE_TOKEN)


def terminal_of_token(conn: sa.Connection, token: str) -> dict[str, Any] | None:
    row = conn.execute(_TERMINAL_OF_TOKEN, {"digest": auth.token_digest(token)}).mappings().first()
    return dict(row) if row else None


def enrolled_terminals(engine: Engine, prefix: str, after: str, limit: int) -> list[dict[str, Any]]:
    """Terminals by id after `after` whose id starts with `prefix` (case-insensitive), with
    enrolment and revocation times only (no bundle counts: a page of an enrolment list must
    not scan every bundle)."""
    query = sa.select(terminals.c.id, terminals.c.created_at, terminals.c.revoked_at).order_by(terminals.c.id).limit(limit)
    if prefix:
        escaped = prefix.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(sa.func.lower(terminals.c.id).like(escaped + "%", escape="\\"))
    if after:
        query = query.where(terminals.c.id > after)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


# -- users --------------------------------------------------------------------------------


def add_user(engine: Engine, name: str, role: str, password: str, min_length: int = auth.PASSWORD_FLOOR) -> None:
    """A new user, with an identity of its own (never a removed user's, whatever the name)."""
    if role not in auth.ROLES:
        raise StoreError("bad_role", f"role must be one of {', '.join(auth.ROLES)}")
    if not name or len(name) > 128 or not name.isprintable() or ":" in name or name != name.strip():
        raise StoreError("bad_name", "a user name is 1-128 printable characters without ':' or spaces around it")
    problem = auth.password_problem(password, name, min_length)
    if problem:
        raise StoreError("weak_password", problem)
    values = {
        "name": name, "role": role, "password_hash": auth.hash_password(password), "created_at": db.now(),
        "uid": auth.new_user_id(), "generation": 0,
    }  # fmt: skip
    try:
        with engine.begin() as conn:
            conn.execute(users.insert().values(**values))
    except IntegrityError:
        raise StoreError("user_exists", f"user {name!r} exists") from None


def get_user(engine: Engine, name: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(users).where(users.c.name == name)).mappings().first()
    return dict(row) if row else None


def user_by_id(engine: Engine, uid: str) -> dict[str, Any] | None:
    """The user of this identity (auth.Session.uid), with role and generation."""
    query = sa.select(users.c.name, users.c.role, users.c.uid, users.c.generation).where(users.c.uid == uid)
    with engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    return dict(row) if row else None


def list_users(engine: Engine) -> list[dict[str, Any]]:
    """Every user with role, creation time and page language (never the password hash)."""
    query = (
        sa.select(users.c.name, users.c.role, users.c.created_at, user_prefs.c.lang)
        .select_from(users.outerjoin(user_prefs, user_prefs.c.name == users.c.name))
        .order_by(users.c.name)
    )
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


NEXT_GENERATION = sa.func.coalesce(users.c.generation, 0) + 1


def set_password(engine: Engine, name: str, password: str, min_length: int = auth.PASSWORD_FLOOR) -> None:
    """The new password, and the end of every session and remembered HTTP basic pair the user
    has, on every server (the generation rises; Service.user_by_session)."""
    problem = auth.password_problem(password, name, min_length)
    if problem:
        raise StoreError("weak_password", problem)
    digest = auth.hash_password(password)
    with db.writing(engine) as conn:
        done = conn.execute(
            users.update().where(users.c.name == name).values(password_hash=digest, generation=NEXT_GENERATION)
        ).rowcount
    if not done:
        raise StoreError("no_user", f"no user {name!r}")


def set_role(engine: Engine, name: str, role: str) -> bool:
    """A new role (False: it had it already). The user's sessions end: they sign in again
    with what the role allows. The last admin keeps the role (StoreError last_admin)."""
    if role not in auth.ROLES:
        raise StoreError("bad_role", f"role must be one of {', '.join(auth.ROLES)}")
    with db.writing(engine) as conn:
        current = _role_keeping_an_admin(conn, name, "demoted" if role != "admin" else "")
        if current == role:
            return False
        conn.execute(users.update().where(users.c.name == name).values(role=role, generation=NEXT_GENERATION))
    return True


def remove_user(engine: Engine, name: str) -> None:
    """The user, their page settings and (with the row) every session and basic pair."""
    with db.writing(engine) as conn:
        _role_keeping_an_admin(conn, name, "removed")
        conn.execute(user_prefs.delete().where(user_prefs.c.name == name))
        conn.execute(users.delete().where(users.c.name == name))


def _role_keeping_an_admin(conn: sa.Connection, name: str, change: str) -> str:
    """The user's role; StoreError when the user is the last admin and `change` (demoted,
    removed; empty: none) would leave no admin. The admins' rows are locked first, in one
    order, then the user's: two admins demoting each other at once on two servers cannot
    both succeed (on SQLite the database's write lock is taken first)."""
    db.lock_for_writing(conn)
    admins = conn.execute(
        sa.select(users.c.name).where(users.c.role == "admin").order_by(users.c.name).with_for_update()
    ).scalars().all()
    role = conn.execute(sa.select(users.c.role).where(users.c.name == name).with_for_update()).scalar()
    if role is None:
        raise StoreError("no_user", f"no user {name!r}")
    if change and role == "admin" and set(admins) <= {name}:
        raise StoreError("last_admin", f"{name} is the last admin and cannot be {change}; make another user admin first")
    return str(role)


def user_lang(engine: Engine, name: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(sa.select(user_prefs.c.lang).where(user_prefs.c.name == name)).scalar()


def set_user_lang(engine: Engine, name: str, lang: str) -> None:
    """The language a user reads the pages in, remembered across sessions and browsers."""
    if lang not in LANGS:
        raise StoreError("bad_lang", f"language must be one of {', '.join(LANGS)}")
    with db.writing(engine) as conn:
        if conn.execute(user_prefs.update().where(user_prefs.c.name == name).values(lang=lang)).rowcount == 0:
            conn.execute(user_prefs.insert().values(name=name, lang=lang))


# -- sign-in protection --------------------------------------------------------------------


def signin_attempt(engine: Engine, limits: dict[str, int], window: float, now: datetime) -> dict[str, float]:
    """Count one attempt against each key in `limits` ({key: most attempts}) and return
    {key: seconds until it may try again} for the keys now past their limit (empty: go ahead).

    Counted before the password is checked, in one transaction of one upsert per key (atomic
    on both databases), so that servers racing each other never let more than the limit
    through; a success clears the user's count again (signin_forget). A window that has run
    out starts again."""
    stamp, cutoff = db.stamp(now), db.stamp(now - timedelta(seconds=window))
    insert = (sa.dialects.postgresql if engine.dialect.name == "postgresql" else sa.dialects.sqlite).insert
    expired = signin_failures.c.window_start < cutoff
    with db.writing(engine) as conn:
        for key in sorted(limits):  # one order for every server: no deadlock between them
            statement = insert(signin_failures).values(key=key, window_start=stamp, failures=1)
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[signin_failures.c.key],
                    set_={
                        "failures": sa.case((expired, 1), else_=signin_failures.c.failures + 1),
                        "window_start": sa.case((expired, stamp), else_=signin_failures.c.window_start),
                    },
                )
            )
        rows = conn.execute(sa.select(signin_failures).where(signin_failures.c.key.in_(list(limits)))).mappings().all()
    return {
        r["key"]: (db.parse_time(r["window_start"]) + timedelta(seconds=window) - now).total_seconds()
        for r in rows
        if r["failures"] > limits[r["key"]]
    }


def signin_forget(engine: Engine, cleared: str, uncounted: str, window: float, now: datetime) -> None:
    """After a success: drop the `cleared` key (the user), take the attempt back from the
    `uncounted` one (the address), and drop every window that has run out."""
    cutoff = db.stamp(now - timedelta(seconds=window))
    key = signin_failures.c.key
    with db.writing(engine) as conn:
        conn.execute(signin_failures.delete().where(sa.or_(key == cleared, signin_failures.c.window_start < cutoff)))
        conn.execute(
            signin_failures.update()
            .where(key == uncounted, signin_failures.c.failures > 0)
            .values(failures=signin_failures.c.failures - 1)
        )


def revoke_session(engine: Engine, sid: str, expires: datetime) -> None:
    try:
        with db.writing(engine) as conn:
            conn.execute(revoked_sessions.delete().where(revoked_sessions.c.expires_at < db.now()))
            conn.execute(revoked_sessions.insert().values(sid=sid, expires_at=db.stamp(expires)))
    except IntegrityError:
        pass  # signed out twice


def session_revoked(engine: Engine, sid: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(sa.select(revoked_sessions.c.sid).where(revoked_sessions.c.sid == sid)).first() is not None


# -- bundles ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewBundle:
    """An upload's rows as prepared before its transaction."""

    row: dict[str, Any]  # bundle_row(): the record the upload is answered with
    view: str
    rewrite_blob: Callable[[], object]  # writes the blob again (retention deleted it meanwhile)


_STORED = sa.select(bundles).where(bundles.c.id.in_(sa.bindparam("ids", expanding=True)))


def insert_bundles(
    engine: Engine,
    new: Sequence[NewBundle],
    counted: Callable[[sa.Connection, list[dict[str, Any]]], object] | None = None,
) -> list[tuple[dict[str, Any], bool]]:
    """Store bundle rows and their views (bundleview.py) in one transaction, each statement
    once for all rows (group_commit.py); per bundle (record, True) if new, (stored record,
    False) if its id was stored before or earlier in `new`.

    In the same transaction: the blobs' claims against retention (`rewrite_blob` runs for a
    blob retention deleted meanwhile), the probe requests the bundles answer are closed,
    `counted(conn, rows)` for the new rows (their quota and fleet queue entries: counted once
    stored) and the day's counts. The primary key decides under concurrency: when another
    server or process stores one of the ids between this transaction's look and its insert,
    nothing is stored and IntegrityError is raised; a lone bundle instead reads the winner's
    row and answers (record, False)."""
    ids = [n.row["id"] for n in new]
    fresh: dict[str, NewBundle] = {}
    try:
        with db.writing(engine) as conn:
            stored = {r["id"]: dict(r) for r in conn.execute(_STORED, {"ids": ids}).mappings()}
            for n in new:
                if n.row["id"] not in stored:
                    fresh.setdefault(n.row["id"], n)
            if fresh:
                _insert_new(conn, list(fresh.values()), counted)
    except IntegrityError:
        existing = get_bundle(engine, ids[0]) if len(new) == 1 else None
        if existing is None:
            raise
        return [(existing, False)]
    answers, answered = [], set()
    for n in new:
        bundle_id = n.row["id"]
        if bundle_id in stored:
            answers.append((stored[bundle_id], False))
        else:
            answers.append((fresh[bundle_id].row, bundle_id not in answered))
            answered.add(bundle_id)
    return answers


def _insert_new(
    conn: sa.Connection, new: list[NewBundle], counted: Callable[[sa.Connection, list[dict[str, Any]]], object] | None
) -> None:
    rows = [n.row for n in new]
    conn.execute(bundles.insert(), rows)  # values as parameters: the statement is built once
    conn.execute(bundle_views.insert(), [{"bundle_id": n.row["id"], "view": n.view} for n in new])
    deleted = retention.claim_blobs(conn, {row["sha256"] for row in rows})
    for digest in deleted:
        next(n for n in new if n.row["sha256"] == digest).rewrite_blob()
    for row in rows:
        if row["command_id"]:
            conn.execute(
                commands.update()
                .where(commands.c.id == row["command_id"], commands.c.terminal_id == row["terminal_id"], commands.c.status != "done")
                .values(status="done", done_at=row["received_at"], bundle_id=row["id"])
            )
    if counted is not None:
        counted(conn, rows)
    # Last: every upload of a day adds to the same rows (the day's model, category, ...),
    # and on PostgreSQL the next upload waits for their lock until this one commits.
    daily.count(conn, rows)


def bundle_row(index: dict[str, Any], digest: str, size: int, received_at: str) -> dict[str, Any]:
    """The bundles row insert_bundles stores (the record an upload is answered with)."""
    return dict(index, sha256=digest, size=size, received_at=received_at)


def bundle_view(engine: Engine, bundle_id: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(sa.select(bundle_views.c.view).where(bundle_views.c.bundle_id == bundle_id)).scalar()


def keep_bundle_view(engine: Engine, bundle_id: str, view: str) -> None:
    """For a bundle stored before views were kept: its view, made once on first reading."""
    try:
        with db.writing(engine) as conn:
            conn.execute(bundle_views.insert().values(bundle_id=bundle_id, view=view))
    except IntegrityError:
        pass  # another reader made it first


def get_bundle(engine: Engine, bundle_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(bundles).where(bundles.c.id == bundle_id.lower())).mappings().first()
    return dict(row) if row else None


@dataclass(frozen=True)
class BundleFilter:
    terminal: str | None = None
    code: str | None = None
    cause: str | None = None
    category: str | None = None
    model: str | None = None
    firmware: str | None = None
    verdict: str | None = None
    since: str | None = None
    until: str | None = None
    held: bool | None = None

    def clauses(self) -> list[Any]:
        """Exact matches, except model and firmware: case-insensitive prefixes ("a9" finds
        A920 and A930), as support types them from a label or a complaint; verdict `hold`
        (or held True): the bundles a fleet incident holds (their fleet_dispatch), whatever
        the terminal said; held False: those no incident holds."""
        out: list[Any] = []
        for column, value in (
            (bundles.c.terminal_id, self.terminal),
            (bundles.c.code, self.code),
            (bundles.c.top_cause, self.cause),
            (bundles.c.top_category, self.category),
            (bundles.c.verdict, None if self.verdict == "hold" else self.verdict),
        ):
            if value:
                out.append(column == value)
        if self.verdict == "hold" or self.held is not None:
            held = sa.select(bundle_fleet.c.bundle_id).where(
                bundle_fleet.c.bundle_id == bundles.c.id, bundle_fleet.c.hold_incident.is_not(None)
            )
            out.append(held.exists() if self.verdict == "hold" or self.held else ~held.exists())
        for column, value in ((bundles.c.model, self.model), (bundles.c.firmware, self.firmware)):
            if value:
                out.append(sa.func.lower(column).startswith(value.lower(), autoescape=True))
        if self.since:
            out.append(bundles.c.created_at >= self.since)
        if self.until:
            out.append(bundles.c.created_at < self.until)
        return out


def encode_cursor(row: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps([row["created_at"], row["id"]]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        created, bundle_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not (isinstance(created, str) and STAMP.fullmatch(created)):
            raise TypeError
        if not (isinstance(bundle_id, str) and UUID.fullmatch(bundle_id)):
            raise TypeError
    except (ValueError, TypeError, UnicodeError):
        raise StoreError("bad_cursor", "cursor is not one this server issued") from None
    return created, bundle_id


def list_bundles(
    engine: Engine, flt: BundleFilter, limit: int, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first; the cursor resumes after the last row of the previous page."""
    query = sa.select(bundles).where(*flt.clauses())
    if cursor:
        created, bundle_id = decode_cursor(cursor)
        query = query.where(
            sa.or_(
                bundles.c.created_at < created,
                sa.and_(bundles.c.created_at == created, bundles.c.id < bundle_id),
            )
        )
    query = query.order_by(bundles.c.created_at.desc(), bundles.c.id.desc()).limit(limit + 1)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1]) if more and rows else None


def stats(engine: Engine, days: int, top: int = 10) -> dict[str, Any]:
    """Counts of the bundles created in the last `days` UTC days, today included."""
    end = datetime.now(UTC)
    first, last = daily.days_ending(end.date(), days)
    with engine.connect() as conn:
        per_day = daily.per_day(conn, first, last)
        top_of = {name: daily.top(conn, dim, first, last, top) for name, dim in STATS.items()}
    return {
        "since": db.stamp(datetime.combine(first, datetime.min.time(), UTC)),
        "until": db.stamp(end),
        "total": sum(d["count"] for d in per_day),
        **top_of,
        "per_day": per_day,
    }


# -- commands (probe requests) -------------------------------------------------------------


def add_command(engine: Engine, terminal_id: str, probes: list[str] | None, code: str | None, by: str) -> dict[str, Any]:
    if get_terminal(engine, terminal_id) is None:
        raise StoreError("no_terminal", f"no terminal {terminal_id!r}")
    row = {
        "id": str(uuid.uuid4()),
        "terminal_id": terminal_id,
        "probes": None if probes is None else json.dumps(probes),
        "code": code,
        "status": "queued",
        "requested_by": by,
        "created_at": db.now(),
        "delivered_at": None,
        "done_at": None,
        "bundle_id": None,
    }
    with engine.begin() as conn:
        conn.execute(commands.insert().values(**row))
    return command_view(row)


def next_command(engine: Engine, terminal_id: str, redeliver_seconds: float) -> dict[str, Any] | None:
    """Hand out the oldest open request: queued, or delivered long ago and never answered.

    The conditional UPDATE makes a hand-out atomic when two polls race.
    """
    stale = db.stamp(datetime.now(UTC) - timedelta(seconds=redeliver_seconds))
    open_ = sa.or_(
        commands.c.status == "queued",
        sa.and_(commands.c.status == "delivered", commands.c.delivered_at < stale),
    )
    for _ in range(5):
        with engine.begin() as conn:
            row = (
                conn.execute(
                    sa.select(commands)
                    .where(commands.c.terminal_id == terminal_id, open_)
                    .order_by(commands.c.created_at, commands.c.id)
                    .limit(1)
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            taken = conn.execute(
                commands.update()
                .where(commands.c.id == row["id"], open_)
                .values(status="delivered", delivered_at=db.now())
            ).rowcount
        if taken:
            return command_view(dict(row, status="delivered"))
    return None


def list_commands(engine: Engine, terminal_id: str, limit: int = 50) -> list[dict[str, Any]]:
    query = (
        sa.select(commands)
        .where(commands.c.terminal_id == terminal_id)
        .order_by(commands.c.created_at.desc(), commands.c.id.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        return [command_view(dict(r)) for r in conn.execute(query).mappings()]


def command_view(row: dict[str, Any]) -> dict[str, Any]:
    return dict(row, probes=None if row["probes"] is None else json.loads(row["probes"]))
