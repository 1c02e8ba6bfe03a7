"""Learning from visit outcomes on a fleet with a known ground truth (tests/outcome_sim.py;
bench/outcomes.py prints the full figures): the targets of issue 26 over a few seeds."""

from __future__ import annotations

import statistics

import outcome_sim as sim
import pytest

from remote.outcome_wire import MAX_LEARNED_BYTES

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def runs():
    return [sim.run(seed, 150, checkpoints=(0, 200)) for seed in SEEDS]


def mean(runs, checkpoint: int, model: str, field: str) -> float:
    return statistics.mean(getattr(run[checkpoint][model], field) or 0.0 for run in runs)


def test_a_model_whose_truth_differs_is_learned_to_top1_of_090_after_200_outcomes(runs):
    for scenario in (s for s in sim.SCENARIOS if s.differs):
        before, after = mean(runs, 0, scenario.model, "top1"), mean(runs, 200, scenario.model, "top1")
        assert before < 0.5 and after >= 0.9, (scenario.model, before, after)


def test_a_model_whose_truth_is_the_knowledge_base_gets_no_worse(runs):
    for scenario in (s for s in sim.SCENARIOS if not s.differs):
        assert mean(runs, 200, scenario.model, "top1") >= mean(runs, 0, scenario.model, "top1") - 0.01


def test_no_fault_found_on_site_is_at_least_halved(runs):
    differs = [s.model for s in sim.SCENARIOS if s.differs]

    def pooled(checkpoint: int) -> float:
        onsite = sum(run[checkpoint][m].onsite for run in runs for m in differs)
        wasted = sum((run[checkpoint][m].nff or 0.0) * run[checkpoint][m].onsite for run in runs for m in differs)
        return wasted / onsite

    assert pooled(0) > 0.3 and pooled(200) <= pooled(0) / 2


def test_a_learned_table_fits_a_heartbeat_answer():
    assert max(sim.table_sizes(0, 1000).values()) <= MAX_LEARNED_BYTES
