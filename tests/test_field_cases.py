"""The field cases of tests/data/field_cases.toml, written from payments practice before posdiag
ran on them: each runs the real probes on the simulated terminal with its faults and must give
the expected top cause and dispatch verdict.

    .venv/bin/python tests/test_field_cases.py      # prints the scores: top cause and dispatch
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent import config  # noqa: E402
from agent.diagnosis import diagnose  # noqa: E402
from probes.contract import config_file  # noqa: E402
from probes.emulators import SimulatedTerminal, parse_spec  # noqa: E402
from probes.emulators._model import evaluate  # noqa: E402
from tests.conftest import run_cli  # noqa: E402

CASES = tomllib.loads((Path(__file__).parent / "data" / "field_cases.toml").read_text(encoding="utf-8"))["case"]


def outcome(case: dict, workdir: Path) -> tuple[str, str]:
    """(top cause, dispatch verdict) of the case's code on the simulated terminal. A PC/SC case
    runs in a posdiag process of its own: pcsc-lite reads its socket's name once per process."""
    country = case.get("country", "")
    faults, bearers = parse_spec(case["simulate"])
    if evaluate(faults, bearers).uses_pcsc:
        operator = workdir / "posdiag.toml"
        operator.write_text(f'[terminal]\ncountry = "{country}"\n', encoding="utf-8")
        result = run_cli("diagnose", "--code", case["code"], "--simulate", case["simulate"], "--json", "--config", str(operator))
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        return doc["causes"][0]["id"], doc["dispatch"]["verdict"]
    with SimulatedTerminal(faults, bearers) as terminal:
        cfg = config.load(None, config_file.merge(terminal.overrides, {"terminal": {"country": country}}))
        found = diagnose(cfg, case["code"])
    return found.top.cause.id, found.correlation.dispatch.verdict


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['code']}:{c['simulate']}")
def test_field_case(case, tmp_path):
    top, verdict = outcome(case, tmp_path)
    assert (top, verdict) == (case["top"], case["dispatch"]), case["story"]


def scores() -> None:
    import tempfile

    top_ok = dispatch_ok = 0
    for case in CASES:
        with tempfile.TemporaryDirectory() as workdir:
            top, verdict = outcome(case, Path(workdir))
        top_ok += top == case["top"]
        dispatch_ok += verdict == case["dispatch"]
        if (top, verdict) != (case["top"], case["dispatch"]):
            print(f"  miss {case['code']} {case['simulate']}: {top}/{verdict}, expected {case['top']}/{case['dispatch']}")
    print(f"field cases: top cause {top_ok}/{len(CASES)}, dispatch {dispatch_ok}/{len(CASES)}")


if __name__ == "__main__":
    scores()
