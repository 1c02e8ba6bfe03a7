"""Log bytes as text: UTF-8, GB18030 (Chinese payment apps often log in GBK) and UTF-16,
read the same way by the terminal (log tails, `posdiag redact`) and the support server
(the logs of a stored bundle), before either redacts them."""

from __future__ import annotations


def utf16_encoding(head: bytes) -> str | None:
    """"utf-16" (with a BOM), "utf-16-le" or "utf-16-be" when `head` (a file's first bytes)
    is UTF-16, else None. Without a BOM: NULs in most odd (LE) or even (BE) bytes and
    almost none in the others, as ASCII digits, letters and newlines in UTF-16 give."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    sample = head[: min(len(head), 4096) & ~1]
    pairs = len(sample) // 2
    if pairs < 2:
        return None
    odd, even = sample[1::2].count(0), sample[0::2].count(0)
    if odd >= pairs / 4 and even <= odd / 8:
        return "utf-16-le"
    if even >= pairs / 4 and odd <= even / 8:
        return "utf-16-be"
    return None


def decode_line(raw: bytes) -> str:
    """UTF-8, else GB18030 (Chinese payment apps often log in GBK), else UTF-8 with U+FFFD."""
    for encoding in ("utf-8", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", errors="replace")


def log_encoding(head: bytes) -> str | None:
    """The byte order of a UTF-16 log from its first bytes ("utf-16-le" or "utf-16-be"), else None."""
    encoding = utf16_encoding(head)
    if encoding == "utf-16":
        return "utf-16-le" if head.startswith(b"\xff\xfe") else "utf-16-be"
    return encoding


def decode_log(raw: bytes, encoding: str | None = None) -> str:
    """The text of log bytes: UTF-16 when `encoding` or the bytes say so, else each line on
    its own as UTF-8, GB18030 or UTF-8 with U+FFFD (a log may mix lines of two apps)."""
    encoding = encoding or utf16_encoding(raw)
    if encoding:
        return raw.decode(encoding, errors="replace").lstrip("\ufeff")
    try:
        return raw.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError:
        return "\n".join(decode_line(line) for line in raw.split(b"\n"))
