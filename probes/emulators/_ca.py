"""Throwaway certificates for the simulated acquirer: a CA and a server certificate
for localhost with any validity window (expired ones included).

Made with `cryptography` when it is installed (the development and server installs),
otherwise with the `openssl` command line: the terminal executable carries no
`cryptography` (its wheel alone is larger than the rest of the agent).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

HOST = "localhost"
BACKENDS = ("cryptography", "openssl")


class NoBackend(RuntimeError):
    """Neither `cryptography` nor the `openssl` command is there."""


@dataclass(frozen=True)
class Authority:
    cert_pem: bytes
    key_pem: bytes


def available_backend() -> str | None:
    if importlib.util.find_spec("cryptography") is not None:
        return "cryptography"
    if shutil.which("openssl"):
        return "openssl"
    return None


def make_ca(common_name: str, workdir: Path, backend: str) -> Authority:
    if backend == "cryptography":
        return _crypto_ca(common_name)
    return _openssl_ca(common_name, workdir)


def issue(ca: Authority, not_after: dt.datetime, workdir: Path, backend: str) -> tuple[bytes, bytes]:
    """A server certificate for localhost and 127.0.0.1 signed by `ca`, as PEM (cert, key)."""
    not_before = min(dt.datetime.now(dt.UTC), not_after) - dt.timedelta(days=1)
    if backend == "cryptography":
        return _crypto_issue(ca, not_before, not_after)
    return _openssl_issue(ca, not_before, not_after, workdir)


def _crypto_ca(common_name: str) -> Authority:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Authority(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def _crypto_issue(ca: Authority, not_before: dt.datetime, not_after: dt.datetime) -> tuple[bytes, bytes]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(HOST), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


# `openssl ca` is the one openssl 3.0 command that sets both ends of the validity window.
CA_CONFIG = """\
[ca]
default_ca = sim
[sim]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = anything
unique_subject = no
[anything]
commonName = supplied
[server]
basicConstraints = critical,CA:FALSE
subjectAltName = DNS:{host},IP:127.0.0.1
extendedKeyUsage = serverAuth
"""


def _openssl(workdir: Path, *args: str) -> None:
    done = subprocess.run(["openssl", *args], cwd=workdir, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise NoBackend(f"openssl {args[0]} failed: {last}")


def _new_dir(workdir: Path, prefix: str) -> Path:
    index = sum(1 for p in workdir.iterdir() if p.name.startswith(prefix))
    area = workdir / f"{prefix}{index}"
    area.mkdir()
    return area


def _openssl_ca(common_name: str, workdir: Path) -> Authority:
    area = _new_dir(workdir, "ca-")
    _openssl(
        area, "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", f"/CN={common_name}", "-days", "3650", "-keyout", "ca.key", "-out", "ca.pem",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return Authority((area / "ca.pem").read_bytes(), (area / "ca.key").read_bytes())


def _openssl_issue(
    ca: Authority, not_before: dt.datetime, not_after: dt.datetime, workdir: Path
) -> tuple[bytes, bytes]:
    area = _new_dir(workdir, "issue-")
    (area / "ca.pem").write_bytes(ca.cert_pem)
    (area / "ca.key").write_bytes(ca.key_pem)
    (area / "ca.cnf").write_text(CA_CONFIG.format(host=HOST), encoding="ascii")
    (area / "index.txt").write_text("", encoding="ascii")
    (area / "serial").write_text("1000\n", encoding="ascii")
    stamp = "%Y%m%d%H%M%SZ"
    _openssl(
        area, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", f"/CN={HOST}", "-keyout", "server.key", "-out", "server.csr",
    )  # fmt: skip
    _openssl(
        area, "ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key", "-in", "server.csr",
        "-out", "server.pem", "-notext", "-extensions", "server",
        "-startdate", not_before.astimezone(dt.UTC).strftime(stamp),
        "-enddate", not_after.astimezone(dt.UTC).strftime(stamp),
    )  # fmt: skip
    return (area / "server.pem").read_bytes(), (area / "server.key").read_bytes()
