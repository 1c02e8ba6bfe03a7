"""The Debian package of one frozen executable, made with dpkg-deb (no network) and
checked with lintian. Layout and maintainer scripts: packaging/debian/."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEBIAN = HERE / "debian"
REPO = HERE.parent
VENV_EXEC = "/opt/posdiag/.venv/bin/posdiag"
SERVICE_USER = "User=posdiag\nGroup=posdiag\n"
# One-file executables unpack into TMPDIR at each start: tmpfs, not flash.
SERVICE_TMP = "Environment=TMPDIR=/run/posdiag\n"


def unit() -> str:
    """config/posdiag.service as the package installs it: its own path, its own user."""
    text = (REPO / "config/posdiag.service").read_text(encoding="utf-8")
    if f"ExecStart={VENV_EXEC} " not in text or "\n[Service]\n" not in text:
        sys.exit(f"deb.py: config/posdiag.service no longer starts {VENV_EXEC}: update packaging/deb.py")
    text = text.replace(f"ExecStart={VENV_EXEC} ", "ExecStart=/usr/bin/posdiag ")
    text = text.replace("install as /etc/systemd/system/posdiag.service", "installed by the posdiag package")
    text = text.replace("SupplementaryGroups=dialout lp", "SupplementaryGroups=dialout plugdev lp")
    text = text.replace("the posdiag user must be in dialout and lp.", "the posdiag user is in dialout, plugdev and lp.")
    return text.replace("\n[Service]\n", "\n[Service]\n" + SERVICE_USER + SERVICE_TMP, 1)


def changelog_version() -> str:
    first = (DEBIAN / "changelog").read_text(encoding="utf-8").splitlines()[0]
    return first.split("(", 1)[1].split(")", 1)[0]


def put(root: Path, path: str, data: bytes, mode: int = 0o644) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    target.chmod(mode)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def build_deb(executable: Path, arch: str, version: str, glibc: str, out: Path, log: Path) -> Path:
    if changelog_version() != version:
        sys.exit(f"deb.py: packaging/debian/changelog is at {changelog_version()}, pyproject.toml at {version}: add an entry")
    with tempfile.TemporaryDirectory(prefix="posdiag-deb-") as work:
        root = Path(work) / "root"
        put(root, "/usr/bin/posdiag", executable.read_bytes(), 0o755)
        put(root, "/etc/posdiag/posdiag.toml", (REPO / "config/posdiag.toml").read_bytes())
        put(root, "/lib/systemd/system/posdiag.service", unit().encode())
        doc = "/usr/share/doc/posdiag"
        put(root, f"{doc}/copyright", (DEBIAN / "copyright").read_bytes())
        put(root, f"{doc}/changelog.gz", gz((DEBIAN / "changelog").read_bytes()))
        put(root, "/usr/share/lintian/overrides/posdiag", (DEBIAN / "lintian-overrides").read_bytes())
        for directory in root.rglob("*"):
            if directory.is_dir():
                directory.chmod(0o755)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        md5sums = "".join(
            f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.relative_to(root)}\n"  # noqa: S324 - dpkg's format
            for p in files
            if not str(p.relative_to(root)).startswith("etc/")
        )
        installed_kib = sum((p.stat().st_size + 1023) // 1024 for p in files)
        control = (DEBIAN / "control").read_text(encoding="utf-8").format(
            version=version, arch=arch, installed_kib=installed_kib, glibc=glibc
        )
        put(root, "/DEBIAN/control", control.encode())
        put(root, "/DEBIAN/md5sums", md5sums.encode())
        put(root, "/DEBIAN/conffiles", b"/etc/posdiag/posdiag.toml\n")
        for script in ("postinst", "prerm", "postrm"):
            put(root, f"/DEBIAN/{script}", (DEBIAN / script).read_bytes(), 0o755)
        (root / "DEBIAN").chmod(0o755)
        deb = out / f"posdiag_{version}_{arch}.deb"
        run_logged(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(deb)], log)
    lint(deb, log)
    return deb


def run_logged(cmd: list[str], log: Path) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}")
    if done.returncode != 0:
        sys.exit(f"deb.py: {' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def lint(deb: Path, log: Path) -> None:
    """lintian's errors stop the build; its warnings are printed."""
    if not shutil.which("lintian"):
        print(f"  {deb.name}: lintian not installed, not checked")
        return
    done = subprocess.run(["lintian", "--fail-on", "error", "--tag-display-limit", "0", str(deb)], capture_output=True, text=True, check=False)
    with log.open("a") as f:
        f.write(f"$ lintian {deb}\n{done.stdout}{done.stderr}")
    for line in done.stdout.splitlines():
        print(f"  lintian: {line}")
    if done.returncode != 0:
        sys.exit(f"deb.py: lintian found errors in {deb.name}")
    print(f"  {deb.name}: lintian clean of errors")
