"""The agent's log: stderr lines with `<N>` syslog priority prefixes, which journald reads
(no timestamps: journald adds them). The resident agent and its workers write to the same
stderr, so their lines interleave in one journal.

An unexpected exception is logged with its traceback: every time at debug level, and the
first time of each kind (where it happened and the exception's type) also at error level,
so an agent that fails the same way every minute shows the cause once, not once a minute.
"""

from __future__ import annotations

import logging
import sys
import threading

PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{PRIORITY.get(record.levelno, 6)}>{record.name}: {super().format(record)}"


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class Failures:
    """Where the agent catches everything so that it keeps running: the one-line reason at
    error level, the traceback as the module docstring says."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.seen: set[tuple[str, str]] = set()
        self.lock = threading.Lock()

    def __call__(self, where: str, kind: str, message: str, traceback: str) -> None:
        """`message` is the line for people (it names the failure); `traceback` its text."""
        self.log.error("%s", message)
        with self.lock:
            first = (where, kind) not in self.seen
            self.seen.add((where, kind))
        if not traceback:  # a worker killed or gone: the message says all there is
            return
        if first:
            self.log.error("%s: first %s here, traceback (later ones at debug level):\n%s", where, kind, traceback.rstrip())
        else:
            self.log.debug("%s: %s, traceback:\n%s", where, kind, traceback.rstrip())

    def exception(self, where: str, message: str, exc: BaseException) -> None:
        """The same for an exception caught in this process."""
        import traceback

        text = "".join(traceback.format_exception(exc))
        self(where, type(exc).__name__, f"{message}: {type(exc).__name__}: {exc}", text)
