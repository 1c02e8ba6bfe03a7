"""uvicorn's logging for `posdiag-support serve`, with card data redacted from every line.

A support person may search for a PAN (`/api/v1/bundles?model=4111...`), and the access log
prints the request line with its query. The filter redacts each line (and any traceback)
with remote.redact; a request path is also redacted after percent-decoding, as many times
as it was encoded, since `4111%201111%20...`, `4111+1111+...` or `%252520` hide a spaced
PAN from a plain text search.
"""

from __future__ import annotations

import copy
import logging
from typing import Any
from urllib.parse import quote, unquote_plus

from remote.redact import redact_text

ACCESS = "uvicorn.access"
SUPPORT = "posdiag.support"
PATH_SAFE = "/?&=:;,@!$'()*-._~%"
MAX_DECODES = 8  # more layers than this is not a browser's doing; the deepest is redacted anyway


def redacted_path(path: str) -> str:
    """The path as given when it holds no card data at any depth of percent-encoding, else
    decoded as often as it was encoded (a sign-in redirect's `next=` is encoded twice),
    redacted and quoted once."""
    layers = [path]
    while len(layers) <= MAX_DECODES and (decoded := unquote_plus(layers[-1])) != layers[-1]:
        layers.append(decoded)
    # Decoding keeps digits and turns `+`/`%20` into separators: what any layer shows, the
    # deepest shows too.
    deepest, counts = redact_text(layers[-1])
    return quote(deepest, safe=PATH_SAFE) if any(counts.values()) else path


class RedactCardData(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == ACCESS and isinstance(record.args, tuple) and len(record.args) == 5:
            # uvicorn's AccessFormatter unpacks (client, method, path with query, http version, status)
            client, method, path, version, status = record.args
            record.args = (client, method, redacted_path(str(path)), version, status)
        else:
            record.msg, record.args = redact_text(record.getMessage())[0], ()
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))[0]
        return True


def log_config(access_log: bool) -> dict[str, Any]:
    """uvicorn's default logging config with the redacting filter on both handlers."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": "remote.server.logs.RedactCardData"}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact"]
    config["loggers"]["uvicorn.error"]["level"] = "WARNING"
    # One info line per dropped connection or client gone mid-body (connections.py, app.py).
    config["loggers"][SUPPORT] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    config["loggers"]["uvicorn.access"]["level"] = "INFO" if access_log else "WARNING"
    return config
