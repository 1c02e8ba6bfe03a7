import threading
import time

import pytest

from agent import config
from agent.runner import run_probes
from probes.contract.config_file import merge
from probes.contract.errors import UsageError
from probes.contract.records import Finding, Observation, Status
from tests import fakeprobes


def load_with(sections, **probe_overrides):
    over = merge(sections, {"probes": probe_overrides})
    return config.load(None, over)


def test_hung_probe_is_reported_as_timeout_and_never_holds_the_sweep():
    release = threading.Event()
    hung = fakeprobes.make("hung", fakeprobes.hang(release))
    quick = fakeprobes.make("quick", lambda: Observation([Finding.fail("quick.seen", "found")]))
    with fakeprobes.registered(hung, quick) as sections:
        cfg = load_with(sections, hung={"timeout_seconds": 0.3})
        t0 = time.monotonic()
        sweep = run_probes(cfg, ["hung", "quick"])
        elapsed = time.monotonic() - t0
    release.set()
    by_name = {r.name: r for r in sweep.results}
    assert by_name["hung"].status is Status.TIMEOUT
    assert by_name["hung"].findings[0].id == "probe.timeout"
    assert by_name["quick"].status is Status.FAIL
    assert 0.3 <= elapsed < 0.6


def test_probes_run_at_once_so_a_sweep_costs_its_slowest_probe():
    slow = [fakeprobes.make(f"slow{i}", fakeprobes.sleeper(0.3)) for i in range(4)]
    with fakeprobes.registered(*slow) as sections:
        sweep = run_probes(load_with(sections), [m.NAME for m in slow])
    assert all(r.status is Status.WARN for r in sweep.results)
    assert sweep.wall_ms < 600


def test_probe_that_raises_is_an_error_and_the_sweep_goes_on():
    def boom():
        raise RuntimeError("device said no")

    broken = fakeprobes.make("broken", boom)
    fine = fakeprobes.make("fine", lambda: Observation())
    with fakeprobes.registered(broken, fine) as sections:
        sweep = run_probes(load_with(sections), ["broken", "fine"])
    by_name = {r.name: r for r in sweep.results}
    assert by_name["broken"].status is Status.ERROR
    assert "RuntimeError: device said no" in by_name["broken"].findings[0].detail
    assert by_name["fine"].status is Status.OK


def test_overall_deadline_caps_every_probe_timeout():
    release = threading.Event()
    hung = fakeprobes.make("hung", fakeprobes.hang(release))
    with fakeprobes.registered(hung) as sections:
        cfg = load_with(merge(sections, {"runner": {"deadline_seconds": 0.2}}), hung={"timeout_seconds": 5.0})
        sweep = run_probes(cfg, ["hung"])
    release.set()
    assert sweep.results[0].status is Status.TIMEOUT
    assert sweep.wall_ms < 500


def test_disabled_and_busy_probes_are_skipped_with_a_reason():
    a = fakeprobes.make("alpha", lambda: Observation())
    b = fakeprobes.make("beta", lambda: Observation())
    with fakeprobes.registered(a, b) as sections:
        cfg = load_with(sections, alpha={"enabled": False})
        sweep = run_probes(cfg, ["alpha", "beta"], skip={"beta": "payment in progress"})
    assert [(r.status, r.metrics["reason"]) for r in sweep.results] == [
        (Status.SKIPPED, "disabled in config"),
        (Status.SKIPPED, "payment in progress"),
    ]


def test_unknown_probe_name_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown probe nosuch"):
        run_probes(config.load(), ["nosuch"])


def test_progress_callback_sees_every_probe_once():
    seen = []
    mods = [fakeprobes.make(f"p{i}", lambda: Observation()) for i in range(3)]
    with fakeprobes.registered(*mods) as sections:
        run_probes(load_with(sections), [m.NAME for m in mods], on_result=lambda r, d, t: seen.append((r.name, d, t)))
    assert sorted(n for n, _, _ in seen) == ["p0", "p1", "p2"]
    assert [d for _, d, _ in seen] == [1, 2, 3] and {t for _, _, t in seen} == {3}
