"""`posdiag-support`: run the support server and manage its terminals and users.

  posdiag-support serve [--db URL] [--data DIR] [--blobs URL] [--host H] [--port P]
                        [--workers N] [--access-log] [--forwarded-allow-ips IPS]
  posdiag-support terminals add ID | list | revoke ID
  posdiag-support users add NAME --role support|technician|admin [--password P]
  posdiag-support users list | passwd NAME [--password P] | role NAME ROLE | remove NAME
  posdiag-support gc [--dry-run] [--json]   remove what [server.retention] expires
  posdiag-support check [--json]            verify database, blob store, config
  posdiag-support learning ACTION           learned tables (learning --help)
  posdiag-support demo-fleet [--terminals N] [--days D]   a simulated fleet to look at

--db defaults to SQLite in the data directory; postgresql://user@host/db for PostgreSQL.
--blobs defaults to DATA/blobs; s3://BUCKET[/PREFIX] for an S3-compatible store.
Exit codes: 0 done, 1 check found a problem, 2 error or refused set-up.
Without --password the password is asked for on a terminal, or read as one line of stdin.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import signal
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
    parser.add_argument(
        "--blobs",
        metavar="URL",
        default=default(os.environ.get("POSDIAG_SUPPORT_BLOBS")),
        help="blob store: a directory or s3://BUCKET[/PREFIX] (default: [server.blobs] url, else DATA/blobs)",
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
    serve.add_argument(
        "--forwarded-allow-ips",
        default="127.0.0.1",
        metavar="IPS",
        help="balancers whose X-Forwarded-For is the client address (default: 127.0.0.1)",
    )
    serve.set_defaults(handler=cmd_serve)

    gc = sub.add_parser("gc", parents=[common], help="remove expired bundles now ([server.retention])")
    gc.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    gc.add_argument("--json", action="store_true", help="machine-readable output")
    gc.set_defaults(handler=cmd_gc)
    check = sub.add_parser("check", parents=[common], help="verify database, blob store and config")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(handler=cmd_check)

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
    demo = sub.add_parser("demo-fleet", parents=[common], help="fill an empty data directory with a simulated fleet")
    demo.add_argument("--terminals", type=int, default=300, help="how many (default 300)")
    demo.add_argument("--days", type=float, default=3.0, help="of event time, ending now (default 3)")
    demo.set_defaults(handler=cmd_demo_fleet)
    from remote.server import learning_cli

    learning_cli.register(sub, common)
    return parser


def server_settings(path: str | None):  # -> ServerSettings
    """The [server] section: packaged defaults, then the operator file's keys.

    Read with the shared table checker (probes/contract/config_file.py), not the terminal's whole-file
    loader, so that the server imports neither the agent nor the probe modules."""
    from probes.contract import config_file
    from remote.server_settings import ServerSettings

    data = tomllib.loads(config_file.packaged_default_text()).get("server", {})
    chosen = config_file.resolve_path(path)
    if chosen is not None:
        data = config_file.merge(data, config_file.read_toml(chosen).get("server", {}))
    source = str(chosen) if chosen else "packaged posdiag.toml"
    return config_file.convert(ServerSettings, data, "server", lambda _key: source)


def settings_for(args: argparse.Namespace):  # -> ServerSettings
    """[server] with --blobs, when given, in place of [server.blobs] url."""
    import dataclasses

    settings = server_settings(args.config)
    if args.blobs:
        settings = dataclasses.replace(settings, blobs=dataclasses.replace(settings.blobs, url=args.blobs))
    return settings


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


def serve_problem(url: str, port: int) -> str | None:
    """Why `serve` cannot start with this database URL and port, checked before anything
    is printed or any worker starts; None when it can."""
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme not in DB_SCHEMES:
        return f"unsupported database URL {url.split('://', 1)[0]}://...: use sqlite:///PATH or postgresql://USER@HOST/DB"
    if not 0 <= port <= 65535:  # 0: any free port
        return f"port {port} is out of range (0-65535)"
    return None


def reserve_address(host: str, port: int) -> socket.socket:
    """host:port bound, not listening, with SO_REUSEADDR as uvicorn binds: a port in use is
    refused before anything starts, port 0 becomes the real port serve prints, and no other
    program can take that port before uvicorn listens on it (Linux lets uvicorn's bind sit
    beside a bound socket that does not listen). Kept open until serve exits."""
    from probes.contract.errors import UsageError

    reserved = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reserved.bind((host, port))
    except OSError as exc:
        reserved.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return reserved


def cmd_serve(args: argparse.Namespace) -> int:
    from probes.contract.errors import UsageError

    problem = serve_problem(args.db or "sqlite://", args.port)
    if problem:
        raise UsageError(problem)
    with reserve_address(args.host, args.port) as reserved:
        return serve(args, reserved.getsockname()[1])


def serve(args: argparse.Namespace, port: int) -> int:
    """Serve on `port` (reserved by the caller) until SIGTERM or SIGINT."""
    import uvicorn

    from remote.server import preflight, retention
    from remote.server.logs import log_config
    from remote.server.metrics import Metrics
    from remote.server.service import open_blobs

    os.environ["POSDIAG_SUPPORT_DB"] = db_url(args)
    os.environ["POSDIAG_SUPPORT_DATA"] = str(Path(args.data).resolve())
    if args.config:
        os.environ["POSDIAG_SUPPORT_CONFIG"] = args.config
    if args.blobs:
        os.environ["POSDIAG_SUPPORT_BLOBS"] = args.blobs
    settings = settings_for(args)  # fail here, not in every worker
    eng = engine(args)  # create the schema once before workers start
    metrics = Metrics()
    blobs = open_blobs(settings, Path(args.data), metrics)
    try:
        preflight.verify_store(eng, blobs)
        lease = preflight.hold_sqlite(eng)
    except preflight.Refused as exc:
        print(f"posdiag-support: refusing to start: {exc}", file=sys.stderr)
        eng.dispose()
        return 2
    janitor = retention.Janitor(eng, blobs, settings.retention, metrics)
    janitor.start()
    print(f"posdiag-support: serving on http://{args.host}:{port}/ (blobs: {blobs.describe()})", file=sys.stderr)
    try:
        uvicorn.run(
            "remote.server.cli:app_from_env",
            factory=True,
            host=args.host,
            port=port,
            workers=args.workers,
            log_config=log_config(args.access_log),
            log_level=None,
            access_log=args.access_log,
            http="remote.server.connections:GuardedProtocol",  # header/body timeouts, connection caps
            proxy_headers=True,
            forwarded_allow_ips=args.forwarded_allow_ips,  # sign-in limits count the client, not the balancer
        )
    finally:
        janitor.stop()
        if lease is not None:
            lease.set()
    return 0


METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def stop_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM ends serve through its `finally` blocks (the retention thread, the SQLite
    lease, the metrics directory). While it serves, uvicorn handles SIGTERM itself, shuts
    down gracefully and then raises the signal again for the handler it found: this one."""
    raise SystemExit(0)


def app_from_env():  # -> FastAPI; uvicorn's factory, also in each worker process
    import dataclasses

    from remote.server.app import create_app

    settings = server_settings(os.environ.get("POSDIAG_SUPPORT_CONFIG"))
    if os.environ.get("POSDIAG_SUPPORT_BLOBS"):
        settings = dataclasses.replace(
            settings, blobs=dataclasses.replace(settings.blobs, url=os.environ["POSDIAG_SUPPORT_BLOBS"])
        )
    return create_app(os.environ["POSDIAG_SUPPORT_DB"], Path(os.environ["POSDIAG_SUPPORT_DATA"]), settings)


def cmd_demo_fleet(args: argparse.Namespace) -> int:
    """Fill --data (or --db) with a simulated fleet; print how to serve it and a sign-in."""
    import shlex

    from probes.contract.errors import UsageError
    from remote.server import demo_fleet

    if not 1 <= args.terminals <= 100_000 or not 0.1 <= args.days <= 60:
        raise UsageError("--terminals 1-100000, --days 0.1-60")
    try:
        filled = demo_fleet.fill(
            db_url(args), Path(args.data), settings_for(args), args.terminals, args.days,
            lambda done, total: print(f"posdiag-support: demo-fleet: {done} of {total} heartbeats and bundles sent", file=sys.stderr, flush=True),
        )  # fmt: skip
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    opened = ", ".join(f"{i['kind']} {' '.join(f'{k}={v}' for k, v in sorted(i['scope'].items()))}" for i in filled.incidents)
    print(f"{filled.terminals} terminals, {filled.heartbeats} heartbeats, {filled.bundles} bundles; open: {opened or 'nothing'}")
    where = f"--data {shlex.quote(args.data)}" + (f" --db {shlex.quote(args.db)}" if args.db else "")
    print(f"serve:       posdiag-support {where} serve --port 8080")
    print(f"sign in:     {demo_fleet.LEAD} / {filled.password}", flush=True)
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from remote.server import retention
    from remote.server.service import open_blobs

    settings = settings_for(args)
    keep = settings.retention
    eng = engine(args)
    if not (keep.days or keep.max_per_terminal):
        print("posdiag-support: [server.retention] keeps everything (days = 0, max_per_terminal = 0)", file=sys.stderr)
    if args.dry_run:
        result = retention.plan(eng, keep)
    else:
        result = retention.run_pass(eng, open_blobs(settings, Path(args.data)), keep)
        if result is None:
            print("posdiag-support: another server is running retention now; try again later", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(dict(dataclasses.asdict(result), rows=result.rows, dry_run=args.dry_run)))
    else:
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {result.rows} bundles ({result.by_age} by age over {keep.days} days, "
              f"{result.by_count} over {keep.max_per_terminal} per terminal) "
              f"and {result.blobs} blobs ({result.bytes} bytes); {result.audit_entries} audit log entries")  # fmt: skip
        for error in result.errors:
            print(f"posdiag-support: {error}", file=sys.stderr)
    return 1 if result.errors else 0


def cmd_check(args: argparse.Namespace) -> int:
    import json

    from probes.contract.errors import PosdiagError
    from remote.server import db, preflight
    from remote.server.service import open_blobs

    report = preflight.Report()
    try:
        settings = settings_for(args)
        keep = settings.retention
        report.add("config", f"{args.config or 'packaged posdiag.toml'}: ok; retention {keep.days} days, "
                   f"{keep.max_per_terminal} per terminal")  # fmt: skip
    except PosdiagError as exc:
        report.add("config", str(exc).splitlines()[0], True)
        settings = None
    eng = db.make_engine(db_url(args))
    if not preflight.check_database(eng, report):
        eng = None
    if settings is not None:
        try:
            preflight.check_blobs(eng, open_blobs(settings, Path(args.data)), report)
        except ValueError as exc:
            report.add("blob store", str(exc), True)
    if args.json:
        print(json.dumps({"ok": not report.problems, "found": dict(report.lines), "problems": report.problems}))
    else:
        for what, found in report.lines:
            print(f"{what:<16} {found}")
        print("ok" if not report.problems else f"{len(report.problems)} problem(s)")
    return 1 if report.problems else 0


def cmd_terminal_add(args: argparse.Namespace) -> int:
    from remote.server import store

    eng = engine(args)
    token = store.add_terminal(eng, args.id)
    audited(eng, "terminal.enrol", "terminal", args.id)
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

    eng = engine(args)
    store.revoke_terminal(eng, args.id)
    audited(eng, "terminal.revoke", "terminal", args.id)
    print(f"terminal {args.id}: token revoked", file=sys.stderr)
    return 0


def audited(eng, action: str, kind: str, object_id: str, detail: dict | None = None) -> None:
    """An audit log entry for a change made here, in the name of the account running it."""
    from remote.server import audit

    try:
        actor = getpass.getuser()
    except (KeyError, OSError):
        actor = f"uid {os.getuid()}"
    audit.record(eng, actor, "cli", action, kind, object_id, detail)


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

    least, eng = settings_for(args).password_min_length, engine(args)
    store.add_user(eng, args.name, args.role, read_password(args.password), least)
    audited(eng, "user.add", "user", args.name, {"role": args.role})
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
    store.set_password(eng, args.name, read_password(args.password), settings_for(args).password_min_length)
    audited(eng, "user.password", "user", args.name)
    print(f"user {args.name}: password changed", file=sys.stderr)
    return 0


def cmd_user_role(args: argparse.Namespace) -> int:
    from remote.server import store

    eng = engine(args)
    if store.set_role(eng, args.name, args.role):
        audited(eng, "user.role", "user", args.name, {"role": args.role})
    print(f"user {args.name}: role {args.role}", file=sys.stderr)
    return 0


def cmd_user_remove(args: argparse.Namespace) -> int:
    from remote.server import store

    eng = engine(args)
    store.remove_user(eng, args.name)
    audited(eng, "user.remove", "user", args.name)
    print(f"user {args.name} removed", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    scratch = None
    if args.command == "serve":
        from remote.server import metrics_dir

        signal.signal(signal.SIGTERM, stop_on_sigterm)
        # Set before prometheus_client is first imported, here and (inherited) in each worker.
        scratch = metrics_dir.create()
        os.environ[METRICS_DIR_ENV] = str(scratch)
    from sqlalchemy.exc import SQLAlchemyError

    from probes.contract.errors import PosdiagError
    from remote.server.blobs import BlobError
    from remote.server.store import StoreError

    try:
        return int(args.handler(args))
    except (PosdiagError, StoreError, SQLAlchemyError, BlobError, OSError, ValueError) as exc:
        print(f"posdiag-support: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

