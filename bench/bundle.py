"""Bundle build time and size, redaction speed, and upload throughput to the loopback server.

Standard scenario: the diagnosis of `diagnose --code 03 --simulate network.dns_failed`,
three payment-app logs of 2,000 lines with card data on most lines, 200 lines of tail each.
Targets (issue 5): bundle under 32 KiB.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from _util import median_ms, row

from agent import bundle, config
from agent.diagnosis import diagnose
from agent.outbox import Outbox
from agent.upload import flush
from probes.emulators import SimulatedTerminal
from remote.client import Client
from remote.redact import Redactor
from tests.uploadserver import UploadServer

TOKEN = "bench-token"
BUILDS = 30
UPLOADS = 100
LINE_SHAPES = [
    "sale amount=000000012500 tid=12345678 card=4111111111111111 trace={i:06d}",
    'resp {{"rc":"03","cvv":"123","pan":"4111 1111 1111 1111","amount":12500}}',
    "swipe ;4111111111111111=25121011234567890?",
    "iso F35=6222021234567890128=2512101 F52: A1B2C3D4E5F60718",
    "connect acquirer.example.com:443 dns timeout after 2000 ms retry {i}",
    "socket closed by peer after {i} ms, queued reversal for trace {i:06d}",
]


def write_logs(work: Path) -> list[Path]:
    paths = []
    for name in ("payapp", "acquirer", "system"):
        path = work / f"{name}.log"
        with path.open("w") as fh:
            for i in range(2000):
                fh.write(f"2026-11-23 08:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d} I/{name}[{1200 + i % 7}] ")
                fh.write(LINE_SHAPES[i % len(LINE_SHAPES)].format(i=i) + "\n")
        paths.append(path)
    return paths


def redaction_texts(work: Path) -> dict[str, str]:
    """About 1 MB each: the card-heavy payapp log, a log without card data, a Chinese one."""
    clean = "".join(
        f"2026-11-23 08:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d} I/pay[1203] connect acquirer.example.com:443 "
        f"took {i * 7 % 900} ms retry {i % 5} state=IDLE amount=000000012500 trace={i:06d}\n"
        for i in range(8000)
    )
    chinese = "".join(
        f"2026-11-23 08:{i // 60 % 60:02d}:{i % 60:02d} 交易失败 应答码:05 终端号=12345678 金额 100.00 流水 {i:06d}\n"
        for i in range(12000)
    )
    return {"card-heavy log": (work / "payapp.log").read_text() * 5, "clean log": clean, "Chinese log": chinese}


def redaction_speed(text: str) -> float:
    """MB/s, the best of three runs."""
    best = min(timed(Redactor().text, text) for _ in range(3))
    return len(text.encode()) / best / 1e6


def timed(fn: object, arg: str) -> float:
    t0 = time.perf_counter()
    fn(arg)  # type: ignore[operator]
    return time.perf_counter() - t0


def standard_input(work: Path) -> tuple[bundle.BundleInput, bundle.Limits]:
    logs = write_logs(work)
    with SimulatedTerminal.from_spec("network.dns_failed") as terminal:
        cfg = config.load(None, {**terminal.overrides, "logs": {"files": [str(p) for p in logs]}})
        doc = diagnose(cfg, "03").to_dict()
    inp = bundle.diagnosis_input(cfg, doc, bundle.Trigger("error", "03", "iso8583"))
    return inp, bundle.Limits.from_config(cfg)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="posdiag-bench-") as tmp:
        work = Path(tmp)
        inp, limits = standard_input(work)
        samples, built = [], None
        for _ in range(BUILDS):
            t0 = time.perf_counter()
            built = bundle.build(inp, limits, TOKEN)
            samples.append(time.perf_counter() - t0)
        verify = []
        for _ in range(BUILDS):
            t0 = time.perf_counter()
            assert bundle.verify(built.data, TOKEN) == []
            verify.append(time.perf_counter() - t0)
        speeds = {name: redaction_speed(text) for name, text in redaction_texts(work).items()}

        print("bundle (diagnose --code 03 --simulate network.dns_failed, 3 logs x 200 lines)")
        row("build, median", f"{median_ms(samples):.1f} ms")
        row("verify, median", f"{median_ms(verify):.1f} ms")
        row("size", f"{len(built.data)} B", f"{len(built.data) / 1024:.1f} KiB", "target < 32 KiB")
        row("redaction counts", ", ".join(f"{k} {v}" for k, v in built.manifest["redaction"].items()))
        for name, speed in speeds.items():
            row(f"redaction speed, {name}", f"{speed:.1f} MB/s")

        outbox = Outbox(work / "outbox", 1 << 30)
        for _ in range(UPLOADS):
            one = bundle.build(inp, limits, TOKEN)
            outbox.put(one.data, one.bundle_id)
        total = sum(e.size for e in outbox.entries())
        with UploadServer(TOKEN) as server:
            settings = SimpleNamespace(
                server_url=server.url, token=TOKEN, ca_file="", connect_timeout_seconds=2, read_timeout_seconds=5,
                max_attempts=3, backoff_initial_seconds=0.1, backoff_max_seconds=1, retry_after_max_seconds=5,
            )
            t0 = time.perf_counter()
            report = flush(outbox, Client(settings))
            wall = time.perf_counter() - t0
        assert len(report.sent) == UPLOADS, report
        print(f"upload to the loopback test server ({UPLOADS} bundles, server verifies each)")
        row("throughput", f"{UPLOADS / wall:.0f} bundles/s", f"{total / wall / 1e6:.2f} MB/s")


if __name__ == "__main__":
    main()
