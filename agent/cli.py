"""`posdiag` entry point. Subcommands live one per module in agent/commands/ (scanned).

Exit codes: 0 nothing failed, 1 a finding of severity fail, 2 usage or config error,
3 a bundle that was to be uploaded did not reach the server, 130 interrupted, 141 the reader
of the output went away (`| head`): like a program killed by SIGPIPE, without a traceback.
"""

from __future__ import annotations

import argparse
import sys

from agent import __version__

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


class Parser(argparse.ArgumentParser):
    """argparse's parser, its help as wide as the terminal without importing shutil (which
    argparse does for this alone, pulling in bz2 and lzma: 0.5 MB of the resident agent).
    Subcommands' parsers are of this class too (add_subparsers takes the parent's)."""

    def _get_formatter(self) -> argparse.HelpFormatter:
        return self.formatter_class(prog=self.prog, width=terminal_columns() - 2)


def terminal_columns() -> int:
    """shutil.get_terminal_size's width: $COLUMNS, else stdout's terminal, else 80."""
    import os

    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ else 0
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with `only` that one subcommand's: the agent's resident
    process (`posdiag run`) neither imports nor builds the others (docs/agent.md)."""
    from agent.commands import register, register_all

    parser = Parser(
        prog="posdiag", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"posdiag {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    if only:
        register(sub, only)
    else:
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
    if args_list == ["worker"]:  # started by the agent, often: no parser for the other commands
        from agent.worker import main as worker_main

        return worker_main()
    parser = build_parser("run" if args_list[:1] == ["run"] else None)
    args = parser.parse_args(args_list)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args))
    except Exception as exc:
        # Imported only now: the probes package it lives in is not small, and the resident
        # agent (`posdiag run`) must stay small.
        from probes.contract.errors import PosdiagError

        if not isinstance(exc, PosdiagError):
            raise
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
