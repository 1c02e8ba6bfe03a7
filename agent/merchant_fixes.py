"""Merchant fixes the terminal remembers. A `merchant` verdict tells the merchant to fix a
failure at the counter (paper roll, cover, charging, reseating a SIM or cable, a restart, a
sign-in); when a later diagnosis of the same terminal still finds that failure, or the same
top cause comes back, the fix did not hold and the verdict becomes the cause's `unfixed` class:
`onsite` for a paper sensor that keeps saying "out", `remote` for a sign-in that did not bring
the keys back in step (support resets them on the host).

The memory is a small JSON file in daemon.state_dir, {finding id or "cause:<cause id>": {"at":
ISO time, "cause": cause id}}, kept [dispatch] merchant_fix_memory_hours. A failure is judged
unfixed only after merchant_fix_grace_seconds, the time the merchant needs to act. A remembered
failure that its probe, run again, no longer reports was fixed and is forgotten; a remembered
cause (a code such as A0 on a terminal whose checks find nothing) is forgotten only with age.
The memory is best effort: a state directory that cannot be read or written leaves the verdict
as the knowledge base gave it.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.config import Config
from agent.correlate import Correlation, Dispatch, best_cause_for
from agent.knowledge import KnowledgeBase, Text
from agent.model import ProbeResult
from agent.state import StateFile
from probes import probe_modules
from probes.contract.records import Severity, Status

FILE_NAME = "merchant_fixes.json"
CAUSE_KEY = "cause:"
RAN = (Status.OK, Status.WARN, Status.FAIL)
log = logging.getLogger(__name__)


def review(
    config: Config, kb: KnowledgeBase, correlation: Correlation, results: list[ProbeResult], now: datetime | None = None
) -> Correlation:
    """The correlation with its dispatch raised to onsite when a merchant fix did not hold;
    remembers the failures a merchant verdict asks the merchant to fix."""
    settings = config.section("dispatch")
    state = StateFile(Path(config.section("daemon").state_dir) / FILE_NAME)
    now = now or datetime.now(UTC)
    before = state.load()
    remembered = _current(before, results, now, timedelta(hours=settings.merchant_fix_memory_hours))
    failing = sorted({f.id for r in results for f in r.findings if f.severity is Severity.FAIL})
    grace = timedelta(seconds=settings.merchant_fix_grace_seconds)
    top = correlation.causes[0].cause
    candidates = [*failing, CAUSE_KEY + top.id]
    unfixed = [key for key in candidates if key in remembered and now - _when(remembered[key]) >= grace]
    if unfixed:
        correlation = replace(correlation, dispatch=_unfixed(kb, correlation, unfixed, remembered))
    if correlation.dispatch.verdict == "merchant":
        stamp = now.isoformat(timespec="seconds")
        for fid, cause_id in merchant_failures(kb, correlation, failing).items():
            remembered.setdefault(fid, {"at": stamp, "cause": cause_id})
        evidence = {e.finding for e in correlation.causes[0].evidence_for} & set(failing)
        if top.dispatch == "merchant" and not evidence:  # only the code says so (A0 on a clean terminal)
            remembered.setdefault(CAUSE_KEY + top.id, {"at": stamp, "cause": top.id})
    if remembered != before:
        try:
            state.save(remembered)
        except OSError as exc:
            log.warning("merchant fixes not remembered in %s: %s", state.path.parent, exc)
    return correlation


def merchant_failures(kb: KnowledgeBase, correlation: Correlation, failing: list[str]) -> dict[str, str]:
    """Fail findings the merchant is asked to fix, with the cause that asks it."""
    top = correlation.causes[0]
    explained = {e.finding for e in top.evidence_for} if top.cause.dispatch == "merchant" else set()
    asked: dict[str, str] = {}
    for fid in failing:
        best = best_cause_for(kb, fid)
        if fid in explained:
            asked[fid] = top.cause.id
        elif best is not None and best.dispatch == "merchant":
            asked[fid] = best.id
    return asked


def _current(saved: dict[str, Any], results: list[ProbeResult], now: datetime, keep: timedelta) -> dict[str, Any]:
    """Entries still within the memory and not fixed: a probe that ran again without the finding
    saw it fixed; a probe that did not run says nothing."""
    reported = {f.id for r in results for f in r.findings}
    ran = {r.name for r in results if r.status in RAN}
    owner = {fid: name for name, module in probe_modules().items() for fid in module.FINDINGS}
    current = {}
    for fid, entry in saved.items():
        if not isinstance(entry, dict) or now - _when(entry) > keep:
            continue
        if fid not in reported and owner.get(fid) in ran:
            continue
        current[fid] = entry
    return current


def _when(entry: dict[str, Any]) -> datetime:
    try:
        moment = datetime.fromisoformat(str(entry.get("at")))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _unfixed(kb: KnowledgeBase, correlation: Correlation, keys: list[str], remembered: dict[str, Any]) -> Dispatch:
    """The dispatch raised to the highest `unfixed` class of the remembered fixes that did not
    hold (never lowered); the reason names the failure, or the cause that came back."""
    current = correlation.dispatch
    best: tuple[int, str] | None = None
    for key in keys:
        cause = kb.causes.get(str(remembered[key].get("cause")))
        rank = kb.verdicts[cause.unfixed if cause else "onsite"].rank
        if rank > kb.verdicts[current.verdict].rank and (best is None or rank > best[0]):
            best = (rank, key)
    if best is None:
        return current
    key = best[1]
    cause = kb.causes.get(str(remembered[key].get("cause")))
    verdict = kb.verdicts[cause.unfixed if cause else "onsite"]
    title = cause.title if key.startswith(CAUSE_KEY) and cause else kb.findings.get(key, Text(key, key))
    template = verdict.unfixed or verdict.escalated
    return Dispatch(verdict.id, template.format(cause=correlation.causes[0].cause.title, finding=title), current.also)
