"""SHA-256 and name-based UUIDs without OpenSSL, for the resident agent.

`hashlib` is backed by OpenSSL's libcrypto: importing it adds about 3.5 MB to a process
(bench/daemon.py prints the figure). The resident agent (agent/resident.py) hashes only
the first kilobyte of a log file and the names of events, for which CPython's own built-in
SHA modules are enough: the digests and UUIDs are those of hashlib and uuid.uuid5.
"""

from __future__ import annotations

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


def uuid5(namespace: bytes, name: str) -> str:
    """str(uuid.uuid5(UUID(bytes=namespace), name)), which would import hashlib for its
    SHA-1: the name-based UUID of RFC 4122 (section 4.3) with its version and variant bits."""
    raw = bytearray(sha1(namespace + name.encode("utf-8")).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
