"""The fleet detectors over generated fleets (fleet_gen.py), a few seeds through the real
API on SQLite, scored by fleet_score.py: rates over the seeds, never one seed's outcome.
bench/fleet_eval.py runs the same at 20 seeds and more, on both databases.

The fleets are small to keep the suite fast: 60 terminals for 48 hours, a heartbeat every
12 hours (and at each start of a shop's day), retry storms of 3 x 20 and 1 x 12 uploads in
ten minutes, a rollout fault on most of its terminals' days; regression_min_terminals is
lowered to 8 (a rollout of a quarter of one model is 8 to 12 terminals here).

What is asserted is what the detectors achieve on these seeds, with a margin: issue 20's
targets over 20 seeds and both databases are bench/fleet_eval.py's (docs/fleet.md).
"""

from __future__ import annotations

import dataclasses

import pytest
from fleet_gen import GenConfig
from fleet_score import Score, run_seed
from server_harness import default_settings

# Not in the clock run. Its held-inside collapse there (53 %) is fixed (founding terminals from
# the fleet's first sighting), but at 31 December 23:59:30 one of the three seeds' rollouts was
# then missed (regression recall 2/3): a 48-hour history that ends at midnight UTC splits into
# two whole UTC days, the fewest terminal-days a rollout can have. Regressions count calendar
# terminal-days (docs/fleet.md); issue 20 stays open on it.
pytestmark = pytest.mark.timeout(900)

SEEDS = (1, 2, 3)
FLEET = {"terminals": 60, "hours": 48.0, "heartbeat_minutes": 720.0, "outages": 2, "storm_uploads": (20, 20, 20, 12),
         "decline_per_hour": 0.2, "fault_per_hour": 0.15}  # fmt: skip


@pytest.fixture(scope="module")
def score(tmp_path_factory) -> Score:
    s = default_settings()
    settings = dataclasses.replace(s, fleet=dataclasses.replace(s.fleet, regression_min_terminals=8))
    total = Score()
    for seed in SEEDS:
        tmp = tmp_path_factory.mktemp(f"gen-{seed}")
        one, _gen, sent = run_seed(f"sqlite:///{tmp / 's.db'}", tmp / "data", "sqlite", GenConfig(seed=seed, **FLEET), settings, workers=1)
        assert not sent.errors, sent.errors[:3]
        total.add(one)
    print(f"\n{len(SEEDS)} generated fleets on SQLite: {total.summary()}")  # shown with pytest -s
    return total


def test_retry_storms_make_no_regression(score):
    assert score.storm_regressions == 0, (score.false_regressions, score.summary())


def test_staged_rollouts_with_a_printer_or_reader_fault_are_found(score):
    assert score.rollouts >= 2, score.summary()
    assert score.regression_recall >= 0.9, score.summary()


def test_outages_are_found_with_their_scope_and_nothing_else(score):
    """One outage of the seeds' eight or so may be missed or open with another scope."""
    assert score.recall >= 0.85, (score.wrong_scope, score.summary())
    assert len(score.false_incidents) <= 1, (score.false_incidents, score.summary())


def test_the_figures_of_found_outages_are_right(score):
    """terminals_in_scope within 10 % of the scope's awake terminals, terminals_affected at
    least 90 % of those that failed."""
    assert score.in_scope_within(0.1) >= 0.85, score.summary()
    assert score.affected_at_least(0.9) >= 0.9, score.summary()


def test_holds_stay_inside_true_outages(score):
    assert score.false_hold_rate <= 0.01, score.summary()
    assert score.held_inside_rate >= 0.95, score.summary()
