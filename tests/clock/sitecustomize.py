"""Imported at start-up by every Python process of a clock run (tests/clock/run.py puts
this directory on PYTHONPATH): the tests, and the servers and agents they start.

libfaketime 0.9.10 (Debian bookworm) runs the wall clock where the run wants it, but with
its monotonic clock left real (FAKETIME_DONT_FAKE_MONOTONIC=1, without which every
`threading.Event.wait(timeout)` waits for ever) Python 3.11's `time.sleep` fails with
EINVAL: it sleeps with clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME), and libfaketime
shifts that deadline by the wall clock's offset (libfaketime issue #426). Here
`time.sleep` waits in select() instead, whose timeout is relative, so it sleeps as long.
"""

import os
import select
import time

if "libfaketime" in os.environ.get("LD_PRELOAD", "") and os.environ.get("FAKETIME_DONT_FAKE_MONOTONIC") == "1":

    def _sleep(seconds: float) -> None:
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        select.select([], [], [], seconds)

    time.sleep = _sleep
