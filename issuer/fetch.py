"""A guarded HTTP GET for the documents a verifier must fetch (DID documents, key documents, JWKS).

Every URL in a submitted credential is chosen by whoever submitted it, so a naive GET would let anyone
make this server probe its own network (SSRF). The defences, all on by default:

* HTTPS only (``allow_http`` to relax, for tests and intranets);
* the host is resolved here, every address is vetted (loopback, private, link-local, multicast,
  reserved, unspecified, and the same behind IPv4-mapped / 6to4 / NAT64 forms are refused unless
  ``allow_private``), and the connection goes to the vetted address itself, so a second DNS answer
  (rebinding) cannot swap it; TLS still checks the certificate against the host name (SNI and Host
  header are the name, not the address);
* redirects are followed by hand, each hop vetted again, at most ``max_redirects``;
* the body is streamed and abandoned past ``max_bytes``; one deadline covers the whole fetch.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

# Module-level so tests can replace them: the DNS lookup (a stub resolver) and the TCP connect (to keep
# every connection on the machine). Production code always uses the socket module's own functions.
getaddrinfo = socket.getaddrinfo
create_connection = socket.create_connection

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
DEFAULT_ACCEPT = (
    "application/did+json, application/did+ld+json, application/ld+json, application/json, "
    "application/jwk-set+json;q=0.9, */*;q=0.1"
)
_CHUNK = 16 * 1024
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class FetchError(Exception):
    """A document could not be fetched safely; the message says why."""


class FetchBudget:
    """Seconds that all the fetches of one request (or command) may take together, across threads.

    The timeout bounds one fetch; without a total, an award application of 200 badges, each naming
    another slow server (or path), would hold a worker for 200 timeouts.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._spent = 0.0
        self._lock = threading.Lock()

    def left(self) -> float:
        with self._lock:
            return self.seconds - self._spent

    def spend(self, seconds: float) -> None:
        with self._lock:
            self._spent += seconds


@dataclass(frozen=True)
class FetchPolicy:
    """What a fetch may do. The defaults are the safe ones: HTTPS, public addresses, small, quick."""

    allow_http: bool = False
    allow_private: bool = False
    timeout: float = 5.0
    max_bytes: int = 256 * 1024
    max_redirects: int = 3
    # A private trust store (an intranet CA, or a test's self-signed certificate); None = system CAs.
    ssl_context: ssl.SSLContext | None = None
    user_agent: str = "ob3-issuer-verifier/0.1"
    # Shared by every fetch made under this policy (one verifier, one request); None = no total.
    budget: FetchBudget | None = field(default=None, compare=False)


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str
    port: int
    path: str


def fetch_json(url: str, *, policy: FetchPolicy | None = None, accept: str = DEFAULT_ACCEPT) -> dict:
    """GET ``url`` under ``policy`` and return its body parsed as a JSON object."""
    body = fetch_bytes(url, policy=policy, accept=accept)
    try:
        document = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FetchError(f"{url} did not return valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise FetchError(f"{url} returned JSON that is not an object")
    return document


def fetch_bytes(url: str, *, policy: FetchPolicy | None = None, accept: str = DEFAULT_ACCEPT) -> bytes:
    """GET ``url`` under ``policy``, following vetted redirects; return the body of the final 200."""
    policy = policy or FetchPolicy()
    started = time.monotonic()
    allowed = policy.timeout
    if policy.budget is not None:
        allowed = min(allowed, policy.budget.left())
        if allowed <= 0:
            raise FetchError(f"{url}: not fetched: this request has used up its {policy.budget.seconds:g} s "
                             f"for fetching documents")
    try:
        return _fetch_following(url, policy, started + allowed, accept)
    finally:
        if policy.budget is not None:
            policy.budget.spend(time.monotonic() - started)


def _fetch_following(url: str, policy: FetchPolicy, deadline: float, accept: str) -> bytes:
    current = url
    for _ in range(policy.max_redirects + 1):
        target = _parse_target(current, policy)
        addresses = vet_host(target.host, target.port, policy)
        status, location, body = _get_once(target, addresses, policy, deadline, accept)
        if status in REDIRECT_STATUSES:
            if not location:
                raise FetchError(f"{current} redirected (HTTP {status}) without a Location")
            current = urljoin(current, location)
            continue
        if status != 200:
            raise FetchError(f"{current} answered HTTP {status}")
        return body
    raise FetchError(f"{url}: more than {policy.max_redirects} redirects")


def vet_host(host: str, port: int, policy: FetchPolicy) -> list[str]:
    """Resolve ``host`` and return its addresses, refusing any that the policy does not allow.

    One forbidden address refuses the host: a name that mixes public and internal addresses is either
    misconfigured or an attack, and picking the "good" one would leave the choice to the attacker.
    """
    addresses: list[str] = []
    for address in _lookup(host, port):
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise FetchError(f"{host} resolved to an unparseable address {address!r}") from None
        reason = blocked_reason(ip)
        if reason and not policy.allow_private:
            raise FetchError(f"{host} resolves to {ip}, a {reason} address; refused")
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise FetchError(f"cannot resolve {host}: no addresses")
    return addresses


def _lookup(host: str, port: int) -> list[str]:
    """The host's addresses: an IP literal as it is (no DNS query), a name through ``getaddrinfo``."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise FetchError(f"cannot resolve {host}: {exc}") from None
    return [str(info[4][0]).split("%", 1)[0] for info in infos]


def blocked_reason(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address is not a public Internet address (None if it is one)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            inner = blocked_reason(embedded)
            return f"IPv4-embedded {inner}" if inner else None
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "non-global"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form tunnels to (mapped, 6to4, Teredo client, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _parse_target(url: str, policy: FetchPolicy) -> _Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FetchError(f"invalid URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme == "http" and not policy.allow_http:
        raise FetchError(f"refusing plain HTTP for {url}: only HTTPS is allowed")
    if scheme not in ("http", "https"):
        raise FetchError(f"refusing URL scheme {scheme or '(none)'!r} in {url!r}")
    if parts.username is not None or parts.password is not None:
        raise FetchError(f"refusing URL with credentials: {url!r}")
    if not parts.hostname:
        raise FetchError(f"URL has no host: {url!r}")
    try:
        host = parts.hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise FetchError(f"invalid host name in {url!r}") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(url, scheme, host, port or (443 if scheme == "https" else 80), path)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to a vetted address while the Host header keeps the name."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address
        self.raw_sock: socket.socket | None = None

    def connect(self) -> None:
        self.sock = self.raw_sock = create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Connects to a vetted address; TLS verifies the certificate for the host name (SNI = name)."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float, context: ssl.SSLContext):
        super().__init__(host, port, timeout=timeout, context=context)
        self.address = address
        self.tls_context = context
        self.raw_sock: socket.socket | None = None

    def connect(self) -> None:
        sock = create_connection((self.address, self.port), self.timeout)
        try:
            self.sock = self.raw_sock = self.tls_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def _remaining(deadline: float, url: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchError(f"{url}: timed out")
    return left


def _get_once(
    target: _Target, addresses: list[str], policy: FetchPolicy, deadline: float, accept: str
) -> tuple[int, str | None, bytes]:
    """One GET to the first reachable vetted address: (status, Location, body)."""
    last_error: Exception | None = None
    for address in addresses:
        conn = _connection(target, address, policy, _remaining(deadline, target.url))
        try:
            conn.connect()
        except (ssl.SSLError, ssl.CertificateError) as exc:
            conn.close()
            raise FetchError(f"{target.url}: TLS failure: {exc}") from None
        except OSError as exc:
            conn.close()
            last_error = exc
            continue
        try:
            return _exchange(conn, target, policy, deadline, accept)
        finally:
            conn.close()
    if isinstance(last_error, TimeoutError):
        raise FetchError(f"{target.url}: timed out connecting")
    raise FetchError(f"{target.url}: cannot connect: {last_error}")


def _connection(target: _Target, address: str, policy: FetchPolicy, timeout: float):
    if target.scheme == "https":
        context = policy.ssl_context or ssl.create_default_context()
        return _PinnedHTTPSConnection(target.host, target.port, address=address, timeout=timeout,
                                      context=context)
    return _PinnedHTTPConnection(target.host, target.port, address=address, timeout=timeout)


def _exchange(conn, target: _Target, policy: FetchPolicy, deadline: float, accept: str):
    headers = {"Accept": accept, "Accept-Encoding": "identity", "User-Agent": policy.user_agent}
    try:
        conn.request("GET", target.path, headers=headers)
        conn.raw_sock.settimeout(_remaining(deadline, target.url))
        response = conn.getresponse()
        if response.status in REDIRECT_STATUSES:
            return response.status, response.getheader("Location"), b""
        if response.status != 200:
            return response.status, None, b""
        return 200, None, _read_body(conn, response, target, policy, deadline)
    except TimeoutError:
        raise FetchError(f"{target.url}: timed out") from None
    except (ssl.SSLError, ssl.CertificateError) as exc:
        raise FetchError(f"{target.url}: TLS failure: {exc}") from None
    except (http.client.HTTPException, OSError) as exc:
        raise FetchError(f"{target.url}: bad HTTP exchange: {exc!r}") from None


def _read_body(conn, response: http.client.HTTPResponse, target: _Target, policy: FetchPolicy,
               deadline: float) -> bytes:
    declared = response.getheader("Content-Length")
    if declared and declared.strip().isdigit() and int(declared) > policy.max_bytes:
        raise FetchError(f"{target.url}: body of {declared} bytes exceeds the {policy.max_bytes}-byte limit")
    chunks: list[bytes] = []
    total = 0
    while True:
        conn.raw_sock.settimeout(_remaining(deadline, target.url))
        chunk = response.read1(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > policy.max_bytes:
            raise FetchError(f"{target.url}: body exceeds the {policy.max_bytes}-byte limit")
        chunks.append(chunk)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")
