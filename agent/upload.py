"""Send the outbox to the support server: oldest first, each bundle removed only after the
server confirmed it, a refused one moved to dead/ (remote/client.py classifies answers)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.outbox import Entry, Outbox
from remote.client import Client, Halt, Refused, Retryable, UploadError

Progress = Callable[[Entry, str], None]


@dataclass
class FlushReport:
    sent: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    remaining: int = 0
    stopped: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "duplicates": self.duplicates,
            "dead": self.dead,
            "remaining": self.remaining,
            "stopped": self.stopped,
        }


def flush(outbox: Outbox, client: Client, progress: Progress | None = None) -> FlushReport:
    """Upload every waiting bundle, oldest first. A bundle leaves the outbox only after the
    server confirmed it; a bundle that keeps failing ends this run (later ones would too)."""
    report = FlushReport()
    note: Progress = progress or (lambda entry, state: None)
    with outbox.flushing():
        for entry in outbox.entries():
            try:
                data = entry.path.read_bytes()
            except FileNotFoundError:  # evicted meanwhile
                continue
            note(entry, "sending")
            try:
                delivered = client.send(data, entry.bundle_id, lambda text, entry=entry: note(entry, text))
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
    report.remaining = len(outbox.entries())
    return report


def refusal(exc: UploadError, entry: Entry) -> dict[str, Any]:
    return {
        "bundle_id": entry.bundle_id,
        "status": exc.status,
        "error": exc.answer.get("error", ""),
        "detail": exc.answer.get("detail", ""),
        "message": str(exc),
        "refused_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
