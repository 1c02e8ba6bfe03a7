"""A diagnosis: the error looked up, the probe sweep, and the correlation of the two.

`Diagnosis.to_dict()` is the document `diagnose --json` prints, a bundle stores as
diagnosis.json and the support server indexes (error.code, error.scheme, causes[0].id,
causes[0].category, dispatch.verdict): keep its keys stable.

A scheme named by a log source, an event or the socket is a hint: the code is looked up there
first, then in scheme_order, and error.scheme says which scheme answered (error.asked keeps the
hint). Only `--scheme` on the command line is strict: a code that scheme does not know is
diagnosed as unknown, and the text says which schemes do know it. error.also_in lists the other
schemes that read the code differently (a bare 22 on a UnionPay terminal, say).

A one-digit code that no scheme knows is read with its leading zero (ISO 8583 codes have two
digits: `5` is 05); error.given keeps what was typed, and the text says what was assumed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

from agent import learned, learned_table
from agent.config import Config
from agent.correlate import Correlation, RankedCause
from agent.facts import terminal_identity
from agent.incidents import IncidentMemory, advice
from agent.knowledge import ROLES, Code, KnowledgeBase, Text, load_for
from agent.merchant_fixes import review
from agent.model import Sweep
from agent.runner import Progress, run_probes
from probes.contract.errors import UsageError
from remote.redact import redact_text


@dataclass(frozen=True)
class AskedScheme:
    """The scheme the caller named: a hint (log source, event, socket) or strict (--scheme)."""

    scheme: str
    strict: bool
    known_in: tuple[str, ...] = ()  # strict and missed: the schemes that do know the code

    def to_dict(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "strict": self.strict, "known_in": list(self.known_in)}


@dataclass(frozen=True)
class ErrorInfo:
    code: str
    scheme: str | None  # the scheme that answered
    known: bool
    meaning: Text | None
    host_answer: bool | None
    asked: AskedScheme | None = None
    given: str | None = None  # what was typed, when the code was read otherwise (5 read as 05)
    also_in: tuple[tuple[str, Text], ...] = ()  # other schemes that know the code: (scheme, meaning)

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "scheme": self.scheme,
            "known": self.known,
            "meaning": self.meaning.to_dict() if self.meaning else None,
            "host_answer": self.host_answer,
            "asked": self.asked.to_dict() if self.asked else None,
            "given": self.given,
            "also_in": [{"scheme": scheme, "meaning": meaning.to_dict()} for scheme, meaning in self.also_in],
        }


@dataclass(frozen=True)
class Diagnosis:
    error: ErrorInfo
    sweep: Sweep
    correlation: Correlation
    fleet: dict[str, Any] | None = None  # an open fleet incident that explains this terminal's error
    learned: dict[str, Any] | None = None  # the learned table this diagnosis consulted (agent/learned.py)

    @property
    def top(self) -> RankedCause:
        return self.correlation.causes[0]

    def to_dict(self) -> dict[str, Any]:
        swept = self.sweep.to_dict()
        return {
            "error": self.error.to_dict(),
            "probes": swept["probes"],
            "sweep": swept["sweep"],
            "causes": [cause_dict(rc) for rc in self.correlation.causes],
            "other_findings": [asdict(f) for f in self.correlation.other_findings],
            "dispatch": self.correlation.dispatch.to_dict(),
            "fleet": self.fleet,
            "learned": self.learned,
        }


def cause_dict(rc: RankedCause) -> dict[str, Any]:
    return {
        "id": rc.cause.id,
        "category": rc.cause.category,
        "title": rc.cause.title.to_dict(),
        "confidence": round(rc.confidence, 4),
        "evidence_for": [e.to_dict() for e in rc.evidence_for],
        "evidence_against": [e.to_dict() for e in rc.evidence_against],
        "actions": {role: [a.to_dict() for a in rc.cause.actions[role]] for role in ROLES},
    }


def explain(
    kb: KnowledgeBase,
    code: str | None,
    scheme: str | None,
    order: Iterable[str],
    sweep: Sweep,
    strict: bool = False,
    table: learned_table.LearnedTable | None = None,
    safety: Iterable[str] = (),
) -> Diagnosis:
    """Look the code up and correlate it with a sweep already made (no I/O). No code (a
    probe request from support) is judged from the findings alone, like an unknown one.
    `scheme` is a hint unless `strict` (see the module docstring). `table`: a learned table
    whose factors apply within the bounds of agent/learned.py (`safety`: cause ids)."""
    if strict and scheme is not None and scheme not in kb.schemes:
        raise UsageError(f"unknown scheme {scheme!r}; known schemes: {', '.join(kb.schemes)}")
    order = list(order)

    def find(wanted: str) -> Code | None:
        if strict and scheme is not None:
            return kb.lookup(wanted, scheme, order)
        return kb.lookup(wanted, None, [scheme, *order] if scheme else order)

    entry = find(code) if code else None
    given = None
    if entry is None and code and code.strip().isdigit() and len(code.strip()) == 1:
        entry = find("0" + code.strip())  # ISO 8583 field 39 is two digits: 5 is 05
        given = code.strip() if entry is not None else None
    asked = None
    if scheme is not None:
        known_in = tuple(c.scheme for c in kb.lookup_all(code)) if strict and code and entry is None else ()
        asked = AskedScheme(scheme, strict, known_in)
    if entry is None:
        # An unknown code is echoed in every output: a PAN typed or logged as the code is not.
        error = ErrorInfo(redact_text((code or "").strip())[0], None, False, None, None, asked)
    else:
        also = tuple((c.scheme, c.meaning) for c in kb.lookup_all(entry.code) if c.scheme != entry.scheme)
        error = ErrorInfo(entry.code, entry.scheme, True, entry.meaning, entry.host_answer, asked, given, also)
    correlation, used = learned.correlate_learned(kb, entry, sweep.results, table, safety)
    return Diagnosis(error, sweep, correlation, learned=used)


def diagnose(
    config: Config,
    code: str | None,
    scheme: str | None = None,
    only: Iterable[str] | None = None,
    on_result: Progress | None = None,
    skip: dict[str, str] | None = None,
    strict_scheme: bool = False,
    remember: bool = False,
) -> Diagnosis:
    """Run the probes and correlate: the whole of `posdiag diagnose`, without the CLI.
    `skip` names probes that must not run now, with the reason (see agent.runner);
    `strict_scheme` is `--scheme` on the command line (otherwise the scheme is a hint);
    `remember`: this is the terminal itself (not a simulation), whose merchant fixes are
    remembered and judged (agent.merchant_fixes)."""
    if code is not None and not code.strip():
        raise UsageError("the error code is empty")
    kb = load_for(config)
    order = config.section("knowledge").scheme_order
    if strict_scheme and scheme is not None and scheme not in kb.schemes:
        raise UsageError(f"unknown scheme {scheme!r}; known schemes: {', '.join(kb.schemes)}")
    sweep = run_probes(config, only, on_result=on_result, skip=skip)
    table = learned_for(config)
    safety = config.section("learning").safety_causes
    diagnosis = explain(kb, code, scheme, order, sweep, strict_scheme, table, safety)
    if remember:
        diagnosis = replace(diagnosis, correlation=review(config, kb, diagnosis.correlation, sweep.results))
    incidents = IncidentMemory(config.section("daemon").state_dir).open()
    return replace(diagnosis, fleet=advice(incidents, diagnosis.top.cause.category))


def learned_for(config: Config) -> learned_table.LearnedTable | None:
    """The kept learned table if it is for this terminal's model as its bundles and
    heartbeats name it (the config's, else what the firmware says: the server chose the
    table by that name), or the fleet's."""
    model = terminal_identity(config.section("terminal"), config.section("host"))["model"]
    return learned_table.load(config.section("daemon").state_dir, model)

