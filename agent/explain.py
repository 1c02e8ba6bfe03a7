"""A diagnosis as text for a person, in Chinese or English, with one role's actions."""

from __future__ import annotations

from agent.correlate import Evidence, RankedCause
from agent.diagnosis import Diagnosis
from agent.i18n import finding_detail
from agent.knowledge import finding_title
from agent.learned import moved
from agent.render import fit, screen_width
from probes.contract import catalogue
from probes.contract.records import Finding

# Evidence and actions are shown for the top cause and for any other at least this likely;
# the rest are named with their confidence.
DETAILED_CONFIDENCE = 0.10


def diagnosis_text(diagnosis: Diagnosis, lang: str, role: str, width: int | None = None) -> str:
    words = catalogue.words("explain", lang)
    findings = {f.id: f for f in diagnosis.sweep.findings()}
    lines = header(diagnosis, lang, words)
    lines.append("")
    lines.append(f"{words['causes']}:")
    for i, rc in enumerate(diagnosis.correlation.causes, 1):
        detailed = i == 1 or rc.confidence >= DETAILED_CONFIDENCE
        shown = cause_lines(i, rc, lang, role, words, findings, detailed=detailed)
        if moved(diagnosis.learned, rc.cause.id):  # under the cause's title
            shown.insert(1, f"        {words['learned'].format(**diagnosis.learned)}")
        lines.extend(shown)
    dispatch = diagnosis.correlation.dispatch
    also = {a.finding for a in dispatch.also}
    others = [f for f in diagnosis.correlation.other_findings if f.id not in also]
    if others:
        lines.append("")
        lines.append(f"{words['other']}:")
        for f in others:
            lines.append(f"  {'✗' if f.severity == 'fail' else '!'} {f.id} {finding_title(f.id, lang)}: {finding_detail(f, lang)}")
    if dispatch.also:
        lines.append("")
        lines.append(f"{words['also']}:")
        for fix in dispatch.also:
            found = findings[fix.finding]
            lines.append(f"  ✗ {fix.finding} {finding_title(fix.finding, lang)}: {finding_detail(found, lang)}")
            lines.append(f"      {fix.cause.title.get(lang)}  [{fix.cause.id}] ({words['roles'][role]}):")
            lines.extend(f"        {n}) {action.get(lang)}" for n, action in enumerate(fix.cause.actions[role], 1))
    lines.append("")
    lines.append(f"{words['dispatch']}: {words['verdicts'][dispatch.verdict]} — {dispatch.reason.get(lang)}")
    if diagnosis.fleet:
        lines.append(f"{words['fleet']}: {diagnosis.fleet['message'][lang if lang in ('zh', 'en') else 'en']}")
    return "\n".join(fit(lines, width or screen_width()))


def header(diagnosis: Diagnosis, lang: str, words: dict) -> list[str]:
    error, asked = diagnosis.error, diagnosis.error.asked
    if not error.known or error.meaning is None:
        if asked is None or not asked.strict:
            return [f"{words['error']} {error.code}: {words['unknown']}"]
        lines = [f"{words['error']} {error.code}: {words['not_in'].format(scheme=asked.scheme)}"]
        if asked.known_in:
            lines.append(f"  {words['known_in'].format(schemes=', '.join(asked.known_in))}")
        return lines
    side = words["host"] if error.host_answer else words["local"]
    lines = [f"{words['error']} {error.code} ({error.scheme}): {error.meaning.get(lang)}", f"  {side}"]
    if error.given is not None:
        lines.append(f"  {words['given'].format(given=error.given, code=error.code)}")
    if asked is not None and asked.scheme != error.scheme:
        lines.append(f"  {words['hinted'].format(scheme=asked.scheme, answered=error.scheme)}")
    for other, meaning in error.also_in:
        lines.append(f"  {words['also_in'].format(scheme=error.scheme, other=other, meaning=meaning.get(lang))}")
    return lines


def cause_lines(
    i: int, rc: RankedCause, lang: str, role: str, words: dict, findings: dict[str, Finding], detailed: bool
) -> list[str]:
    lines = [f"{i:2}. {rc.confidence * 100:3.0f}%  {rc.cause.title.get(lang)}  [{rc.cause.id}]"]
    if not detailed:
        return lines
    for label, items in ((words["for"], rc.evidence_for), (words["against"], rc.evidence_against)):
        for e in items:
            lines.append(f"        {label}: {evidence_text(e, lang, words, findings)}")
    lines.append(f"        {words['todo']} ({words['roles'][role]}):")
    for n, action in enumerate(rc.cause.actions[role], 1):
        lines.append(f"          {n}) {action.get(lang)}")
    return lines


def evidence_text(e: Evidence, lang: str, words: dict, findings: dict[str, Finding]) -> str:
    if e.finding is None:
        return words["probe_ok"].format(probe=e.probe)
    found = findings.get(e.finding)
    detail = finding_detail(found, lang) if found is not None else e.detail
    text = f"{e.finding} {finding_title(e.finding, lang)} ({detail})"
    return text if e.explained_by is None else f"{text}, {words['follows'].format(root=e.explained_by)}"
