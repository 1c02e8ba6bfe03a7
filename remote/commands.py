"""The terminal's side of probe requests: take the next one from the support server and
carry it out. The bundle id derives from the command id, so a request redelivered after
a crash yields the same bundle and the server closes the command once."""

from __future__ import annotations

import uuid
from typing import Any

import requests

from agent import bundle, pipeline
from agent.config import Config
from agent.outbox import Outbox

COMMAND_NAMESPACE = uuid.UUID("0b7c8a52-8d7e-4f57-b1a4-3c2f5e1e9a61")


class PollError(Exception):
    pass


def fetch_next(config: Config, session: requests.Session | None = None) -> dict[str, Any] | None:
    """The next probe request for this terminal, or None when there is none."""
    upload = config.section("upload")
    terminal = config.section("terminal").id
    url = f"{upload.server_url.rstrip('/')}/api/v1/terminals/{terminal}/commands/next"
    try:
        response = (session or requests).get(
            url,
            headers={"Authorization": f"Bearer {upload.token}"},
            timeout=(upload.connect_timeout_seconds, upload.read_timeout_seconds),
            verify=upload.ca_file or True,
            allow_redirects=False,  # like uploads: the token goes to the configured server only
        )
    except requests.RequestException as exc:
        raise PollError(f"cannot reach {upload.server_url}: {type(exc).__name__}") from None
    with response:
        if response.status_code == 204:
            return None
        if response.status_code != 200:
            raise PollError(f"server answered {response.status_code} to the poll")
        try:
            command = response.json()
        except (ValueError, RecursionError):  # [[[[... is a RecursionError, not a decode error
            raise PollError("server answered the poll with something that is not JSON") from None
    if not isinstance(command, dict) or not isinstance(command.get("command_id"), str):
        raise PollError("server answered the poll without a command id")
    return command


def execute(config: Config, outbox: Outbox, command: dict[str, Any], history: list[dict[str, Any]]) -> pipeline.Outcome:
    """Run the requested probes (all when none are named), diagnose the code if one was
    given, and put the bundle, which names the command, into the outbox."""
    command_id = command["command_id"]
    probes = command.get("probes") or None
    trigger = bundle.Trigger("remote", command.get("code") or None, None, command_id, 1)
    bundle_id = str(uuid.uuid5(COMMAND_NAMESPACE, command_id))
    return pipeline.run(config, outbox, trigger, bundle_id, [], history, only=probes)
