"""The server's state and the operations the API and the pages share (sync; run in threads)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from remote.server import admission, auth, budgets, bundleview, db, fleet_queue, ingest, quotas, shedding, signin, store
from remote.server.blobs import BlobStore, Deadlines, open_store
from remote.server.budget import ByteBudget
from remote.server.fleet.engine import Fleet
from remote.server.group_commit import GroupCommit
from remote.server.metrics import Metrics
from remote.server_settings import ServerSettings

BASIC_CACHE_SECONDS = 60.0
# Threads for uploads' and heartbeats' blocking parts (each also waits its turn: shedding.py,
# ByteBudget). As many as anyio's pool they ran in before: a silent blob store holds one per
# upload for its deadline, and with 16, uploads queued behind them waited a second deadline
# (6 s, tests/reliability/test_blob_store_hangs.py).
TERMINAL_THREADS = 40
Result = TypeVar("Result")
VIEW_BUILDERS = 2  # bundle views redacted at once (each may take ~50 MB and seconds of CPU)


@dataclass(frozen=True)
class User:
    name: str
    role: str
    uid: str = ""  # the identity and generation a session of this user is issued for (auth.py)
    generation: int = 0

    @classmethod
    def of(cls, row: dict[str, Any]) -> User:
        return cls(row["name"], row["role"], row["uid"] or "", row["generation"] or 0)


class Service:
    def __init__(self, db_url: str, data_dir: Path, settings: ServerSettings) -> None:
        self.settings = settings
        self.engine: Engine = db.make_engine(db_url)
        budgets.install(self.engine, settings)
        db.create_schema(self.engine)
        self.metrics = Metrics()
        self.blobs: BlobStore = open_blobs(settings, data_dir, self.metrics)
        self.limits = ingest.Limits.of(settings)
        self.quota_limits = quotas.Limits.of(settings)
        self.ingest_budget = ByteBudget(settings.ingest_memory_mib << 20)
        self.gate = shedding.IngestGate(settings)
        self._view_builders = threading.BoundedSemaphore(VIEW_BUILDERS)
        self.fleet = Fleet(self.engine, settings, self.metrics)
        self.metrics.gauge("posdiag_fleet_incidents_open", "Open fleet incidents, by kind.", self.fleet.open_counts)
        self.fleet_queue = fleet_queue.Drainer(self.engine, self.fleet, self.metrics, settings.fleet_queue_threads)
        writers = 1 if self.engine.dialect.name == "sqlite" else settings.ingest_slots  # SQLite admits one writer
        self.uploads = GroupCommit("uploads", self.store_uploads, settings, self.metrics, writers)
        self.heartbeats = GroupCommit("heartbeats", functools.partial(fleet_queue.enqueue, self.engine), settings, self.metrics, writers)
        self.signer = auth.Signer(store.server_secret(self.engine))
        self._basic_cache: dict[str, tuple[float, str, int]] = {}  # key -> (until, uid, generation)
        self._cache_lock = threading.Lock()
        self._blocked: dict[str, float] = {}  # signin key -> monotonic time until which it is refused
        self._decoy = auth.hash_password(auth.new_nonce())
        workers, queue = settings.password_hash_workers, settings.password_hash_queue
        # One client address may fill at most half the hashing queue: a flood leaves the rest to others.
        self.hash_pool = signin.BoundedPool(workers, queue, max(1, (workers + queue) // 2), lower_priority=True, name="scrypt")
        self.count_pool = signin.BoundedPool(1, signin.COUNTING_QUEUE, name="signin-count")
        self.health_pool = ThreadPoolExecutor(2, thread_name_prefix="healthz")
        self.terminal_pool = ThreadPoolExecutor(TERMINAL_THREADS, thread_name_prefix="terminal")

    def close(self) -> None:
        self.hash_pool.close()
        self.count_pool.close()
        self.health_pool.shutdown(wait=False, cancel_futures=True)
        self.terminal_pool.shutdown(wait=False, cancel_futures=True)
        self.uploads.stop()
        self.heartbeats.stop()
        self.fleet_queue.stop()
        self.fleet.stop()
        self.engine.dispose()

    async def for_terminal(self, fn: Callable[..., Result], *args: Any) -> Result:
        """`fn(*args)` in the terminals' own threads, in the request's context (its statement
        timeout): uploads and heartbeats hop to a thread two or three times each, and
        anyio's hop (run_in_threadpool) cost the event loop 7 % of an upload's CPU; a herd of
        terminals also never takes the threads pages run in."""
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self.terminal_pool, call)

    def ping(self) -> None:
        """SELECT 1, for /healthz."""
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    # -- who is asking ------------------------------------------------------------------

    def _cache_key(self, name: str, password: str) -> str:
        return hashlib.sha256(self.signer.secret + f"{name}\x00{password}".encode()).hexdigest()

    def remembered_pair(self, name: str, password: str) -> tuple[str, int] | None:
        """(uid, generation) of a pair this process verified within the last minute (keyed by
        a salted hash, never the password), so HTTP basic clients do not pay scrypt per
        request; current_user then asks the database whether it still stands."""
        with self._cache_lock:
            hit = self._basic_cache.get(self._cache_key(name, password))
        return (hit[1], hit[2]) if hit and hit[0] > time.monotonic() else None

    def current_user(self, uid: str, generation: int) -> User | None:
        """The user of this identity if still at this generation: one primary-key read, so
        that a removal, password or role change made on any server stops a remembered pair
        or a session from the next request on (issue 21: a removed user's basic pair worked
        for up to 60 s)."""
        row = store.user_by_id(self.engine, uid) if uid else None
        if row is None or (row["generation"] or 0) != generation:
            return None
        return User.of(row)

    def user(self, name: str) -> User | None:
        row = store.get_user(self.engine, name)
        return User.of(row) if row else None

    def verify_password(self, name: str, password: str) -> User | None:
        """scrypt, slow on purpose: run it in signin's pool, never on the event loop."""
        row = store.get_user(self.engine, name)
        # An unknown name costs the same scrypt as a known one: timing does not tell names.
        stored = row["password_hash"] if row else self._decoy
        if not auth.check_password(password, stored) or row is None:
            return None
        user = User.of(row)
        with self._cache_lock:
            if len(self._basic_cache) > 1000:
                self._basic_cache.clear()
            until = time.monotonic() + BASIC_CACHE_SECONDS
            self._basic_cache[self._cache_key(name, password)] = (until, user.uid, user.generation)
        return user

    def signin_keys(self, name: str, host: str | None) -> dict[str, int]:
        """The failure counters an attempt is checked against, with their limits."""
        s = self.settings
        return {
            f"user:{name[:128]}": s.signin_max_failures_per_user,
            f"addr:{auth.address_key(host)}": s.signin_max_failures_per_address,
        }

    def known_wait(self, name: str, host: str | None) -> float:
        """Seconds this process already knows the attempt must wait (no database read): a
        flood past its limit is refused at the cost of a dict lookup."""
        now = time.monotonic()
        with self._cache_lock:
            return max([0.0] + [self._blocked.get(key, now) - now for key in self.signin_keys(name, host)])

    def signin_attempt(self, name: str, host: str | None) -> float:
        """Count this attempt; seconds it must wait instead (0: check the password)."""
        waits = store.signin_attempt(
            self.engine, self.signin_keys(name, host), self.settings.signin_window_seconds, datetime.now(UTC)
        )
        with self._cache_lock:
            if len(self._blocked) > 10000:
                self._blocked.clear()
            for key, wait in waits.items():  # re-read at least every 5 s: a success elsewhere clears a user
                self._blocked[key] = time.monotonic() + min(wait, 5.0)
        return max(waits.values(), default=0.0)

    def check_password(self, name: str, password: str, host: str | None) -> User | None:
        """scrypt for an attempt already counted (signin_attempt); a success clears the
        user's count. Run in signin's hashing pool."""
        user = self.verify_password(name, password)
        if user is not None:
            self.signin_succeeded(name, host)
        return user

    def signin_succeeded(self, name: str, host: str | None) -> None:
        user_key, address_key = self.signin_keys(name, host)
        store.signin_forget(self.engine, user_key, address_key, self.settings.signin_window_seconds, datetime.now(UTC))

    def terminal_for_token(self, token: str) -> dict[str, Any] | None:
        """The active terminal of a bearer token, asked of the database on every request
        (one lookup on the unique token_sha256 index): a revocation, made on any server,
        is refused from the next request on. No cache: a cached match outlived revocation."""
        return store.terminal_for_token(self.engine, token)

    def user_by_session(self, cookie: str | None) -> User | None:
        """None when signed out, and when the user was removed (a user made again under the
        name is another identity), or changed password or role since the cookie was issued."""
        session = self.signer.read_session(cookie)
        if session is None or store.session_revoked(self.engine, session.sid):
            return None
        return self.current_user(session.uid, session.generation)

    def session_cookie(self, user: User) -> str:
        """A new session of `user` as it is now, for [server] session_hours."""
        return self.signer.session_cookie(user.uid, user.generation, self.settings.session_hours * 3600)

    def sign_out(self, cookie: str | None) -> None:
        """The session ends on every server now, not when its cookie would have expired."""
        session = self.signer.read_session(cookie)
        if session is not None:
            store.revoke_session(self.engine, session.sid, datetime.fromtimestamp(session.expires, UTC))

    # -- ingest -------------------------------------------------------------------------

    def shed_when_behind(self) -> None:
        """503 + Retry-After while the fleet queue is past its bound (shedding.py)."""
        shedding.check_queue(self.settings, self.fleet_queue.last.depth)

    def ingest(self, body: bytes, terminal: dict[str, Any], idempotency_key: str | None) -> tuple[dict[str, Any], bool]:
        return self.store_upload(self.prepare_upload(body, terminal, idempotency_key))

    def prepare_upload(self, body: bytes, terminal: dict[str, Any], idempotency_key: str | None) -> PreparedUpload:
        """What needs no database turn: the checks, the view and the blob (the API holds a
        turn at the database only for `store_upload`, so a slow store never holds one)."""
        s = self.settings
        bundle = ingest.validate(body, terminal["token_sha256"], terminal["id"], self.limits)
        if idempotency_key and idempotency_key.strip().lower() != bundle.id:
            raise ingest.IngestError(422, "idempotency_key_mismatch", "Idempotency-Key differs from the manifest's bundle_id")
        received = datetime.now(UTC)
        index = dict(
            bundle.index(),
            clock_flag=ingest.clock_flag(bundle.created, received, s.clock_ahead_seconds, s.clock_behind_days),
        )
        with self._view_builders:  # redaction is CPU- and memory-hungry: a few at a time
            view = bundleview.build(bundle.scan, bundle.parsed)
        digest = self.blobs.put(body)  # same bytes again: already there, a no-op
        index["created_at"], clamped = self.fleet.clamp(index["created_at"], db.stamp(received))  # event time
        return PreparedUpload(body, terminal, bundle, index, view, digest, clamped, received)

    def store_upload(self, up: PreparedUpload) -> tuple[dict[str, Any], bool]:
        """The prepared upload's rows in a transaction of its own; (record, True) when new."""
        return self.uploads.write_now(up)

    def store_uploads(self, ups: Sequence[PreparedUpload]) -> list[tuple[dict[str, Any], bool] | ingest.IngestError]:
        """Prepared uploads' rows in one transaction (group_commit.py): per upload (record,
        True) when new, (stored record, False) when its id was stored before, or the
        IngestError it is answered with (409: another terminal's id)."""
        new = []
        for up in ups:
            row = store.bundle_row(up.index, up.digest, len(up.body), db.stamp(up.received))
            new.append(store.NewBundle(row, up.view, functools.partial(self.blobs.put, up.body)))
        entries: dict[str, dict[str, Any]] = {}  # made before the transaction
        for up, n in zip(ups, new, strict=True):
            if n.row["id"] not in entries:  # of an id sent twice in the batch, the first is the one stored
                entries[n.row["id"]] = fleet_queue.bundle_entry(up.bundle, n.row, up.clamped)

        def counted(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:  # in the bundles' own transaction
            quotas.take(conn, [(row["terminal_id"], row["size"]) for row in rows], self.quota_limits)
            fleet_queue.add(conn, [entries[row["id"]] for row in rows])

        try:
            stored = store.insert_bundles(self.engine, new, counted)
        except quotas.OverQuota as exc:
            if len(ups) > 1:
                raise  # group_commit writes each alone: only the terminal past its quota is refused
            admission.refused(self, ups[0].terminal["id"], exc)
        answers: list[tuple[dict[str, Any], bool] | ingest.IngestError] = []
        for up, (record, fresh) in zip(ups, stored, strict=True):
            if record["terminal_id"] != up.terminal["id"]:
                answers.append(ingest.IngestError(409, "bundle_id_taken", "another terminal's bundle has this id"))
            else:
                answers.append((record, fresh))
        if any(fresh for _, fresh in stored):  # counted by the fleet queue's worker, after the answer (fleet_queue.py)
            self.fleet_queue.nudge()
        return answers

    # -- reading a stored bundle ----------------------------------------------------------

    def detail(self, record: dict[str, Any]) -> dict[str, Any]:
        stored = store.bundle_view(self.engine, record["id"])
        if stored is None:  # stored before views were kept: made once, now
            stored = bundleview.build(ingest.scan(self.blobs.get(record["sha256"]), self.limits))
            store.keep_bundle_view(self.engine, record["id"], stored)
        return {"record": record, **bundleview.parse(stored)}


@dataclass(frozen=True)
class PreparedUpload:
    body: bytes
    terminal: dict[str, Any]
    bundle: ingest.Bundle
    index: dict[str, Any]
    view: str
    digest: str
    clamped: bool
    received: datetime


def open_blobs(settings: ServerSettings, data_dir: Path, metrics: Metrics | None = None) -> BlobStore:
    """The blob store [server.blobs] names (the CLI's --blobs lands there too)."""
    b = settings.blobs
    options = {
        "endpoint_url": b.endpoint_url,
        "region": b.region,
        "access_key_id": b.access_key_id,
        "secret_access_key": b.secret_access_key,
    }
    deadlines = Deadlines(b.operation_timeout_seconds, b.breaker_failures, b.breaker_open_seconds)
    return open_store(b.url, data_dir, options, metrics, deadlines)
