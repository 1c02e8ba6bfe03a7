"""An outcome record made at the terminal (`posdiag visit close`): what a visit found, checked
against the knowledge base, signed with the terminal's token and put into the outbox, where it
waits for the bundles older than it and is sent by agent/upload.py (docs/outcomes.md).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from agent.knowledge import KnowledgeBase
from agent.outbox import Entry, Outbox
from probes.contract.errors import UsageError
from remote.outcome_wire import MAX_BY_CHARS, MAX_NOTE_CHARS, NOTHING, OTHER, OUTCOME_SCHEMA, record_signature
from remote.redact import redact_text


def make_record(
    kb: KnowledgeBase,
    terminal_id: str,
    token: str,
    found: str,
    fixed: bool | None,
    note: str = "",
    by: str = "",
    bundle_id: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A signed posdiag.outcome/1 record; UsageError says what is wrong with the input.
    `bundle_id` None: the server takes the terminal's newest bundle dispatched onsite or
    remote before the visit."""
    found = found.strip()
    if found not in (NOTHING, OTHER) and found not in kb.causes:
        close = difflib.get_close_matches(found, sorted(kb.causes), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `posdiag codes show CODE` lists a code's causes"
        raise UsageError(f"--found {found!r} is not a cause id of the knowledge base, nor nothing or other{hint}")
    note = redact_text(note.strip())[0]
    if found == OTHER and not note:
        raise UsageError("--found other needs --note saying what was found")
    if len(note) > MAX_NOTE_CHARS:
        raise UsageError(f"--note has at most {MAX_NOTE_CHARS} characters")
    if fixed is None and found != NOTHING:
        raise UsageError("say whether the visit fixed it: --fixed or --not-fixed")
    by = by.strip()
    if len(by) > MAX_BY_CHARS or not by.isprintable():
        raise UsageError(f"--by is at most {MAX_BY_CHARS} printable characters")
    record: dict[str, Any] = {
        "schema": OUTCOME_SCHEMA,
        "outcome_id": str(uuid.uuid4()),
        "terminal_id": terminal_id,
        "bundle_id": _bundle_id(bundle_id),
        "found": found,
        "fixed": fixed,
        "note": note,
        "by": by,
        "visited_at": (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
    }
    record["signature"] = record_signature(hashlib.sha256(token.encode("utf-8")).digest(), record)
    return record


def _bundle_id(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise UsageError(f"--bundle {value!r} is not a bundle id (a UUID, as on the receipt or in `posdiag outbox list`)") from None


def put(outbox: Outbox, record: dict[str, Any]) -> Entry:
    """Into the outbox, durably, after every bundle already there."""
    return outbox.put_outcome(json.dumps(record, ensure_ascii=False).encode("utf-8"), record["outcome_id"])
