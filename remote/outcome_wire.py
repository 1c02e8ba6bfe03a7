"""What a terminal and the support server must agree on about visit outcomes and learned
tables (docs/outcomes.md, docs/bundle-format.md).

- An outcome record is one JSON object, `posdiag.outcome/1`, signed like a manifest: hex
  HMAC-SHA256, keyed by SHA-256(terminal token), over the record's canonical JSON without
  its `signature` key (keys sorted, no spaces, UTF-8).
- A learned table is one JSON object, `posdiag.learned/1`, at most MAX_LEARNED_BYTES as sent;
  its `hash` is the content hash of its model and codes, so two tables with the same factors
  have the same hash whatever their version.
- A code is named `scheme:code` with the code folded as the knowledge base folds it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

OUTCOME_SCHEMA = "posdiag.outcome/1"
LEARNED_SCHEMA = "posdiag.learned/1"
MAX_LEARNED_BYTES = 4096  # a learned table fits in one heartbeat answer
MAX_OUTCOME_BYTES = 4096  # an outcome record as sent
MAX_NOTE_CHARS = 500
MAX_BY_CHARS = 64
NOTHING = "nothing"  # no fault found
OTHER = "other"  # a fault the knowledge base has no cause for: the note says what


def canonical(doc: dict[str, Any]) -> bytes:
    """The bytes a signature or a content hash is computed over."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def record_signature(key: bytes, record: dict[str, Any]) -> str:
    """`key` is SHA-256 of the terminal token (raw digest), as for manifest.sig."""
    unsigned = {k: v for k, v in record.items() if k != "signature"}
    return hmac.new(key, canonical(unsigned), hashlib.sha256).hexdigest()


def code_key(scheme: str | None, code: str | None) -> str | None:
    """`terminal:e3`; None when either part is missing (an unknown code is not learned)."""
    if not scheme or not code or not code.strip():
        return None
    return f"{scheme}:{code.strip().casefold()}"


def table_hash(model: str, codes: dict[str, Any]) -> str:
    """16 hex digits of SHA-256 over the table's content (model and codes)."""
    return hashlib.sha256(canonical({"model": model, "codes": codes})).hexdigest()[:16]
