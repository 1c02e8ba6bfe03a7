from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from agent.commands import add_config_arg, add_json_arg, add_lang_arg, output_lang
from probes.contract import catalogue

if TYPE_CHECKING:
    from agent.knowledge import Code, KnowledgeBase


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "codes",
        help="look up error codes in the knowledge base (no probing)",
        description="'codes show CODE' prints what a code means and its candidate causes in every scheme "
        "that has it (or only --scheme), first the one diagnose uses ([knowledge] scheme_order); "
        "'codes search TEXT' finds codes by the start of the code, or by words of their meaning or their "
        "causes in Chinese or English (stems: 'timeout' finds 'timed out'). Exit 1 when nothing matched "
        "('no match' on stderr, with the codes you may have meant).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="what a code means and its candidate causes")
    show.add_argument("code")
    show.add_argument("--scheme", help="only this scheme")
    add_lang_arg(show)
    add_json_arg(show)
    add_config_arg(show)
    show.set_defaults(handler=handle_show)
    search = actions.add_parser("search", help="codes by words (zh or en) or by the start of the code")
    search.add_argument("text", nargs="+", metavar="TEXT")
    add_lang_arg(search)
    add_json_arg(search)
    add_config_arg(search)
    search.set_defaults(handler=handle_search)


def handle_show(args: argparse.Namespace) -> int:
    from agent import config
    from agent.knowledge import load_for
    from probes.contract.errors import UsageError
    from remote.redact import redact_text

    cfg = config.load(args.config)
    kb = load_for(cfg)
    if args.scheme and args.scheme not in kb.schemes:
        raise UsageError(f"unknown scheme {args.scheme!r}; known schemes: {', '.join(kb.schemes)}")
    found = [c for c in kb.lookup_all(args.code) if not args.scheme or c.scheme == args.scheme]
    order = cfg.section("knowledge").scheme_order
    found.sort(key=lambda c: order.index(c.scheme) if c.scheme in order else len(order))
    answering = kb.lookup(args.code, None, order)
    lang = output_lang(args, cfg)
    if args.json:
        shown = [{**code_dict(kb, c), "answers": c is answering} for c in found]
        print(json.dumps(shown, ensure_ascii=False, indent=2))
    if not found:
        from agent.codesearch import suggestions

        shown = redact_text(args.code)[0]  # a PAN looked up by mistake is not echoed
        maybe = suggestions(kb, args.code)
        said = catalogue.words("codes", lang)
        message = said["not_found"].format(code=shown)
        if maybe:
            message += said["did_you_mean"].format(codes=said["or"].join(maybe))
        print(message, file=sys.stderr)
    for code in [] if args.json else found:
        print(code_text(kb, code, lang))
        if code is answering:
            print(answers_line(order, lang))
    return 0 if found else 1


def answers_line(order: list[str], lang: str) -> str:
    """Which entry a bare code gets in `diagnose` and from the agent's sources."""
    return catalogue.words("codes", lang)["answers"].format(chain=" > ".join(order))


def handle_search(args: argparse.Namespace) -> int:
    from agent import config
    from agent.knowledge import load_for

    from agent.render import fit, screen_width

    cfg = config.load(args.config)
    kb = load_for(cfg)
    found = kb.search(" ".join(args.text), cfg.section("knowledge").scheme_order)
    lang = output_lang(args, cfg)
    if args.json:
        print(json.dumps([code_dict(kb, c) for c in found], ensure_ascii=False, indent=2))
    elif not found:
        print(catalogue.words("codes", lang)["no_match"], file=sys.stderr)
    width = max((len(c.code) for c in found), default=0)
    rows = [f"{code.scheme:9}  {code.code:{width}}  {code.meaning.get(lang)}" for code in found]
    for line in [] if args.json else fit(rows, screen_width()):
        print(line)
    return 0 if found else 1


def code_dict(kb: KnowledgeBase, code: Code) -> dict[str, Any]:
    return {
        "code": code.code,
        "scheme": code.scheme,
        "meaning": code.meaning.to_dict(),
        "host_answer": code.host_answer,
        "open": code.open,
        "causes": [
            {"id": cid, "category": kb.causes[cid].category, "title": kb.causes[cid].title.to_dict(), "prior": prior}
            for cid, prior in sorted(code.causes.items(), key=lambda item: (-item[1], item[0]))
        ],
    }


def code_text(kb: KnowledgeBase, code: Code, lang: str) -> str:
    from agent.render import fit, screen_width

    said = catalogue.words("codes", lang)
    side = said["host"] if code.host_answer else said["local"]
    lines = [f"{code.code} ({code.scheme}): {code.meaning.get(lang)}", f"  {side}"]
    if code.open:
        lines.append(said["open"])
    lines.append(said["causes"])
    total = sum(code.causes.values()) or 1.0
    for cid, prior in sorted(code.causes.items(), key=lambda item: (-item[1], item[0])):
        lines.append(f"    {prior / total * 100:3.0f}%  {kb.causes[cid].title.get(lang)}  [{cid}]")
    return "\n".join(fit(lines, screen_width()))
