"""The real PC/SC stack for tests: Debian's pcscd with vsmartcard's virtual reader (vpcd), and
vsmartcard's virtual card (vicc) inserted, removed or frozen on demand.

pcscd 1.9 (Debian 12) listens on /run/pcscd/pcscd.comm whatever PCSCLITE_CSOCK_NAME says (only
the client library reads that variable) and cleans /run/pcscd when it exits, so a second pcscd
on the machine would fight the system's. Ours runs in its own mount namespace (`unshare
--mount`, root only) with a private directory bound over /run/pcscd; clients reach it through
PCSCLITE_CSOCK_NAME=<dir>/pcscd.comm. Its reader.conf.d is ours too: vpcd listens for the
virtual card on a free TCP port (vpcd binds every interface; vicc connects through loopback).

vicc runs under this test interpreter: Debian's python3-virtualsmartcard puts its module under
/usr/lib/python3/site-packages/virtualsmartcard and imports `Crypto`, which only PyPI's
pycryptodome (the dev extra) provides.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
VICC_SCRIPT = Path("/usr/bin/vicc")
VICC_MODULES = Path("/usr/lib/python3/site-packages/virtualsmartcard")
READER = "Virtual PCD 00 00"  # vpcd's first slot; the card for it connects to the configured port


def missing() -> str | None:
    """Why the stack cannot run here, or None."""
    for what, path in (("pcscd", shutil.which("pcscd")), ("vsmartcard-vpcd", VPCD_DRIVER), ("vsmartcard-vpicc", VICC_SCRIPT)):
        if not path or not Path(path).exists():
            return f"{what} is not installed (.ci/run installs it)"
    if not (VICC_MODULES / "virtualsmartcard").is_dir():
        return "python3-virtualsmartcard is not installed"
    if not shutil.which("unshare") or os.geteuid() != 0:
        return "a private pcscd needs root for its own mount namespace (unshare --mount)"
    try:
        import Crypto  # noqa: F401
        import smartcard  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed in this interpreter (pip install -e '.[dev]')"
    return None


def free_port_pair() -> int:
    """A port p with p and p+1 free: vpcd opens one port per slot, and it has two slots."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65535 and all(can_bind(p) for p in (port, port + 1)):
            return port
    raise RuntimeError("no pair of free TCP ports")


def can_bind(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


class PcscStack:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port_pair()
        self.run_dir = workdir / "run"
        self.socket = self.run_dir / "pcscd.comm"
        self.pcscd: subprocess.Popen | None = None
        self.card: subprocess.Popen | None = None

    def start(self) -> None:
        conf = self.workdir / "reader.conf.d"
        conf.mkdir()
        self.run_dir.mkdir()
        (conf / "vpcd").write_text(
            f'FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:{self.port}\nLIBPATH {VPCD_DRIVER}\nCHANNELID {self.port}\n'
        )
        inner = f"mkdir -p /run/pcscd && mount --bind {self.run_dir} /run/pcscd && exec pcscd --foreground --info -c {conf}"
        with open(self.workdir / "pcscd.log", "wb") as log:  # the child keeps its own descriptor
            self.pcscd = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner], stdout=log, stderr=subprocess.STDOUT
            )
        wait_for(lambda: self.socket.exists(), 10, f"pcscd did not start: {self.log()}")

    def log(self) -> str:
        return (self.workdir / "pcscd.log").read_text(errors="replace")[-2000:]

    def insert(self) -> None:
        """A virtual ISO 7816 card in the first slot (vicc connects to vpcd)."""
        env = {**os.environ, "PYTHONPATH": str(VICC_MODULES)}
        self.card = subprocess.Popen(
            [sys.executable, str(VICC_SCRIPT), "--port", str(self.port), "--type", "iso7816"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: self.card_state() == "present", 10, "the virtual card never showed up in the reader")

    def freeze(self) -> None:
        """The card stays in the slot but answers nothing (SIGSTOP on vicc)."""
        assert self.card is not None
        self.card.send_signal(signal.SIGSTOP)

    def remove(self) -> None:
        if self.card is None:
            return
        self.card.send_signal(signal.SIGCONT)
        end(self.card)
        self.card = None
        wait_for(lambda: self.card_state() == "empty", 10, "the reader still reports a card")

    def card_state(self) -> str:
        from smartcard import scard

        hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hr != 0:
            return "no service"
        try:
            hr, states = scard.SCardGetStatusChange(ctx, 0, [(READER, scard.SCARD_STATE_UNAWARE)])
            if hr != 0 or not states:
                return "unknown"
            return "present" if states[0][1] & scard.SCARD_STATE_PRESENT else "empty"
        finally:
            scard.SCardReleaseContext(ctx)

    def stop(self) -> None:
        for proc in (self.card, self.pcscd):
            if proc is not None:
                proc.send_signal(signal.SIGCONT)
                end(proc)
        self.card = None


def end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for(condition, timeout_s: float, message: str) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    raise RuntimeError(message)
