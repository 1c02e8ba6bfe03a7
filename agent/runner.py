"""Run the selected probes at once, each under its own timeout, within one deadline.

Probes run in daemon threads, not a pool: a hung probe's thread cannot be killed and
must not keep the interpreter alive at exit. A sweep therefore costs about its slowest
probe; a probe that overruns is reported as `timeout` and its late answer is dropped.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from agent.config import Config
from agent.facts import terminal_identity
from agent.model import ProbeResult, Sweep
from probes import ProbeContext, probe_modules
from probes.contract.errors import UsageError
from probes.contract.records import Finding, Observation, Status
from remote import wire
from remote.redact import redact_text

Progress = Callable[[ProbeResult, int, int], None]


def select(config: Config, only: Iterable[str] | None) -> list[str]:
    names = list(probe_modules())
    if only is None:
        return names
    wanted = [n.strip() for n in only if n.strip()]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise UsageError(f"unknown probe {', '.join(unknown)}; known probes: {', '.join(names)}")
    return [n for n in names if n in wanted]


def run_probes(
    config: Config,
    only: Iterable[str] | None = None,
    on_result: Progress | None = None,
    skip: dict[str, str] | None = None,
) -> Sweep:
    """`skip` maps probe names to the reason they must not run now (e.g. device busy)."""
    names = select(config, only)
    skip = skip or {}
    started_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    t0 = time.monotonic()
    deadline = t0 + config.section("runner").deadline_seconds
    done: queue.Queue[ProbeResult] = queue.Queue()
    pending: dict[str, float] = {}
    results: dict[str, ProbeResult] = {}
    model = terminal_identity(config.section("terminal"), config.section("host"))["model"]
    for name in names:
        settings = config.probes[name]
        if name in skip or not settings.enabled:
            reason = skip.get(name, "disabled in config")
            results[name] = ProbeResult(name, Status.SKIPPED, [], {"reason": reason}, 0.0)
            continue
        timeout = min(settings.timeout_seconds, deadline - t0)
        ctx = ProbeContext(config.section("host"), timeout, model=model, app=config.section("app"))
        pending[name] = ctx.started + ctx.timeout_s
        threading.Thread(target=_run_one, args=(name, settings, ctx, done), name=f"probe-{name}", daemon=True).start()
    total = len(names)
    for result in results.values():
        _notify(on_result, result, len(results), total)
    while pending:
        next_deadline = min(pending.values())
        try:
            result = done.get(timeout=max(0.0, next_deadline - time.monotonic()))
        except queue.Empty:
            now = time.monotonic()
            for name in [n for n, d in pending.items() if d <= now]:
                result = _timed_out(name, pending.pop(name) - t0, config.probes[name].timeout_seconds)
                results[name] = result
                _notify(on_result, result, len(results), total)
            continue
        if result.name in pending:
            del pending[result.name]
            results[result.name] = result
            _notify(on_result, result, len(results), total)
    ordered = [results[n] for n in names]
    return Sweep(ordered, started_at, (time.monotonic() - t0) * 1000)


def _notify(callback: Progress | None, result: ProbeResult, done: int, total: int) -> None:
    if callback is not None:
        callback(result, done, total)


def _run_one(name: str, settings: object, ctx: ProbeContext, done: queue.Queue[ProbeResult]) -> None:
    module = probe_modules()[name]
    try:
        observation: Observation = module.run(settings, ctx)
        status = observation.derived_status()
        findings, metrics = list(observation.findings), dict(observation.metrics)
    except Exception as exc:  # a probe must not raise; if one does, it is evidence, not a crash
        status = Status.ERROR
        # An exception's text can quote what a device or file said: shown() cleans it below.
        findings = [Finding.warn("probe.error", f"{name} probe failed: {type(exc).__name__}: {exc}", probe=name)]
        metrics = {}
    duration = (time.monotonic() - ctx.started) * 1000
    findings = [Finding(f.id, f.severity, shown(f.detail), shown(f.data)) for f in findings]
    done.put(ProbeResult(name, status, findings, shown(metrics), round(duration, 1)))


def shown(value: Any) -> Any:
    """What a device answered, as every output shows it: card data masked and control, bidi
    and zero-width characters escaped, in strings at any depth. A hostile modem, printer or
    reader reaches neither a technician's terminal (ESC, BEL) nor a bundle with card data."""
    if isinstance(value, str):
        return wire.visible(redact_text(value)[0])
    if isinstance(value, dict):
        return {k: shown(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [shown(v) for v in value]
    return value


def _timed_out(name: str, waited_s: float, timeout_s: float) -> ProbeResult:
    finding = Finding.warn(
        "probe.timeout", f"{name} probe did not finish within {waited_s:.2f} s", probe=name, timeout_seconds=timeout_s
    )
    return ProbeResult(name, Status.TIMEOUT, [finding], {}, round(waited_s * 1000, 1))
