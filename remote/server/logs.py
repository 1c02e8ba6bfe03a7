"""uvicorn's logging for `posdiag-support serve`, with card data redacted from every line.

A support person may search for a PAN (`/api/v1/bundles?model=4111...`), and the access log
prints the request line with its query. The filter redacts each line (and any traceback)
with remote.redact; a request path is also redacted after percent-decoding, since
`4111%201111%20...` or `4111+1111+...` hide a spaced PAN from a plain text search.
"""

from __future__ import annotations

import copy
import logging
from typing import Any
from urllib.parse import quote, unquote_plus

from remote.redact import redact_text

ACCESS = "uvicorn.access"
PATH_SAFE = "/?&=:;,@!$'()*-._~%"


def redacted_path(path: str) -> str:
    """The path as given when it holds no card data, else decoded, redacted and re-quoted."""
    text, counts = redact_text(path)
    decoded, decoded_counts = redact_text(unquote_plus(path))
    if any(decoded_counts.values()):
        return quote(decoded, safe=PATH_SAFE)
    return text if any(counts.values()) else path


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
    config["loggers"]["uvicorn.access"]["level"] = "INFO" if access_log else "WARNING"
    return config
