"""Rank the causes of an error code in the light of what the probes found. Pure: no I/O.

The model is naive Bayes in log-odds form. For each candidate cause c:

    score(c) = ln(prior(c))
             + sum of support[f]  for each finding f present that supports c
             - sum of weaken[f]   for each finding f present that weakens c
             - ok_weight          when every probe that looks at c's category ran and came back ok

Each weight is a natural-log likelihood ratio (+2.3 multiplies the odds by 10), so the
model is a product of prior and likelihood ratios. A probe that was skipped, timed out,
erred or found the device absent says nothing about health and is neutral. Confidence is
softmax(score) over the candidates, so it sums to 1; ties in score are broken by cause id,
so the same input always gives the same ranking.

Candidates are the code's listed causes. For an open (generic) code such as E3 or 3000, and
for an unknown code, every cause that a present finding supports joins them with prior
engine.open_prior; when nothing at all is a candidate, engine.unexplained_cause is. A host
answer (51) is never open: its causes stay card, issuer or host matters whatever the link
does now. A finding weakens a cause only when it supports another cause in the ranking: it
then points at an alternative on the table (a dead link makes a host timeout less likely than
the link). A finding that supports no ranked cause bears on none (a weak signal under a host's
68, a link down under UnionPay's 98): it is an other finding, not evidence against.

Learned priors: `factors` (a learned table's entry for the code, agent/learned.py) multiply the
candidates' priors; a cause a factor raises joins the candidates of a code that is not a host
answer at engine.open_prior times its factor. Findings weigh as before, and no candidate leaves.
A fail finding's own best cause, for the dispatch below, is then judged by support + ln(factor).

Dispatch: the top cause's class (none < merchant < remote < onsite by rank), raised when any
fail finding's own best cause has a higher class, whether or not that finding is also evidence
for the top cause: a decline on a terminal whose link is down still needs the link, and a
duplicate transmission on a read-only filesystem still needs the storage replaced.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.knowledge import Cause, Code, KnowledgeBase, Text
from agent.model import ProbeResult
from probes.contract.records import Finding, Severity, Status


@dataclass(frozen=True)
class Evidence:
    probe: str
    finding: str | None  # None: a check that passed ("probe network ok")
    detail: str
    weight: float

    def to_dict(self) -> dict[str, Any]:
        return {"probe": self.probe, "finding": self.finding, "detail": self.detail, "weight": self.weight}


@dataclass(frozen=True)
class RankedCause:
    cause: Cause
    score: float
    confidence: float
    evidence_for: tuple[Evidence, ...]
    evidence_against: tuple[Evidence, ...]


@dataclass(frozen=True)
class Dispatch:
    verdict: str
    reason: Text

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reason": self.reason.to_dict()}


@dataclass(frozen=True)
class Correlation:
    causes: tuple[RankedCause, ...]
    other_findings: tuple[Finding, ...]
    dispatch: Dispatch


def correlate(
    kb: KnowledgeBase, code: Code | None, results: list[ProbeResult], factors: Mapping[str, float] | None = None
) -> Correlation:
    present = _present(results)
    ok_probes = {r.name for r in results if r.status is Status.OK}
    priors = _candidates(kb, code, present)
    if factors and code is not None:
        priors = learned_priors(kb, code, priors, factors)
    on_table = {fid for cid in priors for fid in kb.causes[cid].support if fid in present}
    scored = [_score(kb, kb.causes[cid], prior, present, ok_probes, on_table) for cid, prior in priors.items()]
    scored.sort(key=lambda s: (-s[0], s[1].id))
    top_score = scored[0][0]
    total = sum(math.exp(s - top_score) for s, *_ in scored)
    ranked = tuple(
        RankedCause(cause, score, math.exp(score - top_score) / total, tuple(ev_for), tuple(ev_against))
        for score, cause, ev_for, ev_against in scored
    )
    bearing = {e.finding for rc in ranked for e in (*rc.evidence_for, *rc.evidence_against)}
    others = tuple(f for r in results for f in r.findings if f.id not in bearing)
    return Correlation(ranked, others, _dispatch(kb, ranked[0], results, factors))


def _present(results: list[ProbeResult]) -> dict[str, tuple[str, Finding]]:
    """Finding id -> (probe, first finding with that id)."""
    present: dict[str, tuple[str, Finding]] = {}
    for result in results:
        for finding in result.findings:
            present.setdefault(finding.id, (result.name, finding))
    return present


def _candidates(kb: KnowledgeBase, code: Code | None, present: dict[str, Any]) -> dict[str, float]:
    priors = dict(code.causes) if code else {}
    if code is None or code.open:
        for cid in sorted(kb.causes):
            if cid not in priors and any(fid in present for fid in kb.causes[cid].support):
                priors[cid] = kb.open_prior
    if not priors:
        priors[kb.unexplained_cause] = 1.0
    return priors


def learned_priors(kb: KnowledgeBase, code: Code, priors: dict[str, float], factors: Mapping[str, float]) -> dict[str, float]:
    """The candidates' priors times a learned table's factors (see the module docstring)."""
    out = dict(priors)
    for cause_id, factor in sorted(factors.items()):
        if cause_id in out:
            out[cause_id] *= factor
        elif factor > 1 and not code.host_answer and cause_id in kb.causes:
            out[cause_id] = kb.open_prior * factor
    return out


def _score(
    kb: KnowledgeBase,
    cause: Cause,
    prior: float,
    present: dict[str, tuple[str, Finding]],
    ok_probes: set[str],
    on_table: set[str],
) -> tuple[float, Cause, list[Evidence], list[Evidence]]:
    """`on_table`: present findings that support some ranked cause; only they may weaken one."""
    score = math.log(prior)
    ev_for: list[Evidence] = []
    ev_against: list[Evidence] = []
    for fid, weight in cause.support.items():
        if fid in present:
            probe, finding = present[fid]
            score += weight
            ev_for.append(Evidence(probe, fid, finding.detail, weight))
    for fid, weight in cause.weaken.items():
        if fid in on_table:
            probe, finding = present[fid]
            score -= weight
            ev_against.append(Evidence(probe, fid, finding.detail, -weight))
    category = kb.categories[cause.category]
    if category.probes and category.ok_weight and all(p in ok_probes for p in category.probes):
        score -= category.ok_weight
        for probe in category.probes:
            ev_against.append(Evidence(probe, None, f"probe {probe} ok", -category.ok_weight / len(category.probes)))
    ev_for.sort(key=lambda e: (-e.weight, e.finding or ""))
    ev_against.sort(key=lambda e: (e.weight, e.finding or "", e.probe))
    return score, cause, ev_for, ev_against


def _dispatch(kb: KnowledgeBase, top: RankedCause, results: list[ProbeResult], factors: Mapping[str, float] | None) -> Dispatch:
    verdict = kb.verdicts[top.cause.dispatch]
    reason = verdict.reason.format(cause=top.cause.title)
    raised: list[tuple[int, str]] = []
    for result in results:
        for finding in result.findings:
            if finding.severity is not Severity.FAIL:
                continue
            cause = best_cause_for(kb, finding.id, factors)
            if cause is not None and kb.verdicts[cause.dispatch].rank > verdict.rank:
                raised.append((kb.verdicts[cause.dispatch].rank, finding.id))
    if not raised:
        return Dispatch(verdict.id, reason)
    rank, finding_id = min(raised, key=lambda r: (-r[0], r[1]))
    higher = next(v for v in kb.verdicts.values() if v.rank == rank)
    title = kb.findings.get(finding_id, Text(finding_id, finding_id))
    return Dispatch(higher.id, higher.escalated.format(cause=top.cause.title, finding=title))


def best_cause_for(kb: KnowledgeBase, finding_id: str, factors: Mapping[str, float] | None = None) -> Cause | None:
    """The cause a finding supports most strongly (ties by id), or None; with a learned
    table's factors, by support + ln(factor): what the finding most likely means on this model."""
    learned = factors or {}
    best = [(-(c.support[finding_id] + math.log(learned.get(c.id, 1.0))), c.id) for c in kb.causes.values() if finding_id in c.support]
    return kb.causes[min(best)[1]] if best else None
