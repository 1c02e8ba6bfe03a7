"""Check an uploaded bundle before anything of it is stored.

Order, cheapest and least trusting first: the gzip/tar container (400), member paths and
types, member count, unpacked size (a gzip bomb is stopped by counting decompressed bytes,
never by trusting a header), then manifest.json's schema (422), its terminal against the
token's (403), the signature, and every listed member's size and sha256 (422).
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io
import json
import math
import posixpath
import tarfile
import zlib
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from remote import wire
from remote.redact import redact_text
from remote.server import auth, db

MAX_JSON_DEPTH = 64  # what the agent writes is a few levels deep; pages and redaction recurse


class IngestError(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class ManifestTerminal(_Loose):
    id: str = Field(min_length=1, max_length=128)
    serial: str = Field(max_length=128)
    model: str = Field(max_length=128)
    firmware: str = Field(max_length=128)
    app_version: str = Field(max_length=128)


class ManifestTrigger(_Loose):
    kind: Literal["error", "manual", "remote", "scheduled"]
    code: str | None = Field(default=None, max_length=64)
    scheme: str | None = Field(default=None, max_length=32)
    command_id: str | None = Field(default=None, max_length=36)


class ManifestFile(BaseModel):
    path: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Manifest(_Loose):
    schema_: Literal[wire.BUNDLE_SCHEMA] = Field(alias="schema")
    bundle_id: str = Field(pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
    terminal: ManifestTerminal
    agent_version: str = Field(max_length=64)
    created_at: str
    trigger: ManifestTrigger
    files: list[ManifestFile]


@dataclass(frozen=True)
class Bundle:
    manifest: Manifest
    manifest_raw: dict[str, Any]
    members: dict[str, bytes]
    diagnosis: dict[str, Any]
    created_at: str

    @property
    def id(self) -> str:
        return self.manifest.bundle_id.lower()

    def index(self) -> dict[str, Any]:
        """The columns a support person searches by."""
        m, trigger = self.manifest, self.manifest.trigger
        error = self.diagnosis.get("error") if isinstance(self.diagnosis.get("error"), dict) else {}
        causes = self.diagnosis.get("causes")
        top = causes[0] if isinstance(causes, list) and causes and isinstance(causes[0], dict) else {}
        dispatch = self.diagnosis.get("dispatch") if isinstance(self.diagnosis.get("dispatch"), dict) else {}
        confidence = top.get("confidence")
        return {
            "id": self.id,
            "terminal_id": m.terminal.id,
            "serial": shown(m.terminal.serial),
            "model": shown(m.terminal.model),
            "firmware": shown(m.terminal.firmware),
            "app_version": shown(m.terminal.app_version),
            "agent_version": shown(m.agent_version),
            "trigger_kind": trigger.kind,
            "code": _text(error.get("code"), 64) or _text(trigger.code, 64),
            "scheme": _text(error.get("scheme"), 32) or _text(trigger.scheme, 32),
            "command_id": _text((trigger.command_id or "").lower(), 36),
            "top_cause": _text(top.get("id"), 128),
            "top_category": _text(top.get("category"), 32),
            "top_confidence": _finite(confidence),
            "verdict": _text(dispatch.get("verdict"), 16),
            "created_at": self.created_at,
        }


def load_json(data: bytes) -> Any:
    """JSON, with NaN, Infinity and numbers too big for a float read as null.

    Python's json writes and reads those (agent.bundle uses it), but they are not JSON and
    could not be answered back out as JSON: a sensor's NaN must not cost the bundle. Nesting
    deep enough to exhaust the stack is refused."""
    try:
        value = json.loads(data, parse_constant=lambda _name: None, parse_float=_finite_or_none)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH}")
    return value


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _finite(value: Any) -> float | None:
    """A JSON number as a float column; None for other types and integers beyond a float."""
    if not isinstance(value, int | float):
        return None
    try:
        return _finite_or_none(str(float(value)))
    except OverflowError:
        return None


def _finite_or_none(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _text(value: Any, limit: int) -> str | None:
    return (clean(value)[:limit] or None) if isinstance(value, str) else None


def shown(text: str) -> str:
    """A free-text manifest field as the API and pages show it: cleaned, card data masked
    (the agent redacts logs, not its configured model or firmware strings)."""
    return redact_text(clean(text))[0]


def clean(text: str) -> str:
    """A string either database stores: no NUL (PostgreSQL refuses it), no lone surrogate
    (JSON allows `\\ud800`; UTF-8 does not)."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


class _CountingReader(io.RawIOBase):
    """Decompresses on demand and refuses to produce more than `limit` bytes."""

    def __init__(self, body: bytes, limit: int) -> None:
        self._gz = gzip.GzipFile(fileobj=io.BytesIO(body), mode="rb")
        self._left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        want = min(len(buf), self._left + 1)
        chunk = self._gz.read(want)
        self._left -= len(chunk)
        if self._left < 0:
            raise IngestError(400, "too_large_unpacked", "bundle unpacks to more than the server accepts")
        buf[: len(chunk)] = chunk
        return len(chunk)


def unpack(body: bytes, max_members: int, max_unpacked: int) -> list[tuple[str, bytes]]:
    """The members in archive order; 400 for anything that is not a plain, safe tar.gz."""
    if body[:2] != b"\x1f\x8b":
        raise IngestError(400, "not_gzip", "body is not gzip data")
    out: list[tuple[str, bytes]] = []
    total = 0
    try:
        reader = io.BufferedReader(_CountingReader(body, max_unpacked + 512 * (max_members + 4) * 2))
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for member in tar:
                if len(out) >= max_members:
                    raise IngestError(400, "too_many_members", f"more than {max_members} members")
                name = _safe_name(member)
                total += member.size
                if total > max_unpacked:
                    raise IngestError(400, "too_large_unpacked", "bundle unpacks to more than the server accepts")
                fh = tar.extractfile(member)
                data = fh.read() if fh is not None else b""
                if len(data) != member.size:
                    raise IngestError(400, "not_tar", f"member {name!r} is cut short")
                out.append((name, data))
    except IngestError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError, UnicodeError) as exc:
        raise IngestError(400, "not_tar", f"body is not a complete tar.gz ({type(exc).__name__})") from None
    if not out:
        raise IngestError(400, "not_tar", "empty archive")
    return out


def _safe_name(member: tarfile.TarInfo) -> str:
    name = member.name
    if not member.isreg():
        raise IngestError(400, "unsafe_member", f"member {name[:80]!r} is not a regular file (link, device or dir)")
    norm = posixpath.normpath(name)
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or norm != name
        or norm == ".."
        or norm.startswith("../")
        or len(name) > 255
    ):
        raise IngestError(400, "unsafe_member", f"member path {name[:80]!r} is absolute, not normalised or escapes")
    return name


def validate(body: bytes, token_sha256: str, terminal_id: str, max_members: int, max_unpacked: int) -> Bundle:
    members = unpack(body, max_members, max_unpacked)
    names = [name for name, _ in members]
    if names[0] != wire.MANIFEST:
        raise IngestError(422, "bad_layout", "the first member must be manifest.json")
    if names[-1] != wire.SIGNATURE:
        raise IngestError(422, "bad_layout", "the last member must be manifest.sig")
    if len(set(names)) != len(names):
        raise IngestError(422, "bad_layout", "a member name occurs twice")
    files = dict(members)
    manifest_bytes = files[wire.MANIFEST]
    try:
        raw = load_json(manifest_bytes)
        manifest = Manifest.model_validate(raw)
        created_at = db.stamp(db.parse_time(manifest.created_at))
    except (ValueError, OverflowError, ValidationError) as exc:
        raise IngestError(422, "bad_manifest", _short(exc)) from None
    if manifest.terminal.id != terminal_id:
        raise IngestError(403, "wrong_terminal", "the manifest names another terminal than the token's")
    expected = auth.manifest_signature(token_sha256, manifest_bytes)
    if not _same(files[wire.SIGNATURE].strip(), expected):
        raise IngestError(422, "bad_signature", "manifest.sig does not match manifest.json and the terminal's token")
    _check_files(manifest, files)
    if "diagnosis.json" not in files:
        raise IngestError(422, "missing_member", "diagnosis.json is missing")
    parsed = {}
    for name in ("diagnosis.json", "probes.json", "system.json"):
        if name in files:
            try:
                parsed[name] = load_json(files[name])
            except ValueError as exc:
                raise IngestError(422, "bad_member", f"{name} is not JSON ({str(exc)[:100]})") from None
    diagnosis = parsed["diagnosis.json"]
    if not isinstance(diagnosis, dict):
        raise IngestError(422, "bad_member", "diagnosis.json is not a JSON object")
    return Bundle(manifest, raw, files, diagnosis, created_at)


def _same(sig: bytes, expected: str) -> bool:
    try:
        return hmac.compare_digest(sig.decode("ascii").lower(), expected)
    except (UnicodeError, TypeError):
        return False


def _check_files(manifest: Manifest, files: dict[str, bytes]) -> None:
    listed = {f.path: f for f in manifest.files}
    if len(listed) != len(manifest.files):
        raise IngestError(422, "bad_manifest", "files lists a path twice")
    present = set(files) - {wire.MANIFEST, wire.SIGNATURE}
    missing = sorted(set(listed) - present)
    if missing:
        raise IngestError(422, "missing_member", f"listed but absent: {', '.join(missing)[:200]}")
    unlisted = sorted(present - set(listed))
    if unlisted:
        raise IngestError(422, "unlisted_member", f"present but not in the manifest: {', '.join(unlisted)[:200]}")
    for path, entry in listed.items():
        data = files[path]
        if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            raise IngestError(422, "hash_mismatch", f"{path[:80]}: size or sha256 differs from the manifest")


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"manifest.json: {where or 'document'}: {first.get('msg', 'invalid')}"[:300]
    return f"manifest.json: {exc}"[:300]
