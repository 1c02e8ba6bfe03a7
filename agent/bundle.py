"""The diagnosis bundle: build, read and verify `posdiag.bundle/1` archives.

Format (fixed; the support server ingests exactly this):

    .tar.gz, members in this order:
      manifest.json      schema, bundle_id, terminal, agent_version, created_at, trigger,
                         files [{path, size, sha256}] of every member below but manifest.sig,
                         redaction counts, truncated {path: true}, evicted
      diagnosis.json     the document `posdiag diagnose --json` prints
      probes.json        probe results
      system.json        facts about the terminal and the OS
      history.jsonl      recent health snapshots, oldest first
      events.jsonl       recent error events, oldest first
      logs/<name>.log    redacted tails of the configured log files
      manifest.sig       hex HMAC-SHA256 over the exact bytes of manifest.json

Signing: the HMAC key is SHA-256 of the terminal token (UTF-8), the raw 32-byte digest.
The server stores only that digest, never the token, and can still check the signature.
The manifest carries the size and SHA-256 of every other member, so the signature over
the manifest authenticates the whole content.

Every text passes through remote.redact before it is written. Logs are cut before anything
else when a cap is hit, oldest lines first, and the cut is recorded in `truncated`.

The archive is built deterministically (fixed gzip header with mtime 0, tar headers with
mtime = created_at, owner 0, zlib level 9). Content authentication (hashes + signature) is
what the server relies on. `verify` also requires the canonical encoding (re-deflating the
tar must give the same bytes), because gzip's CRC leaves the header's mtime/flags/OS bytes
uncovered and deflate has padding and table bits that carry no data: without this check
some single-byte flips would pass. A bundle recompressed by a different zlib build fails
that last check only, and verify says so.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import struct
import tarfile
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent import __version__
from agent.facts import iso_utc, system_facts, terminal_identity
from agent.labels import labels_for, seen_in
from agent.sources import MAX_CODE_LENGTH
from remote import wire
from remote.logtext import decode_log, log_encoding
from remote.redact import Redactor, redact_text

GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # deflate, no flags, mtime 0, max compression, OS unknown
MAX_UNPACKED = 64 << 20
TRIGGER_KINDS = ("error", "manual", "remote", "scheduled")
TERMINAL_KEYS = ("id", "serial", "model", "firmware", "app_version")


class BundleError(Exception):
    """A file is not a readable posdiag bundle."""


@dataclass(frozen=True)
class Trigger:
    kind: str
    code: str | None = None
    scheme: str | None = None
    command_id: str | None = None
    events: int = 1


@dataclass(frozen=True)
class Limits:
    lines: int = 200
    file_max_bytes: int = 48 * 1024
    total_max_bytes: int = 160 * 1024
    bundle_max_bytes: int = 256 * 1024
    history_entries: int = 50
    events_entries: int = 50

    @classmethod
    def from_config(cls, config: Any) -> Limits:
        logs, bundle = config.section("logs"), config.section("bundle")
        return cls(
            lines=logs.lines,
            file_max_bytes=logs.file_max_kib * 1024,
            total_max_bytes=logs.total_max_kib * 1024,
            bundle_max_bytes=bundle.max_kib * 1024,
            history_entries=bundle.history_entries,
            events_entries=bundle.events_entries,
        )


@dataclass(frozen=True)
class BundleInput:
    terminal: dict[str, str]
    trigger: Trigger
    diagnosis: dict[str, Any]
    probes: Any
    system: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    logs: list[str | Path] = field(default_factory=list)
    evicted: int = 0
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Bundle:
    data: bytes
    manifest: dict[str, Any]

    @property
    def bundle_id(self) -> str:
        return str(self.manifest["bundle_id"])

    @property
    def created_at(self) -> str:
        return str(self.manifest["created_at"])


@dataclass
class LogTail:
    name: str
    lines: list[str]
    truncated: bool = False

    def size(self) -> int:
        return sum(len(line.encode()) for line in self.lines)

    def cut_to(self, budget: int) -> None:
        """Drop the oldest lines until the rest fits `budget` bytes."""
        total = self.size()
        drop = 0
        while total > budget and drop < len(self.lines):
            total -= len(self.lines[drop].encode())
            drop += 1
        if drop:
            self.lines = self.lines[drop:]
            self.truncated = True


def signing_key(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def sign(manifest_bytes: bytes, token: str) -> str:
    return hmac.new(signing_key(token), manifest_bytes, hashlib.sha256).hexdigest()


def build(
    inp: BundleInput, limits: Limits, token: str, now: datetime | None = None, bundle_id: str | None = None
) -> Bundle:
    """A signed, redacted bundle; logs (then history and events) are cut to fit the caps."""
    now = now or datetime.now(UTC)
    bundle_id = bundle_id or str(uuid.uuid4())
    redactor = Redactor()
    fixed = {
        "diagnosis.json": dump_json(redactor.data(inp.diagnosis)),
        "probes.json": dump_json(redactor.data(inp.probes)),
    }
    tails, sources = read_logs(inp.logs, limits, redactor)
    terminal = redactor.data({**{k: str(inp.terminal.get(k, "")) for k in TERMINAL_KEYS}, "labels": dict(inp.labels)})
    system = dict(inp.system, log_sources=sources)
    fixed["system.json"] = dump_json(redactor.data(system))
    history = [redactor.data(h) for h in inp.history[-limits.history_entries :]] if limits.history_entries else []
    events = [redactor.data(e) for e in inp.events[-limits.events_entries :]] if limits.events_entries else []
    share_logs(tails, limits.total_max_bytes)
    while True:
        truncated = {f"logs/{t.name}": True for t in tails if t.truncated}
        members = dict(fixed)
        members["history.jsonl"] = dump_jsonl(history)
        members["events.jsonl"] = dump_jsonl(events)
        if len(history) < min(len(inp.history), limits.history_entries):
            truncated["history.jsonl"] = True
        if len(events) < min(len(inp.events), limits.events_entries):
            truncated["events.jsonl"] = True
        members.update({f"logs/{t.name}": "".join(t.lines).encode() for t in tails})
        manifest = make_manifest(inp, terminal, bundle_id, now, members, redactor.summary(), truncated)
        data = pack(manifest, members, token, now)
        if len(data) <= limits.bundle_max_bytes or not shrink(tails, history, events, len(data), limits):
            return Bundle(data, manifest)


def shrink(tails: list[LogTail], history: list[Any], events: list[Any], size: int, limits: Limits) -> bool:
    """Cut the next thing to go when the archive is over its cap; False when nothing is left."""
    ratio = max(0.1, limits.bundle_max_bytes / size * 0.9)
    logged = sum(t.size() for t in tails)
    if logged:
        share_logs(tails, int(logged * ratio) if logged > 64 else 0)
        return True
    for items in (history, events):
        if items:
            del items[: max(1, len(items) - int(len(items) * ratio))]
            return True
    return False


def share_logs(tails: list[LogTail], budget: int) -> None:
    """Fit all tails into `budget` bytes: small logs keep everything, big ones share the rest."""
    pending = sorted(tails, key=LogTail.size)
    for i, tail in enumerate(pending):
        share = budget // (len(pending) - i)
        tail.cut_to(share)
        budget -= tail.size()


def make_manifest(
    inp: BundleInput,
    terminal: dict[str, str],
    bundle_id: str,
    now: datetime,
    members: dict[str, bytes],
    redaction: dict[str, int],
    truncated: dict[str, bool],
) -> dict[str, Any]:
    if inp.trigger.kind not in TRIGGER_KINDS:
        raise ValueError(f"trigger kind {inp.trigger.kind!r} is not one of {TRIGGER_KINDS}")
    return {
        "schema": wire.BUNDLE_SCHEMA,
        "bundle_id": bundle_id,
        "terminal": terminal,
        "agent_version": __version__,
        "created_at": iso_utc(now),
        "trigger": {
            "kind": inp.trigger.kind,
            "code": redact_text(inp.trigger.code)[0][:MAX_CODE_LENGTH] if inp.trigger.code else inp.trigger.code,
            "scheme": inp.trigger.scheme,
            "command_id": inp.trigger.command_id,
            "events": inp.trigger.events,
        },
        "files": [{"path": p, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for p, b in members.items()],
        "redaction": redaction,
        "truncated": truncated,
        "evicted": inp.evicted,
    }


def dump_json(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n").encode()


def dump_jsonl(items: list[Any]) -> bytes:
    return "".join(json.dumps(i, ensure_ascii=False, default=str) + "\n" for i in items).encode()


def pack(manifest: dict[str, Any], members: dict[str, bytes], token: str, now: datetime) -> bytes:
    manifest_bytes = dump_json(manifest)
    ordered = [(wire.MANIFEST, manifest_bytes), *members.items(), (wire.SIGNATURE, sign(manifest_bytes, token).encode())]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, body in ordered:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(body), int(now.timestamp()), 0o644
            tar.addfile(info, io.BytesIO(body))
    return gzip_bytes(raw.getvalue())


def gzip_bytes(raw: bytes) -> bytes:
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = deflate.compress(raw) + deflate.flush()
    return GZIP_HEADER + body + struct.pack("<II", zlib.crc32(raw), len(raw) & 0xFFFFFFFF)


def read_logs(paths: list[str | Path], limits: Limits, redactor: Redactor) -> tuple[list[LogTail], list[dict[str, str]]]:
    tails: list[LogTail] = []
    sources: list[dict[str, str]] = []
    taken: set[str] = set()
    for path in paths:
        try:
            text, cut = read_text_tail(Path(path), limits.lines, limits.file_max_bytes * 4)
        except OSError as exc:
            sources.append({"path": str(path), "status": f"unreadable: {exc.strerror or type(exc).__name__}"})
            continue
        name = unique_name(Path(redactor.text(str(path))), taken)  # a file named after a PAN: txn-4111....log
        lines = redactor.text(text).splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        tail = LogTail(name, lines, truncated=cut)
        tail.cut_to(limits.file_max_bytes)
        tails.append(tail)
        sources.append({"path": str(path), "status": "ok", "member": f"logs/{name}"})
    return tails, sources


def read_text_tail(path: Path, lines: int, max_bytes: int) -> tuple[str, bool]:
    """The decoded last `lines` lines (see read_tail); a UTF-16 log, known by its first
    bytes, is cut on its own newlines at even offsets."""
    with path.open("rb") as fh:
        encoding = log_encoding(fh.read(4096))
        if encoding is None:
            raw, cut = read_tail(path, lines, max_bytes)
            return decode_log(raw), cut
        end = fh.seek(0, io.SEEK_END)
        start = max(0, end - max_bytes) & ~1
        fh.seek(start)
        text = decode_log(fh.read(), encoding)
    parts = text.rstrip("\n").split("\n")
    if start > 0:
        parts = parts[1:]  # the first piece may start mid-line
    kept = parts[-lines:] if lines else []
    return "".join(line + "\n" for line in kept), start > 0 and len(kept) < lines


def read_tail(path: Path, lines: int, max_bytes: int) -> tuple[bytes, bool]:
    """The last `lines` lines, reading backwards at most `max_bytes`; True when the byte
    limit, not the line count, ended the read (a partial first line is then dropped)."""
    if lines == 0:
        return b"", False
    with path.open("rb") as fh:
        end = fh.seek(0, io.SEEK_END)
        pos, data = end, b""
        while pos > 0 and data.count(b"\n", 0, len(data) - 1) < lines and end - pos < max_bytes:
            step = min(8192, pos, max_bytes - (end - pos))
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + data
    body = data[:-1] if data.endswith(b"\n") else data
    parts = body.split(b"\n")
    cut = pos > 0 and len(parts) <= lines
    if pos > 0:
        parts = parts[1:]  # the first piece may start mid-line
    kept = parts[-lines:]
    return b"\n".join(kept) + (b"\n" if kept else b""), cut


def unique_name(path: Path, taken: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", path.stem if path.suffix == ".log" else path.name).strip(".") or "log"
    name, n = f"{stem}.log", 2
    while name in taken:
        name, n = f"{stem}-{n}.log", n + 1
    taken.add(name)
    return name


def unpack(data: bytes) -> list[tuple[str, bytes]]:
    """Members in archive order; raises BundleError for anything but a well-formed bundle stream."""
    return untar(gunzip(data))


def gunzip(data: bytes) -> bytes:
    if not data.startswith(GZIP_HEADER):
        raise BundleError("not a posdiag bundle: unexpected gzip header")
    inflate = zlib.decompressobj(31)
    try:
        raw = inflate.decompress(data, MAX_UNPACKED)
    except zlib.error as exc:
        raise BundleError(f"corrupt gzip data ({exc})") from None
    if inflate.unconsumed_tail:
        raise BundleError(f"unpacks to more than {MAX_UNPACKED} bytes")
    if not inflate.eof:
        raise BundleError("truncated gzip stream")
    if inflate.unused_data:
        raise BundleError("data after the end of the gzip stream")
    return raw


def untar(raw: bytes) -> list[tuple[str, bytes]]:
    members: list[tuple[str, bytes]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for info in tar:
                if not info.isreg():
                    raise BundleError(f"member {info.name!r} is not a regular file")
                fh = tar.extractfile(info)
                members.append((info.name, fh.read() if fh else b""))
    except tarfile.TarError as exc:
        raise BundleError(f"corrupt tar archive ({exc})") from None
    return members


def read(data: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Manifest and members of a bundle, without checking hashes or signature."""
    members = unpack(data)
    if not members or members[0][0] != wire.MANIFEST:
        raise BundleError("manifest.json is not the first member")
    try:
        manifest = json.loads(members[0][1])
    except (ValueError, RecursionError) as exc:  # `[[[[...` exceeds json's recursion limit
        raise BundleError(f"manifest.json is not JSON ({exc})") from None
    return manifest, dict(members)


def verify(data: bytes, token: str) -> list[str]:
    """Everything wrong with a bundle (empty when it is whole, untouched and signed by `token`)."""
    try:
        raw = gunzip(data)
        members = untar(raw)
    except BundleError as exc:
        return [str(exc)]
    names = [name for name, _ in members]
    problems = []
    if not names or names[0] != wire.MANIFEST:
        return ["manifest.json is not the first member"]
    if names[-1] != wire.SIGNATURE:
        problems.append("manifest.sig is not the last member")
    if len(set(names)) != len(names):
        problems.append("a member name appears twice")
    content = dict(members)
    manifest_bytes = content[wire.MANIFEST]
    try:
        manifest = json.loads(manifest_bytes)
        listed = {f["path"]: f for f in manifest["files"]}
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        return [*problems, f"manifest.json is malformed ({exc})"]
    if manifest.get("schema") != wire.BUNDLE_SCHEMA:
        problems.append(f"schema is {manifest.get('schema')!r}, expected {wire.BUNDLE_SCHEMA!r}")
    present = set(names) - {wire.MANIFEST, wire.SIGNATURE}
    problems += [f"{p}: listed in the manifest but missing" for p in sorted(set(listed) - present)]
    problems += [f"{p}: present but not listed in the manifest" for p in sorted(present - set(listed))]
    for path in sorted(set(listed) & present):
        body, entry = content[path], listed[path]
        if len(body) != entry.get("size"):
            problems.append(f"{path}: size {len(body)} differs from the manifest's {entry.get('size')}")
        if hashlib.sha256(body).hexdigest() != entry.get("sha256"):
            problems.append(f"{path}: sha256 differs from the manifest")
    signature = content.get(wire.SIGNATURE, b"").strip()  # bytes: compare_digest refuses non-ASCII str
    if not hmac.compare_digest(signature, sign(manifest_bytes, token).encode("ascii")):
        problems.append("signature does not match (wrong token, or the manifest was altered)")
    if not problems and gzip_bytes(raw) != data:
        problems.append(
            "content is intact and signed, but the compressed stream is not the one posdiag writes "
            "(bits that carry no data were altered, or another zlib build compressed it)"
        )
    return problems


def diagnosis_input(
    config: Any,
    diagnosis: dict[str, Any],
    trigger: Trigger,
    evicted: int = 0,
    history: list[dict[str, Any]] | None = None,
    events: list[dict[str, Any]] | None = None,
) -> BundleInput:
    """Everything a bundle for one diagnosis needs, from the config and the OS."""
    host = config.section("host")
    return BundleInput(
        terminal=terminal_identity(config.section("terminal"), host),
        trigger=trigger,
        diagnosis=diagnosis,
        probes={"probes": diagnosis.get("probes", []), "sweep": diagnosis.get("sweep", {})},
        system=system_facts(host),
        history=history or [],
        events=events or [],
        logs=list(config.section("logs").files),
        evicted=evicted,
        labels=labels_for(config, seen_in(diagnosis.get("probes", []))),
    )
