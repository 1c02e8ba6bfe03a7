"""`make dist`: the terminal executable (PyInstaller, one file, its own CPython) and a
Debian package for x86_64 and aarch64.

x86_64 is frozen on this machine; aarch64 inside an arm64 Debian root made with
debootstrap and entered through qemu-user (binfmt_misc). Everything downloaded (wheels,
Debian packages, the root itself) and every build is kept in a cache outside the
repository, keyed by the hash of what it was made from, so a second run is offline and
an unchanged tree is not frozen again. Standard library only: it runs before any venv.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
# What the executable is made from: the terminal side and its data, not the server.
# What the terminal executable is made of: everything but the support server (which the
# spec leaves out too), so a new module of the terminal's is never missing from the build.
SOURCES = ("agent", "probes", "config", "remote", "packaging/posdiag.spec", "packaging/entry.py")
SKIP = {"__pycache__", ".pytest_cache"}
SERVER_ONLY = {"remote/server"}
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# libpython3.11: PyInstaller bundles it; python3-venv: the build's venv; binutils: PyInstaller's strip; adduser: the .deb's postinst
# (the root is also where tests/test_dist.py installs the arm64 package).
ROOT_PACKAGES = ("python3", "libpython3.11", "python3-venv", "binutils", "adduser")
MAX_EXECUTABLE = 40 << 20
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}


@dataclass(frozen=True)
class Arch:
    name: str  # uname -m
    deb: str  # Debian's name
    platforms: tuple[str, ...]  # wheel platform tags pip may pick


ARCHES = {
    "x86_64": Arch("x86_64", "amd64", ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64")),
    "aarch64": Arch("aarch64", "arm64", ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64", "linux_aarch64")),
}


def default_cache() -> Path:
    if "POSDIAG_DIST_CACHE" in os.environ:
        return Path(os.environ["POSDIAG_DIST_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/posdiag-dist")
    return Path.home() / ".cache/posdiag-dist"


def project() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]


def requirements() -> list[str]:
    meta = project()
    return [*meta["dependencies"], *meta["optional-dependencies"]["dist"]]


def digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def source_files() -> list[Path]:
    files: list[Path] = []
    for name in SOURCES:
        path = ROOT / name
        if path.is_file():
            files.append(path)
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            here = Path(dirpath).relative_to(ROOT)
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP and (here / d).as_posix() not in SERVER_ONLY)
            files += [Path(dirpath) / f for f in sorted(filenames) if not f.endswith(".pyc")]
    return files


def source_key(arch: Arch) -> str:
    h = hashlib.sha256(arch.name.encode())
    for path in [ROOT / "pyproject.toml", *source_files()]:
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def run(cmd: list[str], log: Path, **kw: object) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False, **kw)  # type: ignore[call-overload]
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        sys.exit("\n".join([*tail, f"build.py: failed ({done.returncode}): {' '.join(cmd)}; log: {log}"]))


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    print(f"  {what} ...", flush=True)
    started = time.monotonic()
    yield
    print(f"  {what}: {time.monotonic() - started:.0f} s", flush=True)


@contextlib.contextmanager
def fresh(path: Path) -> Iterator[Path]:
    """A directory that appears at `path` only when the block completes."""
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    yield partial
    shutil.rmtree(path, ignore_errors=True)
    partial.rename(path)


def wheelhouse(cache: Path, arch: Arch, log: Path) -> Path:
    reqs = requirements()
    path = cache / "wheels" / f"{arch.name}-{digest(*reqs)}"
    if not path.is_dir():
        platforms = [arg for tag in arch.platforms for arg in ("--platform", tag)]
        with step(f"{arch.name}: downloading wheels"), fresh(path) as tmp:
            run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(tmp), "--only-binary=:all:",
                 *platforms, "--implementation", "cp", "--python-version", "3.11", *reqs],
                log,
            )  # fmt: skip
    return path


def copy_sources(dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    for path in [ROOT / "pyproject.toml", *source_files()]:
        target = dest / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def freeze_here(cache: Path, arch: Arch, log: Path, out: Path) -> str:
    """PyInstaller on this machine's Python; returns the glibc it was built against."""
    wheels = wheelhouse(cache, arch, log)
    venv = cache / "venv" / f"{arch.name}-{digest(sys.version, wheels.name)}"
    if not venv.is_dir():
        with step(f"{arch.name}: build venv"), fresh(venv) as tmp:
            run([sys.executable, "-m", "venv", str(tmp)], log)
            run([str(tmp / "bin/python"), "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheels), *requirements()], log)
    with tempfile.TemporaryDirectory(prefix="posdiag-dist-") as work:
        src = Path(work) / "src"
        copy_sources(src)
        with step(f"{arch.name}: PyInstaller"):
            run(
                [str(venv / "bin/python"), "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
                 "--distpath", str(out), "--workpath", str(Path(work) / "build"), str(src / "packaging/posdiag.spec")],
                log, env={**CLEAN_ENV, "PATH": os.environ["PATH"]},
            )  # fmt: skip
    return glibc_version([])


def glibc_version(prefix: list[str]) -> str:
    first = subprocess.run([*prefix, "ldd", "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    return first.rsplit(" ", 1)[-1]


def binfmt_ready(arch: Arch) -> bool:
    return Path(f"/proc/sys/fs/binfmt_misc/qemu-{arch.name}").exists() and "enabled" in Path(
        f"/proc/sys/fs/binfmt_misc/qemu-{arch.name}"
    ).read_text()


def enable_binfmt(arch: Arch, log: Path) -> None:
    """A frozen onefile program re-executes itself: only binfmt_misc makes that run under qemu."""
    if binfmt_ready(arch):
        return
    if not Path("/proc/sys/fs/binfmt_misc/status").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"], log)
    run(["update-binfmts", "--enable", f"qemu-{arch.name}"], log)
    if not binfmt_ready(arch):
        sys.exit(f"build.py: binfmt_misc has no enabled qemu-{arch.name} entry (install qemu-user-static, binfmt-support)")


def debian_root(cache: Path, arch: Arch, log: Path) -> Path:
    """An arm64 Debian root with python3, made once per package list and kept."""
    root = cache / "roots" / f"{arch.deb}-{SUITE}-{digest(MIRROR, *ROOT_PACKAGES)}"
    if (root / "usr/bin/python3").exists():
        return root
    debs = cache / "debs" / arch.deb
    debs.mkdir(parents=True, exist_ok=True)
    with fresh(root) as tmp:
        with step(f"{arch.name}: debootstrap {SUITE} {arch.deb} (first stage)"):
            run(
                ["debootstrap", f"--arch={arch.deb}", "--foreign", "--variant=minbase", f"--cache-dir={debs}",
                 f"--include={','.join(ROOT_PACKAGES)}", SUITE, str(tmp), MIRROR],
                log,
            )  # fmt: skip
        # No fsync per unpacked file: a root that breaks half-way is thrown away (fresh()).
        (tmp / "etc/dpkg/dpkg.cfg.d").mkdir(parents=True, exist_ok=True)
        (tmp / "etc/dpkg/dpkg.cfg.d/unsafe-io").write_text("force-unsafe-io\n")
        with step(f"{arch.name}: debootstrap second stage under qemu"):
            run(["chroot", str(tmp), "/debootstrap/debootstrap", "--second-stage"], log, env=CLEAN_ENV)
    return root


@contextlib.contextmanager
def mounted_proc(root: Path) -> Iterator[None]:
    proc = root / "proc"
    subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(proc)], check=False)


def freeze_in_root(cache: Path, arch: Arch, log: Path, out: Path) -> str:
    wheels = wheelhouse(cache, arch, log)
    root = debian_root(cache, arch, log)
    chroot = ["chroot", str(root)]
    venv = f"/opt/build/venv-{wheels.name}"
    build = root / "opt/build"
    with mounted_proc(root):
        if not (root / venv.lstrip("/") / "bin/python").exists():
            with step(f"{arch.name}: build venv in the root"):
                shutil.copytree(wheels, build / "wheels", dirs_exist_ok=True)
                shutil.rmtree(root / (venv + ".partial").lstrip("/"), ignore_errors=True)
                run([*chroot, "/usr/bin/python3", "-m", "venv", venv + ".partial"], log, env=CLEAN_ENV)
                run([*chroot, venv + ".partial/bin/python", "-m", "pip", "install", "--quiet", "--no-index",
                     "--find-links", "/opt/build/wheels", *requirements()], log, env=CLEAN_ENV)  # fmt: skip
                (root / (venv + ".partial").lstrip("/")).rename(root / venv.lstrip("/"))
        copy_sources(build / "src")
        shutil.rmtree(build / "dist", ignore_errors=True)
        with step(f"{arch.name}: PyInstaller under qemu"):
            run(
                [*chroot, venv + "/bin/python", "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
                 "--distpath", "/opt/build/dist", "--workpath", "/opt/build/work", "/opt/build/src/packaging/posdiag.spec"],
                log, env=CLEAN_ENV,
            )  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(build / "dist/posdiag", out / "posdiag")
        return glibc_version(chroot)


def executable(cache: Path, arch: Arch, log: Path) -> tuple[Path, str]:
    """The frozen program for this tree, from the cache when the tree is unchanged."""
    done = cache / "artifacts" / f"{arch.name}-{source_key(arch)}"
    native = arch.name == os.uname().machine
    if not native:
        enable_binfmt(arch, log)  # also for a cached build: the tests run it under qemu
    if not (done / "posdiag").exists():
        with fresh(done) as tmp:
            build = freeze_here if native else freeze_in_root
            glibc = build(cache, arch, log, tmp)
            (tmp / "glibc").write_text(glibc)
    else:
        print(f"  {arch.name}: unchanged tree, executable from the cache ({done.name})")
        os.utime(done)  # in use: prune keeps the newest
    return done / "posdiag", (done / "glibc").read_text().strip()


def package(cache: Path, frozen: Path, arch: Arch, version: str, glibc: str, out: Path, log: Path) -> Path:
    """The .deb of this executable, from the cache when neither it nor the packaging changed."""
    from deb import build_deb  # noqa: PLC0415 - beside this file, which is on sys.path

    h = hashlib.sha256(frozen.read_bytes())
    inputs = [*(PACKAGING / "debian").iterdir(), PACKAGING / "deb.py", ROOT / "config/posdiag.service", ROOT / "config/posdiag.toml"]
    for path in sorted(inputs):
        h.update(path.read_bytes())
    done = cache / "debs-built" / f"{arch.deb}-{version}-{h.hexdigest()[:16]}"
    name = f"posdiag_{version}_{arch.deb}.deb"
    if not (done / name).exists():
        with step(f"{arch.name}: {name} (dpkg-deb, lintian)"), fresh(done) as tmp:
            build_deb(frozen, arch.deb, version, glibc, tmp, log)
    os.utime(done)
    shutil.copy2(done / name, out / name)
    return out / name


KEEP_BUILDS = 6  # per arch: the trees of a few branches stay cached side by side


def prune(cache: Path) -> None:
    """Drop all but the newest builds of each arch: every source change adds ~20 MB."""
    for kind in ("artifacts", "debs-built"):
        entries = sorted((cache / kind).glob("*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for arch in {p.name.split("-", 1)[0] for p in entries}:
            for stale in [p for p in entries if p.name.split("-", 1)[0] == arch][KEEP_BUILDS:]:
                shutil.rmtree(stale, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append", choices=sorted(ARCHES), help="default: both")
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--cache", type=Path, default=default_cache())
    parser.add_argument("--no-deb", action="store_true", help="executables only")
    args = parser.parse_args(argv)
    version = project()["version"]
    args.out.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    log = args.cache / "build.log"
    lock = (args.cache / "lock").open("w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time uses the root and the cache
    made: list[Path] = []
    for name in args.arch or sorted(ARCHES):
        arch = ARCHES[name]
        started = time.monotonic()
        print(f"{arch.name}:", flush=True)
        frozen, glibc = executable(args.cache, arch, log)
        target = args.out / f"posdiag-{version}-linux-{arch.name}"
        shutil.copy2(frozen, target)
        made.append(target)
        if not args.no_deb:
            made.append(package(args.cache, frozen, arch, version, glibc, args.out, log))
        print(f"  {arch.name}: {time.monotonic() - started:.0f} s", flush=True)
    prune(args.cache)
    print("artifacts:")
    too_big = []
    for path in made:
        size = path.stat().st_size
        print(f"  {size / (1 << 20):7.1f} MiB  {size:>10} B  {path.relative_to(args.out.parent) if args.out.parent in path.parents else path}")
        if path.suffix != ".deb" and size > MAX_EXECUTABLE:
            too_big.append(path.name)
    if too_big:
        print(f"build.py: over {MAX_EXECUTABLE >> 20} MiB: {', '.join(too_big)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
