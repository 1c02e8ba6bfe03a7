"""What `make dist` ships, used the way a terminal uses it.

The executables run in a bare environment: `env -i`, an empty HOME, no virtual
environment, no network (a fresh network namespace with only loopback, which the
simulated terminal's emulators need). The aarch64 one runs through qemu-user inside an
arm64 Debian root from which Python has been removed (an overlay: the cached root stays
as it is). The arm64 .deb is installed with dpkg into another such overlay, upgraded and
purged; the amd64 one is checked with dpkg-deb (lintian already passed it at build).

The build comes from the cache when the tree is unchanged (seconds); after a change of
the sources it freezes again (minutes): CI runs `make dist` before `make test`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("posdiag_dist_build", REPO / "packaging/build.py")
assert spec and spec.loader
build = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))
spec.loader.exec_module(build)
VERSION = build.project()["version"]
pytestmark = pytest.mark.timeout(1800)


def missing(*tools: str) -> list[str]:
    return [t for t in tools if not shutil.which(t)]


def skip_unless_can_build(arch: str) -> None:
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        pytest.skip("the dist build runs on an x86_64 Linux machine")
    need = ["dpkg-deb"]
    if arch == "aarch64":
        if os.geteuid() != 0:
            pytest.skip("the aarch64 build and run need root (debootstrap, chroot, binfmt_misc)")
        need += ["debootstrap", "chroot", "update-binfmts", "qemu-aarch64-static"]
    absent = missing(*need)
    if absent:
        pytest.skip(f"not installed: {', '.join(absent)} (.ci/run installs them)")


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    """Both arches' artifacts (each arch only when this machine can build it)."""
    out = tmp_path_factory.mktemp("dist")
    arches = ["x86_64"]
    with contextlib.suppress(pytest.skip.Exception):
        skip_unless_can_build("aarch64")
        arches.append("aarch64")
    skip_unless_can_build("x86_64")
    args = [a for arch in arches for a in ("--arch", arch)]
    done = subprocess.run([sys.executable, str(REPO / "packaging/build.py"), *args, "--out", str(out)], capture_output=True, text=True, timeout=3000)
    assert done.returncode == 0, done.stdout + done.stderr
    return {p.name: p for p in out.iterdir()}


def bare_run(prefix: list[str], program: str, *args: str, home: str) -> subprocess.CompletedProcess[str]:
    """`program args` with nothing of this machine's environment and no network."""
    command = [*prefix, "env", "-i", f"HOME={home}", program, *args]
    if os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip"):
        command = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def check_terminal_commands(prefix: list[str], program: str, home: str, slow_cpu: bool = False) -> dict[str, dict]:
    version = bare_run(prefix, program, "--version", home=home)
    assert version.returncode == 0 and version.stdout.strip() == f"posdiag {VERSION}", version.stderr
    probe = bare_run(prefix, program, "probe", "--simulate", "healthy", "--json", home=home)
    assert probe.returncode == 0, probe.stderr[-2000:]
    sweep = json.loads(probe.stdout)
    statuses = {p["name"]: p["status"] for p in sweep["probes"]}
    # every probe module was found by the frozen app's pkgutil scan, and all are healthy ...
    assert {"card_reader", "printer", "power", "storage", "network", "system"} <= set(statuses)
    findings = {f["id"] for p in sweep["probes"] for f in p["findings"]}
    # ... except that an emulated CPU may take longer than 250 ms over the TLS handshake
    assert findings <= ({"network.high_latency"} if slow_cpu else set()), findings
    diagnose = bare_run(prefix, program, "diagnose", "--code", "51", "--simulate", "healthy", "--json", home=home)
    assert diagnose.returncode == 0, diagnose.stderr[-2000:]
    diagnosis = json.loads(diagnose.stdout)
    assert diagnosis["error"]["meaning"]["en"] == "insufficient funds"  # the knowledge base's TOML travelled too
    return {"probe": sweep, "diagnose": diagnosis}


def test_sizes_within_target(dist):
    executables = [p for name, p in dist.items() if name.startswith("posdiag-")]
    assert executables
    for path in executables:
        assert 1 << 20 < path.stat().st_size <= build.MAX_EXECUTABLE, path.name


def test_x86_64_executable_runs_bare(dist, tmp_path):
    bare = tmp_path / "bare"
    (bare / "home").mkdir(parents=True)
    program = bare / "posdiag"
    shutil.copy2(dist[f"posdiag-{VERSION}-linux-x86_64"], program)
    found = check_terminal_commands([], str(program), str(bare / "home"))
    network = next(p for p in found["probe"]["probes"] if p["name"] == "network")
    assert network["metrics"]["cert_days_left"] > 300  # TLS, with a CA made by the openssl command
    expired = bare_run([], str(program), "probe", "--simulate", "network.cert_expired", "--only", "network", "--json", home=str(bare / "home"))
    assert "network.cert_expired" in {f["id"] for p in json.loads(expired.stdout)["probes"] for f in p["findings"]}
    assert not any((bare / "home").iterdir())
    demo = bare_run([], str(program), "demo", home=str(bare / "home"))
    assert demo.returncode == 2 and "invalid choice: 'demo'" in demo.stderr  # the server is not in it


def test_x86_64_agent_runs_its_workers_from_the_same_file(dist, tmp_path):
    """`posdiag run` in the one-file executable: its workers are `posdiag worker` of the same
    file and reuse the resident's unpacked files (one _MEI directory, however many workers);
    a logged error becomes a bundle in the outbox; SIGTERM stops it and the files go."""
    import signal
    import time

    bare = tmp_path / "bare"
    home, temp = bare / "home", bare / "tmp"
    home.mkdir(parents=True)
    temp.mkdir()
    program = bare / "posdiag"
    shutil.copy2(dist[f"posdiag-{VERSION}-linux-x86_64"], program)
    log = bare / "app.log"
    log.write_text("")
    config = bare / "agent.toml"
    config.write_text(
        f'[outbox]\ndir = "{bare / "outbox"}"\n[daemon]\nstate_dir = "{bare / "state"}"\nlog_level = "debug"\n'
        f'snapshot_interval_seconds = 1.0\nworker_linger_seconds = 0.0\n'
        f'[[daemon.log_sources]]\npath = "{log}"\npatterns = ["response code: (?P<code>[0-9]{{2}})"]\n'
    )
    stderr = bare / "agent.log"
    command = ["env", "-i", f"HOME={home}", f"TMPDIR={temp}", str(program), "run", "--config", str(config)]
    agent = subprocess.Popen(command, stderr=stderr.open("wb"), stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while "agent running" not in stderr.read_text(errors="replace"):
            assert agent.poll() is None and time.monotonic() < deadline, stderr.read_text(errors="replace")
            time.sleep(0.1)
        with log.open("a") as fh:
            fh.write("txn 1 response code: 51\n")
        while "dispatch" not in (text := stderr.read_text(errors="replace")) or text.count("worker job snapshot") < 3:
            assert time.monotonic() < deadline, text  # a snapshot a second, each in a worker of its own
            time.sleep(0.1)
        assert list((bare / "outbox").glob("*.tar.gz")) and "worker job diagnose" in text
        assert len(list(temp.glob("_MEI*"))) == 1
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
    assert agent.returncode == 0
    assert not list(temp.glob("_MEI*"))


@contextlib.contextmanager
def overlay_root(tmp_path: Path, without_python: bool) -> Iterator[Path]:
    """A writable throwaway view of the cached arm64 root, with /proc and /dev."""
    arch = build.ARCHES["aarch64"]
    lower = build.debian_root(build.default_cache(), arch, tmp_path / "build.log")
    upper, work, merged = tmp_path / "upper", tmp_path / "work", tmp_path / "merged"
    for d in (upper, work, merged):
        d.mkdir()
    mounts: list[Path] = []
    try:
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)], check=True)
        mounts.append(merged)
        subprocess.run(["mount", "-t", "proc", "proc", str(merged / "proc")], check=True)
        mounts.append(merged / "proc")
        subprocess.run(["mount", "--rbind", "/dev", str(merged / "dev")], check=True)
        subprocess.run(["mount", "--make-rslave", str(merged / "dev")], check=True)
        mounts.append(merged / "dev")
        (merged / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")  # debootstrap writes none
        if without_python:
            for python in merged.glob("usr/bin/python3*"):
                python.unlink()
            shutil.rmtree(merged / "opt/build")
        yield merged
    finally:
        for mount in reversed(mounts):
            subprocess.run(["umount", "-R", "-l", str(mount)], check=False)


def test_aarch64_executable_runs_bare_under_qemu(dist, tmp_path):
    skip_unless_can_build("aarch64")
    with overlay_root(tmp_path, without_python=True) as root:
        assert not list(root.glob("usr/bin/python3*"))
        shutil.copy2(dist[f"posdiag-{VERSION}-linux-aarch64"], root / "opt/posdiag")
        (root / "home/bare").mkdir(parents=True)
        found = check_terminal_commands(["chroot", str(root)], "/opt/posdiag", "/home/bare", slow_cpu=True)
        header = (root / "opt/posdiag").read_bytes()[:20]
        assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64
        assert found["diagnose"]["error"]["host_answer"] is True


def dpkg(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**build.CLEAN_ENV, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["chroot", str(root), "dpkg", *args], capture_output=True, text=True, timeout=600, env=env)


def test_arm64_deb_installs_upgrades_and_purges(dist, tmp_path):
    skip_unless_can_build("aarch64")
    deb = dist[f"posdiag_{VERSION}_arm64.deb"]
    with overlay_root(tmp_path, without_python=False) as root:
        shutil.copy2(deb, root / "tmp" / deb.name)
        installed = dpkg(root, "-i", f"/tmp/{deb.name}")
        assert installed.returncode == 0, installed.stdout + installed.stderr
        passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
        assert passwd["posdiag"][5] == "/var/lib/posdiag" and int(passwd["posdiag"][2]) < 1000  # a system user
        groups = {line.split(":")[0]: line.split(":")[3].split(",") for line in (root / "etc/group").read_text().splitlines()}
        assert "posdiag" in groups["dialout"] and "posdiag" in groups["plugdev"]
        unit = (root / "lib/systemd/system/posdiag.service").read_text()
        assert "ExecStart=/usr/bin/posdiag run --config /etc/posdiag/posdiag.toml" in unit
        assert "User=posdiag" in unit and "SupplementaryGroups=dialout plugdev lp" in unit
        assert (root / "etc/systemd/system/multi-user.target.wants/posdiag.service").is_symlink()  # enabled
        conffiles = dpkg(root, "-s", "posdiag").stdout
        assert "Conffiles:\n /etc/posdiag/posdiag.toml" in conffiles
        state = root / "var/lib/posdiag/outbox"
        assert state.is_dir() and state.stat().st_uid == int(passwd["posdiag"][2])
        runs = subprocess.run(["chroot", str(root), "/usr/bin/posdiag", "--version"], capture_output=True, text=True, timeout=300)
        assert runs.stdout.strip() == f"posdiag {VERSION}"

        config = root / "etc/posdiag/posdiag.toml"
        config.write_text(config.read_text() + "\n# site edit\n")
        again = dpkg(root, "--force-confold", "-i", f"/tmp/{deb.name}")
        assert again.returncode == 0, again.stdout + again.stderr
        assert config.read_text().endswith("# site edit\n")  # an upgrade keeps the operator's config

        purged = dpkg(root, "--purge", "posdiag")
        assert purged.returncode == 0, purged.stdout + purged.stderr
        for gone in ("usr/bin/posdiag", "etc/posdiag", "var/lib/posdiag", "lib/systemd/system/posdiag.service"):
            assert not (root / gone).exists(), gone
        assert not (root / "etc/systemd/system/multi-user.target.wants/posdiag.service").exists()


def test_amd64_deb_contents(dist):
    deb = dist[f"posdiag_{VERSION}_amd64.deb"]
    info = subprocess.run(["dpkg-deb", "--info", str(deb)], capture_output=True, text=True, check=True).stdout
    assert "Package: posdiag" in info and "Architecture: amd64" in info and "Depends: adduser" in info
    contents = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True, check=True).stdout
    listed = {line.split()[-1].lstrip(".") for line in contents.splitlines()}
    assert {"/usr/bin/posdiag", "/etc/posdiag/posdiag.toml", "/lib/systemd/system/posdiag.service"} <= listed
    control = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(control)) as tar:
        assert tar.extractfile("./conffiles").read() == b"/etc/posdiag/posdiag.toml\n"
        assert {"./postinst", "./prerm", "./postrm"} <= set(tar.getnames())
