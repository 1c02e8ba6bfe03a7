"""What a terminal and the support server must agree on: the bundle's fixed names
(format: agent/bundle.py, docs/bundle-format.md), the shape of a terminal id, and the text
a terminal may put where support reads it (labels, model, firmware, versions)."""

from __future__ import annotations

import re
import unicodedata

BUNDLE_SCHEMA = "posdiag.bundle/1"
MANIFEST = "manifest.json"  # the first member of a bundle
SIGNATURE = "manifest.sig"  # the last: hex HMAC-SHA256 over the exact bytes of MANIFEST

TERMINAL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
LABEL_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
MAX_LABEL_CHARS = 64
MAX_LABELS = 32
# Unicode categories no label, model or version needs, and that can make shown text lie:
# controls (C0, DEL, C1), format characters (bidi overrides and isolates such as U+202E,
# zero-width spaces and joiners, the BOM, soft hyphen), private use, surrogates, unassigned
# code points, line and paragraph separators.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"})


def terminal_id_problem(value: str) -> str | None:
    """Terminal ids travel in URL paths and file names: letters, digits and . _ : - only."""
    if TERMINAL_ID.fullmatch(value):
        return None
    return "1-64 letters, digits, '.', '_', ':' or '-', starting with a letter or digit"


def text_problem(value: str) -> str | None:
    """Why `value` may not be shown as a label, model, firmware or version, or None. Letters
    of every script, digits, punctuation, symbols and spaces are fine."""
    for index, char in enumerate(value):
        if unicodedata.category(char) in REFUSED_CATEGORIES:
            name = unicodedata.name(char, "a control or unassigned character")
            return f"U+{ord(char):04X} ({name}) at character {index + 1}: only printable text is taken"
    return None


def printable(value: str) -> str:
    """`value` without the characters text_problem refuses: what a terminal sends of a text
    it read from a device (a modem's operator name, a DMI string)."""
    return "".join(c for c in value if unicodedata.category(c) not in REFUSED_CATEGORIES)


def label_problem(key: str, value: str) -> str | None:
    """Labels scope fleet incidents (keys and values are written into scope keys such as
    `carrier=X&region=north`): short lower-case keys, short printable values without & or =."""
    if not LABEL_KEY.fullmatch(key):
        return "keys are 1-32 lower-case letters, digits or '_', starting with a letter"
    if not 0 < len(value) <= MAX_LABEL_CHARS:
        return f"values are 1-{MAX_LABEL_CHARS} characters"
    if "&" in value or "=" in value:
        return "values may not hold '&' or '='"
    return text_problem(value)


def visible(value: str) -> str:
    """`value` with every character text_problem refuses written as an escape (`\\x1b`,
    `\\u202e`): what a device or a terminal said, shown to a person, cannot move their
    cursor, ring their bell, retitle their window or reorder the text around it."""
    if not any(unicodedata.category(c) in REFUSED_CATEGORIES for c in value):
        return value
    return "".join(_escaped(c) if unicodedata.category(c) in REFUSED_CATEGORIES else c for c in value)


def _escaped(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
