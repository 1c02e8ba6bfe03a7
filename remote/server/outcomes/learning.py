"""The estimator behind the learned tables: what visits found, per (code, model), as a
Dirichlet posterior whose prior is the knowledge base (docs/outcomes.md). Pure: visits in,
tables out; remote/server/outcomes/tables.py stores and serves them, bench/outcomes.py
evaluates this same code.

For one code, over its candidate causes K (the code's listed causes; for a code that is not
a host answer, also any cause a visit found for it, at the knowledge base's open_prior):

    pi_k  = w_k / sum(w)                                  the knowledge base's prior
    p1_k  = (S * pi_k + N_k) / (S + N)                    fleet-wide: N_k visits found k
    p2_k  = (S_m * p1_k + n_k) / (S_m + n)                one model: n_k of its visits found k
    r_k   = p2_k / pi_k
    f_k   = clamp(r_k * min(1, F / max(r)), 1 / F, F)    the factor the terminal multiplies w_k by

The ranking only sees the ratios between priors, so the ratios are first scaled down until
the largest is F (the likeliest causes keep their ratio to one another; only causes already
made unlikely reach the floor), then clamped: any two causes move apart by at most F^2.

S is prior_strength, S_m model_strength, F max_factor. A model with few visits of a code
backs off to the fleet-wide estimate, and a code with few visits anywhere to the knowledge
base; a code with fewer than min_visits visits fleet-wide is not learned at all. One
terminal's visits of a code weigh at most max_visits_per_terminal in all (a terminal that
reports a lot does not teach the fleet alone). `nothing` and `other` are not causes: they
count in the measures, not here.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from remote.outcome_wire import LEARNED_SCHEMA, canonical
from remote.server.outcomes.knowledge import CodeView, KnowledgeView

FLEET = "*"  # the table of the whole fleet, served to a model that has none of its own


@dataclass(frozen=True)
class Visit:
    """One current outcome as the estimator sees it."""

    terminal_id: str
    model: str
    code: str  # scheme:folded code
    found: str  # a cause id


@dataclass(frozen=True)
class Params:
    prior_strength: float
    model_strength: float
    max_factor: float
    min_visits: int
    min_change: float
    max_visits_per_terminal: int
    max_codes: int
    max_table_bytes: int

    @classmethod
    def of(cls, settings: Any) -> Params:
        """From [server.outcomes] (remote/server_settings.py OutcomeSettings)."""
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__})


Weights = dict[str, float]


def weighted_counts(visits: Iterable[Visit], cap: int) -> dict[tuple[str, str], Weights]:
    """(code, model) -> cause -> visits, each terminal's visits of a code scaled to weigh at most `cap`."""
    per_terminal: dict[tuple[str, str], list[Visit]] = defaultdict(list)
    for visit in visits:
        per_terminal[(visit.terminal_id, visit.code)].append(visit)
    counts: dict[tuple[str, str], Weights] = defaultdict(lambda: defaultdict(float))
    for seen in per_terminal.values():
        weight = min(1.0, cap / len(seen))
        for visit in seen:
            counts[(visit.code, visit.model)][visit.found] += weight
    return counts


def candidates(kb: KnowledgeView, code: CodeView, found: Iterable[str]) -> Weights:
    """The code's prior weights, with the causes visits found that the code may take."""
    weights = dict(code.causes)
    if not code.host_answer:  # the host answered: its causes stay the code's own
        for cause in found:
            if cause not in weights and cause in kb.dispatch:
                weights[cause] = kb.open_prior
    return weights


def posterior(prior: Weights, counts: Weights, strength: float) -> Weights:
    """The mean of Dirichlet(strength * prior + counts); `prior` sums to 1."""
    alpha = {k: strength * p + counts.get(k, 0.0) for k, p in prior.items()}
    total = sum(alpha.values())
    return {k: a / total for k, a in alpha.items()}


def factors(learned: Weights, prior: Weights, params: Params) -> dict[str, float]:
    """learned / prior per cause, scaled and clamped (module docstring), rounded to two
    digits; those that stay 1 left out."""
    ratios = {cause: learned[cause] / prior[cause] for cause in sorted(prior)}
    scale = min(1.0, params.max_factor / max(ratios.values()))
    out = {}
    keep = math.log1p(params.min_change)
    for cause, ratio in ratios.items():
        f = min(params.max_factor, max(1 / params.max_factor, ratio * scale))
        if abs(math.log(f)) >= keep:
            out[cause] = float(f"{f:.2g}")
    return out


def build(kb: KnowledgeView, visits: Iterable[Visit], params: Params) -> dict[str, dict[str, Any]]:
    """Every model's table codes (and the fleet's, under FLEET): {model: {code: entry}}, an
    entry {"n": the model's visits, "N": the fleet's, "f": {cause: factor}}."""
    counts = weighted_counts(visits, params.max_visits_per_terminal)
    fleet_counts: dict[str, Weights] = defaultdict(lambda: defaultdict(float))
    models: dict[str, set[str]] = defaultdict(set)
    for (code, model), found in counts.items():
        models[model].add(code)
        for cause, n in found.items():
            fleet_counts[code][cause] += n
    tables: dict[str, dict[str, Any]] = {FLEET: {}, **{m: {} for m in models}}
    for code_key, found in sorted(fleet_counts.items()):
        code = kb.codes.get(code_key)
        total = sum(found.values())
        if code is None or total < params.min_visits:
            continue
        weights = candidates(kb, code, found)
        prior = {k: w / sum(weights.values()) for k, w in weights.items()}
        fleet = posterior(prior, found, params.prior_strength)
        fleet_entry = {"n": 0, "N": round(total), "f": factors(fleet, prior, params)}
        tables[FLEET][code_key] = fleet_entry
        for model in models:
            own = counts.get((code_key, model))
            if own is None:
                tables[model][code_key] = fleet_entry
                continue
            learned = posterior(fleet, own, params.model_strength)
            tables[model][code_key] = {"n": round(sum(own.values())), "N": round(total), "f": factors(learned, prior, params)}
    return {model: fit(model, entries, params) for model, entries in tables.items()}


def fit(model: str, entries: dict[str, Any], params: Params) -> dict[str, Any]:
    """The entries that change something, most visited first, as many as max_codes and
    max_table_bytes allow."""
    kept = sorted(((k, e) for k, e in entries.items() if e["f"]), key=lambda ke: (-ke[1]["n"], -ke[1]["N"], ke[0]))
    kept = kept[: params.max_codes]
    while kept and table_bytes(model, dict(kept)) > params.max_table_bytes:
        kept.pop()
    return dict(sorted(kept))


def document(model: str, version: int, table_hash: str, codes: dict[str, Any]) -> dict[str, Any]:
    """A table as a terminal receives it."""
    return {"schema": LEARNED_SCHEMA, "model": model, "version": version, "hash": table_hash, "codes": codes}


def table_bytes(model: str, codes: dict[str, Any]) -> int:
    """Its size as sent, at the largest version number and hash."""
    return len(canonical(document(model, 2**31 - 1, "0" * 16, codes)))
