"""The simulated acquirer makes its certificates without `cryptography` (the terminal
executable has none): with the openssl command line, or with no TLS at all and a clear word."""

import pytest

from agent import config
from agent.runner import run_probes
from probes.contract.errors import UsageError
from probes.emulators import SimulatedTerminal, _ca, acquirer

pytestmark = pytest.mark.clock  # the date matters: tests/clock/run.py runs this module at midnight


def network_findings(spec: str) -> set[str]:
    with SimulatedTerminal.from_spec(spec) as terminal:
        sweep = run_probes(config.load(None, terminal.overrides), only=["network"])
    return {f.id for f in sweep.findings()}


@pytest.fixture
def openssl_only(monkeypatch):
    if not _ca.shutil.which("openssl"):
        pytest.skip("no openssl command on this machine")
    monkeypatch.setattr(_ca, "available_backend", lambda: "openssl")


@pytest.mark.parametrize("fault", ["healthy", *sorted(acquirer.CERT_FAULTS)])
def test_openssl_certificates_produce_the_same_findings(openssl_only, fault):
    found = network_findings(fault)
    assert found == (set() if fault == "healthy" else {fault})


def test_openssl_certificate_verifies_for_localhost_and_its_address(openssl_only, tmp_path):
    import datetime as dt
    import socket
    import ssl

    ca = _ca.make_ca("posdiag test CA", tmp_path, "openssl")
    cert, key = _ca.issue(ca, dt.datetime.now(dt.UTC) + dt.timedelta(days=30), tmp_path, "openssl")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "server.pem").write_bytes(cert + key)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "server.pem")
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    with acquirer.TlsEndpoint(server, 0.0) as endpoint:
        for name in ("localhost", "127.0.0.1"):
            with socket.create_connection(("127.0.0.1", endpoint.port), timeout=5) as raw:
                with client.wrap_socket(raw, server_hostname=name) as tls:
                    assert tls.getpeercert()["subject"] == ((("commonName", "localhost"),),)


def test_without_any_backend_tls_faults_are_refused_and_healthy_runs_plain(monkeypatch, capsys):
    monkeypatch.setattr(_ca, "available_backend", lambda: None)
    with pytest.raises(UsageError) as err:
        network_findings("network.cert_expired")
    assert "network.cert_expired" in str(err.value) and "openssl" in str(err.value)
    assert network_findings("healthy") == set()
    assert "without TLS" in capsys.readouterr().err
