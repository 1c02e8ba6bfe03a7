"""What the server takes from a terminal in the fields support reads: event times and short
texts. Both a bundle's manifest and a heartbeat are held to the same rules, and a refusal is
400 (the agent dead-letters a refused bundle instead of retrying it):

- `bad_time`: `created_at` or `sent_at` before EARLIEST_EVENT. No terminal clock reads a time
  before the Unix epoch (a clock that lost its setting reads 1970 or its RTC's epoch, which
  the clock flag handles); year 0001 is a forged or broken value, and years before 1000 do
  not even sort as the fixed-width text the database keeps.
- `bad_text`: `model`, `firmware`, `app_version`, `agent_version` or `serial` with a
  character wire.text_problem refuses (controls, DEL, C1, bidi, zero-width...): these
  strings are shown on every page that lists the terminal, and a U+202E there makes a page
  show what the terminal did not send.
- `bad_label`: a label breaking wire.label_problem (the same text rule, and the key and
  value shape). Labels are never silently dropped: an honest agent cleans what it read from
  a device before sending (agent/labels.py), so a refused label is a forged or broken one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from remote import wire

EARLIEST_EVENT = datetime(1970, 1, 1, tzinfo=UTC)
TEXT_FIELDS = ("model", "firmware", "app_version", "serial")

Refusal = tuple[str, str]  # (error code, detail), answered with 400


def event_time_problem(moment: datetime, where: str) -> Refusal | None:
    if moment < EARLIEST_EVENT:
        return "bad_time", f"{where} is before {EARLIEST_EVENT:%Y-%m-%d}: no terminal clock reads that"
    return None


def texts_problem(fields: dict[str, Any], where: str) -> Refusal | None:
    for name, value in fields.items():
        problem = wire.text_problem(value) if isinstance(value, str) else None
        if problem:
            return "bad_text", f"{where}{name}: {problem}"
    return None


def labels_problem(labels: Any, where: str) -> Refusal | None:
    if not isinstance(labels, dict) or len(labels) > wire.MAX_LABELS:
        return "bad_label", f"{where}labels: an object of at most {wire.MAX_LABELS} string labels"
    for key, value in labels.items():
        problem = wire.label_problem(key, value) if isinstance(value, str) else "values are strings"
        if problem:
            return "bad_label", f"{where}labels.{str(key)[:40]}: {problem}"
    return None


def manifest_problem(manifest: dict[str, Any], created: datetime) -> Refusal | None:
    """A schema-valid manifest's created_at, terminal texts and labels (absent labels: fine)."""
    terminal = manifest.get("terminal") or {}
    return (
        event_time_problem(created, "manifest.json: created_at")
        or texts_problem({name: terminal.get(name) for name in TEXT_FIELDS}, "manifest.json: terminal.")
        or texts_problem({"agent_version": manifest.get("agent_version")}, "manifest.json: ")
        or (labels_problem(terminal["labels"], "manifest.json: terminal.") if "labels" in terminal else None)
    )


def heartbeat_problem(beat: Any, sent: datetime) -> Refusal | None:
    """A schema-valid heartbeat's sent_at, texts and labels."""
    texts = {name: getattr(beat, name) for name in ("model", "firmware", "app_version", "agent_version")}
    return (
        event_time_problem(sent, "heartbeat: sent_at")
        or texts_problem(texts, "heartbeat: ")
        or labels_problem(beat.labels, "heartbeat: ")
    )
