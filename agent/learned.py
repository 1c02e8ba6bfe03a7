"""A learned table applied to a diagnosis, within bounds (docs/outcomes.md).

The table (agent/learned_table.py) holds, per code, factors on the knowledge base's priors
learned from what visits found on this terminal's model (remote/server/outcomes/learning.py).
Applying it (`correlate_learned`) runs the correlation twice, with the knowledge base alone and
with the factors, because the bounds are judged against the first:
- when the knowledge base alone ranks a `[learning] safety_causes` cause first, or a fail
  finding whose own best cause is one is present, the table is not applied (a tamper or a
  swollen battery is never talked down), and it never lowers a safety cause's prior anywhere;
- findings weigh as they do without it, and every candidate stays (factors are > 0).
What was applied goes into the diagnosis document as `learned`: the table's model, version
and content hash, and per cause its factor, its rank and its rank without the table, so the
text can say "learned from N visits" on the causes it moved.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agent.correlate import Correlation, best_cause_for, correlate
from agent.knowledge import Code, KnowledgeBase
from agent.learned_table import LearnedTable
from agent.model import ProbeResult
from probes.contract.records import Severity
from remote.outcome_wire import code_key


def correlate_learned(
    kb: KnowledgeBase, code: Code | None, results: list[ProbeResult], table: LearnedTable | None, safety: Iterable[str]
) -> tuple[Correlation, dict[str, Any] | None]:
    """The correlation, with the table's factors for the code when it has some and the bounds
    allow; and the `learned` document of the diagnosis (None when the table has nothing for it)."""
    base = correlate(kb, code, results)
    entry = table.codes.get(code_key(code.scheme, code.code) or "") if table and code else None
    if table is None or entry is None:
        return base, None
    safe = set(safety)
    doc: dict[str, Any] = {"model": table.model, "version": table.version, "hash": table.hash, "visits": entry.N, "model_visits": entry.n}
    if _safety_in_play(kb, base, results, safe):
        return base, dict(doc, applied=False, reason="safety", causes={})
    factors = {cause: max(f, 1.0) if cause in safe else f for cause, f in entry.factors.items()}
    learned = correlate(kb, code, results, factors)
    kb_rank = {rc.cause.id: i for i, rc in enumerate(base.causes, 1)}
    causes = {
        rc.cause.id: {"factor": factors[rc.cause.id], "rank": i, "kb_rank": kb_rank.get(rc.cause.id)}
        for i, rc in enumerate(learned.causes, 1)
        if rc.cause.id in factors
    }
    return learned, dict(doc, applied=True, reason=None, causes=causes)


def _safety_in_play(kb: KnowledgeBase, base: Correlation, results: list[ProbeResult], safe: set[str]) -> bool:
    """The knowledge base alone ranks a safety cause first, or a fail finding whose own best
    cause is one would raise the verdict: the verdict stays the knowledge base's."""
    if base.causes[0].cause.id in safe:
        return True
    failing = {f.id for r in results for f in r.findings if f.severity is Severity.FAIL}
    return any((cause := best_cause_for(kb, fid)) is not None and cause.id in safe for fid in failing)


def moved(learned: dict[str, Any] | None, cause_id: str) -> bool:
    """The table put this cause at another rank than the knowledge base alone would."""
    shown = (learned or {}).get("causes", {}).get(cause_id)
    return bool(shown) and shown["rank"] != shown["kb_rank"]
