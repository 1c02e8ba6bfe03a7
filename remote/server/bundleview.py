"""A bundle as people see it, made once at ingest and stored (table bundle_views).

The terminal redacts before anything is written; the server redacts again, once, so that a
bundle from an agent that missed something still shows people no card data. A page view
reads the stored JSON: it never unpacks or redacts the upload again. Only the newest
`log_view_kib` of a bundle's logs are kept for viewing (the agent sends far less); what is
cut is said at the top of the log, and the download still has every byte.
"""

from __future__ import annotations

import json
from typing import Any

from remote import wire
from remote.logtext import decode_log
from remote.redact import Redactor, redact_text
from remote.server import ingest

CUT_NOTE = "[posdiag-support: {n} earlier bytes of this log are not shown here; download the bundle]\n"


def build(found: ingest.Scan, parsed: dict[str, Any] | None = None) -> str:
    """The stored view of a scanned upload: manifest, diagnosis, probes, system and logs.
    `parsed`: the JSON members as ingest already read them (not read again)."""
    again = _Remembering()
    kept, parsed = found.kept, parsed or {}
    member = lambda name, default: parsed[name] if name in parsed else _json(kept.get(name), default)  # noqa: E731
    view = {
        "manifest": _manifest(member(wire.MANIFEST, {})),
        "diagnosis": again.data(member("diagnosis.json", {})),
        "probes": again.data(member("probes.json", None)),
        "system": again.data(member("system.json", None)),
        "logs": _logs(found.logs),
    }
    text = json.dumps(view, ensure_ascii=False)
    if "\\u0000" in text or not _utf8(text):  # a NUL or a lone surrogate somewhere: clean every string
        text = json.dumps(_cleaned(view), ensure_ascii=False)
    return text


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


SHORT = 256  # strings up to this long are remembered when redaction leaves them as they are
REMEMBERED = 50_000  # at most this many (then forgotten all at once): a few MB


class _Remembering(Redactor):
    """Redaction of only what is new: most strings of a bundle's JSON (probe ids, keys,
    statuses, versions) are the same in every bundle, and redaction leaves them unchanged.
    Such short strings are remembered across uploads and not redacted again; a string
    redaction changes is never remembered, so it is redacted every time it comes."""

    unchanged: set[str] = set()

    def text(self, text: str) -> str:
        outermost = not (self._kv_depth or self._base64_depth)  # nested calls redact with less depth left
        if outermost and text in self.unchanged:
            return text
        cleaned = super().text(text)
        if outermost and cleaned == text and len(text) <= SHORT:
            if len(self.unchanged) >= REMEMBERED:
                self.unchanged.clear()
            self.unchanged.add(text)
        return cleaned


def parse(stored: str) -> dict[str, Any]:
    return json.loads(stored)


def _logs(logs: dict[str, tuple[bytes, int]]) -> dict[str, str]:
    shown: dict[str, str] = {}
    for name, (tail, cut) in logs.items():
        if cut and b"\n" in tail:  # start at a whole line
            line_end = tail.index(b"\n") + 1
            tail, cut = tail[line_end:], cut + line_end
        text = redact_text(ingest.clean(decode_log(tail)))[0]
        shown[ingest.shown(name.removeprefix("logs/"))] = (CUT_NOTE.format(n=cut) if cut else "") + text
    return shown


def _cleaned(value: Any) -> Any:
    """Every string (keys too) without lone surrogates and NULs: JSON text may carry
    `\\ud800`, which no UTF-8 answer can. Depth is bounded by ingest.MAX_JSON_DEPTH."""
    if isinstance(value, str):
        return ingest.clean(value)
    if isinstance(value, dict):
        return {ingest.clean(k) if isinstance(k, str) else k: _cleaned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cleaned(v) for v in value]
    return value


def _manifest(manifest: Any) -> Any:
    """The manifest with its terminal's free text masked like the stored record (the rest
    is ids, hashes and counts, which Redactor.data would take for secrets by their keys)."""
    if isinstance(manifest, dict) and isinstance(manifest.get("terminal"), dict):
        manifest = dict(manifest)  # ingest's parsed manifest stays as sent
        manifest["terminal"] = {
            k: ingest.shown(v) if isinstance(v, str) else v for k, v in manifest["terminal"].items()
        }
    return manifest


def _json(data: bytes | None, default: Any) -> Any:
    if data is None:
        return default
    try:
        return ingest.load_json(data)
    except ValueError:
        return default
