"""`posdiag` entry point. Subcommands live one per module in agent/commands/ (scanned).

Exit codes: 0 nothing failed, 1 a finding of severity fail, 2 usage or config error,
3 a bundle that was to be uploaded did not reach the server, 130 interrupted, 141 the reader
of the output went away (`| head`): like a program killed by SIGPIPE, without a traceback.
"""

from __future__ import annotations

import argparse
import sys

from agent import __version__
from probes.contract.errors import PosdiagError

DESCRIPTION = """\
posdiag probes a payment terminal's card reader, printer, power, storage and
network, explains an error code in the light of what it found, and sends a
bundle to support. Output follows the locale (zh_* Chinese, else English).

examples:
  posdiag diagnose --code 51            explain response code 51
  posdiag diagnose --code E3 --role merchant --lang zh
                                        what the merchant can do, in Chinese
  posdiag probe                         probe everything, readable table
  posdiag probe --only power,storage --json
                                        two probes, JSON for machines
  posdiag demo                          all of it on a simulated terminal
  posdiag diagnose --code 3000 --simulate printer.paper_out
  posdiag codes search 签到             look codes up without probing
  posdiag redact app.log > clean.log    remove card data from a log
  posdiag run                           the agent (config/posdiag.service)

exit codes: 0 ok, 1 a probe found a failure, 2 usage or config error,
  3 a bundle was not uploaded, 130 interrupted, 141 the output pipe closed
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


EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE, what a shell reports for a program killed by it


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return run(sys.argv[1:] if argv is None else argv)
        finally:  # also after argparse's --help exit: a closed pipe shows here, not at interpreter exit
            sys.stdout.flush()
    except BrokenPipeError:
        discard_stdout()
        return EXIT_PIPE_CLOSED


def run(args_list: list[str]) -> int:
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


def discard_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush has nowhere to fail
    (the Python documentation's recipe for SIGPIPE)."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
