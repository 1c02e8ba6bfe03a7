"""Sweep cost against its slowest probe, healthy and with a hung probe, and cold start.

Targets (issue 2): wall / slowest probe <= 1.1 in both sweeps; `posdiag --version`
cold start <= 2.5 x `python -c pass` on the same interpreter.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from _util import BIN, median_ms, row

from agent import config
from agent.runner import run_probes
from probes.contract.config_file import merge
from probes.emulators import SimulatedTerminal
from tests import fakeprobes

ROUNDS = 10


def sweep_ratio(cfg: config.Config) -> tuple[float, float, str]:
    walls, slowest, names = [], [], []
    for _ in range(ROUNDS):
        sweep = run_probes(cfg)
        top = max(sweep.results, key=lambda r: r.duration_ms)
        walls.append(sweep.wall_ms)
        slowest.append(top.duration_ms)
        names.append(top.name)
    wall = sorted(walls)[len(walls) // 2]
    slow = sorted(slowest)[len(slowest) // 2]
    return wall, slow, max(set(names), key=names.count)


def cold_start(runs: int = 20) -> tuple[float, float]:
    python = str(BIN / "python")
    script = str(BIN / "posdiag")
    bare, ours = [], []
    for _ in range(runs):
        for cmd, bucket in (([python, "-c", "pass"], bare), ([python, script, "--version"], ours)):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            bucket.append(time.perf_counter() - t0)
    return median_ms(bare), median_ms(ours)


def main() -> None:
    print("probe sweep on the simulated terminal (median of", ROUNDS, "sweeps)")
    row("", "wall ms", "slowest ms", "ratio", "slowest")
    with SimulatedTerminal.from_spec("healthy") as terminal:
        cfg = config.load(None, terminal.overrides)
        wall, slow, name = sweep_ratio(cfg)
        row("healthy", f"{wall:.1f}", f"{slow:.1f}", f"{wall / slow:.3f}", name)
        release = threading.Event()
        hung = fakeprobes.make("hung", fakeprobes.hang(release))
        with fakeprobes.registered(hung) as sections:
            over = merge(merge(terminal.overrides, sections), {"probes": {"hung": {"timeout_seconds": 0.5}}})
            wall, slow, name = sweep_ratio(config.load(None, over))
            row("one probe hangs until its timeout", f"{wall:.1f}", f"{slow:.1f}", f"{wall / slow:.3f}", name)
        release.set()
    bare, ours = cold_start()
    print("cold start (median of 20, same interpreter)")
    row("python -c pass", f"{bare:.1f} ms")
    row("posdiag --version", f"{ours:.1f} ms", f"ratio {ours / bare:.2f}")


if __name__ == "__main__":
    sys.exit(main())
