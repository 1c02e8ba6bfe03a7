from __future__ import annotations

import argparse
import json
import sys

from agent.commands import add_config_arg, add_json_arg, add_simulate_arg, configured, output_lang


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "commands",
        help="take and run probe requests from the support server",
        description="'commands poll' asks the support server ([upload] server_url, token) for this terminal's "
        "next probe request, runs it, and uploads the bundle, which names the request so the server closes it. "
        "The agent (posdiag run) does this on its own every [daemon] command_poll_seconds. "
        "Exit 0 done or nothing waiting, 1 the poll failed, 2 config errors, 3 the bundle was not uploaded.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    poll = actions.add_parser("poll", help="run one poll cycle")
    add_json_arg(poll)
    add_simulate_arg(poll)
    add_config_arg(poll)
    poll.set_defaults(handler=handle_poll)


def handle_poll(args: argparse.Namespace) -> int:
    from agent.commands.bundle_cmd import UPLOAD_FAILED, upload_now
    from agent.history import ring_for
    from agent.outbox import Outbox
    from agent.pipeline import run_command
    from probes.contract.errors import UsageError
    from remote.commands import PollError, fetch_next, link_for

    with configured(args) as config:
        if not config.section("upload").server_url:
            raise UsageError("no [upload] server_url configured: nowhere to poll")
        try:
            command = fetch_next(link_for(config.section("upload")), config.section("terminal").id).command
        except PollError as exc:
            print(f"posdiag: {exc}", file=sys.stderr)
            return 1
        if command is None:
            print(json.dumps({"command": None}) if args.json else "no probe request waiting")
            return 0
        outbox = Outbox.from_config(config)
        outcome = run_command(config, outbox, command, ring_for(config).read())
        uploaded = upload_now(config, outbox, outcome.bundle_id, output_lang(args, config))
    result = {"command": command, "bundle_id": outcome.bundle_id, "uploaded": uploaded}
    print(json.dumps(result) if args.json else f"probe request {command['command_id']} done: bundle {outcome.bundle_id}")
    return 0 if uploaded else UPLOAD_FAILED
