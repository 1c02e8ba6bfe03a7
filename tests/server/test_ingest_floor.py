"""Ingest against the floor of its own stack, in the same run (issue 22): bench/ingest.py
serves the same bodies to a minimal endpoint on the same uvicorn workers (read, HMAC,
fsync'd file, one row) and to posdiag, in alternating turns, and prints posdiag's share.
A ratio, not a time: it holds on a quiet machine and on a loaded one alike.

The issue's target is half of the floor; what this machine measures today is lower for
bundles at the bench's size (the tar.gz checks, redaction, the bundle row and counting it
into the fleet cost more than the floor's one row: docs/deployment.md, "Ingest"), so the
guard is well under today's share: a loss like the 5x one that went unnoticed before fails
here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# About 40 % of the lowest share measured with this test's sizes on this 2-core machine at a
# load average of 13 (bundles 0.38-0.78, heartbeats 0.68-1.33 after the drainer's chunks and
# the statements built once; 0.16-0.29 and 0.40-0.58 before): a loss of 2.5 x fails here.
MIN_SHARE = {"bundles": 0.15, "heartbeats": 0.3}

pytestmark = pytest.mark.timeout(300)


def test_ingest_keeps_its_share_of_the_floor():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ingest.py"), "--db", "sqlite", "--terminals", "8", "--bundles", "8",
         "--heartbeats", "16", "--client-processes", "2"],
        capture_output=True, text=True, timeout=280, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    shares = {kind: float(share) for kind, share in re.findall(r"^sqlite\s+posdiag .* (bundles|heartbeats)/s .*  ([0-9.]+) x floor$", done.stdout, re.M)}
    assert set(shares) == {"bundles", "heartbeats"}, done.stdout
    assert "LOST" not in done.stdout and re.search(r"stored: posdiag (\d+) of \1 bundles", done.stdout), done.stdout
    for kind, share in shares.items():
        assert share >= MIN_SHARE[kind], f"{kind}: {share:.2f} x the floor, under {MIN_SHARE[kind]}\n{done.stdout}"
