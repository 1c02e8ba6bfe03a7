"""Where error events come from: the payment app's log files, a last-error file the
firmware rewrites, and a local socket the payment app writes to.

An event's id is derived from where it came from (file, inode, byte offset), so the same
line read again after a crash gives the same id, and the bundle made for it the same
bundle id: the server stores it once. A log follower commits its offset only when every
event before it has been diagnosed (or dropped on purpose), see OffsetLedger.

This module runs in the resident agent (agent/resident.py), which must stay small: no
hashlib (agent/digest.py hashes without OpenSSL), no dataclasses (they import `inspect`,
1 MB), and the redactor only once a chunk of a log holds an event.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from collections import namedtuple

from agent.digest import sha256_hex, uuid5
from remote.logtext import decode_log, log_encoding

TYPE_CHECKING = False  # typing's, without importing typing (0.4 MB): agent/resident.py says why
if TYPE_CHECKING:
    from typing import Any

log = logging.getLogger("posdiag.sources")

EVENT_NAMESPACE = bytes.fromhex("5d0c7f5e4f0a4b7e9a576f1d1b8e2c10")  # a UUID
MAX_LINE_BYTES = 8192
MAX_READ_BYTES = 1 << 20
MAX_CODE_LENGTH = 64
SCHEMES = ("iso8583", "cup", "terminal", "exception")


def _nothing() -> None:
    return None


class ErrorEvent:
    """One error the agent saw. `done` commits its source position once the event is
    diagnosed (or dropped on purpose); `reply` answers the socket client that sent it."""

    __slots__ = ("id", "code", "scheme", "source", "at", "context", "done", "reply")

    def __init__(
        self,
        id: str,  # noqa: A002 - the event's id, as in events.jsonl
        code: str,
        scheme: str | None,
        source: str,
        at: str,
        context: dict[str, Any] | None = None,
        done: Callable[[], None] = _nothing,
        reply: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.id, self.code, self.scheme, self.source, self.at = id, code, scheme, source, at
        self.context = {} if context is None else context
        self.done = done
        self.reply = reply

    def __repr__(self) -> str:
        return f"ErrorEvent(id={self.id!r}, code={self.code!r}, scheme={self.scheme!r}, source={self.source!r})"

    def record(self) -> dict[str, Any]:
        """The event as it goes into a bundle's events.jsonl (context already redacted)."""
        return {"id": self.id, "code": self.code, "scheme": self.scheme, "source": self.source, "at": self.at, "context": self.context}


def now_iso() -> str:
    """Now in UTC as datetime.isoformat(timespec="milliseconds") writes it, without datetime."""
    seconds, nanoseconds = divmod(time.time_ns(), 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanoseconds // 10**6:03d}+00:00"


def event_id(*parts: object) -> str:
    return uuid5(EVENT_NAMESPACE, "\x1f".join(str(p) for p in parts))


def terminal_identity_key(config: Any, state_dir: Path) -> str:
    """What tells this terminal from every other, for event ids: the configured id, the
    hardware serial, and an instance id made at the first start and kept in the state
    directory. Terminals built from one image share the first (often still "UNSET"); the
    serial or, where the OS has none, the instance id sets them apart."""
    from agent.facts import terminal_identity

    terminal = terminal_identity(config.section("terminal"), config.section("host"))
    instance = state_dir / "instance-id"
    try:
        token = instance.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        token = ""
    if not token:
        token = os.urandom(16).hex()
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            instance.write_text(token + "\n", encoding="ascii")
        except OSError as exc:  # ids then differ per start: a redone event may be bundled twice
            log.warning("instance id not kept in %s: %s", state_dir, exc)
    return "\x1f".join((terminal["id"], terminal["serial"], token))


def parse_event_bytes(raw: bytes) -> tuple[str, str | None, dict[str, Any]]:
    """parse_event_document over the raw JSON of one event; ValueError says what is wrong."""
    try:
        return parse_event_document(json.loads(raw.decode("utf-8")))
    except RecursionError:  # json and the redactor recurse: `[[[[...` would kill the reading thread
        raise ValueError("JSON nested too deeply") from None


def valid_code(code: str) -> bool:
    return bool(code) and len(code) <= MAX_CODE_LENGTH and code.isprintable()


def clean_code(code: str) -> str:
    """The code without card data: apps have put a PAN or track where the code goes, and the
    code reaches the agent's log, the socket answer and the bundle manifest. Cut to
    MAX_CODE_LENGTH after redaction (a mask can be longer than what it hides), so the
    server, which refuses longer codes, never refuses the bundle."""
    from remote.redact import Redactor  # on the first event: an idle agent need not hold its patterns

    return Redactor().text(code)[:MAX_CODE_LENGTH]


def parse_event_document(doc: Any) -> tuple[str, str | None, dict[str, Any]]:
    """(code, scheme, context) from `{"code": ..., "scheme": ..., "context": {...}}`;
    ValueError says what is wrong."""
    if not isinstance(doc, dict):
        raise ValueError("expected a JSON object")
    code = doc.get("code")
    if not isinstance(code, str | int) or isinstance(code, bool) or not str(code).strip():
        raise ValueError("'code' must be a non-empty string")
    code = str(code).strip()
    if not valid_code(code):
        raise ValueError(f"'code' must be at most {MAX_CODE_LENGTH} printable characters")
    scheme = doc.get("scheme")
    if scheme is not None and scheme not in SCHEMES:
        raise ValueError(f"'scheme' must be one of {', '.join(SCHEMES)} or null")
    context = doc.get("context", {})
    if not isinstance(context, dict):
        raise ValueError("'context' must be an object")
    from remote.redact import Redactor

    return clean_code(code), scheme, Redactor().data(context)


class OffsetLedger:
    """Offsets of a file's events in order; the committed offset only moves past an event
    once it and every event before it is done. The watcher thread adds, the worker marks
    done: a lock keeps them apart.

    `inode` and `generation` name the file in event ids; `head` is the fingerprint of its
    first bytes, which finds the file again after a rename or a copytruncate."""

    def __init__(self, inode: int, offset: int, generation: int = 0, head: Head | None = None) -> None:
        self.inode, self.committed, self.generation = inode, offset, generation
        self.head = head or Head(0, "")
        self.draining = False  # a rotated file not read to its end yet: its position must be kept
        self.pending: dict[int, bool] = {}
        self.lock = threading.Lock()

    def add(self, end: int) -> None:
        with self.lock:
            self.pending[end] = False

    def done(self, end: int) -> None:
        with self.lock:
            if end not in self.pending:
                return
            self.pending[end] = True
            for offset in sorted(self.pending):
                if not self.pending[offset]:
                    break
                del self.pending[offset]
                self.committed = offset

    def skip_to(self, offset: int) -> None:
        """Lines without events up to `offset` need no work: commit them when nothing waits."""
        with self.lock:
            if not self.pending:
                self.committed = offset

    def busy(self) -> bool:
        with self.lock:
            return bool(self.pending) or self.draining

    def position(self) -> dict[str, Any]:
        with self.lock:
            return {"inode": self.inode, "offset": self.committed, "generation": self.generation, **self.head.saved()}


HEAD_BYTES = 1024
ROTATED_GLOBS = ("{name}.[0-9]*", "{name}-*", "{stem}-*{suffix}", "{stem}.[0-9]*{suffix}")
COMPRESSED = (".gz", ".xz", ".bz2", ".zst", ".lz4", ".zip")


class Head(namedtuple("Head", ("length", "digest"))):
    """SHA-256 of a file's first `length` bytes (up to HEAD_BYTES): a copy or a renamed
    file keeps it; a truncated and rewritten one does not, whatever its size."""

    __slots__ = ()
    length: int
    digest: str

    @classmethod
    def of(cls, fd: int) -> Head:
        data = os.pread(fd, HEAD_BYTES, 0)
        return cls(len(data), sha256_hex(data))

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> Head:
        length, digest = saved.get("head_bytes"), saved.get("head_sha256")
        return cls(length, digest) if isinstance(length, int) and isinstance(digest, str) else cls(0, "")

    def saved(self) -> dict[str, Any]:
        return {"head_bytes": self.length, "head_sha256": self.digest}

    def matches(self, fd: int) -> bool:
        """The file at `fd` still starts with the bytes this fingerprint was taken of."""
        return sha256_hex(os.pread(fd, self.length, 0)) == self.digest if self.length else True


def line_split(data: bytes, newline: bytes) -> tuple[list[bytes], bytes]:
    """Whole lines of `data` (without their newline) and the rest; a two-byte UTF-16 newline
    counts only at an even offset."""
    if len(newline) == 1:
        *lines, rest = data.split(newline)
        return lines, rest
    lines, start, pos = [], 0, 0
    while (i := data.find(newline, pos)) >= 0:
        if (i - start) % 2:
            pos = i + 1
            continue
        lines.append(data[start:i])
        start = pos = i + 2
    return lines, data[start:]


class Reading:
    """One open file a follower reads: the current log, or a rotated one it finishes first."""

    def __init__(self, fh: Any, ledger: OffsetLedger, offset: int, encoding: str | None, final: bool) -> None:
        self.fh, self.ledger, self.offset, self.encoding = fh, ledger, offset, encoding
        self.final = final  # a rotated file: read to its end, then go on to the next
        self.buffer = b""

    @property
    def newline(self) -> bytes:
        return {"utf-16-le": b"\n\x00", "utf-16-be": b"\x00\n"}.get(self.encoding or "", b"\n")


class LogFollower:
    """Follows one log file across rotation (rename + new file, also while the agent is
    stopped: the rotated file is found by its head fingerprint and finished first) and
    truncation (copytruncate: the copy is finished from the old offset, then the log is
    read from its start; detected by the head fingerprint even when the log has grown past
    the old offset again).

    `patterns` are regular expressions with a named group `code` and optionally `scheme`;
    the first that matches a line makes it an event. `identity` (the terminal's) is part
    of every event id, so two terminals built from one image never share a bundle id.
    `rotated` are extra glob patterns (relative to the log's directory) for rotated files.
    """

    def __init__(
        self,
        path: Path,
        patterns: list[re.Pattern[str]],
        scheme: str | None,
        saved: dict[str, Any],
        identity: str = "",
        rotated: tuple[str, ...] = (),
    ) -> None:
        self.path = path
        self.patterns = patterns
        self.scheme = scheme
        self.identity = identity
        self.rotated = rotated
        self.saved = saved
        self.queue: list[Reading] = []  # rotated files to finish before the current one
        self.reading: Reading | None = None
        self.ledgers: list[OffsetLedger] = []  # every ledger whose events may still be pending
        self.last_line = ""  # the previous line, so a PAN wrapped onto the next line is seen whole
        generation = saved.get("generation", 0)
        # Bumped at each truncation, so a new line at an old offset gets a new event id.
        self.generation = generation if isinstance(generation, int) else 0

    @property
    def key(self) -> str:
        return f"log:{self.path}"

    @property
    def fh(self) -> Any:
        return self.reading.fh if self.reading else None

    @property
    def buffer(self) -> bytes:
        """The partial last line waiting for its end."""
        return self.reading.buffer if self.reading else b""

    def position(self) -> dict[str, Any] | None:
        """The position to resume from: the oldest file whose events are not all done."""
        self.ledgers = [ledger for ledger in self.ledgers[:-1] if ledger.busy()] + self.ledgers[-1:]
        return self.ledgers[0].position() if self.ledgers else None

    def rotated_files(self) -> list[Path]:
        """Rotated siblings of the log, oldest first (compressed ones cannot be followed)."""
        name, stem, suffix = self.path.name, self.path.stem, self.path.suffix
        found: set[Path] = set()
        for pattern in (*ROTATED_GLOBS, *self.rotated):
            found.update(self.path.parent.glob(pattern.format(name=name, stem=stem, suffix=suffix)))
        found.discard(self.path)
        paths = [p for p in found if p.is_file() and not p.name.endswith(COMPRESSED)]
        return sorted(paths, key=lambda p: p.stat().st_mtime_ns)

    def _reading(self, path: Path, offset: int, inode: int | None, generation: int, final: bool) -> Reading | None:
        try:
            fh = open(path, "rb")  # noqa: SIM115 - kept open to follow across rotation
        except OSError:
            return None
        st = os.fstat(fh.fileno())
        head = Head.of(fh.fileno())
        encoding = log_encoding(os.pread(fh.fileno(), 4096, 0))
        ledger = OffsetLedger(st.st_ino if inode is None else inode, offset, generation, head)
        ledger.draining = final
        fh.seek(offset)
        self.ledgers.append(ledger)
        return Reading(fh, ledger, offset, encoding, final)

    def _find_copy(self, head: Head, inode: int, offset: int) -> Path | None:
        """The rotated file that holds the lines from `offset` of the file fingerprinted
        `head`: the same inode (renamed), else the same head and at least `offset` long (a copy)."""
        if not head.length:
            return None
        by_inode, by_head = None, None
        for candidate in self.rotated_files():
            try:
                with candidate.open("rb") as fh:
                    st = os.fstat(fh.fileno())
                    if st.st_size < offset or not head.matches(fh.fileno()):
                        continue
            except OSError:
                continue
            if st.st_ino == inode:
                by_inode = candidate
            else:
                by_head = by_head or candidate
        return by_inode or by_head

    def _start(self, first: bool) -> bool:
        """Open the log (and the rotated files to finish first) at the saved position."""
        saved, self.saved = self.saved, {}
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        if not saved:
            offset = st.st_size if first else 0
            self.reading = self._reading(self.path, offset, None, self.generation, final=False)
            return self.reading is not None
        inode, offset = saved.get("inode"), saved.get("offset", 0)
        offset = offset if isinstance(offset, int) and offset >= 0 else 0
        head = Head.from_saved(saved)
        if st.st_ino == inode and st.st_size >= offset and self._head_matches(self.path, head):
            self.reading = self._reading(self.path, offset, None, self.generation, final=False)
            return self.reading is not None
        copy = self._find_copy(head, inode, offset) if isinstance(inode, int) else None
        if copy is not None:
            log.info("%s was rotated while the agent was stopped: finishing %s first", self.path, copy.name)
            older = self.rotated_files()
            newer = older[older.index(copy) + 1 :] if copy in older else []
            first_reading = self._reading(copy, offset, inode, self.generation, final=True)
            self.queue = [r for r in [first_reading] if r]
            for path in newer:
                reading = self._reading(path, 0, None, 0, final=True)
                if reading:
                    self.queue.append(reading)
        if st.st_ino == inode:
            self.generation += 1  # the same file, truncated: its offsets start over
        current = self._reading(self.path, 0, None, self.generation, final=False)
        if current:
            self.queue.append(current)
        self.reading = self.queue.pop(0) if self.queue else None
        return self.reading is not None

    @staticmethod
    def _head_matches(path: Path, head: Head) -> bool:
        try:
            with path.open("rb") as fh:
                return head.matches(fh.fileno())
        except OSError:
            return False

    def poll(self, first: bool = False) -> list[ErrorEvent]:
        if self.reading is None and not self._start(first):
            return []
        events = []
        while self.reading is not None and self.reading.final:
            events += self._read_all()
            self.reading.fh.close()
            self.reading = self.queue.pop(0) if self.queue else None
        if self.reading is None:
            return events
        fd = self.reading.fh.fileno()
        if os.fstat(fd).st_size < self.reading.offset or not self.reading.ledger.head.matches(fd):
            return events + self._truncated()  # checked before reading: new bytes at an old offset are no continuation
        events += self._read()
        try:
            st = os.stat(self.path)
        except OSError:
            return events
        if st.st_ino != os.fstat(fd).st_ino:
            events += self._read_all()  # the rest of the rotated file, then the new one
            self.reading.fh.close()
            self.reading = self._reading(self.path, 0, None, self.generation, final=False)
            if self.reading is not None:
                events += self._read()
        elif self.reading.ledger.head.length < HEAD_BYTES:
            self.reading.ledger.head = Head.of(fd)  # the fingerprint grows with the file up to HEAD_BYTES
        return events

    def _truncated(self) -> list[ErrorEvent]:
        """Copytruncate (or a plain truncation): finish the copy from where we were, then
        read the log from its start under a new generation."""
        assert self.reading is not None
        old = self.reading
        log.info("%s was truncated; reading from the start", self.path)
        events = []
        copy = self._find_copy(old.ledger.head, -1, old.offset)
        if copy is not None:
            drained = self._reading(copy, old.offset - len(old.buffer), old.ledger.inode, old.ledger.generation, final=True)
            if drained is not None:
                self.reading = drained
                events += self._read_all()
                drained.fh.close()
        old.fh.close()
        self.generation += 1
        self.reading = self._reading(self.path, 0, None, self.generation, final=False)
        if self.reading is not None:
            events += self._read()
        return events

    def _read_all(self) -> list[ErrorEvent]:
        """The rest of the file being read; its ledger then waits only for its events."""
        assert self.reading is not None
        events = []
        while True:
            before = self.reading.offset
            events += self._read()
            if self.reading.offset == before:
                self.reading.ledger.draining = False
                return events

    def _read(self) -> list[ErrorEvent]:
        reading = self.reading
        if reading is None:
            return []
        chunk = reading.fh.read(MAX_READ_BYTES)
        if not chunk:
            return []
        data = reading.buffer + chunk
        start = reading.offset - len(reading.buffer)
        raw_lines, reading.buffer = line_split(data, reading.newline)
        if len(reading.buffer) > MAX_LINE_BYTES:
            reading.buffer = b""  # an endless line is dropped, not kept in memory
        texts = [decode_log(raw[:MAX_LINE_BYTES], reading.encoding).rstrip("\r") for raw in raw_lines]
        matches = [self._match(text) for text in texts]
        cleaned = self._redacted(texts) if any(matches) else texts  # only event lines leave this object
        self.last_line = texts[-1] if texts else self.last_line
        events = []
        position = start
        ledger, step = reading.ledger, len(reading.newline)
        for raw, found, clean in zip(raw_lines, matches, cleaned, strict=True):
            end = position + len(raw) + step
            if found is not None:
                event = self._event(*found, clean, ledger, position)
                ledger.add(end)
                event.done = functools.partial(ledger.done, end)
                events.append(event)
            position = end
        reading.offset = start + len(data)  # where the file was read to; the buffer ends here
        if not events:
            ledger.skip_to(reading.offset - len(reading.buffer))
        return events

    def _redacted(self, texts: list[str]) -> list[str]:
        """The lines redacted together with the line before them (a PAN may wrap)."""
        from remote.redact import Redactor

        cleaned = Redactor().text("\n".join([self.last_line, *texts])).split("\n")[1:]
        if len(cleaned) != len(texts):  # a redaction that joined lines: one by one instead
            cleaned = [Redactor().text(t) for t in texts]
        return cleaned

    def _match(self, line: str) -> tuple[str, str | None] | None:
        """(code, scheme) of the first pattern that finds a valid code in the line."""
        for pattern in self.patterns:
            m = pattern.search(line)
            code = (m.groupdict().get("code") or "").strip() if m else ""
            if valid_code(code):  # the same rule as for socket events: no empty or runaway codes
                scheme = m.groupdict().get("scheme") or self.scheme
                return code, scheme if scheme in SCHEMES else None
        return None

    def _event(self, code: str, scheme: str | None, clean: str, ledger: OffsetLedger, start: int) -> ErrorEvent:
        return ErrorEvent(
            id=event_id(self.identity, self.path, ledger.inode, ledger.generation, start),
            code=clean_code(code),
            scheme=scheme,
            source=self.key,
            at=now_iso(),
            context={"line": clean.strip()[:512], "offset": start},
        )

    def close(self) -> None:
        for reading in [self.reading, *self.queue]:
            if reading is not None:
                reading.fh.close()
        self.reading, self.queue = None, []


class LastErrorFile:
    """A JSON file the firmware rewrites with its last error; read when it changes.

    A change is a new content or a new modification time (the same error written again is
    a second error). The state committed for a restart moves only once the event is done.
    """

    def __init__(self, path: Path, saved: dict[str, Any], identity: str = "") -> None:
        self.path = path
        self.identity = identity
        self.committed = saved.get("version")
        self.seen = self.committed

    @property
    def key(self) -> str:
        return f"file:{self.path}"

    def position(self) -> dict[str, Any]:
        return {"version": self.committed}

    def poll(self, first: bool = False) -> list[ErrorEvent]:
        try:
            with self.path.open("rb") as fh:
                raw = fh.read(MAX_READ_BYTES)
                mtime = os.fstat(fh.fileno()).st_mtime_ns
        except OSError:
            return []
        version = f"{sha256_hex(raw)}:{mtime}"
        if version == self.seen:
            return []
        fresh_start = first and self.seen is None  # an error from before posdiag ever ran
        self.seen = version
        if fresh_start or not raw:
            self.committed = version
            return []
        try:
            code, scheme, context = parse_event_bytes(raw)
        except ValueError as exc:
            log.warning("ignored %s: %s", self.path, exc)
            self.committed = version
            return []
        event = ErrorEvent(event_id(self.identity, self.path, version), code, scheme, self.key, now_iso(), context)
        event.done = functools.partial(setattr, self, "committed", version)
        return [event]
