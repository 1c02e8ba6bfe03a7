"""A fleet whose errors have a known ground truth, for judging what learning from visit
outcomes does (bench/outcomes.py prints it, tests/test_outcome_learning.py asserts it).

- Ground truth per (model, code): the share of each true cause. On K300, E3 is the printer
  driver hanging (`printer.not_connected`) 70 % of the time, paper 20 %, a worn mechanism
  10 %; on M50, the network error 3 is a wrong APN profile 70 % of the time. The knowledge
  base thinks otherwise for both. On S90 the truth of E3 is the knowledge base's own prior.
- What the probes see of each true cause: a few finding sets with their probabilities. Faults
  are often intermittent, so a driver that hung shows as `printer.offline` (which the
  knowledge base reads as a mechanism fault just as well) or as nothing at all.
- A technician who reports the true cause 90 % of the time, another candidate 5 %, and
  `nothing` 5 %.

Everything is judged by the real code: the packaged knowledge base, the correlation engine
with the learned table applied as on a terminal (agent.learned), and the server's estimator
(remote.server.outcomes.learning) fed with the visits, its table passing through the wire
form a terminal receives. No-fault-found is judged against the truth: an on-site dispatch
whose true cause needed no hands on site (its dispatch class is below onsite).
"""

from __future__ import annotations

import json
import random
import tomllib
from dataclasses import dataclass
from functools import cache

from agent import knowledge, learned, learned_table
from agent.model import ProbeResult
from probes.contract import config_file
from probes.contract.records import Finding, Status
from remote.outcome_wire import NOTHING, code_key, table_hash
from remote.server.outcomes import knowledge as server_knowledge
from remote.server.outcomes.learning import Params, Visit, build, document
from remote.server_settings import ServerSettings

ORDER = ("iso8583", "cup", "terminal", "exception")
PROBES = ("card_reader", "modem", "network", "power", "printer", "storage", "system")
WARN = {
    "modem.roaming", "modem.weak_signal", "network.cert_expiring", "network.high_latency", "network.weak_signal",
    "power.battery_low", "printer.paper_near_end", "storage.disk_low", "storage.emmc_wear", "storage.slow",
    "system.memory_low", "system.recent_reboot",
}  # fmt: skip
PROBE_OF = {"reader": "card_reader"}
CHECKPOINTS = (0, 50, 200, 1000)
TERMINALS_PER_MODEL = 500
TECHNICIAN = {"true": 0.90, "other": 0.05, "nothing": 0.05}
BACKGROUND = (("network.weak_signal", 0.03), ("storage.disk_low", 0.03))  # unrelated warnings

# What the probes see when the diagnosis runs, per true cause: (finding set, probability).
EMISSIONS: dict[str, tuple[tuple[tuple[str, ...], float], ...]] = {
    "printer.not_connected": ((("printer.offline",), 0.6), (("printer.no_response",), 0.2), ((), 0.2)),
    "printer.paper_out": ((("printer.paper_out",), 0.85), (("printer.paper_near_end",), 0.05), ((), 0.1)),
    "printer.mechanism_fault": ((("printer.cutter_error",), 0.6), (("printer.offline",), 0.3), ((), 0.1)),
    "network.apn_wrong": ((("modem.no_data_session",), 0.8), ((), 0.2)),
    "network.no_link": ((("network.link_down",), 0.8), (("modem.sim_absent",), 0.1), ((), 0.1)),
    "network.modem_fault": ((("modem.no_response",), 0.8), ((), 0.2)),
    "software.app_fault": ((("system.app_not_running",), 0.5), (("system.memory_low",), 0.2), ((), 0.3)),
    "operator.card_misuse": (((), 1.0),),
    "reader.not_connected": ((("reader.no_response",), 0.8), ((), 0.2)),
    "storage.failing": ((("storage.write_failed",), 0.5), (("storage.readonly",), 0.3), ((), 0.2)),
    "power.battery_low": ((("power.battery_low",), 0.8), ((), 0.2)),
}


@dataclass(frozen=True)
class Scenario:
    model: str
    code: str
    truth: dict[str, float]
    differs: bool  # the truth differs from the knowledge base


def kb_truth(code: str) -> dict[str, float]:
    causes = knowledge.load().lookup(code, None, ORDER).causes
    return {c: w / sum(causes.values()) for c, w in causes.items()}


SCENARIOS = (
    Scenario("K300", "E3", {"printer.not_connected": 0.7, "printer.paper_out": 0.2, "printer.mechanism_fault": 0.1}, True),
    Scenario("M50", "3", {"network.apn_wrong": 0.7, "network.no_link": 0.2, "network.modem_fault": 0.1}, True),
    Scenario("S90", "E3", kb_truth("E3"), False),
)


@cache
def params() -> Params:
    """The packaged [server.outcomes] defaults: the estimator as a server runs it."""
    server = tomllib.loads(config_file.packaged_default_text())["server"]
    return Params.of(config_file.convert(ServerSettings, server, "server", lambda _key: "packaged").outcomes)


@cache
def safety() -> tuple[str, ...]:
    return tuple(tomllib.loads(config_file.packaged_default_text())["learning"]["safety_causes"])


def pick(rng: random.Random, weighted: dict) -> object:
    return rng.choices(list(weighted), weights=list(weighted.values()))[0]


def findings_for(rng: random.Random, cause: str) -> list[ProbeResult]:
    """A sweep on a terminal whose error has this true cause: every probe ran."""
    seen = list(pick(rng, dict(EMISSIONS[cause])))
    seen += [fid for fid, p in BACKGROUND if rng.random() < p and fid not in seen]
    results = []
    for name in PROBES:
        mine = [(Finding.warn if f in WARN else Finding.fail)(f, f"simulated {f}") for f in seen if PROBE_OF.get(f.split(".")[0], f.split(".")[0]) == name]
        status = Status.FAIL if any(f.severity == "fail" for f in mine) else Status.WARN if mine else Status.OK
        results.append(ProbeResult(name, status, mine, {}, 1.0))
    return results


def reported(rng: random.Random, scenario: Scenario, true_cause: str) -> str:
    """What the technician says they found."""
    said = pick(rng, TECHNICIAN)
    if said == "true":
        return true_cause
    if said == "nothing":
        return NOTHING
    others = sorted((set(knowledge.load().lookup(scenario.code, None, ORDER).causes) | set(scenario.truth)) - {true_cause})
    return rng.choice(others)


def visits(rng: random.Random, scenario: Scenario, n: int) -> list[Visit]:
    """n visits of the scenario's model and code, as the estimator sees their outcomes."""
    kb = knowledge.load()
    key = code_key(kb.lookup(scenario.code, None, ORDER).scheme, scenario.code)
    out = []
    for _ in range(n):
        found = reported(rng, scenario, pick(rng, scenario.truth))
        if found != NOTHING:
            out.append(Visit(f"{scenario.model}-{rng.randrange(TERMINALS_PER_MODEL)}", scenario.model, key, found))
    return out


def received(model: str, codes: dict) -> learned_table.LearnedTable:
    """The table as a terminal of the model receives and checks it."""
    raw = json.dumps(document(model, 1, table_hash(model, codes), codes)).encode()
    return learned_table.parse(raw)


@dataclass(frozen=True)
class Rates:
    top1: float  # the diagnosis's top cause is the true one
    nff: float | None  # share of on-site dispatches whose true cause needed no hands on site
    onsite: int
    missed: float | None  # share of errors whose true cause needed hands on site, not dispatched onsite


def judge(rng: random.Random, scenario: Scenario, table: learned_table.LearnedTable | None, cases: int) -> Rates:
    """Diagnose `cases` fresh errors of the scenario with the table (None: the knowledge base alone)."""
    kb = knowledge.load()
    entry = kb.lookup(scenario.code, None, ORDER)
    hits = onsite = wasted = needed = missed = 0
    for _ in range(cases):
        true_cause = pick(rng, scenario.truth)
        correlation, _ = learned.correlate_learned(kb, entry, findings_for(rng, true_cause), table, safety())
        hits += correlation.causes[0].cause.id == true_cause
        sent, needs = correlation.dispatch.verdict == "onsite", kb.causes[true_cause].dispatch == "onsite"
        onsite += sent
        wasted += sent and not needs
        needed += needs
        missed += needs and not sent
    return Rates(hits / cases, wasted / onsite if onsite else None, onsite, missed / needed if needed else None)


def run(seed: int, cases: int, checkpoints: tuple[int, ...] = CHECKPOINTS) -> dict[int, dict[str, Rates]]:
    """{outcomes per model: {model: Rates}}, every model learning from its own visits at once.
    Every checkpoint judges the same errors (paired), so a difference is learning's, not chance's."""
    rng = random.Random(seed)
    kb_view = server_knowledge.load()
    seen: list[Visit] = []
    done = 0
    out: dict[int, dict[str, Rates]] = {}
    for checkpoint in checkpoints:
        for scenario in SCENARIOS:
            seen += visits(rng, scenario, checkpoint - done)
        done = checkpoint
        tables = build(kb_view, seen, params()) if seen else {}
        out[checkpoint] = {
            s.model: judge(random.Random(f"{seed}:{s.model}"), s, received(s.model, tables[s.model]) if s.model in tables else None, cases)
            for s in SCENARIOS
        }
    return out


def table_sizes(seed: int, n: int) -> dict[str, int]:
    """Bytes of each model's table as sent, after n visits per model."""
    rng = random.Random(seed)
    seen = [v for s in SCENARIOS for v in visits(rng, s, n)]
    tables = build(server_knowledge.load(), seen, params())
    return {m: len(json.dumps(document(m, 2**31 - 1, "0" * 16, codes), separators=(",", ":"))) for m, codes in tables.items()}


def oracle(scenario: Scenario) -> float:
    """Top-1 agreement of a judge who knows the truth and the emissions (the ceiling)."""
    sets: dict[tuple[str, ...], dict[str, float]] = {}
    for cause, share in scenario.truth.items():
        for seen, p in EMISSIONS[cause]:
            sets.setdefault(seen, {}).setdefault(cause, 0.0)
            sets[seen][cause] += share * p
    return sum(max(by_cause.values()) for by_cause in sets.values())
