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
        help="run against the built-in simulated terminal: 'healthy', 'wifi' or 'cellular' (its link), "
        "or a comma list of faults, e.g. printer.paper_out,modem.sim_locked; a fault breaks what "
        "needs the part it lives in (no SIM: no link, no route, no DNS). Every fault and what it "
        "breaks: posdiag diagnose --help",
    )


FAULT_CATALOGUE = "%(fault catalogue)s"  # an epilog placeholder, expanded only when help is shown


class FaultCatalogueFormatter(argparse.RawDescriptionHelpFormatter):
    """Help whose epilog FAULT_CATALOGUE becomes the list of simulated faults: the list is built
    from the device model only when someone asks for help, not on every command."""

    def add_text(self, text: str | None) -> None:
        super().add_text(fault_catalogue() if text == FAULT_CATALOGUE else text)


def fault_catalogue(width: int = 78) -> str:
    """The simulated terminal's faults by the part they live in, and what else the probes then
    find (derived from the device model, probes/emulators/_model.py)."""
    import textwrap

    from probes.emulators._model import FAULTS, PARTS, consequences

    parts, faults = list(PARTS), list(FAULTS)
    groups: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for fault in sorted(FAULTS, key=lambda f: (parts.index(FAULTS[f].part), faults.index(f))):
        shown = f"{fault}->{FAULTS[fault].shows}" if FAULTS[fault].shows else fault
        groups.setdefault((FAULTS[fault].part, tuple(consequences(fault))), []).append(shown)
    lines = [
        "simulated faults (--simulate), by the part of the terminal they live in",
        "(a->b: fault a shows as finding b); 'then': what the probes also find,",
        "because the part is down:",
    ]
    for (part, then), faults in groups.items():
        lines += textwrap.wrap(f"{part.replace('_', ' ')}: {' '.join(faults)}", width, initial_indent="  ", subsequent_indent="    ")
        if then:
            lines += textwrap.wrap(f"then: {' '.join(then)}", width, initial_indent="    ", subsequent_indent="      ")
    return "\n".join(lines)


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
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises SystemExit(143) in the main thread for the block, so every `with` on the way
    out runs: emulators stop and their temporary directories go (the default action would kill
    the process with them left behind)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def configured(args: argparse.Namespace) -> Iterator[Config]:
    """The effective config; with --simulate, emulators run until the block ends."""
    from agent import config

    faults = getattr(args, "simulate", None)
    if not faults:
        yield config.load(args.config)
        return
    from probes.emulators import SimulatedTerminal

    with sigterm_unwinds(), SimulatedTerminal.from_spec(faults) as terminal:
        yield config.load(args.config, terminal.overrides)
