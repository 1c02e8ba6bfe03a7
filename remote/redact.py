"""Remove card data and secrets from text before it leaves the terminal (PCI DSS v4).

Everything that goes into a bundle passes through a `Redactor`; it counts what it removed
by kind (pan, track, pin_block, cvv, secret) so the manifest can say so.

Passes, in this order (each a precompiled regex without nested quantifiers, so the cost is
linear in the input and no input can make it backtrack catastrophically):

1. ISO 8583 dump fields 35, 36, 45 (tracks), 52 (PIN block), 55 (ICC data) are dropped
   whole and field 2 (PAN) is masked, in the shapes `field 35: v`, `F35=v`, `DE035 v`,
   `BIT 35: v`, `域35: v`, `[035]: v` and jPOS `<field id="35" value="v"/>`.
2. Track 1 (`%B PAN ^NAME^ YYMM...?`) and track 2 (`;PAN=YYMM...?`, hex `PAN D YYMM...F`).
3. Values of keys named like key, token, secret, password, pin, cvv, track, psk in
   `k=v`, `k: v`, JSON `"k": "v"` and XML `<k>v</k>`; `Bearer <token>`; `CVV 123`.
   A key name is split into words (snake, kebab, dotted, camelCase): `ping_ms` and
   `keyboard` stay, `pinBlock`, `wifi_psk`, `api-key` go. Key check values (`kcv`,
   `key_check_value`) stay: they are public by design.
4. PANs: 13-19 digits, single spaces or dashes allowed between groups, Luhn-valid, masked
   to first 6 / last 4; 62-prefixed runs of 16-19 digits are masked even when Luhn fails
   (old UnionPay cards, DOMAIN.md section 7).

Speed: passes 1 and 3 run only on lines where a cheap filter (on an ASCII-lowercased copy)
finds a field marker or a secret-like word, so a key and its value must share a line (as
they do in logs); a clean log costs a few linear scans.

Decisions where the standard is silent (false positives that would hide log facts):
a run that starts with 0 is no PAN (MII 0 is reserved by ISO/IEC 7812); a 13-digit run
starting with 1 is a Unix time in milliseconds; a 14-digit run that reads as a valid
YYYYMMDDhhmmss is a timestamp. Everything else that is Luhn-valid is masked: a masked
amount costs less than a leaked PAN.
"""

from __future__ import annotations

import bisect
import itertools
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

MASK = "***"
KINDS = ("pan", "track", "pin_block", "cvv", "secret")

ISO_DROP = frozenset({35, 36, 45, 52, 55})
ISO_KIND = {35: "track", 36: "track", 45: "track", 52: "pin_block", 55: "track"}
_ISO_NUM = r"0{0,2}(?P<n>2|35|36|45|52|55)"
ISO_FIELD = re.compile(
    r"(?P<head>(?:(?<![A-Za-z0-9_])(?:(?:field|fld|bit)[ \t#]?|de|f)|域[ \t]?)"
    + r"\[?" + _ISO_NUM + r"\]?(?![0-9])[ \t]*(?:[:=][ \t]*|[ \t]))"
    r"(?P<v>[^\r\n\"]*)",
    re.IGNORECASE,
)
FIELD2_PAN = re.compile(r"[0-9](?:[ \-]?[0-9]){9,18}")
ISO_BRACKET = re.compile(r"(?P<head>\[" + _ISO_NUM + r"\][ \t]*[:=][ \t]*)(?P<v>[^\r\n\"]*)")
ISO_JPOS = re.compile(r"(?P<head><field\s+id=\"" + _ISO_NUM + r"\"\s+value=\")(?P<v>[^\"]*)")

TRACK1 = re.compile(r"[Bb]\d{12,19}\^[^^\r\n]{0,26}\^\d{4}[^?\r\n]{0,79}\??")
TRACK2 = re.compile(r"[0-9](?<![0-9A-Za-z][0-9])[0-9]{11,18}(?:=|[Dd](?=\d{4}))\d{4}[0-9]{0,40}[Ff]?\??(?![0-9A-Za-z])")

_NAME = r"[A-Za-z][A-Za-z0-9_.\-]{0,63}"
_SECRET_HINT = r"(?=[A-Za-z0-9_.\-]{0,63}?(?i:key|token|secret|passw|pwd|pin|epb|cvv|cvc|cvn|track|psk|authorization))"
KV_JSON = re.compile(
    r"\"(?P<k>" + _SECRET_HINT + r"[^\"\\\r\n]{1,64})\"[ \t]*:[ \t]*"
    r"(?P<v>\"(?:[^\"\\\r\n]|\\.){0,4096}\"|-?[0-9][0-9.eE+\-]{0,40}|true|false)"
)
KV_XML = re.compile(r"<(?P<k>" + _SECRET_HINT + _NAME + r")(?P<attrs>[ \t][^<>]{0,256})?>(?P<v>[^<]{0,4096})</(?P=k)>")
KV_PLAIN = re.compile(
    r"(?<![A-Za-z0-9_.\-])(?P<k>" + _NAME + r")[ \t]*(?P<sep>[=:])(?!//)[ \t]*"
    r"(?P<v>\"[^\"\r\n]{0,4096}\"|'[^'\r\n]{0,4096}'|[^\s,;&\"'<>}\])]{1,4096})"
)
MAX_KV_DEPTH = 8
BEARER = re.compile(r"(?<![A-Za-z])(?P<k>Bearer|Basic)[ \t]+(?P<v>[A-Za-z0-9._~+/=\-]{8,})")
BEARER_WORDS = frozenset({"Bearer", "Basic"})
# A PIN block (ISO 9564: 8 bytes, 16 hex digits, maybe grouped) after its name in prose:
# "epb 1234567890ABCDEF", "PIN block: 1234 5678 90AB CDEF".
PIN_BLOCK_WORD = re.compile(
    r"(?<![A-Za-z0-9])(?P<k>(?i:epb|pin[ _-]?block))[ \t]*[:=]?[ \t]*"
    r"(?P<v>[0-9A-Fa-f]{4}(?:[ \t-]?[0-9A-Fa-f]{4}){3})(?![0-9A-Za-z])"
)
CVV_WORD = re.compile(r"(?<![A-Za-z0-9])(?P<k>(?i:cvv2?|cvc2?|cvn2?))[ \t]+(?P<v>\d{3,4})(?![0-9])")

# Numbers labelled as merchant/terminal ids, amounts, trace numbers (or ISO 8583 fields 4, 11,
# 37, 41, 42) are left alone even when Luhn-valid: a PAN is never logged under these names.
PUBLIC_NUMBER = re.compile(
    r"(?i:(?<![A-Za-z])(?:mid|tid|merchant[ _-]?(?:id|no)|terminal[ _-]?(?:id|no)|rrn|stan|trace(?:[ _-]?no)?|batch(?:[ _-]?no)?"
    r"|amount|amt|(?:f|field|de|bit)[ #]?0{0,2}(?:4|11|37|41|42)))[\"']?[ \t]*[=:][ \t]*[\"']?$"
)
DIGIT_RUN = re.compile(r"[0-9](?<![0-9][0-9])(?:[ \-]?[0-9]){12,}")

# Line filters, matched on an ASCII-lowercased copy (case-insensitive alternations are an
# order of magnitude slower in `re`): the costly passes run only on lines that hit.
ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
ISO_HINT = re.compile(r"(?:field|fld|bit|de|f)[ \t#]?\[?0{0,2}(?:2|35|36|45|52|55)(?![0-9])|\[0{0,2}(?:2|35|36|45|52|55)\]|<field|域")
SECRET_HINT = re.compile(r"authorization|bearer|basic|cv[vcn]|epb|key|passw|pin|psk|pwd|secret|token|track")

_WORD_SPLIT = re.compile(r"[_.\-]+|(?<=[a-z0-9])(?=[A-Z])")
SECRET_WORDS = {
    "key": "secret", "keys": "secret", "apikey": "secret", "privatekey": "secret", "token": "secret",
    "secret": "secret", "password": "secret", "passwd": "secret", "pwd": "secret", "passphrase": "secret",
    "psk": "secret", "authorization": "secret",
    "pin": "pin_block", "pinblock": "pin_block", "epb": "pin_block",
    "cvv": "cvv", "cvv2": "cvv", "cvc": "cvv", "cvc2": "cvv", "cvn": "cvv", "cvn2": "cvv",
    "track": "track", "track1": "track", "track2": "track", "track3": "track",
}
PUBLIC_WORDS = frozenset({"kcv", "check", "checkvalue", "id", "type", "len", "length", "index", "version", "name"})


def secret_kind(name: str) -> str | None:
    """The redaction kind for a key name, or None when its value may stay."""
    words = [w.lower() for w in _WORD_SPLIT.split(name) if w]
    if not words or PUBLIC_WORDS.intersection(words):
        return None
    for word in words:
        kind = SECRET_WORDS.get(word)
        if kind:
            return kind
    return None


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


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


def mask_pan(digits: str) -> str:
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]


class Redactor:
    """Cleans text and JSON-like data; `counts` accumulates over every call."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter({kind: 0 for kind in KINDS})
        self._kv_depth = 0

    def text(self, text: str) -> str:
        text = on_lines(text, ISO_HINT, self._iso_passes)
        text = TRACK1.sub(self._track, text)
        text = TRACK2.sub(self._track, text)
        text = on_lines(text, SECRET_HINT, self._secret_passes)
        return DIGIT_RUN.sub(self._digit_run, text)

    def _iso_passes(self, line: str) -> str:
        line = ISO_JPOS.sub(self._iso, line)
        line = ISO_FIELD.sub(self._iso, line)
        return ISO_BRACKET.sub(self._iso, line)

    def _secret_passes(self, line: str) -> str:
        line = KV_JSON.sub(self._json_kv, line)
        line = KV_XML.sub(self._xml_kv, line)
        line = BEARER.sub(self._bearer, line)
        line = KV_PLAIN.sub(self._plain_kv, line)
        line = PIN_BLOCK_WORD.sub(self._pin_block_word, line)
        return CVV_WORD.sub(self._cvv_word, line)

    def data(self, value: Any) -> Any:
        """A copy of JSON-like data with every string cleaned and secret-named keys masked."""
        if isinstance(value, Mapping):
            out = {}
            for key, item in value.items():
                kind = secret_kind(str(key)) if isinstance(item, str | int | float) and not isinstance(item, bool) else None
                if kind and item not in ("", MASK):
                    self.counts[kind] += 1
                    out[key] = MASK
                else:
                    out[self.text(key) if isinstance(key, str) else key] = self.data(item)
            return out
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, int) and not isinstance(value, bool) and looks_like_pan(str(value)):
            self.counts["pan"] += 1
            return mask_pan(str(value))
        return value

    def summary(self) -> dict[str, int]:
        return {kind: self.counts[kind] for kind in sorted(self.counts)}

    def _iso(self, m: re.Match[str]) -> str:
        number, value = int(m["n"]), m["v"]
        if number == 2:
            run = FIELD2_PAN.search(value)
            if not run:
                return m[0]
            self.counts["pan"] += 1
            digits = run[0].replace(" ", "").replace("-", "")
            return m["head"] + value[: run.start()] + mask_pan(digits) + value[run.end() :]
        if not value.strip() or value == MASK:
            return m[0]
        self.counts[ISO_KIND[number]] += 1
        return m["head"] + MASK

    def _track(self, m: re.Match[str]) -> str:
        self.counts["track"] += 1
        return "[TRACK]"

    def _masked(self, kind: str | None, value: str, quoted: bool) -> str | None:
        if kind is None or value in ("", MASK):
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
        quote = raw[0] if raw[0] in "\"'" else ""
        if raw in BEARER_WORDS:
            return m[0]
        head = m[0][: m.start("v") - m.start()]
        masked = self._masked(secret_kind(m["k"]), raw.strip("\"'"), False)
        if masked is not None:
            return head + quote + masked + quote
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

    def _pin_block_word(self, m: re.Match[str]) -> str:
        self.counts["pin_block"] += 1
        return f"{m['k']} {MASK}"

    def _cvv_word(self, m: re.Match[str]) -> str:
        self.counts["cvv"] += 1
        return f"{m['k']} {MASK}"

    def _digit_run(self, m: re.Match[str]) -> str:
        groups = re.split(r"([ \-])", m[0])
        digits, seps = groups[0::2], groups[1::2]
        if PUBLIC_NUMBER.search(m.string, max(0, m.start() - 24), m.start()):
            # The label covers its own number only: a PAN written right after it
            # ("tid=12345678 4111 1111 1111 1111") is still a PAN.
            if len(digits) == 1:
                return m[0]
            return digits[0] + seps[0] + self._masked_groups(digits[1:], seps[1:])
        return self._masked_groups(digits, seps)

    def _masked_groups(self, digits: list[str], seps: list[str]) -> str:
        covered = pan_groups(digits)
        if not covered:
            return "".join(d + s for d, s in zip(digits, [*seps, ""], strict=True))
        out, i = [], 0
        while i < len(digits):
            if i not in covered:
                out.append(digits[i])
                j = i + 1
            else:
                j = i
                while j in covered:
                    j += 1
                self.counts["pan"] += 1
                out.append(mask_pan("".join(digits[i:j])))
            if j < len(digits):
                out.append(seps[j - 1])
            i = j
        return "".join(out)


def on_lines(text: str, hint: re.Pattern[str], fix: Callable[[str], str], gap: int = 64) -> str:
    """`text` with `fix` applied to the lines in which `hint` occurs (in lowercased ASCII).
    Hit lines less than `gap` characters apart are fixed as one block: fewer calls, and
    `fix` is harmless on lines without a hit."""
    low = text.translate(ASCII_LOWER)  # same length and offsets as text
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
