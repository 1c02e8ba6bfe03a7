from __future__ import annotations

import argparse

from agent.commands import add_config_arg, add_simulate_arg


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "run",
        help="run the agent: self-check after errors, health history, probe requests",
        description="Long-running agent (for systemd: config/posdiag.service). Follows the payment app's logs, "
        "a last-error file and a local event socket ([daemon] in the config); each error is diagnosed, "
        "bundled and uploaded. SIGTERM stops it within 2 s, SIGHUP reloads the config (a bad config is "
        "refused and the running one kept). Logs go to stderr with journald priority prefixes.",
    )
    add_config_arg(parser)
    add_simulate_arg(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    import contextlib

    from agent import config, daemon, priority
    from probes.contract.errors import UsageError

    with contextlib.ExitStack() as stack:
        overrides = None
        if args.simulate:
            from probes.emulators import SimulatedTerminal

            overrides = stack.enter_context(SimulatedTerminal.from_spec(args.simulate)).overrides
        first = config.load(args.config, overrides)
        settings = first.section("daemon")
        daemon.setup_logging(settings.log_level)
        priority.lower(settings.nice)
        try:
            agent = daemon.Daemon(first, lambda: config.load(args.config, overrides))
        except OSError as exc:  # the event socket in use, an outbox or state dir that cannot be made
            raise UsageError(f"cannot start the agent: {exc}") from None
        return agent.run()
