"""What a terminal and the support server must agree on: the bundle's fixed names
(format: agent/bundle.py, docs/bundle-format.md) and the shape of a terminal id."""

from __future__ import annotations

import re

BUNDLE_SCHEMA = "posdiag.bundle/1"
MANIFEST = "manifest.json"  # the first member of a bundle
SIGNATURE = "manifest.sig"  # the last: hex HMAC-SHA256 over the exact bytes of MANIFEST

TERMINAL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def terminal_id_problem(value: str) -> str | None:
    """Terminal ids travel in URL paths and file names: letters, digits and . _ : - only."""
    if TERMINAL_ID.fullmatch(value):
        return None
    return "1-64 letters, digits, '.', '_', ':' or '-', starting with a letter or digit"
