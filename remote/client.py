"""Upload bundles to the support server, each exactly once, and outcome records the same
way (agent/upload.py sends the outbox through this client, oldest first).

POST {server}/api/v1/bundles with the raw .tar.gz, `Authorization: Bearer <token>` and the
bundle id as `Idempotency-Key`; the server stores a bundle once and answers 200 when it
already has it, so sending again after a lost answer is safe. An outcome record goes to
/api/v1/outcomes as JSON, its outcome id the key. How answers are treated:

    UploadError
    ├── Retryable     408, 429, 5xx, connection refused/reset/cut, timeouts: tenacity retries
    │                 with full-jitter exponential backoff, at least Retry-After when given,
    │                 up to max_attempts per bundle per flush; then the bundle waits in the
    │                 outbox for the next flush
    ├── Refused       any other 4xx (bad signature, too large, malformed, terminal mismatch):
    │                 retrying cannot help, the bundle goes to the dead-letter folder
    └── Halt          401 (token unknown or revoked), 3xx, 404 and 405 (server_url does not
                      name the upload service): a fault of the terminal's set-up, not of the
                      bundle, so the flush stops and every bundle stays where it is until the
                      set-up is fixed

requests' own exceptions are translated into these in one place (`post`, `transport_reason`),
as one line a person can act on: "connection refused by host:port", "TLS: certificate verify
failed: ...", never a repr of urllib3's exception chain.
"""

from __future__ import annotations

import email.utils
import json
import random
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
import tenacity

PATH = "/api/v1/bundles"
OUTCOMES_PATH = "/api/v1/outcomes"
MAX_ANSWER_BYTES = 64 * 1024
SETUP_HINTS = {  # answers that say the terminal's set-up is wrong, and what to fix
    401: "the server does not accept this terminal's token: check [upload] token",
    404: "no upload service at this address: check [upload] server_url",
    405: "this address does not take uploads: check [upload] server_url",
}
REDIRECT_HINT = "the server redirects to {location}: set [upload] server_url to the final address"


class UploadError(Exception):
    def __init__(self, message: str, status: int | None = None, answer: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.answer = answer or {}


class Retryable(UploadError):
    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


class Refused(UploadError):
    pass


class Halt(UploadError):
    pass


@dataclass(frozen=True)
class Delivered:
    bundle_id: str
    status: int
    attempts: int


RetryNote = Callable[[str], None]


class Client:
    def __init__(
        self,
        settings: Any,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not settings.server_url:
            raise Halt("no [upload] server_url configured")
        self.settings = settings
        self.base = settings.server_url.rstrip("/")
        self.url = self.base + PATH
        self.session = session or requests.Session()
        self.sleep = sleep

    def send(
        self, data: bytes, bundle_id: str, on_retry: RetryNote | None = None, *, path: str = PATH, content_type: str = "application/gzip"
    ) -> Delivered:
        """Upload one bundle (or, with `path` and `content_type`, another record keyed by
        `bundle_id`), retrying what is worth retrying; raises UploadError subclasses.
        `on_retry` hears each failed attempt that will be retried, as it happens."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.settings.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(Retryable),
            sleep=self.sleep,
            before_sleep=self._retry_note(on_retry),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                status = self.post(data, bundle_id, path, content_type)
        return Delivered(bundle_id, status, attempt.retry_state.attempt_number)

    def post(self, data: bytes, bundle_id: str, path: str = PATH, content_type: str = "application/gzip") -> int:
        headers = {
            "Authorization": f"Bearer {self.settings.token}",
            "Content-Type": content_type,
            "Idempotency-Key": bundle_id,
        }
        url = self.base + path
        try:
            response = self.session.post(
                url,
                data=data,
                headers=headers,
                timeout=(self.settings.connect_timeout_seconds, self.settings.read_timeout_seconds),
                verify=self.settings.ca_file or True,
                allow_redirects=False,
            )
        except requests.exceptions.RequestException as exc:
            raise Retryable(transport_reason(exc, url, self.settings)) from exc
        with response:
            return classify(response)

    def _retry_note(self, on_retry: RetryNote | None) -> Callable[[tenacity.RetryCallState], None]:
        def note(state: tenacity.RetryCallState) -> None:
            if on_retry is None or state.outcome is None or state.next_action is None:
                return
            attempt, most = state.attempt_number, self.settings.max_attempts
            on_retry(f"attempt {attempt}/{most} failed: {state.outcome.exception()}; retrying in {state.next_action.sleep:.1f} s")

        return note

    def _wait(self, state: tenacity.RetryCallState) -> float:
        backoff = tenacity.wait_random_exponential(
            multiplier=self.settings.backoff_initial_seconds, max=self.settings.backoff_max_seconds
        )(state)
        exc = state.outcome.exception() if state.outcome else None
        after = getattr(exc, "retry_after", None)
        if after is None:
            return backoff
        # Honour the server (429 and 503 alike), plus up to a tenth of it as jitter: a fleet
        # told "30 s" after an outage comes back spread over 3 s, not in the same second.
        wait = min(after, self.settings.retry_after_max_seconds)
        return wait + random.uniform(0, wait / 10)


def classify(response: requests.Response) -> int:
    status = response.status_code
    if 200 <= status < 300:
        return status
    answer = answer_json(response)
    message = f"HTTP {status}: {answer.get('error', '')} {answer.get('detail', '')}".strip()
    if status in (408, 429) or status >= 500:
        raise Retryable(message, status, parse_retry_after(response.headers.get("Retry-After")))
    if status in SETUP_HINTS:
        raise Halt(f"HTTP {status}: {SETUP_HINTS[status]}", status, answer)
    if 300 <= status < 400:
        location = response.headers.get("Location") or "another address"
        raise Halt(f"HTTP {status}: {REDIRECT_HINT.format(location=location)}", status, answer)
    raise Refused(message, status, answer)


def transport_reason(exc: requests.exceptions.RequestException, url: str, settings: Any) -> str:
    """Why a request got no answer, in one line; the cause is looked for along the chain
    requests and urllib3 build (MaxRetryError.reason, __cause__, __context__)."""
    parts = urllib.parse.urlsplit(url)
    where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    chain = causes(exc)
    verify = next((e for e in chain if isinstance(e, ssl.SSLCertVerificationError)), None)
    if verify is not None:
        return f"TLS: certificate of {where} not trusted ({verify.verify_message})"
    if isinstance(exc, requests.exceptions.SSLError) or any(isinstance(e, ssl.SSLError) for e in chain):
        return f"TLS handshake with {where} failed"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"no answer from {where} within {settings.connect_timeout_seconds:g} s (connect timeout)"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return f"{where} did not answer within {settings.read_timeout_seconds:g} s (read timeout)"
    if any(isinstance(e, socket.gaierror) for e in chain):
        return f"cannot resolve {parts.hostname}"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return f"connection refused by {where}"
    if any(isinstance(e, ConnectionResetError | BrokenPipeError) for e in chain):
        return f"connection to {where} reset"
    if any(isinstance(e, OSError) and e.strerror for e in chain):
        oserror = next(e for e in chain if isinstance(e, OSError) and e.strerror)
        return f"cannot reach {where}: {oserror.strerror}"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return f"connection to {where} cut before the answer"
    return f"request to {where} failed ({type(exc).__name__})"


def causes(exc: BaseException) -> list[BaseException]:
    """exc and every exception it was raised from or wraps, once each."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if any(current is s for s in seen) or len(seen) > 20:
            continue
        seen.append(current)
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        todo.extend(e for e in linked if isinstance(e, BaseException))
    return seen


def answer_json(response: requests.Response) -> dict[str, Any]:
    try:
        value = json.loads(response.content[:MAX_ANSWER_BYTES] or b"{}")
    except (ValueError, RecursionError, requests.exceptions.RequestException):  # [[[[... is a RecursionError
        return {}
    return value if isinstance(value, dict) else {}


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from now: either delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() also takes "²", which float() refuses
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
