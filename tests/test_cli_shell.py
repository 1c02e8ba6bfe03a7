"""The technician's shell: help and tables fit 80 columns, a closed pipe is no traceback,
`config check` reads stdin and reports every error at once."""

import os
import subprocess

import pytest

from agent.cli import EXIT_PIPE_CLOSED, build_parser
from agent.render import display_width
from tests.conftest import POSDIAG, ROOT, run_cli


def command_paths() -> list[list[str]]:
    found: list[list[str]] = [[]]

    def walk(parser, prefix):
        for action in parser._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for name, sub in action.choices.items():
                    found.append([*prefix, name])
                    walk(sub, [*prefix, name])

    walk(build_parser(), [])
    return found


def env_with(columns: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "POSDIAG_CONFIG")}
    if columns:
        env["COLUMNS"] = columns
    return env


def wide_lines(text: str, width: int = 80) -> list[str]:
    return [line for line in text.splitlines() if display_width(line) > width]


@pytest.mark.parametrize("columns", [None, "80"])
def test_every_help_fits_80_columns(columns):
    paths = command_paths()
    assert ["outbox", "requeue"] in paths and ["codes", "search"] in paths and len(paths) > 15
    procs = [
        (path, subprocess.Popen([str(POSDIAG), *path, "--help"], stdout=subprocess.PIPE, text=True, env=env_with(columns), cwd=ROOT))
        for path in paths
    ]
    for path, proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and out.startswith("usage: posdiag"), path
        assert wide_lines(out) == [], path


@pytest.mark.parametrize(("columns", "lang"), [(None, "zh"), ("80", "en")])
def test_tables_and_diagnoses_fit_80_columns(columns, lang):
    faults = "storage.disk_full,network.dns_failed,printer.paper_out,reader.slot_fault"
    for args in (("probe",), ("diagnose", "--code", "3000")):
        proc = subprocess.run(
            [str(POSDIAG), *args, "--simulate", faults, "--lang", lang],
            capture_output=True, text=True, env=env_with(columns), cwd=ROOT, timeout=60,
        )
        assert proc.stdout.count("\n") > 10, proc.stderr
        assert wide_lines(proc.stdout) == []


def closed_pipe_run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    """Run with stdout a pipe whose reader is already gone: every write fails with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [str(POSDIAG), *args], stdout=write_end, stderr=subprocess.PIPE, input=stdin, cwd=ROOT, timeout=60,
            env=env_with(None),
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("--version",),
        ("diagnose", "--help"),
        ("codes", "search", "a"),
        ("codes", "show", "05"),
        ("config", "show"),
        ("probe", "--simulate", "healthy", "--only", "power"),
        ("diagnose", "--code", "51", "--simulate", "healthy", "--only", "power", "--json"),
        ("redact",),
    ],
)
def test_a_closed_pipe_is_no_traceback(args):
    proc = closed_pipe_run(*args, stdin=b"card 4111 1111 1111 1111\n" * 5000)
    assert b"Traceback" not in proc.stderr and b"BrokenPipe" not in proc.stderr, proc.stderr.decode()
    # argparse itself ignores a failed write of --help and exits 0
    assert proc.returncode == (0 if "--help" in args else EXIT_PIPE_CLOSED), proc.stderr.decode()


def test_head_on_a_long_listing_is_quiet():
    proc = subprocess.run(
        f"'{POSDIAG}' codes search a | head -1", shell=True, capture_output=True, text=True, cwd=ROOT, env=env_with(None)
    )
    assert proc.stdout.count("\n") == 1 and proc.stderr == ""


def test_config_check_reads_stdin():
    good = run_cli("config", "check", "-", input='[terminal]\nid = "T-100"\n')
    assert good.returncode == 0 and good.stdout == "<stdin>: ok\n"
    bad = run_cli("config", "check", "-", input="[terminal\n")
    assert bad.returncode == 2 and bad.stderr.startswith("posdiag: config error in <stdin>: not valid TOML")


def test_config_check_reports_every_error_at_once(tmp_path):
    path = tmp_path / "posdiag.toml"
    path.write_text(
        '[terminal]\nlang = "fr"\nbogus = 1\n[probes.power]\ntimeout_seconds = -1\n'
        '[upload]\nmax_attempts = "x"\n[daemon]\nlisten = "0.0.0.0:80"\n[nosuch]\n'
    )
    proc = run_cli("config", "check", str(path))
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines[0] == "posdiag: 6 config errors:"
    keys = ["nosuch", "terminal.bogus", "terminal.lang", "upload.max_attempts", "daemon.listen", "probes.power.timeout_seconds"]
    assert [line.split(": ")[1] for line in lines[1:]] == keys
    assert all(line.startswith(f"  config error in {path}: ") for line in lines[1:])
    stdin = run_cli("config", "check", "-", input=path.read_text())
    assert stdin.stderr.replace("<stdin>", str(path)) == proc.stderr


def test_demo_stopped_by_sigterm_leaves_nothing_behind(tmp_path):
    """`posdiag demo` from a terminal serves until stopped; a SIGTERM (systemd, kill) stops it
    like Ctrl-C and removes its posdiag-demo-* and posdiag-sim-* directories."""
    import pty
    import re
    import select
    import signal
    import time

    main, side = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "POSDIAG_CONFIG"} | {"TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([str(POSDIAG), "demo", "--lang", "en"], stdout=side, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    os.close(side)
    out, deadline = b"", time.monotonic() + 90
    while not re.search(rb"sign in:\s+\S+ / \S+", out):
        assert time.monotonic() < deadline and proc.poll() is None, out.decode(errors="replace")
        if select.select([main], [], [], 1)[0]:
            out += os.read(main, 65536)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("posdiag-demo-")]  # made while it serves
    proc.send_signal(signal.SIGTERM)
    # 0 once it serves ("stopped"); 143 (128 + SIGTERM) when the signal beats the wait: both unwind
    assert proc.wait(20) in (0, 143)
    os.close(main)
    assert "Traceback" not in proc.stderr.read().decode()
    assert list(tmp_path.iterdir()) == []


def test_demo_behind_a_pipe_from_a_terminal_keeps_its_address_alive(tmp_path):
    """`make demo | tee demo.log`: stdin is the terminal, stdout a pipe. The address is printed at
    once (not held in a pipe's buffer) and the server answers it until stopped."""
    import pty
    import re
    import signal
    import time

    import requests

    main, side = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "POSDIAG_CONFIG"} | {"TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([str(POSDIAG), "demo", "--lang", "en"], stdin=side, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    os.close(side)
    try:
        line, deadline = b"", time.monotonic() + 90
        while b"bundle page:" not in line:
            assert time.monotonic() < deadline and proc.poll() is None
            line = proc.stdout.readline()
        url = re.search(rb"bundle page: (\S+)", line).group(1).decode()
        time.sleep(0.5)
        assert proc.poll() is None  # still serving
        assert requests.get(url, allow_redirects=False, timeout=10).status_code == 303  # to the sign-in page
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        os.close(main)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a private mount namespace (unshare --mount)")
def test_simulate_without_dev_pts_is_a_clear_error_not_a_traceback(tmp_path):
    import shutil

    if not shutil.which("unshare"):
        pytest.skip("unshare is not installed")
    env = {k: v for k, v in os.environ.items() if k != "POSDIAG_CONFIG"} | {"TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        ["unshare", "--mount", "sh", "-c", f'mount -t tmpfs none /dev/pts && exec "{POSDIAG}" probe --simulate healthy'],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "needs pseudo-terminals" in proc.stderr and "mount -t devpts devpts /dev/pts" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []
