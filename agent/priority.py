"""Keep the agent out of the payment app's way: low CPU and idle I/O priority.

ioprio_set has no libc wrapper, so it is called by syscall number (include/uapi/linux/
ioprio.h: IOPRIO_CLASS_IDLE = 3, IOPRIO_WHO_PROCESS = 1; numbers from each arch's
syscall table). The systemd unit sets the same through Nice= and IOSchedulingClass=.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger("posdiag.priority")
IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "riscv64": 30, "armv7l": 314, "i686": 289}
IOPRIO_CLASS_IDLE, IOPRIO_CLASS_SHIFT, IOPRIO_WHO_PROCESS = 3, 13, 1


def lower(nice: int) -> None:
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if current < nice:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    number = IOPRIO_SET.get(platform.machine())
    if number is None:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, IOPRIO_WHO_PROCESS, 0, IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT) != 0:
        log.info("could not set idle I/O priority (errno %d)", ctypes.get_errno())
