"""Subcommands, one module each: `register(subparsers)` adds its parser and sets `handler`.

Modules here import only the standard library at the top; heavy imports go inside the
handler so `posdiag --help` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
from collections.abc import Iterator

TYPE_CHECKING = False  # typing's, without importing typing: the resident agent parses its command line here
if TYPE_CHECKING:
    from typing import Any

    from agent.config import Config


def register_all(sub: argparse._SubParsersAction) -> None:
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        register(sub, info.name)


def register(sub: argparse._SubParsersAction, name: str) -> None:
    importlib.import_module(f"{__name__}.{name}").register(sub)


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="PATH", help="config file (default: $POSDIAG_CONFIG, else /etc/posdiag/posdiag.toml)"
    )


def add_simulate_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--simulate",
        metavar="FAULTS",
        help="run against the built-in simulated terminal: 'healthy' or a comma list of finding ids "
        "to inject, e.g. printer.paper_out,network.dns_failed (an unknown name lists the known ones)",
    )


def add_only_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", metavar="NAME,...", help="run only these probes (comma list)")


def only_probes(args: argparse.Namespace) -> list[str] | None:
    return args.only.split(",") if args.only else None


@contextlib.contextmanager
def progress_line(args: argparse.Namespace, config: Config) -> Iterator[Any]:
    """A live progress line on stderr naming the probes still running; nothing with --json."""
    if args.json:
        yield None
        return
    import sys

    from agent.render import Progress
    from agent.runner import select

    progress = Progress(sys.stderr, select(config, only_probes(args)), output_lang(args, config))
    try:
        yield progress
    finally:
        progress.clear()


def add_lang_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lang", choices=("zh", "en"), help="language of the readable output (default: terminal.lang, else the locale)"
    )


def output_lang(args: argparse.Namespace, config: Config) -> str:
    from agent.i18n import choose_lang

    return choose_lang(getattr(args, "lang", None), config.section("terminal").lang)


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")


@contextlib.contextmanager
def configured(args: argparse.Namespace) -> Iterator[Config]:
    """The effective config; with --simulate, emulators run until the block ends."""
    from agent import config

    faults = getattr(args, "simulate", None)
    if not faults:
        yield config.load(args.config)
        return
    from probes.emulators import SimulatedTerminal

    with SimulatedTerminal.from_spec(faults) as terminal:
        yield config.load(args.config, terminal.overrides)
