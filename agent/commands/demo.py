from __future__ import annotations

import argparse

from agent.commands import add_config_arg


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="show posdiag at work on the built-in simulated terminal",
        description="Runs a probe sweep of the simulated terminal with a printer and a network fault.",
    )
    add_config_arg(parser)
    parser.set_defaults(handler=handle, simulate="printer.paper_out,network.dns_failed")


def handle(args: argparse.Namespace) -> int:
    from agent.commands import probe

    args.only = None
    args.json = False
    probe.handle(args)
    return 0
