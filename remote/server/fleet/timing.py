"""Event time: what the terminal says happened when, unless its clock runs ahead."""

from __future__ import annotations

from datetime import datetime, timedelta

from remote.server import db


def clamp(event_at: str, received_at: str, max_ahead_seconds: float) -> tuple[str, bool]:
    """(event time to use, whether it was clamped): a time more than `max_ahead_seconds`
    after receipt is a clock gone wrong and becomes the receive time."""
    limit = db.stamp(db.parse_time(received_at) + timedelta(seconds=max_ahead_seconds))
    return (received_at, True) if event_at > limit else (event_at, False)


def shift(stamp: str, **delta: float) -> str:
    return db.stamp(db.parse_time(stamp) + timedelta(**delta))


def day(stamp: str) -> str:
    return stamp[:10]


def hours_between(a: str, b: str) -> float:
    return (db.parse_time(b) - db.parse_time(a)).total_seconds() / 3600


def as_datetime(stamp: str) -> datetime:
    return db.parse_time(stamp)
