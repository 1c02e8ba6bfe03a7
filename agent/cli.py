"""`posdiag` entry point. Subcommands live one per module in agent/commands/ (scanned).

Exit codes: 0 nothing failed, 1 a finding of severity fail, 2 usage or config error,
130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from agent import __version__
from agent.errors import PosdiagError

DESCRIPTION = """\
posdiag probes a payment terminal's card reader, printer, power, storage and network,
explains an error code in the light of what it found, and sends a bundle to support.

examples:
  posdiag diagnose --code 51                      explain response code 51 (zh; --lang en)
  posdiag diagnose --code E3 --role merchant      what the merchant can do about E3
  posdiag probe                                   probe everything, readable table
  posdiag probe --only power,storage --json       two probes, JSON for machines
  posdiag demo                                    all of it on the built-in simulated terminal
  posdiag diagnose --code 3000 --simulate printer.paper_out
  posdiag codes search 签到                      look codes up without probing
  posdiag redact app.log > clean.log              remove card data before sharing a log
  posdiag run                                     the agent (config/posdiag.service)
"""


def build_parser() -> argparse.ArgumentParser:
    from agent.commands import register_all

    parser = argparse.ArgumentParser(
        prog="posdiag", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"posdiag {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register_all(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list in (["--version"], ["-V"]):  # answered before any other import: cold start matters
        print(f"posdiag {__version__}")
        return 0
    parser = build_parser()
    args = parser.parse_args(args_list)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args))
    except PosdiagError as exc:
        print(f"posdiag: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("posdiag: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
