"""What learning from visit outcomes does to diagnoses, on a fleet with a known ground truth
(tests/outcome_sim.py): top-1 agreement with the truth and the no-fault-found rate of on-site
dispatches, with the knowledge base alone and after 50, 200 and 1,000 outcomes per model.

    .venv/bin/python bench/outcomes.py [--seeds 10] [--cases 400]

K300 and M50 have a truth that differs from the knowledge base (E3 is mostly the printer
driver; 3 is mostly a wrong APN); S90's truth is the knowledge base's own prior (learning
must not make it worse). The oracle knows the truth and what the probes see of each cause:
the ceiling. NFF: on-site dispatches whose true cause needed no hands on site, pooled over a
model's dispatches; missed: errors whose true cause needed hands on site that were not
dispatched onsite (the merchant is told to act first; agent/merchant_fixes.py raises the
verdict when the same failure comes back). The last line: `outcomes: top1 A -> B, nff C -> D`, averaged over seeds,
for the models whose truth differs, before learning and after 200 outcomes.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from _util import ROOT

sys.path.insert(0, str(ROOT / "tests"))

import outcome_sim as sim  # noqa: E402

from remote.outcome_wire import MAX_LEARNED_BYTES  # noqa: E402


def pooled_nff(rates: list[sim.Rates]) -> float:
    onsite = sum(r.onsite for r in rates)
    wasted = sum((r.nff or 0.0) * r.onsite for r in rates)
    return wasted / onsite if onsite else 0.0


def idle_imports() -> list[str]:
    """What of learning the idle agent has loaded (it must be nothing: read only by a diagnosis)."""
    code = "import sys, agent.resident; print(' '.join(m for m in ('agent.learned', 'agent.visits', 'agent.learned_table', 'agent.upload') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return done.stdout.split()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--cases", type=int, default=400, help="errors judged per model and checkpoint")
    args = parser.parse_args()
    started = time.perf_counter()
    runs = [sim.run(seed, args.cases) for seed in range(args.seeds)]
    elapsed = time.perf_counter() - started
    print(f"Learning from visit outcomes: {args.seeds} seeds, {args.cases} errors judged per model and checkpoint")
    print("  (averages over seeds; the table of each model is the server's estimator's, applied by agent/learned.py)")
    print()
    marks = sim.CHECKPOINTS
    header = "  ".join(f"{'KB' if m == 0 else m:>5}" for m in marks)
    print(f"  {'model':<6}{'code':<5}{'truth':<8}  {'':<7} {header}  oracle")
    for scenario in sim.SCENARIOS:
        truth = "differs" if scenario.differs else "= KB"
        top1 = [statistics.mean(run[m][scenario.model].top1 for run in runs) for m in marks]
        nff = [statistics.mean(pooled_nff([run[m][scenario.model]]) for run in runs) for m in marks]
        missed = [statistics.mean(run[m][scenario.model].missed or 0.0 for run in runs) for m in marks]
        print(f"  {scenario.model:<6}{scenario.code:<5}{truth:<8}  {'top-1':<7} " + "  ".join(f"{v:5.3f}" for v in top1) + f"  {sim.oracle(scenario):5.3f}")
        print(f"  {'':<19}  {'NFF':<7} " + "  ".join(f"{v:5.3f}" for v in nff))
        print(f"  {'':<19}  {'missed':<7} " + "  ".join(f"{v:5.3f}" for v in missed))
    sizes = sim.table_sizes(0, max(marks))
    print()
    print(f"largest learned table after {max(marks)} outcomes per model: {max(sizes.values())} bytes (limit {MAX_LEARNED_BYTES})")
    loaded = idle_imports()
    print(f"idle agent (import agent.resident) loads of learning: {' '.join(loaded) or 'nothing'}")
    print(f"time: {elapsed:.1f} s for {args.seeds * len(marks) * len(sim.SCENARIOS) * args.cases} judged errors")
    differs = [s.model for s in sim.SCENARIOS if s.differs]
    before = statistics.mean(statistics.mean(run[0][m].top1 for m in differs) for run in runs)
    after = statistics.mean(statistics.mean(run[200][m].top1 for m in differs) for run in runs)
    nff_before = statistics.mean(pooled_nff([run[0][m] for m in differs]) for run in runs)
    nff_after = statistics.mean(pooled_nff([run[200][m] for m in differs]) for run in runs)
    print(f"outcomes: top1 {before:.3f} -> {after:.3f}, nff {nff_before:.3f} -> {nff_after:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
