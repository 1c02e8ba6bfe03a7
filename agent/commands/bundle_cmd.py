from __future__ import annotations

import argparse
import json
import sys

from agent.commands import add_config_arg, add_json_arg


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bundle",
        help="inspect or verify a diagnosis bundle",
        description="'bundle inspect PATH' prints a bundle's manifest and diagnosis; 'bundle verify PATH' checks "
        "the archive, every member's size and SHA-256 and the signature (exit 0 intact, 1 not).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    inspect = actions.add_parser("inspect", help="print the manifest and the diagnosis")
    inspect.add_argument("path", help="a .tar.gz bundle")
    add_json_arg(inspect)
    inspect.set_defaults(handler=handle_inspect)
    verify = actions.add_parser("verify", help="check hashes and signature")
    verify.add_argument("path", help="a .tar.gz bundle")
    verify.add_argument("--token", help="the terminal token it was signed with (default: [upload] token)")
    add_config_arg(verify)
    verify.set_defaults(handler=handle_verify)


def read_file(path: str) -> bytes:
    from probes.contract.errors import UsageError

    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def handle_inspect(args: argparse.Namespace) -> int:
    from agent import bundle

    try:
        manifest, members = bundle.read(read_file(args.path))
    except bundle.BundleError as exc:
        print(f"posdiag: {args.path}: {exc}", file=sys.stderr)
        return 1
    try:
        diagnosis = json.loads(members.get("diagnosis.json", b"null"))
    except ValueError:
        diagnosis = None
    if args.json:
        print(json.dumps({"manifest": manifest, "diagnosis": diagnosis}, ensure_ascii=False, indent=2))
        return 0
    from agent.render import fit, screen_width

    print("\n".join(fit(summary(manifest).splitlines(), screen_width())))
    print("\ndiagnosis.json:")
    print(json.dumps(diagnosis, ensure_ascii=False, indent=2))
    return 0


def summary(manifest: dict) -> str:
    trigger = manifest.get("trigger") or {}
    terminal = manifest.get("terminal") or {}
    lines = [
        f"bundle     {manifest.get('bundle_id')}  ({manifest.get('schema')})",
        f"terminal   {terminal.get('id')}  serial {terminal.get('serial') or '-'}  model {terminal.get('model') or '-'}",
        f"created    {manifest.get('created_at')}  agent {manifest.get('agent_version')}",
        f"trigger    {trigger.get('kind')}  code {trigger.get('code') or '-'}  scheme {trigger.get('scheme') or '-'}",
        "files",
    ]
    for entry in manifest.get("files", []):
        cut = "  (truncated)" if (manifest.get("truncated") or {}).get(entry.get("path")) else ""
        lines.append(f"  {entry.get('size', 0):>8}  {entry.get('sha256', '')[:12]}  {entry.get('path')}{cut}")
    redaction = ", ".join(f"{k} {v}" for k, v in (manifest.get("redaction") or {}).items())
    lines.append(f"redacted   {redaction or 'nothing'}")
    lines.append(f"evicted    {manifest.get('evicted', 0)} earlier bundle(s) dropped by the outbox cap")
    return "\n".join(lines)


def handle_verify(args: argparse.Namespace) -> int:
    from agent import bundle
    from probes.contract.errors import UsageError

    token = args.token
    if token is None:
        from agent import config

        token = config.load(args.config).section("upload").token
    if not token:
        raise UsageError("no token to check the signature with: pass --token or set [upload] token")
    problems = bundle.verify(read_file(args.path), token)
    if problems:
        for problem in problems:
            print(f"FAIL {args.path}: {problem}")
        return 1
    print(f"ok {args.path}: every member matches its hash, signature valid")
    return 0


UPLOAD_FAILED = 3  # exit code: the diagnosis was made and shown, its bundle did not reach the server


def deliver(config, diagnosis: dict, args: argparse.Namespace) -> str:
    """`diagnose --bundle PATH` / `--upload`: build the bundle and write it to PATH and/or put
    it into the outbox (uploaded later by `upload_now`); returns the bundle id."""
    from datetime import UTC, datetime
    from pathlib import Path

    from agent import bundle, pipeline
    from agent.outbox import Outbox, write_atomic

    error = diagnosis.get("error") or {}
    trigger = bundle.Trigger("manual", error.get("code"), error.get("scheme") or args.scheme)
    event = {"at": bundle.iso_utc(datetime.now(UTC)), "code": error.get("code"), "scheme": trigger.scheme, "source": "cli"}
    if not config.section("upload").token:
        print("posdiag: warning: no [upload] token, the bundle's signature cannot be checked", file=sys.stderr)
    if args.upload:
        built = pipeline.store(config, Outbox.from_config(config), diagnosis, trigger, events=[event])
    else:
        built = pipeline.build_for(config, diagnosis, trigger, events=[event])
    if args.bundle:
        write_atomic(Path(args.bundle), built.data)
        print(f"bundle {built.bundle_id} written to {args.bundle} ({len(built.data)} bytes)", file=sys.stderr)
    return built.bundle_id


def upload_now(config, outbox, bundle_id: str, lang: str = "en") -> bool:
    """Upload the outbox now; retries are shown on stderr as they happen, then one line says
    what became of `bundle_id`, in `lang`. True when it reached the server."""
    from agent.i18n import phrase
    from agent.outbox import OutboxBusy
    from agent.upload import flush
    from remote.client import Client

    def say(text: str, prefix: str = "") -> None:
        print(prefix + phrase(text, lang), file=sys.stderr, flush=True)

    if not config.section("upload").server_url:
        say(f"upload failed: no [upload] server_url; bundle {bundle_id} kept in {outbox.root}", "posdiag: ")
        return False

    def progress(entry, state: str) -> None:
        if state.startswith("attempt "):
            say(f"upload {entry.bundle_id[:8]}: {state}")

    try:
        report = flush(outbox, Client(config.section("upload")), progress)
    except OutboxBusy:
        say(f"bundle {bundle_id} queued: another process is uploading the outbox")
        return False
    if bundle_id in report.sent or bundle_id in report.duplicates:
        say(f"bundle {bundle_id} uploaded")
        return True
    if bundle_id in report.dead:
        say(f"upload refused by the server; bundle {bundle_id} moved to {outbox.dead} with the reason", "posdiag: ")
    else:
        why = report.stopped or "an earlier bundle is still waiting"
        say(f"upload failed: {why}; bundle {bundle_id} kept in {outbox.root}", "posdiag: ")
    return False
