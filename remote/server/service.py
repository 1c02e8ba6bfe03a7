"""The server's state and the operations the API and the pages share (sync; run in threads)."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from remote import wire
from remote.redact import Redactor, redact_text
from remote.server import auth, db, ingest, store
from remote.server.blobs import BlobStore
from remote.server.metrics import Metrics
from remote.server.settings import ServerSettings

BASIC_CACHE_SECONDS = 60.0


@dataclass(frozen=True)
class User:
    name: str
    role: str


class Service:
    def __init__(self, db_url: str, data_dir: Path, settings: ServerSettings) -> None:
        self.settings = settings
        self.engine: Engine = db.make_engine(db_url)
        db.create_schema(self.engine)
        self.blobs = BlobStore(data_dir / "blobs")
        self.metrics = Metrics()
        self.signer = auth.Signer(store.server_secret(self.engine))
        self._basic_cache: dict[str, tuple[float, User]] = {}
        self._cache_lock = threading.Lock()
        self._decoy = auth.hash_password(auth.new_nonce())

    def close(self) -> None:
        self.engine.dispose()

    # -- who is asking ------------------------------------------------------------------

    def user_by_password(self, name: str, password: str) -> User | None:
        """scrypt is slow on purpose; a verified pair is remembered for a minute (keyed by
        a salted hash, never the password) so HTTP basic clients do not pay it per request."""
        key = hashlib.sha256(self.signer.secret + f"{name}\x00{password}".encode()).hexdigest()
        now = time.monotonic()
        with self._cache_lock:
            hit = self._basic_cache.get(key)
        if hit and hit[0] > now:
            return hit[1]
        row = store.get_user(self.engine, name)
        # An unknown name costs the same scrypt as a known one: timing does not tell names.
        stored = row["password_hash"] if row else self._decoy
        if not auth.check_password(password, stored) or row is None:
            return None
        user = User(row["name"], row["role"])
        with self._cache_lock:
            if len(self._basic_cache) > 1000:
                self._basic_cache.clear()
            self._basic_cache[key] = (now + BASIC_CACHE_SECONDS, user)
        return user

    def terminal_for_token(self, token: str) -> dict[str, Any] | None:
        """The active terminal of a bearer token, asked of the database on every request
        (one lookup on the unique token_sha256 index): a revocation, made on any server,
        is refused from the next request on. No cache: a cached match outlived revocation."""
        return store.terminal_for_token(self.engine, token)

    def user_by_session(self, cookie: str | None) -> User | None:
        session = self.signer.read_session(cookie)
        if session is None:
            return None
        row = store.get_user(self.engine, session.user)
        return User(row["name"], row["role"]) if row else None

    # -- ingest -------------------------------------------------------------------------

    def ingest(self, body: bytes, terminal: dict[str, Any], idempotency_key: str | None) -> tuple[dict[str, Any], bool]:
        s = self.settings
        bundle = ingest.validate(body, terminal["token_sha256"], terminal["id"], s.max_members, s.max_unpacked_bytes)
        if idempotency_key and idempotency_key.strip().lower() != bundle.id:
            raise ingest.IngestError(422, "idempotency_key_mismatch", "Idempotency-Key differs from the manifest's bundle_id")
        digest = self.blobs.put(body)  # same bytes again: already there, a no-op
        existing, new = store.insert_bundle(self.engine, bundle.index(), digest, len(body))
        if existing["terminal_id"] != terminal["id"]:
            raise ingest.IngestError(409, "bundle_id_taken", "another terminal's bundle has this id")
        return existing, new

    # -- reading a stored bundle ----------------------------------------------------------

    def members(self, record: dict[str, Any]) -> dict[str, bytes]:
        body = self.blobs.get(record["sha256"])
        return dict(ingest.unpack(body, self.settings.max_members, self.settings.max_unpacked_bytes))

    def detail(self, record: dict[str, Any]) -> dict[str, Any]:
        files = self.members(record)
        # The terminal redacts before anything is written; redacting again here means a
        # bundle from an agent that missed something still shows no card data to people.
        logs = {
            name.removeprefix("logs/"): redact_text(data.decode("utf-8", "replace"))[0]
            for name, data in files.items()
            if name.startswith("logs/")
        }
        again = Redactor()
        return {
            "record": record,
            "manifest": _cleaned(_manifest(files.get(wire.MANIFEST))),
            "diagnosis": _cleaned(again.data(_json(files.get("diagnosis.json"), {}))),
            "probes": _cleaned(again.data(_json(files.get("probes.json"), None))),
            "system": _cleaned(again.data(_json(files.get("system.json"), None))),
            "logs": logs,
        }


def _cleaned(value: Any) -> Any:
    """Every string (keys too) without lone surrogates and NULs: JSON text may carry
    `\\ud800`, which no UTF-8 answer can. Depth is bounded by ingest.MAX_JSON_DEPTH."""
    if isinstance(value, str):
        return ingest.clean(value)
    if isinstance(value, dict):
        return {ingest.clean(k) if isinstance(k, str) else k: _cleaned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cleaned(v) for v in value]
    return value


def _manifest(data: bytes | None) -> Any:
    """The manifest with its terminal's free text masked like the stored record (the rest
    is ids, hashes and counts, which Redactor.data would take for secrets by their keys)."""
    manifest = _json(data, {})
    if isinstance(manifest, dict) and isinstance(manifest.get("terminal"), dict):
        manifest["terminal"] = {
            k: ingest.shown(v) if isinstance(v, str) else v for k, v in manifest["terminal"].items()
        }
    return manifest


def _json(data: bytes | None, default: Any) -> Any:
    if data is None:
        return default
    try:
        return ingest.load_json(data)
    except ValueError:
        return default
