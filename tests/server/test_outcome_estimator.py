"""The learned-table estimator (remote/server/outcomes/learning.py) on hand-made visits:
the Dirichlet posterior of docs/outcomes.md, its backoff, caps and bounds."""

from __future__ import annotations

import dataclasses
import json

from remote.outcome_wire import MAX_LEARNED_BYTES
from remote.server.outcomes import knowledge
from remote.server.outcomes.learning import FLEET, Params, Visit, build, table_bytes

KB = knowledge.load()
PARAMS = Params(
    prior_strength=20.0, model_strength=20.0, max_factor=20.0, min_visits=10, min_change=0.1,
    max_visits_per_terminal=5, max_codes=40, max_table_bytes=4096,
)  # fmt: skip


def visits(n: int, found: str, *, model: str = "K300", code: str = "terminal:e3", terminals: int | None = None) -> list[Visit]:
    """n visits spread over `terminals` terminals (default: one each)."""
    return [Visit(f"T{i % (terminals or n)}-{model}", model, code, found) for i in range(n)]


def test_posterior_of_one_model_backs_off_to_the_fleet_then_the_knowledge_base():
    # E3's priors sum to 1; printer.not_connected has 0.1 of it. Ten visits found it on K300:
    # fleet p = (20*0.1 + 10) / 30 = 0.4 -> x4; K300 p = (20*0.4 + 10) / 30 = 0.6 -> x6;
    # software.app_fault (0.3): fleet 6/30 = 0.2, K300 (20*0.2)/30 = 0.133 -> x0.44.
    tables = build(KB, visits(10, "printer.not_connected"), PARAMS)
    assert tables[FLEET]["terminal:e3"]["f"]["printer.not_connected"] == 4.0
    entry = tables["K300"]["terminal:e3"]
    assert (entry["n"], entry["N"]) == (10, 10)
    assert entry["f"]["printer.not_connected"] == 6.0
    assert entry["f"]["software.app_fault"] == 0.44


def test_a_model_without_visits_of_a_code_gets_the_fleet_estimate():
    tables = build(KB, visits(10, "printer.not_connected") + visits(10, "storage.failing", model="S90", code="terminal:3000"), PARAMS)
    assert tables["S90"]["terminal:e3"] == tables[FLEET]["terminal:e3"]
    assert "terminal:3000" in tables["S90"] and tables["S90"]["terminal:3000"]["n"] == 10


def test_nothing_is_learned_for_a_code_below_min_visits_or_unknown():
    assert build(KB, visits(9, "printer.not_connected"), PARAMS)[FLEET] == {}
    assert build(KB, visits(50, "printer.not_connected", code="terminal:zz9"), PARAMS)[FLEET] == {}


def test_a_found_cause_the_code_does_not_list_joins_a_local_code_not_a_host_answer():
    local = build(KB, visits(20, "printer.mechanism_fault"), PARAMS)[FLEET]["terminal:e3"]["f"]
    assert local["printer.mechanism_fault"] > 1  # joined at open_prior, then raised
    host = build(KB, visits(20, "network.apn_wrong", code="iso8583:96"), PARAMS)[FLEET]
    assert "network.apn_wrong" not in host.get("iso8583:96", {}).get("f", {})  # the host answered: not a link cause


def test_one_terminal_weighs_at_most_max_visits_per_terminal():
    alone = build(KB, visits(100, "printer.not_connected", terminals=1), PARAMS)
    assert alone[FLEET] == {}  # 100 visits of one terminal count as 5: below min_visits
    spread = build(KB, visits(100, "printer.not_connected", terminals=20), PARAMS)
    assert spread[FLEET]["terminal:e3"]["N"] == 100


def test_factors_stay_within_bounds_and_never_remove_a_cause():
    tables = build(KB, visits(5000, "printer.not_connected"), PARAMS)
    factors = tables["K300"]["terminal:e3"]["f"]
    assert factors["printer.not_connected"] == 10.0  # p -> 1: 1 / 0.1 prior, under the 20 cap
    assert min(factors.values()) == 0.05  # 1 / max_factor: lowered, never zero
    assert set(KB.codes["terminal:e3"].causes) <= set(factors)


def test_ratios_past_max_factor_are_scaled_so_the_likeliest_causes_keep_their_order():
    # E3 on K300, 200 visits: printer.not_connected 140 (prior 0.1), software.app_fault 40 (prior 0.3).
    # Posterior ratios ~5.9 and ~0.5: clamped alone, 5 and 0.5; scaled so the largest is 5: 5 and ~0.42.
    seen = visits(140, "printer.not_connected") + [Visit(f"U{i}", "K300", "terminal:e3", "software.app_fault") for i in range(40)]
    five = dataclasses.replace(PARAMS, max_factor=5.0)
    f = build(KB, seen, five)["K300"]["terminal:e3"]["f"]
    unscaled = build(KB, seen, PARAMS)["K300"]["terminal:e3"]["f"]
    assert f["printer.not_connected"] == 5.0 and unscaled["printer.not_connected"] > 5.0
    ratio = unscaled["printer.not_connected"] / unscaled["software.app_fault"]
    assert abs(f["printer.not_connected"] / f["software.app_fault"] - ratio) / ratio < 0.05
    assert min(f.values()) == 0.2


def test_a_table_fits_its_byte_cap_most_visited_codes_first():
    codes = [k for k, c in KB.codes.items() if not c.host_answer and "software.app_fault" in c.causes]
    many = [v for i, code in enumerate(codes) for v in visits(10 + i, "software.app_fault", code=code)]
    small = dataclasses.replace(PARAMS, max_table_bytes=600)
    table = build(KB, many, small)["K300"]
    assert 0 < len(table) < len(codes)
    assert table_bytes("K300", table) <= 600
    kept_n = sorted(e["n"] for e in table.values())
    dropped = [10 + i for i, code in enumerate(codes) if code not in table]
    assert max(dropped) <= min(kept_n)
    assert table_bytes("K300", build(KB, many, PARAMS)["K300"]) <= MAX_LEARNED_BYTES


def test_the_same_visits_give_the_same_table():
    some = visits(30, "printer.not_connected") + visits(12, "printer.paper_out")
    assert json.dumps(build(KB, some, PARAMS), sort_keys=True) == json.dumps(build(KB, list(reversed(some)), PARAMS), sort_keys=True)
