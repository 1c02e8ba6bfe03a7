"""The payment app's own state, as the app (or an integration beside it) writes it to the JSON
file named by [app] state_file: its keys, batch, trace counter, parameter download, TID/MID
and PIN pad. The schema (posdiag.app_state/1) is in docs/probes.md; every field is optional.

This is what is behind most calls that no hardware probe can see: working keys out of step with
the host (A0, 99), no master key, a batch left unsettled (77), a trace counter reset (94), no
parameter download (97), a wrong TID or MID (03), a PIN pad that does not answer.

Nothing secret is read: key check values (KCVs) are fine to keep (DOMAIN.md section 7); any
other field is ignored. Times are ISO 8601 (a time without an offset is the terminal's local
time) or seconds since the epoch.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from probes import ProbeContext
from probes.contract.records import Finding, MetricValue, Observation, Status
from probes.contract.settings import ProbeSettings, bounded

NAME = "payment_app"
FINDINGS = (
    "app.state_unreadable",
    "app.state_stale",
    "app.master_key_missing",
    "app.keys_out_of_step",
    "app.keys_stale",
    "app.batch_unsettled",
    "app.trace_reset",
    "app.parameters_missing",
    "app.parameters_stale",
    "app.ids_missing",
    "app.ids_mismatch",
    "app.pinpad_fault",
)
SCHEMA = "posdiag.app_state/1"
MAX_BYTES = 64 * 1024
# ISO 8583 field 41 (card acceptor terminal id) is ans 8, field 42 (card acceptor id code) ans 15.
TID_LENGTH, MID_LENGTH = 8, 15


@dataclass(frozen=True)
class PaymentAppSettings(ProbeSettings):
    state_max_age_minutes: float = bounded(1, 7 * 24 * 60)
    keys_max_age_hours: float = bounded(1, 24 * 365)
    batch_max_open_hours: float = bounded(1, 24 * 365)
    parameters_max_age_days: float = bounded(1, 3650)


SETTINGS = PaymentAppSettings


class BadState(ValueError):
    """The state file says something it cannot mean (a time that is no time)."""


def run(settings: PaymentAppSettings, ctx: ProbeContext) -> Observation:
    path = ctx.app.state_file
    if not path:
        return Observation(status=Status.SKIPPED, metrics={"reason": "no [app] state_file configured"})
    try:
        state = read_state(path)
        return judge(state, settings, time.time())
    except (OSError, ValueError) as exc:
        detail = f"cannot read the payment app's state file {path}: {exc}"
        return Observation([Finding.warn("app.state_unreadable", detail, path=path)])


def read_state(path: str) -> dict[str, Any]:
    with open(path, "rb") as handle:
        raw = handle.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES // 1024} KiB")
    try:
        state = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError("not UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(state, dict):
        raise ValueError("not a JSON object")
    if state.get("schema", SCHEMA) != SCHEMA:
        raise ValueError(f"schema {state.get('schema')!r}, expected {SCHEMA!r}")
    return state


def judge(state: dict[str, Any], s: PaymentAppSettings, now: float) -> Observation:
    metrics: dict[str, MetricValue] = {}
    found = freshness(state, s, now, metrics)
    found += keys(table(state, "keys"), s, now, metrics)
    found += batch(state, s, now, metrics)
    found += setup(state, s, now, metrics)
    pinpad = table(state, "pinpad")
    status = str(pinpad.get("status", "ok"))
    if status != "ok":
        detail = f"the PIN pad reports {status!r}" + (f": {pinpad['detail']}" if pinpad.get("detail") else "")
        found.append(Finding.fail("app.pinpad_fault", detail, status=status))
    return Observation(found, metrics)


def freshness(state: dict[str, Any], s: PaymentAppSettings, now: float, metrics: dict[str, MetricValue]) -> list[Finding]:
    """The app rewrites the file at least every few minutes while it runs: an old one means the
    app stopped (or its integration did), and what the file says may be out of date."""
    updated = stamp(state.get("updated_at"))
    if updated is None:
        return []
    age_min = (now - updated) / 60
    metrics["state_age_min"] = round(age_min, 1)
    if age_min > s.state_max_age_minutes:
        detail = f"the payment app last wrote its state {age_min:.0f} min ago: it may not be running"
        return [Finding.warn("app.state_stale", detail, age_min=round(age_min))]
    return []


def keys(k: dict[str, Any], s: PaymentAppSettings, now: float, metrics: dict[str, MetricValue]) -> list[Finding]:
    """No master key: nothing else can be loaded (one finding per root). Otherwise the check
    values of the working keys against the ones the host sent with them at the last sign-in
    (签到), and how old they are."""
    if k.get("master_key") is False:
        return [Finding.fail("app.master_key_missing", "no master key (TMK) in the secure module: the terminal cannot sign in")]
    found = []
    held, sent = table(k, "kcv"), table(k, "kcv_host")
    differ = sorted(name for name in held.keys() & sent.keys() if str(held[name]).upper() != str(sent[name]).upper())
    if differ or int_or_zero(k.get("mac_failures")) > 0:
        which = ", ".join(f"{name} key {held[name]} (host: {sent[name]})" for name in differ) or "response MACs fail to verify"
        data = {"mismatched": differ} if differ else {}  # not "keys": a key name reads as a secret to redaction
        found.append(Finding.fail("app.keys_out_of_step", f"working keys out of step with the host: {which}", **data))
    loaded = stamp(k.get("loaded_at"))
    if loaded is None and "loaded_at" in k:
        found.append(Finding.fail("app.keys_stale", "no working keys loaded: the terminal has not signed in"))
    elif loaded is not None:
        age_h = (now - loaded) / 3600
        metrics["sign_in_age_h"] = round(age_h, 1)  # the working keys come with each sign-in
        if age_h > s.keys_max_age_hours:
            found.append(Finding.warn("app.keys_stale", f"working keys loaded {age_h:.0f} h ago (last sign-in)", age_h=round(age_h)))
    return found


def batch(state: dict[str, Any], s: PaymentAppSettings, now: float, metrics: dict[str, MetricValue]) -> list[Finding]:
    b = table(state, "batch")
    found = []
    opened = stamp(b.get("open_since"))
    count = int_or_zero(b.get("count"))
    metrics["batch_count"] = count
    if opened is not None:
        hours = (now - opened) / 3600
        metrics["batch_open_h"] = round(hours, 1)
        if count and hours > s.batch_max_open_hours:
            detail = f"batch {b.get('number', '?')} open for {hours:.0f} h with {count} transactions: not settled"
            found.append(Finding.fail("app.batch_unsettled", detail, open_h=round(hours), count=count))
    next_trace, last_trace = state.get("trace_next"), b.get("last_trace")
    if isinstance(next_trace, int) and not isinstance(next_trace, bool):
        metrics["trace_next"] = next_trace
        if count and isinstance(last_trace, int) and next_trace <= last_trace:
            detail = f"the next trace number {next_trace:06d} is not above the batch's last {last_trace:06d}: the counter was reset"
            found.append(Finding.fail("app.trace_reset", detail, trace_next=next_trace, last_trace=last_trace))
    return found


def setup(state: dict[str, Any], s: PaymentAppSettings, now: float, metrics: dict[str, MetricValue]) -> list[Finding]:
    """The parameter download (TMS) sets the TID, MID and hosts; what the app uses must be it."""
    params = table(state, "parameters")
    found = []
    downloaded = stamp(params.get("downloaded_at"))
    if "parameters" in state and downloaded is None:
        found.append(Finding.fail("app.parameters_missing", "no parameter download recorded: the terminal is not set up"))
    elif downloaded is not None:
        days = (now - downloaded) / 86400
        metrics["parameters_age_d"] = round(days, 1)
        if days > s.parameters_max_age_days:
            found.append(Finding.warn("app.parameters_stale", f"parameters last downloaded {days:.0f} days ago", age_d=round(days)))
    tid, mid = str(state.get("tid") or ""), str(state.get("mid") or "")
    if ("tid" in state or "mid" in state) and not (tid and mid):
        missing = " and ".join(name for name, value in (("TID", tid), ("MID", mid)) if not value)
        found.append(Finding.fail("app.ids_missing", f"no {missing} configured in the payment app"))
        return found
    if tid or mid:
        metrics.update(tid=tid, mid=mid)
    wrong = [f"TID {tid!r} is not {TID_LENGTH} characters"] if tid and len(tid) != TID_LENGTH else []
    wrong += [f"MID {mid!r} is not {MID_LENGTH} characters"] if mid and len(mid) != MID_LENGTH else []
    for name, used in (("tid", tid), ("mid", mid)):
        assigned = str(params.get(name) or "")
        if used and assigned and used != assigned:
            wrong.append(f"{name.upper()} {used!r} differs from the downloaded {assigned!r}")
    if wrong:
        found.append(Finding.fail("app.ids_mismatch", "; ".join(wrong), tid=tid, mid=mid))
    return found


def table(state: dict[str, Any], key: str) -> dict[str, Any]:
    value = state.get(key)
    return value if isinstance(value, dict) else {}


def int_or_zero(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def stamp(value: Any) -> float | None:
    """Seconds since the epoch from an ISO 8601 time (no offset: local time) or a number."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise BadState(f"{value!r} is not a time")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadState(f"{value!r} is not an ISO 8601 time") from exc
    return moment.timestamp() if moment.tzinfo else moment.astimezone().timestamp()

