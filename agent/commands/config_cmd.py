from __future__ import annotations

import argparse

from agent.commands import add_config_arg


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "config",
        help="show the effective config or check a config file",
        description="'config show' prints the effective configuration (defaults merged with your file); "
        "'config check PATH' validates a file ('-' reads stdin) and names every key at fault at once "
        "(exit 0 valid, 2 not).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="print the effective config as TOML")
    add_config_arg(show)
    show.set_defaults(handler=handle_show)
    check = actions.add_parser("check", help="validate a config file")
    check.add_argument("path", help="the TOML file to check, or - for stdin")
    check.set_defaults(handler=handle_check)


def handle_show(args: argparse.Namespace) -> int:
    from agent import config

    print(config.dump(masked(config.load(args.config).data)), end="")
    return 0


def masked(table: dict) -> dict:
    """The config with secret-named values (the upload token, which is also the bundle
    signing key) shown as *** when set. Secrets are strings: a number under a secret-sounding
    name (password_hash_workers) is a setting, and masking it would break `config check`."""
    from remote.redact import MASK, secret_kind

    return {
        key: masked(value) if isinstance(value, dict) else MASK if isinstance(value, str) and value and secret_kind(key) else value
        for key, value in table.items()
    }


def handle_check(args: argparse.Namespace) -> int:
    from agent import config

    if args.path == "-":
        import sys

        from probes.contract.errors import ConfigError

        try:
            text = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError("<stdin>", "", f"not UTF-8 (byte {exc.start})") from None
        loaded = config.load_text(text, "<stdin>")
    else:
        loaded = config.load(args.path)
    print(f"{loaded.source}: ok")
    return 0
