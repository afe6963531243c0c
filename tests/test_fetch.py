"""The guarded fetch: SSRF defences with a stub resolver, real behaviour against loopback servers only."""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from issuer import fetch
from issuer.fetch import FetchError, FetchPolicy, blocked_reason, fetch_json

LOCAL_HTTP = FetchPolicy(allow_http=True, allow_private=True, timeout=2.0)


def stub_resolver(table: dict[str, list[str]], calls: list[str] | None = None):
    """A getaddrinfo stand-in answering from ``table``; unknown names fail like NXDOMAIN."""

    def resolve(host, port, *args, **kwargs):
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out = []
        for address in table[host]:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
            out.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
        return out

    return resolve


@pytest.fixture
def no_outside_connections(monkeypatch) -> list[tuple[str, int]]:
    """Fail the test if a connection to anything but loopback is attempted; record every attempt."""
    attempts: list[tuple[str, int]] = []
    real = socket.create_connection

    def guarded(address, timeout=None, *args, **kwargs):
        attempts.append(address)
        if not ipaddress.ip_address(address[0]).is_loopback:
            raise AssertionError(f"test tried to connect outside the machine: {address}")
        return real(address, timeout, *args, **kwargs)

    monkeypatch.setattr(fetch, "create_connection", guarded)
    return attempts


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, Callable[[_Handler], None]] = {}

    def do_GET(self) -> None:
        route = self.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self.send_error(404)
            return
        try:
            route(self)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass

    def log_message(self, *args) -> None:
        pass


def send_json(handler: _Handler, document: object, status: int = 200) -> None:
    body = json.dumps(document).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def redirect(location: str) -> Callable[[_Handler], None]:
    def route(handler: _Handler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


@contextmanager
def serve(routes: dict[str, Callable[[_Handler], None]],
          tls: ssl.SSLContext | None = None) -> Iterator[http.server.ThreadingHTTPServer]:
    """A threaded HTTP(S) server on 127.0.0.1 with the given routes, shut down afterwards."""
    handler = type("Handler", (_Handler,), {"routes": routes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def make_tls(hostname: str, tmp_path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for ``hostname``: (server context, client context trusting it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_path, key_path)
    client_ctx = ssl.create_default_context(cafile=str(cert_path))
    return server_ctx, client_ctx


# --- address vetting -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("192.168.1.10", "private"),
        ("169.254.169.254", "link-local"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "non-global"),
        ("::ffff:127.0.0.1", "IPv4-embedded loopback"),
        ("::ffff:169.254.169.254", "IPv4-embedded link-local"),
        ("2002:a00:1::", "IPv4-embedded private"),
        ("64:ff9b::a9fe:a9fe", "IPv4-embedded link-local"),
    ],
)
def test_non_public_addresses_are_classified(address: str, reason: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::6810:84e5", "::ffff:93.184.215.14"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "224.0.0.1",
                                     "::ffff:10.0.0.1"])
def test_hosts_resolving_to_internal_addresses_are_refused(monkeypatch, no_outside_connections,
                                                           address: str) -> None:
    monkeypatch.setattr(fetch, "getaddrinfo", stub_resolver({"evil.test": [address]}))
    with pytest.raises(FetchError, match="refused"):
        fetch_json("https://evil.test/.well-known/did.json", policy=FetchPolicy())
    assert no_outside_connections == []


def test_a_host_mixing_public_and_private_addresses_is_refused(monkeypatch, no_outside_connections) -> None:
    monkeypatch.setattr(fetch, "getaddrinfo", stub_resolver({"mixed.test": ["93.184.215.14", "10.1.2.3"]}))
    with pytest.raises(FetchError, match="10.1.2.3"):
        fetch_json("https://mixed.test/did.json", policy=FetchPolicy())
    assert no_outside_connections == []


def test_ip_literal_urls_are_vetted_too(no_outside_connections) -> None:
    with pytest.raises(FetchError, match="link-local"):
        fetch_json("https://169.254.169.254/latest/meta-data", policy=FetchPolicy())
    with pytest.raises(FetchError, match="loopback"):
        fetch_json("https://[::1]/x", policy=FetchPolicy())


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://issuer.test/did.json", "plain HTTP"),
        ("ftp://issuer.test/did.json", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("https://user:pw@issuer.test/did.json", "credentials"),
        ("https:///did.json", "no host"),
        ("https://issuer.test:99999/", "invalid URL"),
    ],
)
def test_unsafe_or_malformed_urls_are_refused_before_any_lookup(monkeypatch, url: str, message: str) -> None:
    calls: list[str] = []
    monkeypatch.setattr(fetch, "getaddrinfo", stub_resolver({}, calls))
    with pytest.raises(FetchError, match=message):
        fetch_json(url, policy=FetchPolicy())
    assert calls == []


def test_unresolvable_host_is_a_fetch_error(monkeypatch) -> None:
    monkeypatch.setattr(fetch, "getaddrinfo", stub_resolver({}))
    with pytest.raises(FetchError, match="cannot resolve nowhere.test"):
        fetch_json("https://nowhere.test/did.json")


# --- real exchanges with loopback servers ------------------------------------------------------------

def test_local_server_works_when_http_and_private_are_allowed(no_outside_connections) -> None:
    with serve({"/did.json": lambda h: send_json(h, {"id": "did:web:example"})}) as server:
        port = server.server_address[1]
        assert fetch_json(f"http://127.0.0.1:{port}/did.json", policy=LOCAL_HTTP) == {"id": "did:web:example"}


def test_local_server_is_refused_under_the_default_policy(no_outside_connections) -> None:
    with serve({"/did.json": lambda h: send_json(h, {})}) as server, pytest.raises(FetchError):
        fetch_json(f"http://127.0.0.1:{server.server_address[1]}/did.json")
    assert no_outside_connections == []


def test_connection_goes_to_the_vetted_address_and_keeps_the_host_name(monkeypatch,
                                                                      no_outside_connections) -> None:
    seen_hosts: list[str] = []

    def echo_host(handler: _Handler) -> None:
        seen_hosts.append(handler.headers["Host"])
        send_json(handler, {"ok": True})

    calls: list[str] = []
    monkeypatch.setattr(fetch, "getaddrinfo", stub_resolver({"issuer.test": ["127.0.0.1"]}, calls))
    with serve({"/did.json": echo_host}) as server:
        port = server.server_address[1]
        assert fetch_json(f"http://issuer.test:{port}/did.json", policy=LOCAL_HTTP) == {"ok": True}
    assert calls == ["issuer.test"]
    assert no_outside_connections == [("127.0.0.1", port)]
    assert seen_hosts == [f"issuer.test:{port}"]


def test_https_uses_the_pinned_address_with_sni_and_certificate_for_the_name(monkeypatch, tmp_path,
                                                                          no_outside_connections) -> None:
    server_tls, client_tls = make_tls("issuer.test", tmp_path)
    monkeypatch.setattr(fetch, "getaddrinfo", stub_resolver({"issuer.test": ["127.0.0.1"]}))
    policy = FetchPolicy(allow_private=True, ssl_context=client_tls, timeout=2.0)
    with serve({"/.well-known/did.json": lambda h: send_json(h, {"id": "did:web:issuer.test"})},
               tls=server_tls) as server:
        port = server.server_address[1]
        document = fetch_json(f"https://issuer.test:{port}/.well-known/did.json", policy=policy)
    assert document == {"id": "did:web:issuer.test"}


def test_https_certificate_for_another_name_is_rejected(monkeypatch, tmp_path,
                                                        no_outside_connections) -> None:
    server_tls, client_tls = make_tls("other.test", tmp_path)
    monkeypatch.setattr(fetch, "getaddrinfo", stub_resolver({"issuer.test": ["127.0.0.1"]}))
    policy = FetchPolicy(allow_private=True, ssl_context=client_tls, timeout=2.0)
    with serve({"/did.json": lambda h: send_json(h, {})}, tls=server_tls) as server:
        with pytest.raises(FetchError, match="TLS"):
            fetch_json(f"https://issuer.test:{server.server_address[1]}/did.json", policy=policy)


def test_redirects_are_followed_within_the_limit() -> None:
    routes = {"/a": redirect("/b"), "/b": redirect("/c"), "/c": lambda h: send_json(h, {"at": "c"})}
    with serve(routes) as server:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert fetch_json(f"{base}/a", policy=LOCAL_HTTP) == {"at": "c"}
        with pytest.raises(FetchError, match="more than 1 redirects"):
            fetch_json(f"{base}/a", policy=FetchPolicy(allow_http=True, allow_private=True, max_redirects=1))


@pytest.mark.parametrize("location", ["http://internal.test/secret",
                                      "http://169.254.169.254/latest/meta-data",
                                      "http://[::ffff:127.0.0.1]/x"])
def test_redirect_to_an_internal_address_is_refused(monkeypatch, no_outside_connections,
                                                    location: str) -> None:
    """The first hop is a 'public' name (its connection is steered to a loopback server); the redirect is
    re-vetted and refused although the first hop was allowed."""
    with serve({"/start": redirect(location)}) as server:
        local = server.server_address
        public_ip = "93.184.215.14"
        monkeypatch.setattr(fetch, "getaddrinfo",
                            stub_resolver({"public.test": [public_ip], "internal.test": ["10.0.0.1"]}))

        def steer(address, timeout=None, *args, **kwargs):
            no_outside_connections.append(address)
            assert address[0] == public_ip, f"connection to an unvetted address {address}"
            return socket.create_connection(local, timeout)

        monkeypatch.setattr(fetch, "create_connection", steer)
        with pytest.raises(FetchError, match="refused"):
            fetch_json(f"http://public.test:{local[1]}/start",
                       policy=FetchPolicy(allow_http=True, timeout=2.0))
    assert no_outside_connections == [(public_ip, local[1])]


def test_redirect_from_https_down_to_http_is_refused(monkeypatch, tmp_path, no_outside_connections) -> None:
    server_tls, client_tls = make_tls("issuer.test", tmp_path)
    monkeypatch.setattr(fetch, "getaddrinfo", stub_resolver({"issuer.test": ["127.0.0.1"]}))
    policy = FetchPolicy(allow_private=True, ssl_context=client_tls, timeout=2.0)
    with serve({"/did.json": redirect("http://issuer.test/did.json")}, tls=server_tls) as server:
        with pytest.raises(FetchError, match="plain HTTP"):
            fetch_json(f"https://issuer.test:{server.server_address[1]}/did.json", policy=policy)


def test_endless_body_is_aborted_at_max_bytes() -> None:
    def endless(handler: _Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()
        handler.wfile.write(b'{"padding": "')
        while True:
            handler.wfile.write(b"x" * 4096)

    policy = FetchPolicy(allow_http=True, allow_private=True, max_bytes=64 * 1024, timeout=2.0)
    with serve({"/big": endless}) as server:
        started = time.monotonic()
        with pytest.raises(FetchError, match="65536-byte limit"):
            fetch_json(f"http://127.0.0.1:{server.server_address[1]}/big", policy=policy)
        assert time.monotonic() - started < 2.0


def test_declared_oversized_body_is_refused_before_reading() -> None:
    def declared(handler: _Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(10 * 1024 * 1024))
        handler.end_headers()

    with serve({"/big": declared}) as server, pytest.raises(FetchError, match="exceeds"):
        fetch_json(f"http://127.0.0.1:{server.server_address[1]}/big", policy=LOCAL_HTTP)


@pytest.mark.parametrize("style", ["silent", "trickle"])
def test_slow_server_times_out_within_the_deadline(style: str) -> None:
    """A silent server trips the socket timeout; one that trickles a byte at a time, resetting every
    socket timeout, still trips the single overall deadline."""

    def slow(handler: _Handler) -> None:
        if style == "silent":
            time.sleep(2.0)
            return
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        for _ in range(1000):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.05)

    policy = FetchPolicy(allow_http=True, allow_private=True, timeout=0.5)
    with serve({"/slow": slow}) as server:
        started = time.monotonic()
        with pytest.raises(FetchError, match="timed out"):
            fetch_json(f"http://127.0.0.1:{server.server_address[1]}/slow", policy=policy)
        assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"[1, 2]", "not an object"), (b"{oops", "valid JSON"), (b'{"n": NaN}', "valid JSON"),
     (b"\xff\xfe{}", "valid JSON")],
)
def test_non_object_or_invalid_json_is_a_fetch_error(body: bytes, message: str) -> None:
    def raw(handler: _Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with serve({"/doc": raw}) as server, pytest.raises(FetchError, match=message):
        fetch_json(f"http://127.0.0.1:{server.server_address[1]}/doc", policy=LOCAL_HTTP)


def test_http_errors_are_reported_with_status() -> None:
    with serve({}) as server, pytest.raises(FetchError, match="HTTP 404"):
        fetch_json(f"http://127.0.0.1:{server.server_address[1]}/missing", policy=LOCAL_HTTP)
