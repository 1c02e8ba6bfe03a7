from __future__ import annotations

import argparse
import json
import sys

from agent.commands import (
    add_config_arg,
    add_json_arg,
    add_lang_arg,
    add_only_arg,
    add_simulate_arg,
    configured,
    only_probes,
    output_lang,
    progress_line,
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "probe",
        help="probe the terminal's devices and links",
        description="Run every enabled probe at once, each under its own timeout, and report what it found. "
        "Exit 0 when nothing failed, 1 when a finding of severity fail exists, 2 on usage or config errors.",
    )
    add_only_arg(parser)
    add_lang_arg(parser)
    parser.add_argument(
        "--print-test", action="store_true", help="also print a short test page on the receipt printer if it is ready"
    )
    add_json_arg(parser)
    add_simulate_arg(parser)
    add_config_arg(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from agent import render
    from agent.runner import run_probes

    with configured(args) as config:
        with progress_line(args, config) as progress:
            sweep = run_probes(config, only_probes(args), on_result=progress)
        if getattr(args, "print_test", False):
            from probes.printer import print_test_page

            terminal = config.section("terminal")
            lines = ["posdiag test page", f"terminal {terminal.id}", sweep.started_at]
            print(print_test_page(config.probes["printer"], lines), file=sys.stderr)
    if args.json:
        print(json.dumps(sweep.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(render.sweep_table(sweep, output_lang(args, config)))
    return 1 if sweep.has_failure() else 0
