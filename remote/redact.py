"""Remove card data and secrets from text before it leaves the terminal (PCI DSS v4).

Everything that goes into a bundle passes through a `Redactor`; it counts what it removed
by kind (pan, track, pin_block, cvv, secret) so the manifest can say so. docs/redaction.md
lists the classes with examples and the decisions taken where the standard is silent.

Text with compatibility characters (full-width digits, no-break and thin spaces, full-width
colons) is matched on its NFKC form, character for character, and masked in the original:
what the redaction left unchanged is copied from the original text.

Passes, in this order (each a precompiled regex without nested unbounded quantifiers, or
with possessive ones, so the cost is linear in the input):

0. Base64 runs whose bytes are printable text are decoded, redacted by these passes and
   encoded again (a JSON document or a digit string in base64 hides a PAN from the rest).
1. ISO 8583 fields 35, 36, 45 (tracks), 52 (PIN block), 55 (ICC data) are dropped whole
   and field 2 (PAN) is masked: `field 35: v`, `F35=v`, `DE-035 v`, `P-52 v`, `BIT 35: v`,
   `域35: v`, `[035] v`, jPOS `<field id="35" type="binary" value="v"/>`, `<52>v</52>`,
   JSON `"DE55": "v"`, `"52": "v"`.
2. EMV TLV in hex (bytes glued or spaced): values of 5A (PAN), 57 and 56 (track
   equivalents), 5F20 (cardholder name), 9F1F and 9F20 (track discretionary data), 9F6B.
3. Track 1 (`%B PAN ^NAME^ YYMM...?`) and track 2 (`;PAN=YYMM...?`, hex `PAN D YYMM...F`),
   also when the PAN is masked, written in groups, or glued to digits before it (an ISO
   length prefix).
4. Values of keys named like key, token, secret, password, pin, cvv, track, psk, icc in
   `k=v`, `k: v`, JSON `"k": "v"` and XML `<k>v</k>`; `Bearer <token>`; PIN blocks and
   security codes named in prose (`epb ...`, `encrypted PIN data ...`, `密码密文`,
   `security code 123`, `CID=1234`, `安全码 123`, `card verification value: 123`).
   A key name is split into words (snake, kebab, dotted, camelCase): `ping_ms` and
   `keyboard` stay, `pinBlock`, `wifi_psk`, `api-key` go. Key check values stay.
5. PANs: 13-19 digits, Luhn-valid (62-prefixed runs of 16-19 digits even when Luhn fails,
   DOMAIN.md section 7), with separators between groups (spaces, tabs, `.` `/` `_` `,`
   `-` `+` `%20`, up to three in a row, a line break between two groups of 4+ digits, or
   a backslash-continued line break anywhere), or glued to other digits (leading zeros, an
   expiry date after, an ISO 8583 LLVAR length before). Masked to first 6 / last 4 digit by
   digit, separators kept. A labelled number (`tid=`, `trace=`) is kept only when the label is
   the key's whole name.
6. Masks in the input that show more than first 6 / last 4 (`41111111******11`) are
   masked again (before pass 5, whose own masks are right).

Speed: passes 1, 2 and 4 run only on lines where a cheap filter (on an ASCII-lowercased
copy) finds a marker, so a key and its value must share a line (as they do in logs).

Decisions where the standard is silent (false positives that would hide log facts): a run
that starts with 0 is no PAN (MII 0 is reserved by ISO/IEC 7812; with leading zeros the
rest is checked); a 13-digit run starting with 1 is a Unix time in milliseconds; a 14-digit
run that reads as a valid YYYYMMDDhhmmss is a timestamp. Everything else that is
Luhn-valid is masked: a masked amount costs less than a leaked PAN.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import functools
import itertools
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from os.path import commonprefix

TYPE_CHECKING = False  # typing's, without importing typing (0.4 MB): the resident agent loads this (docs/agent.md)
if TYPE_CHECKING:
    from typing import Any

MASK = "***"
TRACK_MARK = "[TRACK]"
KINDS = ("pan", "track", "pin_block", "cvv", "secret")

ISO_DROP = frozenset({35, 36, 45, 52, 55})
ISO_KIND = {35: "track", 36: "track", 45: "track", 52: "pin_block", 55: "track"}
_ISO_NUM = r"0{0,2}(?P<n>2|35|36|45|52|55)"
_ISO_PREFIX = r"(?:field|fld|bit|de|f)"
ISO_FIELD = re.compile(
    r"(?P<head>(?:(?<![A-Za-z0-9_])(?:(?:field|fld|bit|de)[ \t#_.\-]?|p-)|域[ \t]?)"
    + r"\[?" + _ISO_NUM + r"\]?(?![0-9])[ \t]*(?:[:=][ \t]*|[ \t]))"
    r"(?P<v>[^\r\n\"<]*)",
    re.IGNORECASE,
)
# `F35=v`, `F2: v`: a bare F needs its `=` or `:` (`F2 00 57` is hex).
ISO_F = re.compile(
    r"(?P<head>(?<![A-Za-z0-9_])[Ff]\[?" + _ISO_NUM + r"\]?(?![0-9])[ \t]*[:=][ \t]*)(?P<v>[^\r\n\"<]*)"
)
FIELD2_PAN = re.compile(r"[0-9](?:[ \-]?[0-9]){9,18}")
ISO_BRACKET = re.compile(r"(?P<head>\[" + _ISO_NUM + r"\](?:[ \t]*[:=][ \t]*|[ \t]+))(?P<v>[^\r\n\"]*)")
_ATTR = r"(?:\s+(?!value=)[A-Za-z_:\-]{1,32}=\"[^\"<>]{0,64}\"){0,6}"
ISO_JPOS = re.compile(r"(?P<head><field\s+id=\"" + _ISO_NUM + r"\"" + _ATTR + r"\s+value=\")(?P<v>[^\"]*)")
ISO_JPOS_VALUE_FIRST = re.compile(
    r"(?P<head><field\s+value=\")(?P<v>[^\"]*)(?=\"" + _ATTR.replace("(?!value=)", "(?!id=)") + r"\s+id=\"" + _ISO_NUM + r"\")"
)
ISO_XML = re.compile(
    r"(?P<head><(?i:" + _ISO_PREFIX + r")?[_\-]?" + _ISO_NUM + r"(?:\s[^<>]{0,256})?>)(?P<v>[^<\r\n]{0,4096})"
)
ISO_JSON = re.compile(
    r"(?P<head>\"(?i:" + _ISO_PREFIX + r")?[ _\-]?" + _ISO_NUM + r"\"[ \t]*:[ \t]*)"
    r"(?P<v>\"(?:[^\"\\\r\n]|\\.){0,4096}\"|[0-9]{1,40})"
)

# EMV BER-TLV tags whose values are card data; a value is read as `length` hex bytes,
# glued or one space apart. `check` says whether a value really has the tag's shape.
EMV_TAG = re.compile(r"(?P<tag>5[Aa]|57|56|5[Ff] ?20|9[Ff] ?1[Ff]|9[Ff] ?20|9[Ff] ?6[Bb]) ?(?P<len>[0-9A-Fa-f]{2})")
EMV_HINT = re.compile(r"[59](?:(?<=5)(?:a ?0[6-9a]|7 ?(?:0[89a-f]|1[0-9a-f])|6 ?[1-4][0-9a-f]|f ?20)|(?<=9)f ?(?:1f|20|6b))")
HEX = frozenset("0123456789abcdefABCDEF")
HEX_RUN = re.compile(r"(?<![0-9A-Za-z])[0-9A-Fa-f]{2}(?: ?[0-9A-Fa-f]{2}){3,}+(?![0-9A-Za-z])")
EMV_SHAPES: dict[str, Callable[[str], bool]] = {
    "5A": lambda v: 12 <= len(v) <= 20 and v.rstrip("F").isdigit(),
    "57": lambda v: "D" in v and v.split("D", 1)[0].isdigit() and 12 <= len(v.split("D", 1)[0]) <= 19,
    "9F6B": lambda v: "D" in v and v.split("D", 1)[0].isdigit(),
    "56": lambda v: v.startswith("42") and v.count("5E") >= 2 and printable_hex(v),
    "5F20": lambda v: len(v) >= 4 and printable_hex(v),
    "9F1F": lambda v: len(v) >= 4 and printable_hex(v),
    "9F20": lambda v: len(v) >= 4 and v.rstrip("F").isdigit(),
}


def printable_hex(value: str) -> bool:
    """`value` (hex) is printable ASCII, as names and track 1 data are."""
    return all(0x20 <= int(value[i : i + 2], 16) < 0x7F for i in range(0, len(value), 2))


def tlv_card_spans(hexes: str) -> list[tuple[str, int, int]]:
    """(tag, start, end) of the card-data values in `hexes` when all of it parses as BER-TLV
    (constructed values read as nested TLV); empty when it does not parse or holds none."""
    spans: list[tuple[str, int, int]] = []
    pos, end = 0, len(hexes)
    if end % 2:
        return []
    ends = [end]  # ends of the constructed values we are inside
    try:
        while pos < end:
            while pos == ends[-1] and len(ends) > 1:
                ends.pop()
            first = int(hexes[pos : pos + 2], 16)
            tag_end = pos + 2
            if first & 0x1F == 0x1F:
                while int(hexes[tag_end : tag_end + 2], 16) & 0x80:
                    tag_end += 2
                tag_end += 2
            tag = hexes[pos:tag_end].upper()
            length = int(hexes[tag_end : tag_end + 2], 16)
            value = tag_end + 2
            if length > 0x80:
                size = length - 0x80
                if size > 2:
                    return []
                length = int(hexes[value : value + 2 * size], 16)
                value += 2 * size
            stop = value + 2 * length
            if stop > ends[-1] or length == 0x80 or first in (0x00, 0xFF):
                return []
            if first & 0x20:
                ends.append(stop)
                pos = value
                continue
            if tag in EMV_SHAPES:
                spans.append((tag, value, stop))
            pos = stop
    except ValueError:
        return []
    return spans

# The PAN of a track may be written in groups (`4111 1111 1111 1111`, dashes, dots, masked);
# the first group has 3 digits or more, so a tag or length before it (`57 4761...D22...`) stays.
_TRACK_PAN_GROUPED = r"[0-9][0-9*X#]{2}(?:[ \t.\-]{0,3}[0-9*X#]){9,16}"
TRACK1 = re.compile(r"[Bb]" + _TRACK_PAN_GROUPED + r"\^[^^\r\n]{0,120}\^[0-9]{4}[^?\r\n]{0,120}\??")
_TRACK2_END = r"(?:=|[Dd](?=[0-9]{4}))[0-9]{4}[0-9]*+[Ff]?\??"
TRACK2 = re.compile(r"(?P<pan>[0-9](?<![0-9*X#][0-9])[0-9*X#]{11,}+)" + _TRACK2_END)
TRACK2_GROUPED = re.compile(r"(?<![0-9*X#])" + _TRACK_PAN_GROUPED + r"(?![0-9*X#])" + _TRACK2_END)
TRACK2_HINT = re.compile(r"[=Dd](?<=[0-9*X#][=Dd])")  # where a track 2 PAN ends

_NAME = r"[A-Za-z][A-Za-z0-9_.\-]{0,63}"
_SECRET_HINT = (
    r"(?=[A-Za-z0-9_.\-]{0,63}?(?i:key|token|secret|passw|pwd|pin|epb|cvv|cvc|cvn|csc|track|psk|authorization|icc|security|verification))"
)
KV_JSON = re.compile(
    r"\"(?P<k>" + _SECRET_HINT + r"[^\"\\\r\n]{1,64})\"[ \t]*:[ \t]*"
    r"(?P<v>\"(?:[^\"\\\r\n]|\\.){0,4096}\"|-?[0-9][0-9.eE+\-]{0,40}|true|false)"
)
KV_XML = re.compile(r"<(?P<k>" + _SECRET_HINT + _NAME + r")(?P<attrs>[ \t][^<>]{0,256})?>(?P<v>[^<]{0,4096})</(?P=k)>")
KV_PLAIN = re.compile(
    r"(?<![A-Za-z0-9_.\-])(?P<k>" + _NAME + r")[ \t]*(?P<sep>[=:])(?!//)[ \t]*"
    r"(?P<v>\[[^\]\r\n]{0,4096}\]|\"[^\"\r\n]{0,4096}\"|'[^'\r\n]{0,4096}'|[^\s,;&\"'<>}\])]{1,4096})"
)
MAX_KV_DEPTH = 8
BEARER = re.compile(r"(?<![A-Za-z])(?P<k>Bearer|Basic)[ \t]+(?P<v>[A-Za-z0-9._~+/=\-]{8,})")
BEARER_WORDS = frozenset({"Bearer", "Basic"})
_LEAD = r"(?<![A-Za-z0-9])(?P<k>"
_BETWEEN = r")[\"']?[ \t]*(?:[:=][ \t]*|(?i:is)[ \t]+)?[\"']?[ \t]*"
# A PIN block (ISO 9564: 8 or 16 bytes of hex, maybe grouped) after its name in prose.
PIN_BLOCK_WORD = re.compile(
    _LEAD + r"(?i:epb|pin[ _-]?(?:block|blk|data)|encrypted[ _-]?pin(?:[ _-]?(?:data|block|blk))?)|密码密文|pin密文|PIN密文|密文"
    + _BETWEEN + r"(?P<v>[0-9A-Fa-f]{4}(?:[ \t-]?[0-9A-Fa-f]{4}){1,15})(?![0-9A-Za-z])"
)
# A card security code (3 or 4 digits) after one of its names.
CVV_WORD = re.compile(
    _LEAD + r"(?i:cvv2?|cvc2?|cvn2?|csc|cid|security[ _-]?code|card[ _-]?(?:verification|security)[ _-]?(?:value|code))|安全码"
    + _BETWEEN + r"(?P<v>[0-9]{3,4})(?![0-9])"
)
PIN_WORD_HINT = re.compile(r"epb|pin|密文")
CVV_WORD_HINT = re.compile(r"cv[vcn]|csc|cid|secur|verif|安全码")
# A password or PIN named in Chinese: 密码 (password, PIN) and its value.
ZH_SECRET = re.compile(r"(?P<k>密码)[ \t]*[:=][ \t]*(?P<v>[^\s,;，。]{1,64})")

# Numbers labelled as merchant/terminal ids, amounts, trace numbers (or ISO 8583 fields 4, 11,
# 37, 41, 42) are left alone even when Luhn-valid: a PAN is never logged under these names.
PUBLIC_NUMBER = re.compile(
    r"(?i:(?<![A-Za-z0-9_.\-])(?:mid|tid|merchant[ _-]?(?:id|no)|terminal[ _-]?(?:id|no)|rrn|stan|trace(?:[ _-]?no)?|batch(?:[ _-]?no)?"
    r"|amount|amt|(?:f|field|de|bit)[ #]?0{0,2}(?:4|11|37|41|42)))[\"']?[ \t]*[=:][ \t]*[\"']?$"
)
# Separators between two digit groups; a backslash-continued line (shell, C, config files)
# after them, or alone, joins the groups too, whatever their length.
_SEP = r"(?:(?:[ \t._,/+\-]|%20){1,3}(?:\\\r?\n[ \t]*)?|\\\r?\n[ \t]*)"
# A PAN wrapped onto the next line: 4+ digits end one line, 4+ digits (not a date or time) start the next.
_BREAK = r"(?<=[0-9]{4})[ \t]*\r?\n[ \t]*(?=[0-9]{4}(?![0-9]*[\-:/]))"
DIGIT_RUN = re.compile(r"[0-9](?<![0-9][0-9])(?<!%[0-9])(?:[0-9]|(?:" + _SEP + "|" + _BREAK + r")[0-9]){12,}+")
# A group of digits; a backslash-continued line between two digits splits no group.
DIGIT_GROUP = re.compile(r"%20|[0-9]+(?:\\\r?\n[ \t]*[0-9]+)*+")
MASKED_RUN = re.compile(
    r"[1-9](?<![0-9*X#][1-9])(?:[0-9]*+[*X#][0-9*X#]*+|[0-9]{3}(?P<s>[ \-])[0-9*X#]{4}(?:(?P=s)[0-9*X#]{3,4}){2})"
    r"(?![0-9*X#])"
)
MASK_CHARS = frozenset("*X#")
WRAP_TAIL = re.compile(r"(?<![0-9])(?<![0-9][ \-])(?P<tail>[1-9](?:[ \-]?[0-9]){3,}+)(?P<nl>[ \t]*\r?)(?=\n(?P<next>[^\n]*))")
WRAP_HEAD = re.compile(r"[ \t]*([0-9](?:[ \-]?[0-9])*+)")
DIGITS_AS_ZERO = str.maketrans("123456789", "000000000")
MASK_HINT = re.compile(r"[*X#](?<=[0-9][*X#])|[*X#](?<=[0-9][ \-][*X#])")
LLVAR = re.compile(r"(?=(1[3-9]))")
MONTHS = frozenset(f"{m:02d}" for m in range(1, 13))
DIGITS = frozenset(string.digits)
# Base64 (standard or URL-safe alphabet) of 13 bytes or more (the shortest PAN): text in it (a
# JSON document, a digit string) is out of every other pass's sight until it is decoded.
BASE64_RUN = re.compile(r"(?<![A-Za-z0-9+/_\-])[A-Za-z0-9+/_\-]{18,}+={0,2}(?![A-Za-z0-9+/_\-])")
MAX_BASE64_DEPTH = 2  # base64 of base64 of text; deeper nesting is not decoded

# Line filters, matched on an ASCII-lowercased copy (case-insensitive alternations are an
# order of magnitude slower in `re`): the costly passes run only on lines that hit.
ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
# (Factored on their first character, which `re` scans for fast.)
ISO_HINT = re.compile(
    r"[fdbp\[<\"域](?:(?<=f)(?:ield|ld)?[ \t#_.\-]?|(?<=d)e[ \t#_.\-]?|(?<=b)it[ \t#_.\-]?|(?<=p)-|(?<=[\[<\"域]))"
    r"\[?0{0,2}(?:2|35|36|45|52|55)(?![0-9])|<field"
)
SECRET_HINT = re.compile(
    r"authorization|bearer|basic|cv[vcn]|csc|cid|epb|key|passw|pin|psk|pwd|secret|token|track|icc|security|verification|密码|密文|安全码"
)

_WORD_SPLIT = re.compile(r"[_.\-]+|(?<=[a-z0-9])(?=[A-Z])")
SECRET_WORDS = {
    "key": "secret", "keys": "secret", "apikey": "secret", "privatekey": "secret", "token": "secret",
    "secret": "secret", "password": "secret", "passwd": "secret", "pwd": "secret", "passphrase": "secret",
    "psk": "secret", "authorization": "secret", "密码": "secret",
    "pin": "pin_block", "pinblock": "pin_block", "pinblk": "pin_block", "epb": "pin_block", "密码密文": "pin_block",
    "cvv": "cvv", "cvv2": "cvv", "cvc": "cvv", "cvc2": "cvv", "cvn": "cvv", "cvn2": "cvv", "csc": "cvv", "安全码": "cvv",
    "track": "track", "track1": "track", "track2": "track", "track3": "track", "icc": "track", "iccdata": "track",
}
# Names of several words: the words joined.
SECRET_PHRASES = {
    "securitycode": "cvv", "cardverificationvalue": "cvv", "cardverificationcode": "cvv", "cardsecuritycode": "cvv",
    "emvdata": "track", "tlvdata": "track",
}
ISO_KEY = re.compile(r"(?i:" + _ISO_PREFIX + r")?[ _\-]?0{0,2}(?P<n>2|35|36|45|52|55)")
PUBLIC_WORDS = frozenset({"kcv", "check", "checkvalue", "id", "type", "len", "length", "index", "version", "name"})


def secret_kind(name: str) -> str | None:
    """The redaction kind for a key name, or None when its value may stay. The keys of
    what terminals send are few and repeat in every bundle: short ones are remembered."""
    return _remembered_kind(name) if len(name) <= REMEMBERED_KEY_CHARS else _secret_kind(name)


REMEMBERED_KEY_CHARS = 64


def _secret_kind(name: str) -> str | None:
    iso = ISO_KEY.fullmatch(name)
    if iso:  # field 2's value is a PAN: the PAN pass masks it to first 6 / last 4
        return None if iso["n"] == "2" else ISO_KIND[int(iso["n"])]
    words = [w.lower() for w in _WORD_SPLIT.split(name) if w]
    if not words or PUBLIC_WORDS.intersection(words):
        return None
    for word in words:
        kind = SECRET_WORDS.get(word)
        if kind:
            return kind
    return SECRET_PHRASES.get("".join(words))


_remembered_kind = functools.lru_cache(maxsize=4096)(_secret_kind)


def luhn_ok(digits: str) -> bool:
    backwards = digits.encode("ascii")[::-1]
    return (sum(backwards[0::2].translate(DIGIT_VALUE)) + sum(backwards[1::2].translate(DOUBLED_VALUE))) % 10 == 0


def looks_like_pan(digits: str, luhn: bool | None = None) -> bool:
    """`luhn`: the Luhn check's result when the caller already knows it (see pan_groups)."""
    n = len(digits)
    if not 13 <= n <= 19 or digits[0] == "0":
        return False
    if digits.startswith("62") and n >= 16:
        return True
    if n == 13 and digits[0] == "1":
        return False
    if n == 14 and _is_timestamp(digits):
        return False
    return luhn_ok(digits) if luhn is None else luhn


def _is_timestamp(d: str) -> bool:
    year, month, day, hour, minute, second = int(d[:4]), int(d[4:6]), int(d[6:8]), int(d[8:10]), int(d[10:12]), int(d[12:])
    return 1970 <= year <= 2099 and 1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61


def glued_pans(digits: str) -> list[tuple[int, int]]:
    """Spans [a, b) of PANs glued to other digits in one run without separators: after
    leading zeros, before an expiry date (YYMM), or after an ISO 8583 LLVAR length (13-19)."""
    found = []
    rest = digits.lstrip("0")
    zeros = len(digits) - len(rest)
    if zeros and looks_like_pan(rest):
        found.append((zeros, len(digits)))
    for n in range(min(19, len(rest) - 4), 12, -1):
        if rest[n + 2 : n + 4] in MONTHS and looks_like_pan(rest[:n]):
            found.append((zeros, zeros + n))
            break
    for m in LLVAR.finditer(digits):
        start, length = m.end(1), int(m[1])
        if start + length <= len(digits) and looks_like_pan(digits[start : start + length]):
            found.append((start, start + length))
    return found


def mask_pan(digits: str) -> str:
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]


COMPAT_RANGES = ((0x80, 0x3400), (0xF900, 0x10000), (0x1D400, 0x1D800))
INVISIBLE_SPACES = frozenset({0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF})


def compat(cp: int) -> int | None:
    """The ASCII character a non-ASCII one stands for in the view redaction works on: its
    NFKC form when that is one ASCII character (full-width digits and letters, no-break and
    thin spaces, the full-width colon), a decimal digit's value, a space for an invisible
    space, `-` for a soft hyphen; None for every other character (CJK among them, without a
    look-up)."""
    if cp in INVISIBLE_SPACES:
        return 0x20
    if cp == 0xAD:
        return ord("-")
    if not any(low <= cp < high for low, high in COMPAT_RANGES):
        return None
    return _normalized(cp)


@functools.lru_cache(maxsize=4096)
def _normalized(cp: int) -> int | None:
    """Asked per character seen, not tabulated for every code point: the resident agent
    redacts, and a table of them all would map most of the Unicode database into it."""
    import unicodedata  # here, not at the top: the resident agent redacts ASCII lines without it

    ch = chr(cp)
    norm = unicodedata.normalize("NFKC", ch)
    if len(norm) == 1 and norm != ch and norm.isascii():
        return ord(norm)
    if unicodedata.category(ch) == "Nd":
        return 48 + unicodedata.decimal(ch)
    return None


def compat_view(text: str) -> str:
    """`text` with every character `compat` maps replaced, length for length."""
    table = {ord(ch): to for ch in set(text) if not ch.isascii() and (to := compat(ord(ch))) is not None}
    return text.translate(table) if table else text


def merge_view(original: str, view: str, cleaned: str) -> str:
    """`cleaned` (the redaction of `view`, the NFKC form of `original`, char for char) with
    every stretch the redaction left unchanged taken from `original`."""
    if cleaned == view:
        return original
    if original == view or len(view) > 4096:
        return cleaned
    import difflib  # only for text whose compatibility view differs (full-width digits, say)

    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, view, cleaned, autojunk=False).get_opcodes():
        out.append(original[i1:i2] if op == "equal" else cleaned[j1:j2])
    return "".join(out)


class Redactor:
    """Cleans text and JSON-like data; `counts` accumulates over every call."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter({kind: 0 for kind in KINDS})
        self._kv_depth = 0
        self._base64_depth = 0

    def text(self, text: str) -> str:
        if not text.isascii():
            view = compat_view(text)
            if view != text:
                cleaned = self._passes(view)
                originals, views, cleans = text.split("\n"), view.split("\n"), cleaned.split("\n")
                if len(cleans) != len(originals):  # a value spanning lines was dropped
                    return cleaned
                return "\n".join(map(merge_view, originals, views, cleans))
        return self._passes(text)

    def _passes(self, text: str) -> str:
        if self._base64_depth < MAX_BASE64_DEPTH:
            text = BASE64_RUN.sub(self._base64, text)
        low = text.translate(ASCII_LOWER)
        cleaned = on_lines(text, ISO_HINT, self._iso_passes, low)
        if cleaned != text:  # the lowercased copy must have the text's offsets
            text, low = cleaned, cleaned.translate(ASCII_LOWER)
        text = on_lines(text, EMV_HINT, self._emv_pass, low)
        text = TRACK1.sub(self._track, text)
        text = TRACK2.sub(self._track2, text)
        text = on_lines(text, TRACK2_HINT, functools.partial(TRACK2_GROUPED.sub, self._track), low=text)
        text = on_lines(text, SECRET_HINT, self._secret_passes)
        if MASK_HINT.search(text):  # masks this redactor writes are right: only the input's are checked
            text = MASKED_RUN.sub(self._masked_run, text)
        text = self._wrapped(text)
        return DIGIT_RUN.sub(self._digit_run, text)

    def _wrapped(self, text: str) -> str:
        """A PAN whose digits end one line and go on in the next after the same log prefix
        (`12:00:01 I/pay: pan 41111111` / `12:00:01 I/pay: 11111111`); the prefixes are
        compared with digits as 0, so a new timestamp is the same prefix."""
        positions: list[int] = []
        for m in WRAP_TAIL.finditer(text):
            if PUBLIC_NUMBER.search(text, max(0, m.start() - 24), m.start()):
                continue
            line_start = text.rfind("\n", 0, m.start()) + 1
            first, second = text[line_start : m.start("nl")], m["next"]
            k = len(commonprefix([first.translate(DIGITS_AS_ZERO), second.translate(DIGITS_AS_ZERO)]))
            while k and second[k - 1].isdigit():
                k -= 1
            head = WRAP_HEAD.match(second, k) if k else None
            if head is None:
                continue
            offset = m.end("nl") + 1 + head.start(1)  # where the next line's digits start in text
            spans = [(g.start() + m.start(), g.end() + m.start()) for g in re.finditer(r"[0-9]+", m["tail"])]
            boundary = len(spans)
            spans += [(g.start() + offset, g.end() + offset) for g in re.finditer(r"[0-9]+", head[1])]
            for i, j in covered_stretches([text[a:b] for a, b in spans]):
                if i < boundary <= j - 1:
                    self.counts["pan"] += 1
                    positions += [p for a, b in spans[i:j] for p in range(a, b)][6:-4]
        if not positions:
            return text
        chars = list(text)
        for p in positions:
            chars[p] = "*"
        return "".join(chars)

    def _base64(self, m: re.Match[str]) -> str:
        """A base64 run whose bytes are printable text is redacted as text and encoded again
        in its own alphabet and padding; any other run (binary, a hash, a word) stays."""
        run = m[0]
        body = run.rstrip("=")
        url_safe = "-" in body or "_" in body
        if body.isdigit() or len(body) % 4 == 1 or (url_safe and ("+" in body or "/" in body)):
            return run
        alphabet = b"-_" if url_safe else b"+/"
        try:
            decoded = base64.b64decode(body + "=" * (-len(body) % 4), altchars=alphabet, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return run
        if not decoded.replace("\n", "").replace("\r", "").replace("\t", "").isprintable():
            return run
        self._base64_depth += 1
        try:
            cleaned = self.text(decoded)
        finally:
            self._base64_depth -= 1
        if cleaned == decoded:
            return run
        encoded = base64.b64encode(cleaned.encode("utf-8"), altchars=alphabet).decode("ascii")
        return encoded if run.endswith("=") else encoded.rstrip("=")

    def _iso_passes(self, line: str) -> str:
        if "<" in line:
            line = ISO_JPOS.sub(self._iso, line)
            line = ISO_JPOS_VALUE_FIRST.sub(self._iso, line)
            line = ISO_XML.sub(self._iso, line)
        if '"' in line:
            line = ISO_JSON.sub(self._iso, line)
        line = ISO_FIELD.sub(self._iso, line)
        line = ISO_F.sub(self._iso, line)
        return ISO_BRACKET.sub(self._iso, line) if "[" in line else line

    def _secret_passes(self, line: str) -> str:
        low = line.translate(ASCII_LOWER)
        if '"' in line:
            line = KV_JSON.sub(self._json_kv, line)
        if "<" in line:
            line = KV_XML.sub(self._xml_kv, line)
        if "bearer" in low or "basic" in low:
            line = BEARER.sub(self._bearer, line)
        line = KV_PLAIN.sub(self._plain_kv, line)
        if PIN_WORD_HINT.search(low):
            line = PIN_BLOCK_WORD.sub(functools.partial(self._word, "pin_block"), line)
        if CVV_WORD_HINT.search(low):
            line = CVV_WORD.sub(functools.partial(self._word, "cvv"), line)
        return ZH_SECRET.sub(functools.partial(self._word, "secret"), line) if "密码" in line else line

    def data(self, value: Any) -> Any:
        """A copy of JSON-like data with every string cleaned and secret-named keys masked."""
        if isinstance(value, Mapping):
            out = {}
            for key, item in value.items():
                kind = secret_kind(str(key)) if isinstance(item, str | int | float) and not isinstance(item, bool) else None
                if kind and item not in ("", MASK):
                    self.counts[kind] += 1
                    out[self.text(key) if isinstance(key, str) else key] = MASK
                else:
                    out[self.text(key) if isinstance(key, str) else key] = self.data(item)
            return out
        if isinstance(value, list | tuple):
            if value and all(isinstance(v, str) and "\n" not in v for v in value):  # lines: a PAN may wrap
                lines = self.text("\n".join(value)).split("\n")
                if len(lines) == len(value):
                    return lines
            return [self.data(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, int) and not isinstance(value, bool):
            cleaned = self.text(str(value))
            return value if cleaned == str(value) else cleaned
        return value

    def summary(self) -> dict[str, int]:
        return {kind: self.counts[kind] for kind in sorted(self.counts)}

    def _iso(self, m: re.Match[str]) -> str:
        number, value = int(m["n"]), m["v"]
        quote = '"' if value.startswith('"') else ""
        if number == 2:
            run = FIELD2_PAN.search(value)
            if not run:
                return m[0]
            self.counts["pan"] += 1
            digits = run[0].replace(" ", "").replace("-", "")
            return m["head"] + value[: run.start()] + mask_pan(digits) + value[run.end() :]
        if not value.strip(' "') or value.strip('"') == MASK:
            return m[0]
        self.counts[ISO_KIND[number]] += 1
        return m["head"] + quote + MASK + quote

    def _emv_pass(self, line: str) -> str:
        """Hex runs that parse as BER-TLV have their card-data values masked; elsewhere
        card-data tags are looked for one by one (a TLV inside other text)."""
        chars: list[str] | None = None
        for run in HEX_RUN.finditer(line):
            compact = run[0].replace(" ", "")
            spans = tlv_card_spans(compact)
            if spans:
                where = [run.start() + i for i, ch in enumerate(run[0]) if ch != " "]  # compact index -> line index
                chars = chars or list(line)
                for tag, a, b in spans:
                    self.counts["pan" if tag == "5A" else "track"] += 1
                    for i in range(a, b):
                        chars[where[i]] = "*"
        line = line if chars is None else "".join(chars)
        chars = None
        pos = 0
        while m := EMV_TAG.search(line, pos):
            span = self._emv_value(line, m)
            if span is None:
                pos = m.start() + 1
                continue
            chars = chars or list(line)
            for i in range(*span):
                if chars[i] != " ":
                    chars[i] = "*"
            pos = span[1]
        return line if chars is None else "".join(chars)

    def _emv_value(self, line: str, m: re.Match[str]) -> tuple[int, int] | None:
        """The span of the value of a card-data TLV at `m`, or None when it has not the tag's shape."""
        length = int(m["len"], 16)
        tag = m["tag"].replace(" ", "").upper()
        if line[m.start() : m.end()].count("*"):
            return None
        start, end, hexes = m.end(), m.end(), []
        for _ in range(length):
            if line.startswith(" ", end):
                end += 1
            pair = line[end : end + 2]
            if len(pair) < 2 or not HEX.issuperset(pair):
                return None
            hexes.append(pair)
            end += 2
        value = "".join(hexes).upper()
        if not EMV_SHAPES[tag](value):
            return None
        self.counts["pan" if tag == "5A" else "track"] += 1
        return start, end

    def _track(self, m: re.Match[str]) -> str:
        self.counts["track"] += 1
        return TRACK_MARK

    def _track2(self, m: re.Match[str]) -> str:
        """A PAN run longer than 19 has digits glued before it (an ISO length prefix): the
        track is its longest PAN-like tail (else its last 19 digits); the rest stays."""
        pan = m["pan"]
        keep = 0
        if len(pan) > 19:
            tails = (n for n in range(19, 12, -1) if looks_like_pan(pan[-n:]))
            keep = len(pan) - next(tails, 19)
        self.counts["track"] += 1
        return pan[:keep] + TRACK_MARK

    def _masked(self, kind: str | None, value: str, quoted: bool) -> str | None:
        if kind is None or value in ("", MASK, TRACK_MARK):
            return None
        self.counts[kind] += 1
        return f'"{MASK}"' if quoted else MASK

    def _json_kv(self, m: re.Match[str]) -> str:
        raw = m["v"]
        quoted = raw.startswith('"')
        masked = self._masked(secret_kind(m["k"]), raw.strip('"'), quoted)
        if masked is None:
            return m[0]
        return m[0][: m.start("v") - m.start()] + masked

    def _xml_kv(self, m: re.Match[str]) -> str:
        masked = self._masked(secret_kind(m["k"]), m["v"].strip(), False)
        if masked is None:
            return m[0]
        return f"<{m['k']}{m['attrs'] or ''}>{masked}</{m['k']}>"

    def _plain_kv(self, m: re.Match[str]) -> str:
        raw = m["v"]
        if raw in BEARER_WORDS or TRACK_MARK[:-1] in raw or not raw.strip("="):  # `=`s alone: base64 padding
            return m[0]
        open_, close = (raw[0], "]" if raw[0] == "[" else raw[0]) if raw[0] in "\"'[" else ("", "")
        head = m[0][: m.start("v") - m.start()]
        masked = self._masked(secret_kind(m["k"]), raw.strip("\"'[]"), False)
        if masked is not None:
            return head + open_ + masked + close
        if "=" in raw or ":" in raw:  # a value may hide the next pair: cfg=password:x
            if self._kv_depth >= MAX_KV_DEPTH:  # a=a=a=...: no log nests pairs this deep; one recursion per level
                self.counts["secret"] += 1
                return head + MASK
            self._kv_depth += 1
            try:
                return head + KV_PLAIN.sub(self._plain_kv, raw)
            finally:
                self._kv_depth -= 1
        return m[0]

    def _bearer(self, m: re.Match[str]) -> str:
        if m["v"] == MASK:
            return m[0]
        self.counts["secret"] += 1
        return f"{m['k']} {MASK}"

    def _word(self, kind: str, m: re.Match[str]) -> str:
        if m["v"] == MASK:
            return m[0]
        self.counts[kind] += 1
        return m[0][: m.start("v") - m.start()] + MASK

    def _digit_run(self, m: re.Match[str]) -> str:
        run = m[0]
        before = m.string[max(0, m.start() - 3) : m.start()]
        labelled = ("=" in before or ":" in before) and PUBLIC_NUMBER.search(m.string, max(0, m.start() - 24), m.start())
        if run.isdigit() and not labelled:  # the common case: one group
            if looks_like_pan(run):
                self.counts["pan"] += 1
                return mask_pan(run)
            spans = glued_pans(run) if len(run) >= 14 else []
            if not spans:
                return run
            chars = list(run)
            for a, b in spans:
                self.counts["pan"] += 1
                chars[a + 6 : b - 4] = "*" * (b - a - 10)
            return "".join(chars)
        spans = [g.span() for g in DIGIT_GROUP.finditer(run) if g[0] != "%20"]
        first = 0
        if labelled:
            # The label covers its own number only: a PAN written right after it
            # ("tid=12345678 4111 1111 1111 1111") is still a PAN.
            first = 1
        masked: list[list[int]] = []
        for part in decimal_parts(run, spans[first:]):
            places, digits = group_digits(run, part)
            stretches = covered_stretches(digits)
            for i, j in stretches:
                masked.append([p for group in places[i:j] for p in group])
            inside = {k for i, j in stretches for k in range(i, j)}
            for k, group in enumerate(digits):
                if len(group) >= 14 and k not in inside:
                    masked += [places[k][x:y] for x, y in glued_pans(group)]
        if not masked:
            return run
        chars = list(run)
        for positions in masked:
            self.counts["pan"] += 1
            for p in positions[6:-4]:
                chars[p] = "*"
        return "".join(chars)

    def _masked_run(self, m: re.Match[str]) -> str:
        """A masked PAN that still shows more than its first 6 and last 4 digits."""
        run = m[0]
        positions = [i for i, ch in enumerate(run) if ch not in " -"]
        if not 13 <= len(positions) <= 19:
            return run
        chars = list(run)
        changed = False
        for p in positions[6:-4]:
            if chars[p] not in MASK_CHARS:
                chars[p], changed = "*", True
        if not changed:
            return run
        self.counts["pan"] += 1
        return "".join(chars)


def decimal_parts(run: str, spans: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """The digit groups of a run cut at decimal fractions: a group of 1-3 digits after the
    run's only `.` (or only `,`) that follows 5+ digits (`139401420914.30`) is an amount's
    fraction, no part of a PAN (a PAN written with dots has a dot between every group)."""
    parts: list[list[tuple[int, int]]] = [[]]
    for k, (a, b) in enumerate(spans):
        point = run[spans[k - 1][1] : a] if k else ""
        if point in (".", ",") and b - a <= 3 and spans[k - 1][1] - spans[k - 1][0] >= 5 and run.count(point) == 1:
            parts.append([])
            continue
        parts[-1].append((a, b))
    return parts


def group_digits(run: str, part: list[tuple[int, int]]) -> tuple[list[Sequence[int]], list[str]]:
    """Each group's digit positions in `run`, and its digits: a backslash-continued line
    break inside a group (`41111111\\` / `11111111`) is no digit of it."""
    if "\\" not in run:
        return [range(a, b) for a, b in part], [run[a:b] for a, b in part]
    places = [[p for p in range(a, b) if run[p] in DIGITS] for a, b in part]
    return places, ["".join(run[p] for p in group) for group in places]


def covered_stretches(groups: list[str]) -> list[tuple[int, int]]:
    """[i, j) ranges of consecutive groups covered by candidate PANs (see pan_groups)."""
    covered = sorted(pan_groups(groups))
    stretches: list[tuple[int, int]] = []
    for k in covered:
        if stretches and stretches[-1][1] == k:
            stretches[-1] = (stretches[-1][0], k + 1)
        else:
            stretches.append((k, k + 1))
    return stretches


def on_lines(text: str, hint: re.Pattern[str], fix: Callable[[str], str], low: str | None = None, gap: int = 64) -> str:
    """`text` with `fix` applied to the lines in which `hint` occurs in `low`, the text in
    lowercased ASCII (made here when not given). Hit lines less than `gap` characters apart
    are fixed as one block: fewer calls, and `fix` is harmless on lines without a hit."""
    low = text.translate(ASCII_LOWER) if low is None else low  # same length and offsets as text
    pieces: list[str] = []
    done = block_start = block_end = 0
    found = False
    for m in hint.finditer(low):
        if found and m.start() < block_end:
            continue
        start = low.rfind("\n", 0, m.start()) + 1
        end = low.find("\n", m.end())
        end = len(low) if end < 0 else end
        if found and start - block_end <= gap:
            block_end = end
            continue
        if found:
            pieces += [text[done:block_start], fix(text[block_start:block_end])]
            done = block_end
        block_start, block_end, found = start, end, True
    if not found:
        return text
    pieces += [text[done:block_start], fix(text[block_start:block_end]), text[block_end:]]
    return "".join(pieces)


def pan_groups(groups: list[str]) -> set[int]:
    """Indexes of the digit groups of a run that belong to some candidate PAN.

    A PAN is a window of consecutive groups, 13-19 digits in all, whose inner groups have
    at least 2 digits (so counting tables like "1 2 3 4" are no PAN). Every PAN window is
    covered, and a covered stretch is masked as one: its first 6 and last 4 digits never
    reveal more of any PAN in it than that PAN's own first 6 and last 4.
    """
    # Linear, and cheap per window, because a megabyte of "12 12 12 ..." is half a million
    # groups and millions of windows: windows of 13-19 digits are found by bisection, their
    # Luhn sums come from prefix sums, and a window inside a covered stretch is not checked.
    covered: set[int] = set()
    joined = "".join(groups)
    offsets = list(itertools.accumulate(map(len, groups), initial=0))  # group i is joined[offsets[i]:offsets[i + 1]]
    shorts = list(itertools.accumulate((len(g) < 2 for g in groups), initial=0))  # groups of 1 digit before i
    sums = luhn_prefix_sums(joined)
    reach = -1  # the last group of the covered stretches so far
    for start in range(len(groups)):
        a = offsets[start]
        end = bisect.bisect_left(offsets, a + 13, start + 1) - 1
        while end < len(groups) and offsets[end + 1] - a <= 19:
            if end - 1 > start and shorts[end] > shorts[start + 1]:
                break
            b = offsets[end + 1]
            luhn = (sums[b % 2][b] - sums[b % 2][a]) % 10 == 0
            if end > reach and (luhn or joined.startswith("62", a)) and looks_like_pan(joined[a:b], luhn):
                covered.update(range(start, end + 1))
                reach = end
            end += 1
    return covered


DIGIT_VALUE = bytes.maketrans(b"0123456789", bytes(range(10)))
DOUBLED_VALUE = bytes.maketrans(b"0123456789", bytes([0, 2, 4, 6, 8, 1, 3, 5, 7, 9]))  # 2d, digits summed


def luhn_prefix_sums(digits: str) -> tuple[list[int], list[int]]:
    """sums[p][i]: the Luhn sum of digits[:i] with the digits at positions of parity p doubled.
    Luhn doubles every second digit from the right, so digits[a:b] passes Luhn when
    sums[b % 2][b] - sums[b % 2][a] is a multiple of 10."""
    raw = digits.encode("ascii")
    plain, doubled = raw.translate(DIGIT_VALUE), raw.translate(DOUBLED_VALUE)
    out = []
    for parity in (0, 1):
        weights = bytearray(plain)
        weights[parity::2] = doubled[parity::2]
        out.append(list(itertools.accumulate(weights, initial=0)))
    return out[0], out[1]


def redact_text(text: str) -> tuple[str, dict[str, int]]:
    redactor = Redactor()
    return redactor.text(text), redactor.summary()
