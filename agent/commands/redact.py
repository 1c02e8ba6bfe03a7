from __future__ import annotations

import argparse
import codecs
import sys
from collections.abc import Iterator
from typing import Any


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
            for text in decoded_chunks(stream):
                out.write(redactor.text(text))
    out.flush()
    if args.stats:
        counts = ", ".join(f"{kind} {n}" for kind, n in redactor.summary().items())
        print(f"redacted: {counts}", file=sys.stderr)
    return 0


def decoded_chunks(stream: Any) -> Iterator[str]:
    """The text of a log in chunks of whole lines: UTF-16 (known by its first bytes) through
    an incremental decoder, anything else line by line as UTF-8 or GB18030 (decode_log)."""
    from remote.logtext import decode_log, log_encoding

    head = stream.read(4096)
    encoding = log_encoding(head)
    if encoding:
        decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        text = decoder.decode(head).lstrip("\ufeff")
        while block := stream.read(1 << 20):
            text += decoder.decode(block)
            cut = text.rfind("\n") + 1
            yield text[:cut]
            text = text[cut:]
        yield text + decoder.decode(b"", final=True)
        return
    rest = head
    while chunk := stream.readlines(1 << 20):
        yield decode_log(rest + b"".join(chunk))
        rest = b""
    if rest:
        yield decode_log(rest)
