from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "worker",
        help="(internal) a short-lived helper process `posdiag run` starts",
        description="Started by the agent (`posdiag run`) to do what needs heavy imports: read the config, "
        "diagnose, bundle, upload, poll, send heartbeats. It reads jobs as JSON lines on stdin and answers on "
        "stdout, and exits when stdin closes (docs/agent.md). Not for people.",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from agent.worker import main

    return main()
