"""Where error events come from: the payment app's log files, a last-error file the
firmware rewrites, and a local socket the payment app writes to.

An event's id is derived from where it came from (file, inode, byte offset), so the same
line read again after a crash gives the same id, and the bundle made for it the same
bundle id: the server stores it once. A log follower commits its offset only when every
event before it has been diagnosed (or dropped on purpose), see OffsetLedger.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from remote.redact import Redactor

log = logging.getLogger("posdiag.sources")

EVENT_NAMESPACE = uuid.UUID("5d0c7f5e-4f0a-4b7e-9a57-6f1d1b8e2c10")
MAX_LINE_BYTES = 8192
MAX_READ_BYTES = 1 << 20
MAX_CODE_LENGTH = 64
SCHEMES = ("iso8583", "cup", "terminal", "exception")


@dataclass
class ErrorEvent:
    id: str
    code: str
    scheme: str | None
    source: str
    at: str
    context: dict[str, Any] = field(default_factory=dict)
    done: Callable[[], None] = field(default=lambda: None, repr=False)
    reply: Callable[[dict[str, Any]], None] | None = field(default=None, repr=False)

    def record(self) -> dict[str, Any]:
        """The event as it goes into a bundle's events.jsonl (context already redacted)."""
        return {"id": self.id, "code": self.code, "scheme": self.scheme, "source": self.source, "at": self.at, "context": self.context}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def event_id(*parts: object) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, "\x1f".join(str(p) for p in parts)))


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
    code reaches the agent's log, the socket answer and the bundle manifest."""
    return Redactor().text(code)


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
    return clean_code(code), scheme, Redactor().data(context)


def decode_log(raw: bytes) -> str:
    """UTF-8, else GB18030 (Chinese payment apps often log in GBK), else UTF-8 with U+FFFD."""
    for encoding in ("utf-8", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", errors="replace")


class OffsetLedger:
    """Offsets of a file's events in order; the committed offset only moves past an event
    once it and every event before it is done. The watcher thread adds, the worker marks
    done: a lock keeps them apart."""

    def __init__(self, inode: int, offset: int) -> None:
        self.inode, self.committed = inode, offset
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


class LogFollower:
    """Follows one log file across rotation (rename + new file) and truncation.

    `patterns` are regular expressions with a named group `code` and optionally
    `scheme`; the first that matches a line makes it an event.
    """

    def __init__(self, path: Path, patterns: list[re.Pattern[str]], scheme: str | None, saved: dict[str, Any]) -> None:
        self.path = path
        self.patterns = patterns
        self.scheme = scheme
        self.fh: Any = None
        self.ledger: OffsetLedger | None = None
        self.offset = 0
        self.buffer = b""
        self.saved = saved
        # Bumped at each truncation, so a new line at an old offset gets a new event id.
        self.generation = saved.get("generation", 0) if isinstance(saved.get("generation"), int) else 0

    @property
    def key(self) -> str:
        return f"log:{self.path}"

    def position(self) -> dict[str, int] | None:
        if self.ledger is None:
            return None
        return {"inode": self.ledger.inode, "offset": self.ledger.committed, "generation": self.generation}

    def _open(self, start_at_end: bool) -> bool:
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - kept open to follow across rotation
        except OSError:
            return False
        st = os.fstat(fh.fileno())
        if self.saved and self.saved.get("inode") == st.st_ino and self.saved.get("offset", 0) <= st.st_size:
            offset = int(self.saved["offset"])
        elif self.saved:
            offset = 0  # rotated (or truncated) while we were down: the file is all unread
            if self.saved.get("inode") == st.st_ino:
                self.generation += 1
        else:
            offset = st.st_size if start_at_end else 0
        self.saved = {}
        fh.seek(offset)
        self.fh, self.offset, self.buffer = fh, offset, b""
        self.ledger = OffsetLedger(st.st_ino, offset)
        return True

    def poll(self, first: bool = False) -> list[ErrorEvent]:
        if self.fh is None and not self._open(start_at_end=first):
            return []
        events = self._read()
        try:
            st = os.stat(self.path)
        except OSError:
            return events
        current = os.fstat(self.fh.fileno())
        if st.st_ino != current.st_ino:
            events += self._read()  # the rest of the rotated file, then the new one
            self.fh.close()
            self.fh = None
            if self._open(start_at_end=False):
                events += self._read()
        elif st.st_size < self.offset:
            log.info("%s was truncated; reading from the start", self.path)
            self.generation += 1
            self.fh.seek(0)
            self.offset, self.buffer = 0, b""
            self.ledger = OffsetLedger(current.st_ino, 0)
            events += self._read()
        return events

    def _read(self) -> list[ErrorEvent]:
        assert self.fh is not None and self.ledger is not None
        chunk = self.fh.read(MAX_READ_BYTES)
        if not chunk:
            return []
        data = self.buffer + chunk
        start = self.offset - len(self.buffer)
        events = []
        lines = data.split(b"\n")
        self.buffer = lines.pop()
        if len(self.buffer) > MAX_LINE_BYTES:
            self.buffer = b""  # an endless line is dropped, not kept in memory
        position = start
        ledger, inode = self.ledger, self.ledger.inode
        for raw in lines:
            end = position + len(raw) + 1
            event = self._match(decode_log(raw[:MAX_LINE_BYTES]), inode, position, end)
            if event is not None:
                ledger.add(end)
                event.done = functools.partial(ledger.done, end)
                events.append(event)
            position = end
        self.offset = start + len(data)  # where the file was read to; the buffer ends here
        if not events:
            ledger.skip_to(self.offset - len(self.buffer))
        return events

    def _match(self, line: str, inode: int, start: int, end: int) -> ErrorEvent | None:
        for pattern in self.patterns:
            m = pattern.search(line)
            code = (m.groupdict().get("code") or "").strip() if m else ""
            if valid_code(code):  # the same rule as for socket events: no empty or runaway codes
                scheme = m.groupdict().get("scheme") or self.scheme
                return ErrorEvent(
                    id=event_id(self.path, inode, self.generation, start),
                    code=clean_code(code),
                    scheme=scheme if scheme in SCHEMES else None,
                    source=self.key,
                    at=now_iso(),
                    context={"line": Redactor().text(line.strip())[:512], "offset": start},
                )
        return None

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


class LastErrorFile:
    """A JSON file the firmware rewrites with its last error; read when it changes.

    A change is a new content or a new modification time (the same error written again is
    a second error). The state committed for a restart moves only once the event is done.
    """

    def __init__(self, path: Path, saved: dict[str, Any]) -> None:
        self.path = path
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
        version = f"{hashlib.sha256(raw).hexdigest()}:{mtime}"
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
        event = ErrorEvent(event_id(self.path, version), code, scheme, self.key, now_iso(), context)
        event.done = functools.partial(setattr, self, "committed", version)
        return [event]
