from __future__ import annotations

import argparse
import json
import sys

from agent.commands import (
    FAULT_CATALOGUE,
    FaultCatalogueFormatter,
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
    import textwrap

    description = (
        "Run every enabled probe, look the code up in the knowledge base and rank its likely causes "
        "with the evidence for and against each, what to do, and whether anyone needs to be sent. "
        "An unknown code is still diagnosed from the findings alone; a one-digit code no scheme knows "
        "is read with its leading zero (5 as 05). Exit 0 when a diagnosis was made, "
        "2 on usage or config errors, 3 when --upload could not deliver the bundle (the diagnosis is "
        "printed first; the bundle stays in the outbox, or in dead/ if the server refused it)."
    )
    parser = sub.add_parser(
        "diagnose",
        help="explain an error code in the light of what the probes find",
        description=textwrap.fill(description, 78),
        epilog=FAULT_CATALOGUE,
        formatter_class=FaultCatalogueFormatter,
    )
    parser.add_argument("--code", required=True, help="the code the terminal showed: 51, A0, E3, 3000, ConnectError, ...")
    parser.add_argument(
        "--scheme",
        help="look the code up only in this scheme (iso8583, cup, terminal, exception, ...); "
        "without it, knowledge.scheme_order decides",
    )
    add_lang_arg(parser)
    parser.add_argument(
        "--role", choices=("merchant", "technician", "support"), default="technician", help="whose actions to show"
    )
    add_only_arg(parser)
    parser.add_argument("--print", dest="print_receipt", action="store_true", help="also print a summary on the receipt printer")
    parser.add_argument("--bundle-id", help="with --print: the bundle id to print as a QR code")
    parser.add_argument("--bundle", metavar="PATH", help="also write a diagnosis bundle (.tar.gz) to PATH")
    parser.add_argument(
        "--upload", action="store_true", help="after the diagnosis, put a bundle into the outbox and upload it (exit 3 if not)"
    )
    add_json_arg(parser)
    add_simulate_arg(parser)
    add_config_arg(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from agent.diagnosis import diagnose

    with configured(args) as config:
        with progress_line(args, config) as progress:
            diagnosis = diagnose(
                config,
                args.code,
                args.scheme,
                only_probes(args),
                on_result=progress,
                strict_scheme=True,
                remember=not args.simulate,
            )
        if args.bundle or args.upload:
            from agent.commands.bundle_cmd import deliver

            args.bundle_id = deliver(config, diagnosis.to_dict(), args)
        lang = output_lang(args, config)
        if args.print_receipt:
            from agent.receipt import print_summary

            print(print_summary(config, diagnosis, lang, args.role, args.bundle_id), file=sys.stderr)
        if args.json:
            print(json.dumps(diagnosis.to_dict(), ensure_ascii=False, indent=2), flush=True)
        else:
            from agent.explain import diagnosis_text

            print(diagnosis_text(diagnosis, lang, args.role), flush=True)
        if args.upload:
            from agent.commands.bundle_cmd import UPLOAD_FAILED, upload_now
            from agent.outbox import Outbox

            if not upload_now(config, Outbox.from_config(config), args.bundle_id, lang):
                return UPLOAD_FAILED
    return 0
