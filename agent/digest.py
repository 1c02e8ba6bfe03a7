"""SHA-256 and name-based UUIDs without OpenSSL, for the resident agent.

`hashlib` is backed by OpenSSL's libcrypto: importing it adds about 3.5 MB to a process
(bench/daemon.py prints the figure). The resident agent (agent/resident.py) hashes only
the first kilobyte of a log file and the names of events, for which CPython's own built-in
SHA modules are enough: the digests and UUIDs are those of hashlib and uuid.uuid5.
"""

from __future__ import annotations

import uuid
from typing import Any

try:
    from _sha1 import sha1
    from _sha256 import sha256
except ImportError:  # Python 3.12 moved SHA-256 to _sha2; a build without either has hashlib
    try:
        from _sha1 import sha1
        from _sha2 import sha256  # type: ignore[no-redef]
    except ImportError:
        from hashlib import sha1, sha256  # type: ignore[assignment]


def sha256_hex(data: bytes) -> str:
    return sha256(data).hexdigest()


def uuid5(namespace: uuid.UUID, name: str) -> uuid.UUID:
    """uuid.uuid5, which would import hashlib for its SHA-1 (RFC 4122, section 4.3)."""
    digest: Any = sha1(namespace.bytes + name.encode("utf-8")).digest()
    return uuid.UUID(bytes=digest[:16], version=5)
