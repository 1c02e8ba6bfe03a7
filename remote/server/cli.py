"""`posdiag-support`: run the support server and manage its terminals and users.

  posdiag-support serve [--db URL] [--data DIR] [--host H] [--port P] [--workers N] [--access-log]
  posdiag-support terminals add ID | list | revoke ID
  posdiag-support users add NAME --role support|technician|admin [--password P]
  posdiag-support users list | passwd NAME [--password P] | role NAME ROLE | remove NAME

--db defaults to SQLite in the data directory; postgresql://user@host/db for PostgreSQL.
Without --password the password is asked for on a terminal, or read as one line of stdin.
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys
import tomllib
from pathlib import Path

DEFAULT_DATA = "/var/lib/posdiag-support"


def add_store_args(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """--db, --data, --config: accepted before the subcommand and after it. On the
    subcommands they default to SUPPRESS, so an option given earlier is not overwritten."""

    def default(value: str | None) -> str | None:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--db", default=default(os.environ.get("POSDIAG_SUPPORT_DB")), help="database URL (default: SQLite in --data)"
    )
    parser.add_argument(
        "--data",
        default=default(os.environ.get("POSDIAG_SUPPORT_DATA", DEFAULT_DATA)),
        help=f"blob and SQLite directory (default: {DEFAULT_DATA})",
    )
    parser.add_argument(
        "--config", metavar="PATH", default=default(None), help="posdiag.toml whose [server] section overrides the defaults"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="posdiag-support", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_store_args(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    add_store_args(common, defaults=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser("serve", parents=[common], help="run the HTTP server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1, help="worker processes (PostgreSQL or SQLite)")
    serve.add_argument("--access-log", action="store_true", help="log every request to stdout (card data redacted)")
    serve.set_defaults(handler=cmd_serve)

    term = sub.add_parser("terminals", help="enrol, list and revoke terminals").add_subparsers(dest="action", required=True)
    add = term.add_parser("add", parents=[common], help="enrol a terminal and print its token once")
    add.add_argument("id")
    add.set_defaults(handler=cmd_terminal_add)
    term.add_parser("list", parents=[common], help="enrolled terminals").set_defaults(handler=cmd_terminal_list)
    revoke = term.add_parser("revoke", parents=[common], help="revoke a terminal's token")
    revoke.add_argument("id")
    revoke.set_defaults(handler=cmd_terminal_revoke)

    users = sub.add_parser("users", help="support users").add_subparsers(dest="action", required=True)
    uadd = users.add_parser("add", parents=[common], help="add a user")
    uadd.add_argument("name")
    uadd.add_argument("--role", required=True, choices=("support", "technician", "admin"))
    uadd.add_argument("--password", help="(visible in the process list; prefer the prompt or stdin)")
    uadd.set_defaults(handler=cmd_user_add)
    users.add_parser("list", parents=[common], help="users, roles and page languages").set_defaults(handler=cmd_user_list)
    passwd = users.add_parser("passwd", parents=[common], help="set a user's password")
    passwd.add_argument("name")
    passwd.add_argument("--password", help="(visible in the process list; prefer the prompt or stdin)")
    passwd.set_defaults(handler=cmd_user_passwd)
    role = users.add_parser("role", parents=[common], help="change a user's role")
    role.add_argument("name")
    role.add_argument("role", choices=("support", "technician", "admin"))
    role.set_defaults(handler=cmd_user_role)
    remove = users.add_parser("remove", parents=[common], help="remove a user")
    remove.add_argument("name")
    remove.set_defaults(handler=cmd_user_remove)
    return parser


def server_settings(path: str | None):  # -> ServerSettings
    """The [server] section: packaged defaults, then the operator file's keys.

    Read with the shared table checker (probes/contract/config_file.py), not the terminal's whole-file
    loader, so that the server imports neither the agent nor the probe modules."""
    from probes.contract import config_file
    from remote.server.settings import ServerSettings

    data = tomllib.loads(config_file.packaged_default_text()).get("server", {})
    chosen = config_file.resolve_path(path)
    if chosen is not None:
        data = config_file.merge(data, config_file.read_toml(chosen).get("server", {}))
    source = str(chosen) if chosen else "packaged posdiag.toml"
    return config_file.convert(ServerSettings, data, "server", lambda _key: source)


def db_url(args: argparse.Namespace) -> str:
    if args.db:
        return args.db
    Path(args.data).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(args.data).resolve() / 'posdiag-support.db'}"


def engine(args: argparse.Namespace):  # -> Engine
    from remote.server import db

    eng = db.make_engine(db_url(args))
    db.create_schema(eng)
    return eng


DB_SCHEMES = ("sqlite", "postgresql", "postgres")


def serve_problem(url: str, host: str, port: int) -> str | None:
    """Why `serve` cannot start with this database URL and address, checked before anything
    is printed or any worker starts; None when it can."""
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme not in DB_SCHEMES:
        return f"unsupported database URL {url.split('://', 1)[0]}://...: use sqlite:///PATH or postgresql://USER@HOST/DB"
    if not 1 <= port <= 65535:
        return f"port {port} is out of range (1-65535)"
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
    except OSError as exc:
        return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from probes.contract.errors import UsageError
    from remote.server.logs import log_config

    problem = serve_problem(args.db or "sqlite://", args.host, args.port)
    if problem:
        raise UsageError(problem)

    os.environ["POSDIAG_SUPPORT_DB"] = db_url(args)
    os.environ["POSDIAG_SUPPORT_DATA"] = str(Path(args.data).resolve())
    if args.config:
        os.environ["POSDIAG_SUPPORT_CONFIG"] = args.config
    server_settings(args.config)  # fail here, not in every worker
    engine(args).dispose()  # create the schema once before workers start
    print(f"posdiag-support: serving on http://{args.host}:{args.port}/", file=sys.stderr)
    uvicorn.run(
        "remote.server.cli:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=log_config(args.access_log),
        log_level=None,
        access_log=args.access_log,
    )
    return 0


def app_from_env():  # -> FastAPI; uvicorn's factory, also in each worker process
    from remote.server.app import create_app

    return create_app(
        os.environ["POSDIAG_SUPPORT_DB"],
        Path(os.environ["POSDIAG_SUPPORT_DATA"]),
        server_settings(os.environ.get("POSDIAG_SUPPORT_CONFIG")),
    )


def cmd_terminal_add(args: argparse.Namespace) -> int:
    from remote.server import store

    token = store.add_terminal(engine(args), args.id)
    print(token)
    print(f"terminal {args.id} enrolled; the token above is shown only this once", file=sys.stderr)
    return 0


def cmd_terminal_list(args: argparse.Namespace) -> int:
    from remote.server import store

    rows = store.list_terminals(engine(args))
    print(f"{'TERMINAL':<24} {'STATE':<8} {'BUNDLES':>7}  LAST UPLOAD")
    for r in rows:
        state = "revoked" if r["revoked_at"] else "active"
        print(f"{r['id']:<24} {state:<8} {r['bundles']:>7}  {r['last_seen_at'] or 'never'}")
    return 0


def cmd_terminal_revoke(args: argparse.Namespace) -> int:
    from remote.server import store

    store.revoke_terminal(engine(args), args.id)
    print(f"terminal {args.id}: token revoked", file=sys.stderr)
    return 0


def read_password(given: str | None) -> str:
    if given is not None:
        return given
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise SystemExit("posdiag-support: passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def cmd_user_add(args: argparse.Namespace) -> int:
    from remote.server import store

    store.add_user(engine(args), args.name, args.role, read_password(args.password))
    print(f"user {args.name} ({args.role}) added", file=sys.stderr)
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    from remote.server import store

    print(f"{'USER':<24} {'ROLE':<11} {'LANG':<5} CREATED")
    for u in store.list_users(engine(args)):
        print(f"{u['name']:<24} {u['role']:<11} {u['lang'] or '-':<5} {u['created_at'][:19]}")
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    from remote.server import store

    eng = engine(args)
    if store.get_user(eng, args.name) is None:
        raise store.StoreError("no_user", f"no user {args.name!r}")
    store.set_password(eng, args.name, read_password(args.password))
    print(f"user {args.name}: password changed", file=sys.stderr)
    return 0


def cmd_user_role(args: argparse.Namespace) -> int:
    from remote.server import store

    store.set_role(engine(args), args.name, args.role)
    print(f"user {args.name}: role {args.role}", file=sys.stderr)
    return 0


def cmd_user_remove(args: argparse.Namespace) -> int:
    from remote.server import store

    store.remove_user(engine(args), args.name)
    print(f"user {args.name} removed", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sqlalchemy.exc import SQLAlchemyError

    from probes.contract.errors import PosdiagError
    from remote.server.store import StoreError

    try:
        return int(args.handler(args))
    except (PosdiagError, StoreError, SQLAlchemyError, OSError) as exc:
        print(f"posdiag-support: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

