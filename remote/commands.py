"""The terminal's small exchanges with the support server: the next probe request, and the
heartbeat (whose answer may carry the next probe request too, so a poll that falls due
with a heartbeat costs no second exchange). Both tell the open fleet incidents that cover
the terminal: the heartbeat in its JSON, the poll in the X-Posdiag-Incidents header (a poll
usually answers 204, with no body). A heartbeat's answer also carries the learned table for
the terminal's model when it differs from the one the heartbeat said it holds."""

from __future__ import annotations

import json

from dataclasses import dataclass, field
from typing import Any

from remote.link import Answer, Link, LinkError


INCIDENTS_HEADER = "x-posdiag-incidents"


class PollError(Exception):
    pass


@dataclass(frozen=True)
class Reply:
    command: dict[str, Any] | None
    incidents: list[dict[str, Any]] | None = field(default=None)  # None: the server did not say
    learned: dict[str, Any] | None = None  # a heartbeat's answer: the learned table to hold instead


def link_for(upload: Any) -> Link:
    """The link of an [upload] section (server_url, token, ca_file, timeouts)."""
    try:
        return Link(upload.server_url, upload.token, upload.ca_file, upload.connect_timeout_seconds + upload.read_timeout_seconds)
    except LinkError as exc:
        raise PollError(str(exc)) from None


def fetch_next(link: Link, terminal_id: str) -> Reply:
    """The next probe request for this terminal (None when there is none)."""
    answer = _exchange(link, "GET", f"/api/v1/terminals/{terminal_id}/commands/next", None, "the poll")
    if answer.status not in (200, 204):
        raise PollError(f"server answered {answer.status} to the poll")
    incidents = _incidents({"incidents": _header_json(answer.headers.get(INCIDENTS_HEADER))})
    if answer.status == 204:
        return Reply(None, incidents)
    return Reply(_command(answer.body, "the poll"), incidents)


def send_heartbeat(link: Link, payload: dict[str, Any], poll: bool) -> Reply:
    """Send one heartbeat; with `poll`, ask for the next probe request in the same exchange."""
    answer = _exchange(link, "POST", "/api/v1/heartbeats" + ("?poll=1" if poll else ""), payload, "the heartbeat")
    if answer.status not in (200, 202):
        raise PollError(f"server answered {answer.status} to the heartbeat")
    body = answer.body if isinstance(answer.body, dict) else {}
    command = body.get("command")
    learned = body.get("learned")
    command = None if command is None else _command(command, "the heartbeat")
    return Reply(command, _incidents(body), learned if isinstance(learned, dict) else None)


def _exchange(link: Link, method: str, path: str, payload: Any, what: str) -> Answer:
    try:
        return link.exchange(method, path, payload)
    except LinkError as exc:
        raise PollError(f"{what}: {exc}") from None


def _command(command: Any, what: str) -> dict[str, Any]:
    if not isinstance(command, dict) or not isinstance(command.get("command_id"), str):
        raise PollError(f"server answered {what} without a command id")
    return command


def _incidents(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    incidents = body.get("incidents")
    return [i for i in incidents if isinstance(i, dict)] if isinstance(incidents, list) else None


def _header_json(value: str | None) -> Any:
    if not value:
        return None
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return None
