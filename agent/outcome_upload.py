"""Send the outbox's outcome records (agent/visits.py) to the support server: oldest first,
each only once every bundle older than it has left the outbox (its bundle is on the server
first), removed only after the server confirmed it, moved to dead/ with the answer when
refused. Answers are classified by remote/client.py as for bundles.

`send_outcomes` runs under the outbox's flush lock, after the bundles: agent/upload.py's flush
calls it at the end of its loop; `flush_outcomes` takes the lock itself (`posdiag outbox flush`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.outbox import Outbox
from agent.upload import Progress, refusal
from remote.client import OUTCOMES_PATH, Client, Halt, Refused, Retryable

OLDER_BUNDLE_WAITING = "an earlier bundle is still waiting"


@dataclass
class OutcomeReport:
    sent: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    remaining: int = 0
    stopped: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "duplicates": self.duplicates, "dead": self.dead, "remaining": self.remaining, "stopped": self.stopped}


def send_outcomes(outbox: Outbox, client: Client, progress: Progress | None = None) -> OutcomeReport:
    """Send the waiting outcome records; the caller holds outbox.flushing()."""
    report = OutcomeReport()
    note: Progress = progress or (lambda entry, state: None)
    bundles = outbox.entries()
    for entry in outbox.outcome_entries():
        if bundles and bundles[0].stamp < entry.stamp:
            report.stopped = OLDER_BUNDLE_WAITING
            break
        try:
            data = entry.path.read_bytes()
        except FileNotFoundError:
            continue
        note(entry, "sending")
        try:
            delivered = client.send(
                data, entry.bundle_id, lambda text, entry=entry: note(entry, text), path=OUTCOMES_PATH, content_type="application/json"
            )
        except Refused as exc:
            outbox.dead_letter(entry, refusal(exc, entry))
            report.dead.append(entry.bundle_id)
            note(entry, f"refused, moved to dead/: {exc}")
            continue
        except (Retryable, Halt) as exc:
            report.stopped = str(exc)
            note(entry, f"kept for later: {exc}")
            break
        outbox.remove(entry)
        (report.duplicates if delivered.status == 200 else report.sent).append(entry.bundle_id)
        note(entry, "already on the server" if delivered.status == 200 else "delivered")
    report.remaining = len(outbox.outcome_entries())
    return report


def flush_outcomes(outbox: Outbox, client: Client, progress: Progress | None = None) -> OutcomeReport:
    """send_outcomes under the outbox's flush lock (OutboxBusy when another process holds it)."""
    with outbox.flushing():
        return send_outcomes(outbox, client, progress)
