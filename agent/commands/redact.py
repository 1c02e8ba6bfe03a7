from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "redact",
        help="remove card data and secrets from files or stdin",
        description="Apply the bundle's redaction (PANs masked to first 6 / last 4; track data, PIN blocks, "
        "CVV and values of secret-named keys removed) to FILEs, or stdin when none, and write the result "
        "to stdout. Use it to clean a log by hand before attaching it anywhere.",
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="files to clean (default: stdin)")
    parser.add_argument("--stats", action="store_true", help="print what was removed, by kind, on stderr")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from agent.sources import decode_log
    from probes.contract.errors import UsageError
    from remote.redact import Redactor

    redactor = Redactor()
    out = sys.stdout
    sources = args.files or ["-"]
    for name in sources:
        try:
            stream = sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"cannot read {name}: {exc.strerror}") from None
        with stream:
            while chunk := stream.readlines(1 << 20):
                out.write(redactor.text(decode_log(b"".join(chunk))))
    out.flush()
    if args.stats:
        counts = ", ".join(f"{kind} {n}" for kind, n in redactor.summary().items())
        print(f"redacted: {counts}", file=sys.stderr)
    return 0
