"""Cost of a diagnosis: the correlation step alone, and a whole `diagnose` on the simulated terminal.

Targets (issue 4): correlation well under 1 ms per diagnosis. The whole command is reported
as wall time, in process (probes + correlation) and as a fresh `posdiag diagnose` process.
"""

from __future__ import annotations

import subprocess
import sys
import time

from _util import BIN, median_ms, row

from agent import config, knowledge
from agent.correlate import correlate
from agent.diagnosis import diagnose
from agent.model import ProbeResult
from probes.contract.records import Finding, Status
from probes.emulators import SimulatedTerminal

N = 1000
ORDER = ("iso8583", "cup", "terminal", "exception")
# A spread of inputs: host answers, generic codes that open every supported cause, unknown codes.
CASES = [
    ("51", {"network": ["network.link_down"]}),
    ("03", {}),
    ("3000", {"printer": ["printer.paper_out"], "network": ["network.weak_signal"]}),
    ("E3", {"card_reader": ["reader.bad_frame"], "storage": ["storage.disk_low", "storage.slow"]}),
    ("CommunicationError", {"network": ["network.dns_failed"]}),
    ("A0", {"card_reader": ["reader.tamper"]}),
    ("ZZ", {"printer": ["printer.cover_open"], "power": ["power.battery_low"], "system": ["system.memory_low"]}),
]
PROBES = ("card_reader", "network", "power", "printer", "storage", "system")


def results_for(faults: dict[str, list[str]]) -> list[ProbeResult]:
    return [
        ProbeResult(
            name,
            Status.FAIL if faults.get(name) else Status.OK,
            [Finding.fail(fid, f"bench {fid}") for fid in faults.get(name, [])],
            {},
            1.0,
        )
        for name in PROBES
    ]


def correlation_only() -> tuple[float, float]:
    kb = knowledge.load()
    inputs = [(kb.lookup(code, None, ORDER), results_for(faults)) for code, faults in CASES]
    per_round = []
    for _ in range(5):
        t0 = time.perf_counter()
        for i in range(N):
            entry, results = inputs[i % len(inputs)]
            correlate(kb, entry, results)
        per_round.append((time.perf_counter() - t0) / N)
    return min(per_round) * 1e6, sorted(per_round)[len(per_round) // 2] * 1e6


def whole_in_process(rounds: int = 10) -> float:
    with SimulatedTerminal.from_spec("printer.paper_out") as terminal:
        cfg = config.load(None, terminal.overrides)
        samples = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            diagnose(cfg, "3000")
            samples.append(time.perf_counter() - t0)
    return median_ms(samples)


def whole_command(rounds: int = 5) -> float:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run(
            [str(BIN / "posdiag"), "diagnose", "--code", "3000", "--simulate", "printer.paper_out", "--json"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        samples.append(time.perf_counter() - t0)
    return median_ms(samples)


def main() -> None:
    t0 = time.perf_counter()
    knowledge.load()
    load_ms = (time.perf_counter() - t0) * 1000
    best, median = correlation_only()
    print(f"diagnosis cost ({N} correlations per round, {len(CASES)} input shapes)")
    row("knowledge base load (once)", f"{load_ms:.1f} ms")
    row("correlation per diagnosis", f"{median:.1f} us", f"best {best:.1f} us", "target < 1000 us")
    row("diagnose in process (probes+corr.)", f"{whole_in_process():.1f} ms", "median of 10")
    row("posdiag diagnose --simulate (wall)", f"{whole_command():.1f} ms", "median of 5")


if __name__ == "__main__":
    sys.exit(main())
