from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import TYPE_CHECKING

from agent.commands import add_config_arg, add_lang_arg, output_lang, sigterm_unwinds

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
        "the knowledge base ranks the causes, and the diagnosis is printed, bundled and uploaded to a "
        "support server started on loopback (SQLite in a temporary directory). It prints the bundle's "
        "page and a sign-in, and serves until Ctrl-C (or SIGTERM) when run from a terminal, its output "
        "piped or not; with neither its input nor its output on a terminal (a script) it stops at once. "
        "Everything it made is removed when it stops.",
    )
    add_lang_arg(parser)
    add_config_arg(parser)
    parser.set_defaults(handler=handle, simulate=DEMO_FAULTS)


def handle(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from agent import render
    from agent.runner import select
    from remote.server.embedded import demo_server

    with sigterm_unwinds(), tempfile.TemporaryDirectory(prefix="posdiag-demo-") as tmp, demo_server(Path(tmp)) as server:
        with served_config(args, server, Path(tmp)) as config:
            lang = output_lang(args, config)
            print(f"$ posdiag diagnose --code {DEMO_CODE} --simulate {DEMO_FAULTS}\n", file=sys.stderr)
            diagnosis = run_diagnosis(config, render.Progress(sys.stderr, select(config, None), lang))
            from agent.explain import diagnosis_text

            print(diagnosis_text(diagnosis, lang, "technician"))
            bundle_id = upload(config, diagnosis, lang)
        # flushed at once: behind `| tee` the address must show while the server still runs
        print(f"\nbundle page: {server.url}/bundles/{bundle_id}\nsign in:     {server.user} / {server.password}", flush=True)
        if sys.stdin.isatty() or sys.stdout.isatty():  # a person can open the page (make demo | tee log)
            wait_for_ctrl_c()
    return 0


@contextlib.contextmanager
def served_config(args: argparse.Namespace, server, workdir):  # noqa: ANN001, ANN201 - heavy types imported lazily
    """The simulated terminal's config, enrolled at the demo's support server."""
    from agent import config
    from probes.contract import config_file
    from probes.emulators import SimulatedTerminal

    with SimulatedTerminal.from_spec(args.simulate) as terminal:
        yield config.load(args.config, config_file.merge(terminal.overrides, server.agent_overrides(workdir)))


def upload(config, diagnosis, lang: str) -> str:  # noqa: ANN001 - heavy types imported lazily
    """Bundle the diagnosis, put it in the outbox and upload it, as the agent does."""
    from agent import bundle, pipeline
    from agent.commands.bundle_cmd import upload_now
    from agent.outbox import Outbox

    doc = diagnosis.to_dict()
    outbox = Outbox.from_config(config)
    built = pipeline.store(config, outbox, doc, bundle.Trigger("error", DEMO_CODE, doc["error"]["scheme"]))
    upload_now(config, outbox, built.bundle_id, lang)
    return built.bundle_id


def wait_for_ctrl_c() -> None:
    print("the support server runs until Ctrl-C", file=sys.stderr)
    try:
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):  # SystemExit: SIGTERM (sigterm_unwinds)
        print("stopped", file=sys.stderr)


def run_diagnosis(config: Config, progress: Progress | None = None) -> Diagnosis:
    """The demo's one step: diagnose the demo code on the configured (simulated) terminal."""
    from agent.diagnosis import diagnose

    diagnosis = diagnose(config, DEMO_CODE, on_result=progress)
    if progress is not None:
        progress.clear()
    return diagnosis
