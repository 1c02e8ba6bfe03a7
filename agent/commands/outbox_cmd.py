from __future__ import annotations

import argparse
import json
import sys

from agent.commands import add_config_arg, add_json_arg


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "outbox",
        help="list or upload the bundles waiting in the outbox",
        description="'outbox list' shows bundles and visit outcomes waiting for upload and those the server "
        "refused (dead/); 'outbox flush' uploads the waiting ones in order (exit 0 when none is left, 1 otherwise); "
        "'outbox requeue ID' or '--all' moves refused ones back to the waiting ones, e.g. after the "
        "server's limit or the terminal's token was fixed (exit 1 when none matched).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="bundles waiting and refused")
    add_json_arg(listing)
    add_config_arg(listing)
    listing.set_defaults(handler=handle_list)
    flush = actions.add_parser("flush", help="upload the waiting bundles now (progress on stderr)")
    add_json_arg(flush)
    add_config_arg(flush)
    flush.set_defaults(handler=handle_flush)
    requeue = actions.add_parser("requeue", help="move refused bundles and outcomes back for upload")
    which = requeue.add_mutually_exclusive_group(required=True)
    which.add_argument("bundle_id", nargs="?", metavar="ID", help="a refused bundle's or outcome's id (a unique prefix will do)")
    which.add_argument("--all", action="store_true", help="every refused bundle and outcome")
    add_config_arg(requeue)
    requeue.set_defaults(handler=handle_requeue)


def open_outbox(args: argparse.Namespace):  # -> (Config, Outbox); typed imports stay out of cold start
    from agent import config
    from agent.outbox import Outbox
    from probes.contract.errors import ConfigError

    loaded = config.load(args.config)
    try:
        return loaded, Outbox.from_config(loaded)
    except OSError as exc:
        raise ConfigError(loaded.source, "outbox.dir", f"cannot use {exc.filename}: {exc.strerror}") from None


def handle_list(args: argparse.Namespace) -> int:
    _, outbox = open_outbox(args)
    waiting, dead = outbox.entries(), outbox.dead_entries()
    outcomes, dead_outcomes = outbox.outcome_entries(), outbox.dead_outcome_entries()
    if args.json:
        doc = {
            "dir": str(outbox.root),
            "waiting": [entry_dict(e) for e in waiting],
            "dead": [dict(entry_dict(e), reason=reason(e)) for e in dead],
            "evicted_unreported": outbox.pending_evicted(),
            "outcomes": {
                "waiting": [outcome_dict(e) for e in outcomes],
                "dead": [dict(outcome_dict(e), reason=reason(e)) for e in dead_outcomes],
            },
        }
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return 0
    from agent.render import fit, screen_width

    lines = [f"{len(waiting)} waiting, {len(dead)} refused in outbox {outbox.root}"]
    lines += entry_lines(waiting, dead)
    if outcomes or dead_outcomes:
        lines.append(f"visit outcomes: {len(outcomes)} waiting, {len(dead_outcomes)} refused")
        lines += entry_lines(outcomes, dead_outcomes)
    evicted = outbox.pending_evicted()
    if evicted:
        lines.append(f"  {evicted} bundle(s) evicted by the size cap, to be reported in the next manifest")
    print("\n".join(fit(lines, screen_width())))
    return 0


def entry_lines(waiting: list, dead: list) -> list[str]:
    lines = []
    for label, entries in (("waiting", waiting), ("refused", dead)):
        for e in entries:
            lines.append(f"  {label:8} {e.created_at().strftime('%Y-%m-%d %H:%M')}Z {e.size:>7} B  {e.bundle_id}")
            if label == "refused":
                lines.append(f"    HTTP {reason(e).get('status')}: {reason(e).get('error') or reason(e).get('message')}")
    return lines


def entry_dict(entry) -> dict:
    return {"bundle_id": entry.bundle_id, "file": entry.name, "size": entry.size, "created_at": entry.stamp}


def outcome_dict(entry) -> dict:
    return {"outcome_id": entry.bundle_id, "file": entry.name, "size": entry.size, "created_at": entry.stamp}


def reason(entry) -> dict:
    from agent.outbox import reason_file

    path = reason_file(entry.path.parent, entry.name)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def handle_flush(args: argparse.Namespace) -> int:
    from agent.outbox import OutboxBusy
    from agent.upload import flush
    from probes.contract.errors import ConfigError, UsageError
    from remote.client import Client

    loaded, outbox = open_outbox(args)
    settings = loaded.section("upload")
    if not settings.server_url:
        raise ConfigError(loaded.source, "upload.server_url", "empty: no server to upload to")
    total = len(outbox.entries()) + len(outbox.outcome_entries())

    def progress(entry, state: str) -> None:
        left = len(outbox.entries()) + len(outbox.outcome_entries())
        print(f"[{total - left + (state == 'sending')}/{total}] {entry.bundle_id}: {state}", file=sys.stderr)

    client = Client(settings)
    try:
        report = flush(outbox, client, progress)
    except OutboxBusy as exc:
        raise UsageError(str(exc)) from None
    outcomes = report.outcomes
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(
            f"sent {len(report.sent)}, already on the server {len(report.duplicates)}, refused {len(report.dead)}, "
            f"waiting {report.remaining}" + (f" (stopped: {report.stopped})" if report.stopped else "")
        )
        if outcomes.sent or outcomes.duplicates or outcomes.dead or outcomes.remaining:
            print(
                f"visit outcomes: sent {len(outcomes.sent)}, already on the server {len(outcomes.duplicates)}, "
                f"refused {len(outcomes.dead)}, waiting {outcomes.remaining}" + (f" (stopped: {outcomes.stopped})" if outcomes.stopped else "")
            )
    left = report.remaining + outcomes.remaining
    return 0 if left == 0 and not report.dead and not outcomes.dead else 1


def handle_requeue(args: argparse.Namespace) -> int:
    from probes.contract.errors import UsageError

    _, outbox = open_outbox(args)
    dead = outbox.dead_entries() + outbox.dead_outcome_entries()
    chosen = dead if args.all else [e for e in dead if e.bundle_id.startswith(args.bundle_id)]
    if not args.all and len(chosen) > 1:
        raise UsageError(f"{args.bundle_id!r} names {len(chosen)} refused bundles or outcomes: give more of the id")
    if not chosen:
        what = "no refused bundle or outcome" if args.all else f"no refused bundle or outcome {args.bundle_id}"
        print(f"posdiag: {what} in {outbox.dead}", file=sys.stderr)
        return 1
    for entry in chosen:
        outbox.requeue(entry)
        print(f"{entry.bundle_id} back in the outbox")
    return 0
