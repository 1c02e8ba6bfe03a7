from __future__ import annotations

import argparse
import json
import sys

from agent.commands import add_config_arg, add_json_arg, add_lang_arg, output_lang
from probes.contract import catalogue

UPLOAD_FAILED = 3  # the outcome is kept in the outbox (or dead/), not on the server yet

CLOSE_HELP = """\
Record what the visit found, for the bundle it was about: a cause id of the
knowledge base (`posdiag codes show CODE` lists a code's causes), `nothing`
(no fault found) or `other` (say what with --note). The record is signed and
kept in the outbox, so it survives a reboot and a missing link; it is sent
after every bundle older than it, now unless --no-upload, else by the agent.
Support sees it on the bundle, counts it in the visit measures, and learns
from it which causes this model's errors really have.

examples:
  posdiag visit close --found printer.mechanism_fault --fixed --by li.wei
  posdiag visit close --found nothing --note "worked on arrival"
  posdiag visit close --found other --not-fixed --note "dock damaged"

exit: 0 recorded on the server (or kept, with --no-upload), 2 bad input,
3 kept in the outbox (no link, no server) or refused (in dead/, with why).
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "visit",
        help="record what a technician's visit found",
        description="'visit close' records what a visit found; support sees it and learns from it.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    close = actions.add_parser(
        "close", help="record what the visit found", description=CLOSE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    close.add_argument("--found", required=True, metavar="CAUSE", help="a cause id, nothing, or other")
    fixed = close.add_mutually_exclusive_group()
    fixed.add_argument("--fixed", dest="fixed", action="store_const", const=True, help="the visit fixed it")
    fixed.add_argument("--not-fixed", dest="fixed", action="store_const", const=False, help="it still fails")
    close.add_argument("--note", default="", metavar="TEXT", help="what was seen or done (card data is masked)")
    close.add_argument(
        "--bundle", metavar="ID", help="the bundle the visit was for (default: the newest one dispatched onsite or remote)"
    )
    close.add_argument("--by", default="", metavar="NAME", help="who closes the visit")
    close.add_argument("--no-upload", action="store_true", help="only keep it in the outbox: the agent sends it")
    add_json_arg(close)
    add_lang_arg(close)
    add_config_arg(close)
    close.set_defaults(handler=handle_close, fixed=None)


def handle_close(args: argparse.Namespace) -> int:
    from agent import visits
    from agent.commands.outbox_cmd import open_outbox
    from agent.knowledge import load_for

    loaded, outbox = open_outbox(args)
    lang = output_lang(args, loaded)
    upload = loaded.section("upload")
    record = visits.make_record(
        load_for(loaded), loaded.section("terminal").id, upload.token, args.found, args.fixed, args.note, args.by, args.bundle
    )
    if not upload.token:
        print("posdiag: warning: no [upload] token, the server cannot check the record's signature", file=sys.stderr)
    entry = visits.put(outbox, record)
    delivered = None if args.no_upload else send_now(loaded, outbox, record["outcome_id"], lang)
    if args.json:
        shown = {k: v for k, v in record.items() if k != "signature"}
        print(json.dumps({"outcome": shown, "file": str(entry.path), "uploaded": delivered}, ensure_ascii=False, indent=2))
    else:
        print(summary(record, lang))
    return UPLOAD_FAILED if delivered is False else 0


def summary(record: dict, lang: str) -> str:
    """One line: what was recorded, for which bundle."""
    words = catalogue.words("visit", lang)
    found = record["found"]
    said = words["nothing"] if found == "nothing" else f"{words['found']} {words['other'] if found == 'other' else found}"
    fixed = {True: [words["fixed"]], False: [words["not_fixed"]], None: []}[record["fixed"]]
    return words["line"].format(
        outcome=words["outcome"],
        id=record["outcome_id"],
        parts=words["separator"].join([said, *fixed]),
        bundle=words["bundle"],
        which=record["bundle_id"] or words["newest"],
    )


def send_now(config, outbox, outcome_id: str, lang: str) -> bool:
    """Upload the outbox now, older bundles first; one line on stderr says what became of the
    outcome, in `lang`. True when it reached the server."""
    from agent.i18n import phrase
    from agent.outbox import OutboxBusy, reason_file
    from agent.upload import flush
    from remote.client import Client

    def say(text: str, prefix: str = "") -> None:
        print(prefix + phrase(text, lang), file=sys.stderr, flush=True)

    if not config.section("upload").server_url:
        say(f"upload failed: no [upload] server_url; outcome {outcome_id} kept in {outbox.root}", "posdiag: ")
        return False

    def progress(entry, state: str) -> None:
        if state.startswith("attempt "):
            say(f"upload {entry.bundle_id[:8]}: {state}")

    client = Client(config.section("upload"))
    try:
        flushed = flush(outbox, client, progress)
    except OutboxBusy:
        say(f"outcome {outcome_id} queued: another process is uploading the outbox")
        return False
    report = flushed.outcomes
    if outcome_id in report.sent or outcome_id in report.duplicates:
        say(f"outcome {outcome_id} recorded on the server")
        return True
    if outcome_id in report.dead:
        dead = next(e for e in outbox.dead_outcome_entries() if e.bundle_id == outcome_id)
        why = json.loads(reason_file(outbox.dead, dead.name).read_text(encoding="utf-8")).get("message", "")
        say(f"upload refused by the server ({why}); outcome {outcome_id} moved to {outbox.dead} with the reason", "posdiag: ")
    else:
        why = report.stopped or "an earlier bundle is still waiting"
        say(f"upload failed: {why}; outcome {outcome_id} kept in {outbox.root}", "posdiag: ")
    return False
