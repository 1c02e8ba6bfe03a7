"""Run the tests that depend on the date (the modules marked `clock`) with the wall clock
just before midnight UTC: tonight at 23:59:30, and on 31 December at 23:59:30 (the end of a
day, a month and a year at once).

    .venv/bin/python tests/clock/run.py [-j JOBS] [--at "YYYY-MM-DD HH:MM:SS"]... [PATH...] [-- PYTEST OPTIONS]

`make test-clock` runs it; CI runs it after `make test`. Each module runs in a pytest
process of its own whose clock starts at the instant, so that every module crosses midnight
in its first half minute, while its servers and fixtures start and its first tests run.
Both instants lie ahead of the real time (tonight's is tomorrow's when less than a minute
of today is left), so the browser, which keeps the real clock, never sees a cookie from
its past.

libfaketime (Debian package faketime) moves the clock of the tests and of every process
they start: servers, agents, the simulated terminal, OpenSSL's certificate checks. It does
not reach programs that read the time without the C library or were running before
(SeaweedFS, written in Go; PostgreSQL), and Chromium is started without it (it hangs at
start under libfaketime): none of them decides a date here. The monotonic clock stays real
(FAKETIME_DONT_FAKE_MONOTONIC=1; faked, every wait with a timeout would wait for ever), and
sitecustomize.py beside this file mends Python's time.sleep for that (libfaketime issue #426).
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIM = Path(__file__).resolve().parent
STARTS_AT = "23:59:30"
# The server tests' S3 variant: the blob store keeps no dates, and it adds a third server per
# module. A -k after -- replaces this one.
LEFT_OUT = "not postgresql+s3"


def instants(now: datetime) -> list[datetime]:
    """Tonight at 23:59:30 UTC and 31 December at 23:59:30 UTC, each still ahead of `now`."""
    hour, minute, second = map(int, STARTS_AT.split(":"))

    def at(day: date) -> datetime:
        return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=UTC)

    tonight = at(now.date()) if at(now.date()) > now + timedelta(seconds=30) else at(now.date() + timedelta(days=1))
    year_end = at(date(now.year, 12, 31))
    if year_end <= tonight:
        year_end = at(date(now.year + 1, 12, 31))
    return [tonight, year_end]


def clock_modules(paths: list[str]) -> list[str]:
    """The test files under `paths` with a test marked `clock`."""
    found = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", "clock", *paths],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    modules = sorted({line.split("::", 1)[0] for line in found.stdout.splitlines() if "::" in line})
    if not modules:
        sys.exit(f"clock: no test is marked `clock`:\n{found.stdout[-2000:]}{found.stderr[-2000:]}")
    return modules


def run_module(module: str, instant: datetime, libfaketime: str, pytest_args: list[str]) -> tuple[bool, str]:
    """`module` with the clock starting at `instant`: (passed, its pytest output)."""
    offset = round((instant - datetime.now(UTC)).total_seconds())
    env = dict(os.environ)
    env.update(
        LD_PRELOAD=libfaketime,
        FAKETIME=f"{offset:+d}",
        FAKETIME_DONT_FAKE_MONOTONIC="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(SHIM), os.environ.get("PYTHONPATH", "")) if p),
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "clock", "-k", LEFT_OUT, module, *pytest_args],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "(no output)"
    line = f"{'ok  ' if done.returncode == 0 else 'FAIL'} {instant:%Y-%m-%d %H:%M:%S} UTC  {module}  {summary} [{time.monotonic() - started:.0f} s wall]"
    return done.returncode == 0, line + ("" if done.returncode == 0 else "\n" + (done.stdout + done.stderr)[-6000:])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, pytest_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Options after -- go to pytest.")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="modules run at once (default 2)")
    parser.add_argument(
        "--only", choices=("tonight", "year-end"),
        help="one of the two instants: CI runs year-end alone (a day's, a month's and a year's end at once)",
    )  # fmt: skip
    parser.add_argument("--at", action="append", metavar="'YYYY-MM-DD HH:MM:SS'", help="UTC instants instead of the two above")
    parser.add_argument("paths", nargs="*", default=["tests"], help="where to look for modules marked clock (default: tests)")
    args = parser.parse_args(ours)
    libfaketime = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)
    if libfaketime is None:
        print("clock: libfaketime is not installed (Debian package faketime)", file=sys.stderr)
        return 2
    now = datetime.now(UTC)
    chosen = [datetime.fromisoformat(a).replace(tzinfo=UTC) for a in args.at] if args.at else instants(now)
    if args.only and not args.at:
        chosen = chosen[:1] if args.only == "tonight" else chosen[1:]
    modules = clock_modules(args.paths)
    print(f"clock: {len(modules)} modules at {', '.join(f'{i:%Y-%m-%d %H:%M:%S}' for i in chosen)} UTC", flush=True)
    runs = [(m, i) for i in chosen for m in modules]
    failed = 0
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for passed, report in pool.map(lambda run: run_module(*run, libfaketime, pytest_args), runs):
            print(report, flush=True)
            failed += not passed
    print(f"clock: {len(runs) - failed} passed, {failed} failed (module runs)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
