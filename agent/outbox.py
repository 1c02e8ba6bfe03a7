"""Bundles waiting for upload, on disk, safe across crashes and power cuts.

Layout of the outbox directory:

    <UTC stamp>-<bundle_id>.tar.gz    a whole bundle; lexical order is creation order
    <UTC stamp>-<outcome_id>.outcome.json  an outcome record (`posdiag visit close`): sent once
                                      every bundle older than it has left (agent/upload.py)
    .tmp-<pid>-<random>               being written; never listed, removed once its writer is gone
    state.json                        {"evicted": n} bundles evicted and not yet reported in a manifest
    dead/<name>.tar.gz + .reason.json bundles the server refused for good, with its answer
                                      (`posdiag outbox requeue` moves them back once fixed);
                                      refused outcome records likewise

A bundle appears only by rename(2) of a fully written and fsynced temp file, followed by
an fsync of the directory, so after a crash a bundle is either whole or absent. The stamp
never goes backwards (a terminal whose clock was reset would otherwise send new bundles
before old ones): a name older than the newest present one, bundle or outcome record, is
moved just past it. Outcome records are a few hundred bytes and never evicted.

The resident agent reads the outbox (is anything waiting?) and writes its state files
through write_atomic, so this module imports neither dataclasses nor `secrets` (hashlib),
and datetime only where a bundle is stored (agent/resident.py says why).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from collections import namedtuple

TYPE_CHECKING = False  # typing's, without importing typing (0.4 MB): agent/resident.py says why
if TYPE_CHECKING:
    from datetime import datetime
    from typing import Any

SUFFIX = ".tar.gz"
OUTCOME_SUFFIX = ".outcome.json"
TEMP_PREFIX = ".tmp-"
STAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"
NAME = re.compile(r"^(?P<stamp>\d{8}T\d{6}\.\d{6}Z)-(?P<id>[0-9A-Za-z-]{1,64})\.tar\.gz$")
OUTCOME_NAME = re.compile(r"^(?P<stamp>\d{8}T\d{6}\.\d{6}Z)-(?P<id>[0-9A-Za-z-]{1,64})\.outcome\.json$")


class OutboxBusy(Exception):
    """Another process is flushing this outbox."""


class Entry(namedtuple("Entry", ("path", "bundle_id", "stamp", "size"))):
    __slots__ = ()
    path: Path
    bundle_id: str  # the id in the file name: a bundle's, or an outcome record's outcome_id
    stamp: str
    size: int

    @property
    def name(self) -> str:
        return self.path.name

    def created_at(self) -> datetime:
        from datetime import UTC, datetime

        return datetime.strptime(self.stamp, STAMP_FORMAT).replace(tzinfo=UTC)


class Outbox:
    def __init__(self, root: str | Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.dead = self.root / "dead"
        self.max_bytes = max_bytes
        self.dead.mkdir(parents=True, exist_ok=True)
        self.clean_temp()

    @classmethod
    def from_config(cls, config: Any) -> Outbox:
        section = config.section("outbox")
        return cls(section.dir, int(section.max_mib * 1024 * 1024))

    def entries(self) -> list[Entry]:
        return scan(self.root)

    def waiting(self) -> bool:
        """Whether a bundle or an outcome record waits to be sent (one directory read, for
        the resident's schedule)."""
        return any(NAME.match(name) or OUTCOME_NAME.match(name) for name in os.listdir(self.root))

    def dead_entries(self) -> list[Entry]:
        return scan(self.dead)

    def outcome_entries(self) -> list[Entry]:
        return scan(self.root, OUTCOME_NAME)

    def dead_outcome_entries(self) -> list[Entry]:
        return scan(self.dead, OUTCOME_NAME)

    def put_outcome(self, data: bytes, outcome_id: str, now: datetime | None = None) -> Entry:
        """Store an outcome record durably, after every bundle and record already present."""
        from datetime import UTC, datetime

        with self.locked():
            stamp = self._next_stamp(now or datetime.now(UTC))
            path = self.root / f"{stamp}-{outcome_id}{OUTCOME_SUFFIX}"
            write_atomic(path, data)
        return Entry(path, outcome_id, stamp, len(data))

    def put(self, data: bytes, bundle_id: str, reported_evicted: int = 0, now: datetime | None = None) -> Entry:
        """Store a bundle durably. `reported_evicted` is the evicted count its manifest carries;
        it is taken off the pending count only once the bundle is safely on disk."""
        from datetime import UTC, datetime

        with self.locked():
            stamp = self._next_stamp(now or datetime.now(UTC))
            path = self.root / f"{stamp}-{bundle_id}{SUFFIX}"
            write_atomic(path, data)
            state = self._state()
            state["evicted"] = max(0, state["evicted"] - reported_evicted) + self._evict(keep=path)
            self._save_state(state)
        return Entry(path, bundle_id, stamp, len(data))

    def pending_evicted(self) -> int:
        return self._state()["evicted"]

    def remove(self, entry: Entry) -> None:
        with contextlib.suppress(FileNotFoundError):
            entry.path.unlink()
        fsync_dir(self.root)

    def dead_letter(self, entry: Entry, reason: dict[str, Any]) -> Path:
        """Move a bundle the server refused for good into dead/, its reason beside it."""
        target = self.dead / entry.name
        reason_path = reason_file(self.dead, entry.name)
        write_atomic(reason_path, json.dumps(reason, ensure_ascii=False, indent=2).encode())
        with contextlib.suppress(FileNotFoundError):
            os.replace(entry.path, target)
        fsync_dir(self.dead)
        fsync_dir(self.root)
        return target

    def requeue(self, entry: Entry) -> Entry:
        """Move a refused bundle from dead/ back to the waiting ones (its name, and so its
        place in the upload order, unchanged); its reason file goes."""
        with self.locked():
            target = self.root / entry.name
            os.replace(entry.path, target)
            reason_file(self.dead, entry.name).unlink(missing_ok=True)
            fsync_dir(self.root)
            fsync_dir(self.dead)
        return Entry(target, entry.bundle_id, entry.stamp, entry.size)

    def clean_temp(self) -> int:
        """Remove temp files whose writer is gone (a live writer's file is left alone)."""
        removed = 0
        for folder in (self.root, self.dead):
            for path in folder.glob(TEMP_PREFIX + "*"):
                if not writer_alive(path.name):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        removed += 1
        return removed

    @contextlib.contextmanager
    def flushing(self) -> Iterator[None]:
        """Held for a whole flush so two flushers never send the same outbox at once."""
        with (self.root / ".flush.lock").open("a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OutboxBusy(f"another process is flushing {self.root}") from None
            yield

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with (self.root / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _next_stamp(self, now: datetime) -> str:
        from datetime import UTC, datetime, timedelta

        stamp = now.astimezone(UTC).strftime(STAMP_FORMAT)
        newest = max((e.stamp for e in self.entries() + self.outcome_entries()), default="")
        if stamp <= newest:
            stamp = (datetime.strptime(newest, STAMP_FORMAT) + timedelta(microseconds=1)).strftime(STAMP_FORMAT)
        return stamp

    def _evict(self, keep: Path) -> int:
        """Delete refused bundles, then the oldest waiting ones, until under the byte cap.
        Returns how many waiting bundles went (refused ones were already reported)."""
        dead, waiting = self.dead_entries(), self.entries()
        total = sum(e.size for e in dead + waiting)
        evicted = removed = 0
        for entry in dead + waiting:
            if total <= self.max_bytes or entry.path == keep:
                break
            removed += 1
            with contextlib.suppress(FileNotFoundError):
                entry.path.unlink()
                if entry in dead:
                    reason_file(self.dead, entry.name).unlink(missing_ok=True)
                else:
                    evicted += 1
            total -= entry.size
        if removed:
            fsync_dir(self.root)
            fsync_dir(self.dead)
        return evicted

    def _state(self) -> dict[str, int]:
        try:
            raw = json.loads((self.root / "state.json").read_text())
            return {"evicted": int(raw.get("evicted", 0))}
        except (OSError, ValueError, AttributeError):
            return {"evicted": 0}

    def _save_state(self, state: dict[str, int]) -> None:
        write_atomic(self.root / "state.json", json.dumps(state).encode())


def reason_file(folder: Path, name: str) -> Path:
    """The refusal beside a dead bundle or outcome record."""
    stem = name.removesuffix(SUFFIX).removesuffix(OUTCOME_SUFFIX)
    return folder / (stem + ".reason.json")


def scan(folder: Path, name: re.Pattern[str] = NAME) -> list[Entry]:
    found = []
    for path in folder.iterdir():
        match = name.match(path.name)
        if not match:
            continue
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue
        found.append(Entry(path, match["id"], match["stamp"], size))
    return sorted(found, key=lambda e: e.name)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.parent / f"{TEMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:  # a full disk or an interruption leaves no partial file behind
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def writer_alive(temp_name: str) -> bool:
    try:
        pid = int(temp_name[len(TEMP_PREFIX) :].split("-", 1)[0])
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
