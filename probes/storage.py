"""Free space, inodes, read-only mounts, a real write test, and eMMC wear.

eMMC attributes per drivers/mmc/core/mmc.c: life_time prints two bytes "0xAA 0xBB"
(type A, type B; 0x01-0x0A = 0-10 % ... 90-100 % of life used, 0x0B exceeded) and
pre_eol_info one byte (0x01 normal, 0x02 warning, 0x03 urgent). Some kernels print
without the 0x prefix, so both parse with int(x, 16).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from probes import ProbeContext
from probes._sysfs import read_text
from probes.contract.records import Finding, MetricValue, Observation
from probes.contract.settings import ProbeSettings, bounded

NAME = "storage"
FINDINGS = (
    "storage.disk_low",
    "storage.disk_full",
    "storage.inodes_exhausted",
    "storage.readonly",
    "storage.write_failed",
    "storage.slow",
    "storage.emmc_wear",
    "storage.emmc_eol",
)
LIFE_EXCEEDED = 0x0B
PRE_EOL_WARNING, PRE_EOL_URGENT = 0x02, 0x03


@dataclass(frozen=True)
class StorageSettings(ProbeSettings):
    mounts: list[str]
    scratch_dir: str
    disk_low_pct: float = bounded(0, 100)
    disk_full_pct: float = bounded(0, 100)
    inodes_exhausted_pct: float = bounded(0, 100)
    write_test_count: int = bounded(0, 100)
    write_test_bytes: int = bounded(1, 16 * 1024 * 1024)
    slow_write_ms: float = bounded(0, 60000)
    emmc_wear_level: int = bounded(1, 11)


SETTINGS = StorageSettings


def run(settings: StorageSettings, ctx: ProbeContext) -> Observation:
    findings: list[Finding] = []
    metrics: dict[str, MetricValue] = {}
    mount_table = read_mounts(ctx.proc("mounts"))
    usage: list[dict[str, MetricValue]] = []
    for path in settings.mounts:
        findings += check_space(path, settings, usage)
        options = mount_options(mount_table, path)
        if options is not None and "ro" in options:
            findings.append(Finding.fail("storage.readonly", f"{path} is mounted read-only", mount=path))
    if usage:  # plain metric names: the fullest mount's figures, the mount named as a field
        metrics.update(max(usage, key=lambda u: u.get("used_pct", 0)))
    findings += write_test(Path(settings.scratch_dir), settings, ctx, metrics)
    findings += check_emmc(ctx, settings, metrics)
    return Observation(findings, metrics)


def check_space(path: str, s: StorageSettings, usage: list[dict[str, MetricValue]]) -> list[Finding]:
    """Findings on one mount's space and inodes; its figures are appended to `usage`."""
    try:
        st = os.statvfs(path)
    except OSError as exc:
        return [Finding.warn("storage.write_failed", f"cannot stat {path}: {exc.strerror}", mount=path)]
    found = []
    figures: dict[str, MetricValue] = {"mount": path}
    if st.f_blocks:
        used_pct = round(100.0 * (st.f_blocks - st.f_bfree) / (st.f_blocks - st.f_bfree + st.f_bavail), 1)
        free_mib = round(st.f_bavail * st.f_frsize / 2**20, 1)
        figures.update(used_pct=used_pct, free_mib=free_mib)
        space = {"mount": path, "used_pct": used_pct, "free_mib": free_mib}
        if used_pct >= s.disk_full_pct:
            detail = f"{path} is full: {used_pct:.1f} % used reaches disk_full_pct {s.disk_full_pct:g}, {free_mib:.1f} MiB free"
            found.append(Finding.fail("storage.disk_full", detail, **space, limit_pct=s.disk_full_pct))
        elif used_pct >= s.disk_low_pct:
            detail = f"{path} is low on space: {used_pct:.1f} % used reaches disk_low_pct {s.disk_low_pct:g}, {free_mib:.1f} MiB free"
            found.append(Finding.warn("storage.disk_low", detail, **space, limit_pct=s.disk_low_pct))
    if st.f_files:
        inode_pct = round(100.0 * (st.f_files - st.f_ffree) / st.f_files, 1)
        figures["inodes_used_pct"] = inode_pct
        if inode_pct >= s.inodes_exhausted_pct:
            found.append(
                Finding.fail(
                    "storage.inodes_exhausted", f"{path} uses {inode_pct:.1f} % of its inodes", mount=path, inodes_used_pct=inode_pct
                )
            )
    usage.append(figures)
    return found


def read_mounts(path: Path) -> list[tuple[str, set[str]]]:
    """(mount point, options) from a /proc/mounts file; octal escapes such as \\040 decoded."""
    entries = []
    for line in (read_text(path) or "").splitlines():
        fields = line.split()
        if len(fields) >= 4:
            point = fields[1].encode().decode("unicode_escape")
            entries.append((point, set(fields[3].split(","))))
    return entries


def mount_options(table: list[tuple[str, set[str]]], path: str) -> set[str] | None:
    """Options of the mount that holds `path` (longest matching mount point, last one wins)."""
    best: tuple[int, set[str]] | None = None
    target = os.path.abspath(path)
    for point, options in table:
        if target == point or target.startswith(point.rstrip("/") + "/"):
            if best is None or len(point) >= best[0]:
                best = (len(point), options)
    return None if best is None else best[1]


def write_test(scratch: Path, s: StorageSettings, ctx: ProbeContext, metrics: dict[str, MetricValue]) -> list[Finding]:
    if s.write_test_count == 0:
        return []
    payload = os.urandom(s.write_test_bytes)
    latencies = []
    target = scratch / f".posdiag-write-test-{os.getpid()}"
    try:
        scratch.mkdir(parents=True, exist_ok=True)
        for _ in range(s.write_test_count):
            if ctx.remaining(0) <= 0:
                break
            t0 = time.monotonic()
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            latencies.append((time.monotonic() - t0) * 1000)
            if target.read_bytes() != payload:
                return [Finding.fail("storage.write_failed", f"read-back of {scratch} differs from what was written", dir=str(scratch))]
    except OSError as exc:
        return [Finding.fail("storage.write_failed", f"cannot write in {scratch}: {exc.strerror}", dir=str(scratch), errno=exc.errno)]
    finally:
        try:
            target.unlink()
        except OSError:
            pass
    if not latencies:
        return []
    worst = max(latencies)
    metrics["write_ms_max"] = round(worst, 2)
    if worst > s.slow_write_ms:
        return [Finding.warn("storage.slow", f"a {s.write_test_bytes}-byte write+fsync took {worst:.1f} ms", write_ms_max=round(worst, 2))]
    return []


def emmc_devices(ctx: ProbeContext) -> list[Path]:
    devices = sorted(ctx.sys("block").glob("mmcblk*/device"))
    devices += sorted(ctx.sys("class", "mmc_host").glob("mmc*/mmc*:*"))
    seen, unique = set(), []
    for device in devices:
        key = device.resolve()
        if key not in seen and (device / "life_time").exists():
            seen.add(key)
            unique.append(device)
    return unique


def parse_hex_bytes(text: str | None) -> list[int]:
    try:
        return [int(part, 16) for part in (text or "").split()]
    except ValueError:
        return []


def life_used_level(device: Path) -> int:
    """The worse of the two life_time estimates (JEDEC EXT_CSD DEVICE_LIFE_TIME_EST_TYP_A/B):
    0x01 means 0-10 % of life used, ... 0x0A 90-100 %, 0x0B exceeded."""
    return max(parse_hex_bytes(read_text(device / "life_time")), default=0)


def life_used_pct(level: int) -> int:
    """The upper end of the level's band, so a trend errs towards early warning."""
    return min(100, 10 * level) if level else 0


def check_emmc(ctx: ProbeContext, s: StorageSettings, metrics: dict[str, MetricValue]) -> list[Finding]:
    found = []
    for device in emmc_devices(ctx):
        pre_eol = parse_hex_bytes(read_text(device / "pre_eol_info"))
        worst = life_used_level(device)
        eol = pre_eol[0] if pre_eol else 0
        metrics["emmc_life_used_level"] = worst
        metrics["emmc_pre_eol"] = eol
        name = device.parent.name if device.name == "device" else device.name
        if worst >= LIFE_EXCEEDED or eol >= PRE_EOL_URGENT:
            found.append(Finding.fail("storage.emmc_eol", f"{name}: eMMC at end of life (life_time {worst:#04x}, pre_eol {eol:#04x})", device=name))
        elif worst >= s.emmc_wear_level or eol == PRE_EOL_WARNING:
            found.append(Finding.warn("storage.emmc_wear", f"{name}: eMMC {10 * (worst - 1)}-{10 * worst} % of life used (pre_eol {eol:#04x})", device=name))
    return found
