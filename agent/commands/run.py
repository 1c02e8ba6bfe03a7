from __future__ import annotations

import argparse

from agent.commands import add_config_arg, add_simulate_arg


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "run",
        help="run the agent: self-check after errors, health history, probe requests",
        description="Long-running agent (for systemd: config/posdiag.service). Follows the payment app's logs, "
        "a last-error file and a local event socket ([daemon] in the config); each error is diagnosed, "
        "bundled and uploaded by short-lived `posdiag worker` processes it starts. SIGTERM stops it within "
        "2 s, SIGHUP reloads the config (a bad config is refused and the running one kept). Logs go to "
        "stderr with journald priority prefixes.",
    )
    add_config_arg(parser)
    add_simulate_arg(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """The resident agent (agent/resident.py). It loads no config itself: its first worker
    reads and checks the file and answers with the resident's part of it."""
    import contextlib

    from agent import priority
    from agent.lane import WorkerFailed
    from agent.resident import Resident

    with contextlib.ExitStack() as stack:
        overrides = None
        if args.simulate:
            from probes.emulators import SimulatedTerminal

            overrides = stack.enter_context(SimulatedTerminal.from_spec(args.simulate)).overrides
        try:
            agent = Resident.start({"config": args.config, "overrides": overrides})
        except WorkerFailed as exc:  # the config does not load (its message as `config check` says it), or no worker ran
            from probes.contract.errors import UsageError

            error = UsageError(str(exc) if exc.kind == "ConfigError" else f"cannot start the agent: {exc}")
            error.exit_code = exc.exit_code
            raise error from None
        except OSError as exc:  # the event socket in use, an outbox or state dir that cannot be made
            from probes.contract.errors import UsageError

            raise UsageError(f"cannot start the agent: {exc}") from None
        priority.lower(agent.config.daemon.nice)
        return agent.run()
