from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from agent.commands import add_config_arg, configured

if TYPE_CHECKING:
    from agent.config import Config
    from agent.diagnosis import Diagnosis
    from agent.render import Progress

DEMO_CODE = "3000"
DEMO_FAULTS = "printer.paper_out"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="show posdiag at work on the built-in simulated terminal",
        description=f"Diagnoses the generic terminal code {DEMO_CODE} on a simulated terminal whose printer "
        f"is out of paper ({DEMO_FAULTS}): the probes run their real code against emulated devices, "
        "the knowledge base ranks the causes, and the diagnosis is printed.",
    )
    parser.add_argument("--lang", choices=("zh", "en"), help="language of the output (default: terminal.lang)")
    add_config_arg(parser)
    parser.set_defaults(handler=handle, simulate=DEMO_FAULTS)


def handle(args: argparse.Namespace) -> int:
    from agent import render

    with configured(args) as config:
        lang = args.lang or config.section("terminal").lang
        print(f"$ posdiag diagnose --code {DEMO_CODE} --simulate {DEMO_FAULTS}\n", file=sys.stderr)
        diagnosis = run_diagnosis(config, render.Progress(sys.stderr))
    from agent.explain import diagnosis_text

    print(diagnosis_text(diagnosis, lang, "technician"))
    return 0


def run_diagnosis(config: Config, progress: Progress | None = None) -> Diagnosis:
    """The demo's one step: diagnose the demo code on the configured (simulated) terminal."""
    from agent.diagnosis import diagnose

    diagnosis = diagnose(config, DEMO_CODE, on_result=progress)
    if progress is not None:
        progress.clear()
    return diagnosis
