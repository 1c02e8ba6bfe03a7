"""The directory in which every worker of one `posdiag-support serve` writes its Prometheus
samples (prometheus_client's multiprocess mode, see remote/server/metrics.py).

It is `posdiag-metrics-PID-XXXXXXXX` in the temp directory (`$TMPDIR`, else /tmp), PID
being serve's own process. serve removes it when it exits, on SIGTERM too; a serve that
was killed (SIGKILL, a crash, a power cut) cannot, so every serve, as it starts, removes
the ones whose processes are all gone: the serve named in the name and every worker that
wrote a file there (prometheus_client names them TYPE_PID.db). A directory left by a
release that did not name its serve counts as gone when none of its writers is alive
and, if nobody ever wrote in it, when it is an hour old.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

PREFIX = "posdiag-metrics-"
NAMED = re.compile(re.escape(PREFIX) + r"(\d+)-")
WRITER = re.compile(r"_(\d+)\.db$")
UNOWNED_GRACE_SECONDS = 3600.0


def create() -> Path:
    """A fresh directory for this process; the stale ones beside it are removed."""
    made = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
    sweep(made.parent, made)
    return made


def sweep(base: Path, made: Path) -> list[Path]:
    """Remove this user's metrics directories in `base` whose processes are all gone;
    what was removed. Ages are measured against the time stamp of `made`, a directory just
    made there: the file system's clock, which may not be this process's (NFS, a clock
    moved by faketime)."""
    removed = []
    now = made.stat().st_mtime
    for path in base.glob(PREFIX + "*"):
        try:
            info = path.lstat()
        except OSError:
            continue
        if path == made or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            continue  # a symlink or a file in a shared /tmp, or another user's: not ours to remove
        if stale(path, now - info.st_mtime):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def stale(path: Path, age_seconds: float) -> bool:
    owners = writers(path)
    named = NAMED.match(path.name)
    if named:
        owners.add(int(named.group(1)))
    if not owners:
        return age_seconds > UNOWNED_GRACE_SECONDS
    return not any(alive(pid) for pid in owners)


def writers(path: Path) -> set[int]:
    try:
        names = [entry.name for entry in os.scandir(path)]
    except OSError:
        return set()
    return {int(found.group(1)) for name in names if (found := WRITER.search(name))}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
