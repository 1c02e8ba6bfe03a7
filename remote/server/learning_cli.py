"""`posdiag-support learning`: see and steer the learned tables (docs/outcomes.md).

  learning status [--json]       is learning on; each model's table
  learning show MODEL [--json]   a model's table as served, and its versions
  learning off [--model M]       terminals get an empty table (all, or M's)
  learning on [--model M]        learning again, tables rebuilt
  learning revert MODEL VERSION  serve an earlier version again, pinned
  learning resume MODEL          unpin: learn for the model again
  learning rebuild               rebuild every table from the outcomes now
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from remote.server.cli import engine, settings_for


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    learning = sub.add_parser(
        "learning", help="learned tables: status, show, on, off, revert, resume, rebuild", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).add_subparsers(dest="action", required=True)  # fmt: skip
    status = learning.add_parser("status", parents=[common], help="is learning on; each model's table")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_status)
    show = learning.add_parser("show", parents=[common], help='a model\'s table and its versions ("*": the fleet\'s)')
    show.add_argument("model")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(handler=cmd_show)
    for name, enabled, text in (("off", False, "terminals get an empty table"), ("on", True, "learn again; tables rebuilt")):
        switch = learning.add_parser(name, parents=[common], help=text)
        switch.add_argument("--model", help="only this model (default: the whole fleet)")
        switch.set_defaults(handler=cmd_switch, enabled=enabled)
    revert = learning.add_parser("revert", parents=[common], help="serve an earlier version again, pinned")
    revert.add_argument("model")
    revert.add_argument("version", type=int)
    revert.set_defaults(handler=cmd_revert)
    resume = learning.add_parser("resume", parents=[common], help="unpin a model: learn for it again")
    resume.add_argument("model")
    resume.set_defaults(handler=cmd_resume)
    learning.add_parser("rebuild", parents=[common], help="rebuild every table from the outcomes now").set_defaults(handler=cmd_rebuild)


def _who() -> str:
    return f"{getpass.getuser()} (posdiag-support)"


def _rebuild_args(args: argparse.Namespace) -> tuple[Any, ...]:
    from remote.server.outcomes import knowledge
    from remote.server.outcomes.learning import Params

    s = settings_for(args).outcomes
    return knowledge.load(tuple(s.knowledge_extra_paths)), Params.of(s), s.learning_window_days


def cmd_status(args: argparse.Namespace) -> int:
    from remote.server.outcomes import tables

    found = tables.status(engine(args))
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    print(f"learning {'on' if found['enabled'] else 'OFF'} for the fleet")
    for m in found["models"]:
        state = "off" if not m["enabled"] else f"pinned to v{m['pinned']}" if m["pinned"] else "learning"
        print(f"  {m['model'] or '(no model)':<20} v{m['version'] or 0:<4} {m['codes']:>3} codes  {m['visits']:>6} visits  {m['hash'] or '-':<16}  {state}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from remote.server.outcomes import tables

    eng = engine(args)
    served, versions = tables.served(eng, args.model), tables.history(eng, args.model)
    if args.json:
        print(json.dumps({"model": args.model, "served": served, "versions": versions}, indent=2))
        return 0
    print(f"{args.model}: serving {served['model']} v{served['version']} ({served['hash']})")
    for code, entry in served["codes"].items():
        factors = ", ".join(f"{cause} x{f:g}" for cause, f in sorted(entry["f"].items(), key=lambda cf: -cf[1]))
        print(f"  {code:<20} {entry['n']:>5} visits here, {entry['N']:>6} in all: {factors}")
    for v in versions:
        print(f"  v{v['version']:<4} {v['built_at']}  {v['hash']}  {v['origin']:<12} by {v['built_by']}")
    return 0


def cmd_switch(args: argparse.Namespace) -> int:
    from remote.server.outcomes import tables
    from remote.server.outcomes.learning import FLEET

    eng = engine(args)
    tables.switch(eng, args.model or FLEET, args.enabled, _who())
    if args.enabled:
        tables.rebuild(eng, *_rebuild_args(args), _who())
    print(f"learning {'on' if args.enabled else 'off'} for {args.model or 'the whole fleet'}")
    return 0


def cmd_revert(args: argparse.Namespace) -> int:
    from remote.server.outcomes import tables

    try:
        new = tables.revert(engine(args), args.model, args.version, _who())
    except tables.TableError as exc:
        print(f"posdiag-support: {exc.detail}", file=sys.stderr)
        return 2
    print(f"{args.model}: version {args.version} served again as version {new}, pinned until `learning resume`")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from remote.server.outcomes import tables

    eng = engine(args)
    changed = tables.resume(eng, *_rebuild_args(args), args.model, _who())
    print(f"{args.model}: learning again" + (f", now version {changed[args.model]}" if args.model in changed else ""))
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    from remote.server.outcomes import tables

    changed = tables.rebuild(engine(args), *_rebuild_args(args), _who())
    print("new versions: " + (", ".join(f"{m} v{v}" for m, v in sorted(changed.items())) or "none (nothing changed)"))
    return 0
