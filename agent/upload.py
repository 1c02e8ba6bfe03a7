"""Send the outbox to the support server: the bundles oldest first, then the visit outcome
records (agent/visits.py), each removed only after the server confirmed it, a refused one
moved to dead/ with the answer (remote/client.py classifies answers, retries and honours
Retry-After). One flush sends both: the agent's flush job, `posdiag outbox flush`,
`posdiag visit close` and `posdiag diagnose --upload` all come through `flush`.

An outcome record is sent only once every bundle older than it has left the outbox, so the
bundle it closes is on the server first; when the bundles stopped (the server away, or
telling this terminal to stop), the records wait too: they would meet the same answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.outbox import Entry, Outbox
from remote.client import OUTCOMES_PATH, Client, Halt, Refused, Retryable, UploadError

Progress = Callable[[Entry, str], None]
OLDER_BUNDLE_WAITING = "an earlier bundle is still waiting"


@dataclass
class Sent:
    """What became of one kind of entry (bundles, or outcome records) in a flush."""

    sent: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    remaining: int = 0
    stopped: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "duplicates": self.duplicates, "dead": self.dead, "remaining": self.remaining, "stopped": self.stopped}


@dataclass
class FlushReport(Sent):
    """The bundles' figures, and the outcome records' under `outcomes`."""

    outcomes: Sent = field(default_factory=Sent)

    def to_dict(self) -> dict[str, Any]:
        return dict(super().to_dict(), outcomes=self.outcomes.to_dict())


def flush(outbox: Outbox, client: Client, progress: Progress | None = None) -> FlushReport:
    """Upload every waiting bundle, oldest first, then the outcome records. An entry leaves
    the outbox only after the server confirmed it; one that keeps failing ends this run
    (later ones would fail too). OutboxBusy when another process is flushing."""
    report = FlushReport()
    with outbox.flushing():
        for entry in outbox.entries():
            if not _send(outbox, client, entry, report, progress):
                break
        if report.stopped:
            report.outcomes = Sent(remaining=len(outbox.outcome_entries()), stopped=report.stopped)
        else:
            report.outcomes = send_outcomes(outbox, client, progress)
    report.remaining = len(outbox.entries())
    return report


def send_outcomes(outbox: Outbox, client: Client, progress: Progress | None = None) -> Sent:
    """Send the waiting outcome records, oldest first, each once no older bundle waits; the
    caller holds outbox.flushing()."""
    report = Sent()
    bundles = outbox.entries()
    for entry in outbox.outcome_entries():
        if bundles and bundles[0].stamp < entry.stamp:
            report.stopped = OLDER_BUNDLE_WAITING
            break
        if not _send(outbox, client, entry, report, progress, outcome=True):
            break
    report.remaining = len(outbox.outcome_entries())
    return report


def _send(outbox: Outbox, client: Client, entry: Entry, report: Sent, progress: Progress | None, outcome: bool = False) -> bool:
    """Send one entry and note what became of it; False when the run should stop."""
    note: Progress = progress or (lambda entry, state: None)
    try:
        data = entry.path.read_bytes()
    except FileNotFoundError:  # evicted meanwhile
        return True
    note(entry, "sending")

    def heard(text: str) -> None:  # the client's retry notes
        note(entry, text)

    record = {"path": OUTCOMES_PATH, "content_type": "application/json"} if outcome else {}
    try:
        delivered = client.send(data, entry.bundle_id, heard, **record)
    except Refused as exc:
        outbox.dead_letter(entry, refusal(exc, entry))
        report.dead.append(entry.bundle_id)
        note(entry, f"refused, moved to dead/: {exc}")
        return True
    except (Retryable, Halt) as exc:
        report.stopped = str(exc)
        note(entry, f"kept for later: {exc}")
        return False
    outbox.remove(entry)
    (report.duplicates if delivered.status == 200 else report.sent).append(entry.bundle_id)
    note(entry, "already on the server" if delivered.status == 200 else "delivered")
    return True


def refusal(exc: UploadError, entry: Entry) -> dict[str, Any]:
    return {
        "bundle_id": entry.bundle_id,
        "status": exc.status,
        "error": exc.answer.get("error", ""),
        "detail": exc.answer.get("detail", ""),
        "message": str(exc),
        "refused_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
