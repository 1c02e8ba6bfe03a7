"""Check an uploaded bundle before anything of it is stored.

Order, cheapest and least trusting first: the gzip/tar container (400: one gzip member, no
data after the tar end-of-archive), member paths and types, member count, unpacked size (a
gzip bomb is stopped by counting decompressed bytes, never by trusting a header), the size
of what the server reads (manifest, JSON members, log tails), the layout, the signature over
manifest.json's raw bytes (422), and only then the manifest's entry count and schema (422),
its terminal against the token's (403) and every listed member's size and sha256 (422).
Members are streamed: each is hashed as it passes; only the capped few are held.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import itertools
import json
import math
import posixpath
import re
import tarfile
import unicodedata
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from remote import wire
from remote.redact import redact_text
from remote.server import auth, db, inputs

MAX_JSON_DEPTH = 64  # what the agent writes is a few levels deep; pages and redaction recurse


class IngestError(Exception):
    def __init__(self, status: int, code: str, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after


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
    diagnosis: dict[str, Any]
    created: datetime
    scan: Scan
    parsed: dict[str, Any] = field(default_factory=dict)  # manifest.json and the JSON members as read once (bundleview uses them)

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
            "created_at": db.stamp(self.created),
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
    if (_text_depth(data) if b"\x00" not in data else _depth(value)) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH}")
    return value


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def _text_depth(data: bytes) -> int:
    """The nesting depth of JSON text json.loads read (UTF-8: no NUL), from its brackets
    outside strings: the same as walking the parsed value (_depth), at a fifth of its cost."""
    brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0)


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
    (the agent redacts logs, not its configured model or firmware strings). Every upload
    and heartbeat states the same few models and versions: a short text that masking left
    as it was is remembered and not masked again (a text masking changes never is)."""
    if text in _SHOWN_AS_IS:
        return text
    masked = redact_text(clean(text))[0]
    if masked == text and len(text) <= SHOWN_REMEMBERED_CHARS:
        if len(_SHOWN_AS_IS) >= SHOWN_REMEMBERED:
            _SHOWN_AS_IS.clear()
        _SHOWN_AS_IS.add(text)
    return masked


SHOWN_REMEMBERED_CHARS = 128
SHOWN_REMEMBERED = 10_000
_SHOWN_AS_IS: set[str] = set()


def clean(text: str) -> str:
    """A string either database stores: no NUL (PostgreSQL refuses it), no lone surrogate
    (JSON allows `\\ud800`; UTF-8 does not)."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


@dataclass(frozen=True)
class Limits:
    """What one upload may cost. Only the members the server reads are held in memory, each
    under its own cap; every other member is hashed as it streams past and dropped."""

    max_members: int
    max_unpacked: int
    max_manifest: int
    max_json: int
    log_view: int
    max_header: int = 1 << 20  # tar and pax headers between two members

    @classmethod
    def of(cls, settings: Any) -> Limits:
        return cls(
            settings.max_members,
            settings.max_unpacked_bytes,
            settings.max_manifest_bytes,
            settings.max_json_member_bytes,
            settings.log_view_kib * 1024,
        )

    @property
    def held(self) -> int:
        """The most an upload holds beside its body: what ByteBudget reserves for it."""
        return self.max_manifest + SIG_MAX + len(JSON_MEMBERS) * self.max_json + self.log_view


SIG_MAX = 256
JSON_MEMBERS = ("diagnosis.json", "probes.json", "system.json")
BIDI_AND_CONTROL = ("Cc", "Cf", "Co", "Cs", "Zl", "Zp")
DRIVE = re.compile(r"(^|/)[A-Za-z]:")


class _Gunzip(io.RawIOBase):
    """One gzip member, decompressed on demand, never more than `limit` bytes; anything after
    the member (a second member, garbage) is refused. While `header_left` is set (tarfile is
    reading headers), at most that many bytes may come: a pax header is held whole by tarfile."""

    def __init__(self, body: bytes, limit: int) -> None:
        self._body, self._pos = memoryview(body), 0
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._left = limit
        self.header_left: int | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        while not self._z.eof:
            src = self._z.unconsumed_tail
            if not src:
                if self._pos >= len(self._body):
                    raise IngestError(400, "not_tar", "the gzip stream is cut short")
                src = self._body[self._pos : self._pos + 65536]
                self._pos += len(src)
            out = self._z.decompress(src, len(buf))
            if out:
                self._count(len(out))
                buf[: len(out)] = out
                return len(out)
        if self._z.unused_data or self._pos < len(self._body):
            raise IngestError(400, "trailing_data", "data after the end of the gzip stream (a second member?)")
        return 0

    def _count(self, n: int) -> None:
        self._left -= n
        if self._left < 0:
            raise IngestError(400, "too_large_unpacked", "bundle unpacks to more than the server accepts")
        if self.header_left is not None:
            self.header_left -= n
            if self.header_left < 0:
                raise IngestError(400, "too_large_header", "a tar or pax header is larger than the server accepts")


@dataclass
class Scan:
    """An archive read once: every member's size and sha256, the few members the server
    reads, and the newest part of each log (up to the view budget)."""

    names: list[str]
    digests: dict[str, tuple[int, str]]
    kept: dict[str, bytes]
    logs: dict[str, tuple[bytes, int]]  # name -> (newest bytes kept, bytes cut before them)


def scan(body: bytes, limits: Limits) -> Scan:
    """Stream the members in archive order; 400 for anything that is not a plain, safe tar.gz."""
    if body[:2] != b"\x1f\x8b":
        raise IngestError(400, "not_gzip", "body is not gzip data")
    out = Scan([], {}, {}, {})
    total = 0
    reader = _Gunzip(body, limits.max_unpacked + 512 * (limits.max_members + 4) * 2)
    try:
        reader.header_left = limits.max_header
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for member in tar:
                reader.header_left = None
                if len(out.names) >= limits.max_members:
                    raise IngestError(400, "too_many_members", f"more than {limits.max_members} members")
                name = _safe_name(member)
                total += member.size
                if total > limits.max_unpacked:
                    raise IngestError(400, "too_large_unpacked", "bundle unpacks to more than the server accepts")
                _read_member(tar, member, name, limits, out)
                out.names.append(name)
                reader.header_left = limits.max_header
            _refuse_trailing(tar)
    except IngestError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError, UnicodeError) as exc:
        raise IngestError(400, "not_tar", f"body is not a complete tar.gz ({type(exc).__name__})") from None
    if not out.names:
        raise IngestError(400, "not_tar", "empty archive")
    return out


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, limits: Limits, out: Scan) -> None:
    cap = _keep_cap(name, len(out.names), limits, out)
    if (name in (wire.SIGNATURE, *JSON_MEMBERS) or (name == wire.MANIFEST and not out.names)) and member.size > cap:
        code = "manifest_too_large" if name == wire.MANIFEST else "member_too_large"
        raise IngestError(400, code, f"{name} is {member.size} bytes, over the {cap} the server reads")
    fh = tar.extractfile(member)
    digest, size, tail = hashlib.sha256(), 0, bytearray()
    while fh is not None and (chunk := fh.read(65536)):
        digest.update(chunk)
        size += len(chunk)
        if cap:
            tail += chunk
            del tail[: max(0, len(tail) - cap)]
    if size != member.size:
        raise IngestError(400, "not_tar", f"member {name!r} is cut short")
    out.digests[name] = (size, digest.hexdigest())
    if name.startswith("logs/"):
        out.logs[name] = (bytes(tail), size - len(tail))
    elif cap:
        out.kept[name] = bytes(tail)


def _keep_cap(name: str, index: int, limits: Limits, out: Scan) -> int:
    if name == wire.MANIFEST and index == 0:
        return limits.max_manifest
    if name == wire.SIGNATURE:
        return SIG_MAX
    if name in JSON_MEMBERS:
        return limits.max_json
    if name.startswith("logs/"):
        return max(0, limits.log_view - sum(len(t) for t, _ in out.logs.values()))
    return 0


def _refuse_trailing(tar: tarfile.TarFile) -> None:
    """After the end-of-archive blocks only zero padding may follow (tar pads to its record size)."""
    while chunk := tar.fileobj.read(65536):  # type: ignore[union-attr]
        if chunk.count(0) != len(chunk):
            raise IngestError(400, "trailing_data", "data after the tar end-of-archive")


def _safe_name(member: tarfile.TarInfo) -> str:
    name = member.name
    if not member.isreg():
        raise IngestError(400, "unsafe_member", f"member {name[:80]!r} is not a regular file (link, device or dir)")
    norm = posixpath.normpath(name)
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or norm != name
        or norm == ".."
        or norm.startswith("../")
        or len(name) > 255
        or DRIVE.search(name)
        or any(unicodedata.category(c) in BIDI_AND_CONTROL for c in name)
    ):
        raise IngestError(
            400, "unsafe_member", f"member path {name[:80]!r} is absolute, not normalised, escapes, "
            "names a drive or holds control or bidi characters"
        )  # fmt: skip
    return name


def validate(body: bytes, token_sha256: str, terminal_id: str, limits: Limits) -> Bundle:
    """Cheapest and least trusting first: the container and its member names, the layout, the
    signature over the raw manifest bytes, then the manifest's entry count, its schema, the
    terminal, the member hashes, and only then the JSON members."""
    found = scan(body, limits)
    names = found.names
    if names[0] != wire.MANIFEST:
        raise IngestError(422, "bad_layout", "the first member must be manifest.json")
    if names[-1] != wire.SIGNATURE:
        raise IngestError(422, "bad_layout", "the last member must be manifest.sig")
    if len(set(names)) != len(names):
        raise IngestError(422, "bad_layout", "a member name occurs twice")
    manifest_bytes = found.kept[wire.MANIFEST]
    if not _same(found.kept[wire.SIGNATURE].strip(), auth.manifest_signature(token_sha256, manifest_bytes)):
        raise IngestError(422, "bad_signature", "manifest.sig does not match manifest.json and the terminal's token")
    try:
        raw = load_json(manifest_bytes)
        entries = raw.get("files") if isinstance(raw, dict) else None
        if isinstance(entries, list) and len(entries) > limits.max_members:
            raise IngestError(422, "bad_manifest", f"files lists more than {limits.max_members} entries")
        manifest = Manifest.model_validate(raw)
        created = db.parse_time(manifest.created_at)
        db.stamp(created)
    except (ValueError, OverflowError, ValidationError) as exc:
        raise IngestError(422, "bad_manifest", _short(exc)) from None
    if manifest.terminal.id != terminal_id:
        raise IngestError(403, "wrong_terminal", "the manifest names another terminal than the token's")
    refused = inputs.manifest_problem(raw, created)
    if refused:
        raise IngestError(400, *refused)
    _check_files(manifest, found.digests)
    if "diagnosis.json" not in found.kept:
        raise IngestError(422, "missing_member", "diagnosis.json is missing")
    parsed = {wire.MANIFEST: raw}
    for name in JSON_MEMBERS:
        if name in found.kept:
            try:
                parsed[name] = load_json(found.kept[name])
            except ValueError as exc:
                raise IngestError(422, "bad_member", f"{name} is not JSON ({str(exc)[:100]})") from None
    diagnosis = parsed["diagnosis.json"]
    if not isinstance(diagnosis, dict):
        raise IngestError(422, "bad_member", "diagnosis.json is not a JSON object")
    return Bundle(manifest, raw, diagnosis, created, found, parsed)


def _same(sig: bytes, expected: str) -> bool:
    try:
        return hmac.compare_digest(sig.decode("ascii").lower(), expected)
    except (UnicodeError, TypeError):
        return False


def _check_files(manifest: Manifest, digests: dict[str, tuple[int, str]]) -> None:
    listed = {f.path: f for f in manifest.files}
    if len(listed) != len(manifest.files):
        raise IngestError(422, "bad_manifest", "files lists a path twice")
    present = set(digests) - {wire.MANIFEST, wire.SIGNATURE}
    missing = sorted(set(listed) - present)
    if missing:
        raise IngestError(422, "missing_member", f"listed but absent: {', '.join(missing)[:200]}")
    unlisted = sorted(present - set(listed))
    if unlisted:
        raise IngestError(422, "unlisted_member", f"present but not in the manifest: {', '.join(unlisted)[:200]}")
    for path, entry in listed.items():
        if digests[path] != (entry.size, entry.sha256):
            raise IngestError(422, "hash_mismatch", f"{path[:80]}: size or sha256 differs from the manifest")


def clock_flag(created: datetime, received: datetime, ahead_seconds: float, behind_days: float) -> str | None:
    """`ahead` when the terminal's clock put created_at after the receipt, `behind` when it is
    older than any outbox wait explains; None when it is plausible."""
    lead = (created - received).total_seconds()
    if lead > ahead_seconds:
        return "ahead"
    if -lead > behind_days * 86400:
        return "behind"
    return None


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"manifest.json: {where or 'document'}: {first.get('msg', 'invalid')}"[:300]
    return f"manifest.json: {exc}"[:300]
