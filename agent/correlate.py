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

Causal chains (knowledge base [explains]): a present fail finding explains the findings that
are its consequences on the device (no SIM: no link, no default route, no DNS). An explained
finding is no independent evidence: it adds no weight, weakens nothing, brings no candidate of
its own and raises no dispatch; it is shown, with weight 0, as evidence for the causes its root
supports. So a modem fault is the cause and the network findings its evidence.

Dispatch: the top cause's class (none < merchant < remote < onsite by rank), raised by every
fail finding that is not explained by another and whose own best cause is not the top cause,
whether or not that finding is also evidence for it: a decline on a terminal whose link is down
still needs the link, and a duplicate transmission on a read-only filesystem still needs the
storage replaced. Those findings are listed as `also` (a local fault that will fail the next
transaction is always something to do, whatever the code), and the reason names the one with
the highest class even when it does not raise the verdict.
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
    explained_by: str | None = None  # a consequence of this (root) finding: no weight of its own

    def to_dict(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "finding": self.finding,
            "detail": self.detail,
            "weight": self.weight,
            "explained_by": self.explained_by,
        }


@dataclass(frozen=True)
class RankedCause:
    cause: Cause
    score: float
    confidence: float
    evidence_for: tuple[Evidence, ...]
    evidence_against: tuple[Evidence, ...]


@dataclass(frozen=True)
class AlsoFix:
    """A fail finding beside the top cause that needs its own fix: its best cause and class."""

    finding: str
    cause: Cause

    def to_dict(self) -> dict[str, Any]:
        return {"finding": self.finding, "cause": self.cause.id, "verdict": self.cause.dispatch}


@dataclass(frozen=True)
class Dispatch:
    verdict: str
    reason: Text
    also: tuple[AlsoFix, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reason": self.reason.to_dict(), "also": [a.to_dict() for a in self.also]}


@dataclass(frozen=True)
class Correlation:
    causes: tuple[RankedCause, ...]
    other_findings: tuple[Finding, ...]
    dispatch: Dispatch


def correlate(
    kb: KnowledgeBase, code: Code | None, results: list[ProbeResult], factors: Mapping[str, float] | None = None
) -> Correlation:
    everything = _present(results)
    roots = explained_roots(kb, everything)
    present = {fid: seen for fid, seen in everything.items() if fid not in roots}
    ok_probes = {r.name for r in results if r.status is Status.OK}
    priors = _candidates(kb, code, present)
    if factors and code is not None:
        priors = learned_priors(kb, code, priors, factors)
    on_table = {fid for cid in priors for fid in kb.causes[cid].support if fid in present}
    scored = [_score(kb, kb.causes[cid], prior, present, ok_probes, on_table) for cid, prior in priors.items()]
    if roots:
        scored = [(score, cause, _with_consequences(kb, ev_for, roots, everything), ev_against) for score, cause, ev_for, ev_against in scored]
    scored.sort(key=lambda s: (-s[0], s[1].id))
    top_score = scored[0][0]
    total = sum(math.exp(s - top_score) for s, *_ in scored)
    ranked = tuple(
        RankedCause(cause, score, math.exp(score - top_score) / total, tuple(ev_for), tuple(ev_against))
        for score, cause, ev_for, ev_against in scored
    )
    bearing = {e.finding for rc in ranked for e in (*rc.evidence_for, *rc.evidence_against)}
    others = tuple(f for r in results for f in r.findings if f.id not in bearing)
    return Correlation(ranked, others, _dispatch(kb, ranked[0], results, roots, factors))


def explained_roots(kb: KnowledgeBase, present: dict[str, tuple[str, Finding]]) -> dict[str, str]:
    """Present finding -> the topmost present fail finding that explains it (kb.explains)."""
    parent: dict[str, str] = {}
    for root in sorted(kb.explains):
        if root in present and present[root][1].severity is Severity.FAIL:
            for fid in kb.explains[root]:
                if fid in present:
                    parent.setdefault(fid, root)
    roots = {}
    for fid in parent:
        top, seen = parent[fid], {fid}
        while top in parent and top not in seen:  # a chain of chains: no SIM -> link down -> no route
            seen.add(top)
            top = parent[top]
        roots[fid] = top
    return roots


def _with_consequences(
    kb: KnowledgeBase, ev_for: list[Evidence], roots: dict[str, str], everything: dict[str, tuple[str, Finding]]
) -> list[Evidence]:
    """The evidence for a cause, followed by the consequences of each root finding among it, in
    the order the chain runs (link, route, name service, host)."""
    cited = {e.finding for e in ev_for}
    if not cited & set(roots.values()):
        return ev_for
    extra = [
        Evidence(everything[fid][0], fid, everything[fid][1].detail, 0.0, root)
        for fid, root in sorted(roots.items(), key=lambda item: (item[1], _place(kb, item[1], item[0]), item[0]))
        if root in cited
    ]
    return ev_for + extra


def _place(kb: KnowledgeBase, root: str, fid: str) -> int:
    """Where a consequence comes in its chain (link, route, name service, host)."""
    chain = kb.explains.get(root, ())
    return chain.index(fid) if fid in chain else len(chain)


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


def _dispatch(
    kb: KnowledgeBase, top: RankedCause, results: list[ProbeResult], roots: dict[str, str], factors: Mapping[str, float] | None
) -> Dispatch:
    verdict = kb.verdicts[top.cause.dispatch]
    also: dict[str, AlsoFix] = {}
    for result in results:
        for finding in result.findings:
            if finding.severity is not Severity.FAIL or finding.id in roots or finding.id in also:
                continue
            cause = best_cause_for(kb, finding.id, factors)
            if cause is not None and cause.id != top.cause.id:
                also[finding.id] = AlsoFix(finding.id, cause)
    fixes = tuple(sorted(also.values(), key=lambda a: (-kb.verdicts[a.cause.dispatch].rank, a.finding)))
    if not fixes:
        return Dispatch(verdict.id, verdict.reason.format(cause=top.cause.title))
    first = kb.verdicts[fixes[0].cause.dispatch]
    title = kb.findings.get(fixes[0].finding, Text(fixes[0].finding, fixes[0].finding))
    final = first if first.rank > verdict.rank else verdict
    return Dispatch(final.id, first.escalated.format(cause=top.cause.title, finding=title), fixes)


def best_cause_for(kb: KnowledgeBase, finding_id: str, factors: Mapping[str, float] | None = None) -> Cause | None:
    """The cause a finding supports most strongly (ties by id), or None; with a learned
    table's factors, by support + ln(factor): what the finding most likely means on this model."""
    learned = factors or {}
    best = [(-(c.support[finding_id] + math.log(learned.get(c.id, 1.0))), c.id) for c in kb.causes.values() if finding_id in c.support]
    return kb.causes[min(best)[1]] if best else None
