"""remote/link.py against a real TLS server on loopback: kept-alive connections, TLS
session resumption after the server closes, no redirects, one-line errors."""

import http.server
import json
import ssl
import subprocess
import threading

import pytest

from remote.link import Link, LinkError


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


class Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: list = []
    answers: dict = {}

    def setup(self):
        super().setup()
        self.connections.append(self.connection)

    def log_message(self, *args):
        pass

    def do_GET(self):
        status, body, close = self.answers.get(self.path, (200, b'{"ok": true}', False))
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "https://elsewhere.invalid/")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET


@pytest.fixture
def server(certificate):
    cert, key = certificate
    handler = type("H", (Recorder,), {"connections": [], "answers": {}})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd, handler, f"https://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_exchanges_share_one_kept_alive_connection(server, certificate):
    _, handler, url = server
    link = Link(url, "tok", str(certificate[0]))
    answers = [link.exchange("GET", "/a") for _ in range(3)]
    assert [a.body for a in answers] == [{"ok": True}] * 3
    assert len(handler.connections) == 1


def test_a_closed_connection_is_reopened_with_the_tls_session_resumed(server, certificate):
    _, handler, url = server
    handler.answers["/bye"] = (204, b"", True)
    link = Link(url, "tok", str(certificate[0]))
    link.exchange("GET", "/bye")
    assert link.conn is None and link.session is not None
    link.exchange("GET", "/a")  # a new connection, kept open this time
    assert len(handler.connections) == 2
    assert link.conn.tls.session_reused  # the first handshake's session was offered and taken
    link.close()


def test_redirects_are_answers_not_followed(server, certificate):
    _, handler, url = server
    handler.answers["/moved"] = (302, b"", False)
    answer = Link(url, "tok", str(certificate[0])).exchange("GET", "/moved")
    assert answer.status == 302


def test_a_body_that_is_not_json_is_a_one_line_error(server, certificate):
    _, handler, url = server
    handler.answers["/html"] = (200, b"<html>proxy login</html>", False)
    with pytest.raises(LinkError, match="^server answered 200 with something that is not JSON$"):
        Link(url, "tok", str(certificate[0])).exchange("GET", "/html")


def test_a_certificate_from_another_ca_is_a_tls_error(server):
    _, _, url = server
    with pytest.raises(LinkError, match="^TLS with 127.0.0.1:\\d+ failed: CERTIFICATE_VERIFY_FAILED"):
        Link(url, "tok").exchange("GET", "/a")


def test_nobody_listening_is_a_one_line_error():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(LinkError, match=f"^cannot reach 127.0.0.1:{port}: Connection refused$"):
        Link(f"http://127.0.0.1:{port}", "tok").exchange("GET", "/")


def test_json_bodies_and_the_token_are_sent(server, certificate):
    _, handler, url = server
    seen = {}

    def do_POST(self):
        seen["auth"] = self.headers["Authorization"]
        seen["body"] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(202)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    handler.do_POST = do_POST
    answer = Link(url + "/base", "secret", str(certificate[0])).exchange("POST", "/x", {"a": "中"})
    assert (answer.status, answer.body) == (202, {})
    assert seen == {"auth": "Bearer secret", "body": {"a": "中"}}


def test_a_url_that_is_not_http_is_refused():
    with pytest.raises(LinkError, match="not an http"):
        Link("ftp://example.invalid", "tok")


def test_the_poll_reads_the_incidents_header_even_from_an_empty_answer(server, certificate):
    from remote.commands import fetch_next

    _, handler, url = server
    told = [{"id": "inc-1", "kind": "outage", "categories": ["host"], "summary": {"zh": "主机", "en": "host"}}]

    def do_GET(self):
        self.send_response(204)
        self.send_header("X-Posdiag-Incidents", json.dumps(told))
        self.send_header("Content-Length", "0")
        self.end_headers()

    handler.do_GET = do_GET
    reply = fetch_next(Link(url, "tok", str(certificate[0])), "T-1")
    assert reply.command is None and reply.incidents == told
