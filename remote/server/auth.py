"""Secrets and their checks, standard library only.

- Terminal tokens: `pdt_` + 32 random bytes; the server keeps SHA-256(token) only. Its raw
  digest is also the HMAC key the terminal signs manifest.json with.
- Passwords: scrypt (n=2^14, r=8, p=1, 16-byte salt), stored as `scrypt$n$r$p$salt$hash`.
- Sessions: a cookie `payload.mac`, payload = base64url JSON {uid, gen, exp, sid}, mac =
  HMAC-SHA256 under the server secret (shared through the database by every server). `uid`
  is the user's random identity (a user re-created under a removed user's name gets a new
  one) and `gen` the user's generation, which a password or role change raises: a cookie
  names the user as they were when it was issued, never by name. Sign-out puts the sid on a
  revocation list in the database (until the cookie would have expired).
- Passwords chosen by people: at least [server] password_min_length characters (never fewer
  than PASSWORD_FLOOR), not only white space, not the user's name (password_problem).
- CSRF: a form carries HMAC(secret, "csrf:" + binding). Signed in, the binding is the session's
  sid: a token is good for one session only and dies with it. Before sign-in (the sign-in form)
  it is a nonce the server issued in the `posdiag_csrf` cookie, itself MAC'd with its issue
  time: a nonce the client chose is never signed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from dataclasses import dataclass

ROLES = ("support", "technician", "admin")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def new_terminal_token() -> str:
    return "pdt_" + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def manifest_signature(token_sha256_hex: str, manifest: bytes) -> str:
    return hmac.new(bytes.fromhex(token_sha256_hex), manifest, hashlib.sha256).hexdigest()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), maxmem=64 * 1024 * 1024
        )
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


PASSWORD_FLOOR = 8  # the least [server] password_min_length may be


def password_problem(password: str, name: str, min_length: int) -> str | None:
    """Why `password` may not be `name`'s password (None: it may)."""
    least = max(min_length, PASSWORD_FLOOR)
    if len(password) < least:
        return f"a password has at least {least} characters"
    if not password.strip():
        return "a password is not only spaces"
    if password.strip().casefold() == name.strip().casefold():
        return "a password is not the user's name"
    return None


def new_user_id() -> str:
    return secrets.token_hex(16)


PRESESSION_SECONDS = 86400.0  # a sign-in form's nonce is good for a day


@dataclass(frozen=True)
class Session:
    uid: str
    generation: int
    expires: float
    sid: str


class Signer:
    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def _mac(self, text: str) -> str:
        return hmac.new(self.secret, text.encode("ascii"), hashlib.sha256).hexdigest()

    def session_cookie(self, uid: str, generation: int, lifetime_seconds: float) -> str:
        """A session of the user `uid` as of `generation` (store.get_user's uid, generation)."""
        body = {"uid": uid, "gen": generation, "exp": time.time() + lifetime_seconds, "sid": secrets.token_hex(16)}
        payload = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
        return f"{payload}.{self._mac('session:' + payload)}"

    def read_session(self, cookie: str | None) -> Session | None:
        if not cookie or cookie.count(".") != 1:
            return None
        payload, mac = cookie.split(".")
        try:
            if not hmac.compare_digest(mac, self._mac("session:" + payload)):
                return None
            body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            session = Session(str(body["uid"]), int(body["gen"]), float(body["exp"]), str(body["sid"]))
        except (ValueError, KeyError, TypeError, UnicodeError):
            return None
        return session if session.expires > time.time() else None

    def csrf_token(self, binding: str) -> str:
        return self._mac("csrf:" + binding)

    def check_csrf(self, binding: str | None, token: str | None) -> bool:
        if not binding or not token:
            return False
        try:
            return hmac.compare_digest(self.csrf_token(binding), token)
        except (TypeError, UnicodeError):
            return False

    def new_presession(self) -> str:
        """A `posdiag_csrf` cookie value: a fresh nonce, its issue time and their MAC."""
        body = f"{secrets.token_hex(16)}.{int(time.time())}"
        return f"{body}.{self._mac('presession:' + body)}"

    def presession(self, cookie: str | None) -> str | None:
        """The nonce of a cookie this server issued within a day, else None."""
        if not cookie or cookie.count(".") != 2:
            return None
        nonce, issued, mac = cookie.split(".")
        try:
            if not hmac.compare_digest(mac, self._mac(f"presession:{nonce}.{issued}")):
                return None
            fresh = 0 <= time.time() - int(issued) <= PRESESSION_SECONDS
        except (ValueError, TypeError, UnicodeError):
            return None
        return nonce if fresh else None


def new_nonce() -> str:
    return secrets.token_hex(16)


def address_key(host: str | None) -> str:
    """A client address as a sign-in limit counts it: IPv4 whole, IPv6 by its /64 (one
    subscriber commonly holds a whole /64)."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return host or "unknown"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address.ipv4_mapped or address) if isinstance(address, ipaddress.IPv6Address) else str(address)
