"""posdiag beside the general collectors a technician would otherwise reach for.

Runs, alternating, on this same host with no simulation: `posdiag probe --json`,
`hw-probe -all -save DIR` and `sos report --batch -o networking,hardware,filesys,
processor,memory` (each only when installed; nothing is uploaded). Prints median wall
time, peak RSS (largest process of the run, from wait4) and output size, and posdiag's
ratios. Targets (issue 2): >= 2x faster than hw-probe, >= 7x faster than that sos run,
lower peak RSS than either.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import BIN, row

ROUNDS = 5


def measure(cmd: list[str], outdir: Path, stdout_file: Path | None) -> tuple[float, int, int]:
    """(wall seconds, peak RSS bytes, output bytes) of one run."""
    out = open(stdout_file, "wb") if stdout_file else subprocess.DEVNULL
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if stdout_file:
        out.close()
    size = sum(p.stat().st_size for p in outdir.rglob("*") if p.is_file())
    return wall, usage.ru_maxrss * 1024, size


def tools(work: Path) -> dict[str, tuple[list[str], bool]]:
    found = {"posdiag probe --json": ([str(BIN / "python"), str(BIN / "posdiag"), "probe", "--json"], True)}
    if shutil.which("hw-probe"):
        found["hw-probe -all -save"] = (["hw-probe", "-all", "-save", "{out}"], False)
    if shutil.which("sos"):
        plugins = "networking,hardware,filesys,processor,memory"
        found["sos report (5 plugins)"] = (["sos", "report", "--batch", "-o", plugins, "--tmp-dir", "{out}"], False)
    return found


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="posdiag-peers-"))
    try:
        candidates = tools(work)
        samples: dict[str, list[tuple[float, int, int]]] = {name: [] for name in candidates}
        for i in range(ROUNDS):
            for name, (cmd, captures_stdout) in candidates.items():
                outdir = work / f"{len(samples[name])}-{name.split()[0]}-{i}"
                outdir.mkdir()
                argv = [a.replace("{out}", str(outdir)) for a in cmd]
                samples[name].append(measure(argv, outdir, outdir / "stdout.json" if captures_stdout else None))
                shutil.rmtree(outdir)
        print(f"peers on this host (median of {ROUNDS} alternating runs)")
        row("", "wall ms", "peak RSS MiB", "output KiB")
        summary = {}
        for name, runs in samples.items():
            wall = statistics.median(r[0] for r in runs) * 1000
            rss = statistics.median(r[1] for r in runs) / 2**20
            size = statistics.median(r[2] for r in runs) / 1024
            summary[name] = (wall, rss)
            row(name, f"{wall:.0f}", f"{rss:.1f}", f"{size:.1f}")
        ours_wall, ours_rss = summary["posdiag probe --json"]
        for name, (wall, rss) in summary.items():
            if not name.startswith("posdiag"):
                row(f"posdiag vs {name}", f"{wall / ours_wall:.1f}x faster", f"{rss / ours_rss:.1f}x RSS")
        if len(summary) == 1:
            print("  (hw-probe and sos not installed: apt-get install hw-probe sosreport)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
