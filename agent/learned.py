"""The learned table from the support server: kept in the state directory, read only when a
diagnosis runs, applied within bounds (docs/outcomes.md).

The table holds, per code, factors on the knowledge base's priors learned from what visits
found on this terminal's model (remote/server/outcomes/learning.py). Applying it
(`correlate_learned`) runs the correlation twice, with the knowledge base alone and with the
factors, because the bounds are judged against the first:
- when the knowledge base alone ranks a `[learning] safety_causes` cause first, or a fail
  finding whose own best cause is one is present, the table is not applied (a tamper or a
  swollen battery is never talked down), and it never lowers a safety cause's prior anywhere;
- findings weigh as they do without it, and every candidate stays (factors are > 0).
What was applied goes into the diagnosis document as `learned`: the table's model, version
and content hash, and per cause its factor, its rank and its rank without the table, so the
text can say "learned from N visits" on the causes it moved.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.correlate import Correlation, best_cause_for, correlate
from agent.knowledge import Code, KnowledgeBase
from agent.model import ProbeResult
from agent.state import StateFile
from probes.contract.records import Severity
from remote.outcome_wire import LEARNED_SCHEMA, MAX_LEARNED_BYTES, code_key, table_hash

FILE_NAME = "learned.json"
MAX_FACTOR = 1000.0  # far beyond any server's max_factor: a table past it is not one a server made
log = logging.getLogger(__name__)


class TableError(ValueError):
    """A learned table this terminal will not keep, and why."""


@dataclass(frozen=True)
class Entry:
    n: int  # visits of the code on this model
    N: int  # visits of the code on the fleet
    factors: dict[str, float]


@dataclass(frozen=True)
class LearnedTable:
    model: str  # "*": the fleet-wide table
    version: int
    hash: str
    codes: dict[str, Entry]


def parse(raw: bytes) -> LearnedTable:
    """A table as the server sends it, checked: schema, size, content hash, finite factors."""
    if len(raw) > MAX_LEARNED_BYTES:
        raise TableError(f"a learned table is at most {MAX_LEARNED_BYTES} bytes, got {len(raw)}")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise TableError("a learned table is JSON") from None
    if not isinstance(doc, dict) or doc.get("schema") != LEARNED_SCHEMA:
        raise TableError(f"not a {LEARNED_SCHEMA} document")
    model, version, digest, codes = doc.get("model"), doc.get("version"), doc.get("hash"), doc.get("codes")
    if not isinstance(model, str) or not isinstance(version, int) or not isinstance(codes, dict):
        raise TableError("a learned table has a model, a version and codes")
    if digest != table_hash(model, codes):
        raise TableError("the table's hash does not match its content")
    return LearnedTable(model, version, digest, {key: _entry(key, value) for key, value in codes.items()})


def _entry(key: str, value: Any) -> Entry:
    if not isinstance(value, dict) or not isinstance(value.get("f"), dict):
        raise TableError(f"codes.{key}: an entry is {{n, N, f}}")
    factors = value["f"]
    for cause, factor in factors.items():
        if isinstance(factor, bool) or not isinstance(factor, int | float) or not 0 < factor <= MAX_FACTOR or not math.isfinite(factor):
            raise TableError(f"codes.{key}.f.{cause}: a factor is a number in (0, {MAX_FACTOR:g}]")
    return Entry(int(value.get("n", 0)), int(value.get("N", 0)), {c: float(f) for c, f in factors.items()})


def store(state_dir: str | Path, raw: bytes) -> LearnedTable:
    """Keep a table received from the server (checked first: a bad one leaves the old in place)."""
    table = parse(raw)
    StateFile(Path(state_dir) / FILE_NAME).save(json.loads(raw))
    return table


def load(state_dir: str | Path, model: str) -> LearnedTable | None:
    """The kept table if it is for `model` (or the fleet's), else None; a damaged file is
    logged and ignored (the knowledge base alone decides)."""
    path = Path(state_dir) / FILE_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("learned table %s not read: %s", path, exc.strerror)
        return None
    try:
        table = parse(raw)
    except TableError as exc:
        log.warning("learned table %s ignored: %s", path, exc)
        return None
    return table if table.model in (model, "*") else None


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
