"""TLS listeners, client-certificate identity and upstream contexts, over real sockets.

The server side runs as the gateway does it: a loop in a thread accepts
sockets and hands each to ``loop.connect_accepted_socket(..., ssl=...)`` with
``ListenerTLSContext.context`` (under uvloop and under asyncio). Clients are
Python's ``ssl``, ``curl`` and ``openssl s_client``. Certificates come from
``fastgw.testing.certs.TestPKI``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import hashlib
import json
import queue
import shutil
import socket
import ssl
import subprocess
import threading
import urllib.parse
from pathlib import Path

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from fastgw.config.model import CertScopes, ListenerTLS, ServiceTLS, TLSCertificate
from fastgw.testing.certs import IssuedCert, TestPKI
from fastgw.tls import (
    BAD_CLIENT_CERT,
    DEFAULT_CIPHERS,
    NO_CLIENT_CERT,
    SUBJECT_SOURCES,
    CertificateScopes,
    ClientIdentity,
    ListenerTLSContext,
    TLSConfigError,
    check_ciphers,
    check_scope_pattern,
    client_identity,
    handshake_failure_reason,
    identity_from_der,
    scopes_for,
    server_uri,
    upstream_context,
    xfcc_value,
)

ORDERS_URI = "spiffe://example.org/ns/prod/sa/orders"
WAIT = 5.0

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


# --- certificates ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Certs:
    pki: TestPKI
    server: IssuedCert
    rotated: IssuedCert
    alpha: IssuedCert
    wildcard: IssuedCert
    orders: IssuedCert
    expired: IssuedCert
    future: IssuedCert
    server_auth_only: IssuedCert
    impostor: IssuedCert
    foreign_server: IssuedCert
    upstream: IssuedCert
    gateway: IssuedCert
    server_with_uri: IssuedCert


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    pki = TestPKI(tmp_path_factory.mktemp("pki"))
    orders = pki.client("orders", uri=ORDERS_URI, dns="orders.internal.example.com")
    return Certs(
        pki=pki,
        server=pki.server("gateway.test"),
        rotated=pki.server("gateway.test", name="rotated"),
        alpha=pki.server("alpha.test", name="alpha", loopback=False, key_type="rsa"),
        wildcard=pki.server("*.beta.test", name="beta", loopback=False),
        orders=orders,
        expired=pki.expired_client(uri=ORDERS_URI),
        future=pki.not_yet_valid_client(uri=ORDERS_URI),
        server_auth_only=pki.server_auth_only_client(uri=ORDERS_URI),
        impostor=pki.impostor(orders),
        foreign_server=pki.other_ca().server("gateway.test", name="foreign-server"),
        upstream=pki.server("orders.internal", name="orders-upstream"),
        gateway=pki.client("gateway", uri="spiffe://example.org/gateway"),
        server_with_uri=pki.issue(
            "server-with-uri",
            alt_names=[x509.DNSName("localhost"), x509.UniformResourceIdentifier("spiffe://gw/x")],
            usages=("server",),
        ),
    )


def listener_tls(certs: Certs, **changes) -> ListenerTLS:
    return dataclasses.replace(
        ListenerTLS(cert=str(certs.server.chain), key=str(certs.server.key)), **changes
    )


def mtls(certs: Certs, client_auth: str = "require", **changes) -> ListenerTLS:
    changes.setdefault("client_ca", str(certs.pki.ca_file))
    return listener_tls(certs, client_auth=client_auth, **changes)


# --- a server that accepts like the gateway ----------------------------------------------------


class _Reply(asyncio.Protocol):
    """Answers each request head with what the server saw of the TLS connection, as JSON."""

    def __init__(self, server: TLSServer) -> None:
        self.server = server
        self.buffer = b""

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.transports.add(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        identities = {
            source: client_identity(ssl_object, source) for source in SUBJECT_SOURCES
        }
        identity = identities["san_uri"]
        self.seen = {
            "version": ssl_object.version(),
            "alpn": ssl_object.selected_alpn_protocol(),
            "cipher": ssl_object.cipher()[0],
            "reused": ssl_object.session_reused,
            "subjects": {source: i and i.subject for source, i in identities.items()},
            "thumbprint": identity and identity.thumbprint,
            "by": server_uri(ssl_object),
        }
        self.server.connections.put((ssl_object, identity))

    def connection_lost(self, exc) -> None:
        self.server.transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            body = json.dumps(self.seen).encode()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )


class TLSServer:
    def __init__(self, tls: ListenerTLSContext, new_loop, handshake_timeout: float = WAIT) -> None:
        self.tls = tls
        self.handshake_timeout = handshake_timeout
        self.new_loop = new_loop
        self.failures: queue.Queue[BaseException] = queue.Queue()
        self.connections: queue.Queue = queue.Queue()
        self.transports: set[asyncio.Transport] = set()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.loop = new_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> TLSServer:
        self.thread.start()
        self.accepting = asyncio.run_coroutine_threadsafe(self._accept(), self.loop)
        return self

    def __exit__(self, *exc_info) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(WAIT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        self.sock.close()
        self.loop.close()

    async def _stop(self) -> None:
        """Cancel accepting and pending handshakes, close connections: a quiet shutdown."""
        for transport in list(self.transports):
            transport.abort()
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task] = set()
        while True:
            conn, _ = await loop.sock_accept(self.sock)
            task = loop.create_task(self._serve(conn))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: _Reply(self),
                conn,
                ssl=self.tls.context,
                ssl_handshake_timeout=self.handshake_timeout,
            )
        except (OSError, TimeoutError) as exc:
            conn.close()
            self.failures.put(exc)

    def failure(self) -> BaseException:
        return self.failures.get(timeout=WAIT)

    def reload(self, tls: ListenerTLS) -> None:
        """Reload on the server's loop, as the gateway does on SIGHUP."""

        async def reload() -> None:
            self.tls.reload(tls)

        asyncio.run_coroutine_threadsafe(reload(), self.loop).result(WAIT)


LOOPS = {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


@pytest.fixture(params=list(LOOPS))
def serve(request):
    servers = []

    def start(tls: ListenerTLS | ListenerTLSContext, **options) -> TLSServer:
        context = tls if isinstance(tls, ListenerTLSContext) else ListenerTLSContext(tls)
        server = TLSServer(context, LOOPS[request.param], **options).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


# --- clients -----------------------------------------------------------------------------------


def client_context(
    certs: Certs,
    cert: IssuedCert | None = None,
    *,
    minimum: ssl.TLSVersion | None = None,
    maximum: ssl.TLSVersion | None = None,
    alpn: list[str] | None = None,
    verify: bool = True,
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.pki.ca_file))
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if minimum is not None:
        context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    if cert is not None:
        context.load_cert_chain(cert.chain, cert.key)
    return context


def connect(
    server: TLSServer,
    context: ssl.SSLContext,
    server_hostname: str | None = "localhost",
    session: ssl.SSLSession | None = None,
) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    try:
        return context.wrap_socket(raw, server_hostname=server_hostname, session=session)
    except BaseException:
        raw.close()
        raise


def ask(sock: ssl.SSLSocket) -> dict:
    """One request on ``sock``; what the server saw of the connection."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionResetError("closed before a response")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(4096)
    return json.loads(body)


def fetch(server: TLSServer, context: ssl.SSLContext, **options) -> dict:
    with connect(server, context, **options) as sock:
        return ask(sock)


def served_certificate(sock: ssl.SSLSocket) -> bytes:
    return sock.getpeercert(binary_form=True)


def refused(server: TLSServer, context: ssl.SSLContext, **options) -> str:
    """Connect and ask, expect the server to end it; the server's reason for the failure."""
    with pytest.raises((ssl.SSLError, ConnectionError)):
        fetch(server, context, **options)
    return handshake_failure_reason(server.failure())


# --- versions, ciphers, ALPN -------------------------------------------------------------------


def test_tls_1_2_and_1_3_are_accepted_by_default(certs, serve):
    server = serve(listener_tls(certs))
    assert fetch(server, client_context(certs))["version"] == "TLSv1.3"
    tls12 = client_context(certs, maximum=ssl.TLSVersion.TLSv1_2)
    seen = fetch(server, tls12)
    assert seen["version"] == "TLSv1.2"
    assert seen["cipher"] in DEFAULT_CIPHERS.split(":")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_1_0_and_1_1_are_refused(certs, serve, version):
    server = serve(listener_tls(certs))
    old = client_context(certs, minimum=ssl.TLSVersion.TLSv1, maximum=version)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    assert refused(server, old) == "protocol_version"


@needs_openssl
@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_openssl_s_client_cannot_use_tls_1_0_or_1_1(certs, serve, flag):
    server = serve(listener_tls(certs))
    result = s_client(server, flag, "-cipher", "DEFAULT:@SECLEVEL=0")
    assert "Cipher is (NONE)" in result.stdout or result.returncode != 0
    assert handshake_failure_reason(server.failure()) == "protocol_version"


def test_min_version_1_3_refuses_1_2(certs, serve):
    server = serve(listener_tls(certs, min_version="1.3"))
    assert fetch(server, client_context(certs))["version"] == "TLSv1.3"
    tls12 = client_context(certs, maximum=ssl.TLSVersion.TLSv1_2)
    assert refused(server, tls12) == "protocol_version"


def test_weak_tls_1_2_ciphers_are_refused(certs, serve):
    server = serve(listener_tls(certs))
    for weak in ("AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"):
        context = client_context(certs, maximum=ssl.TLSVersion.TLSv1_2)
        context.set_ciphers(weak)
        assert refused(server, context) == "no_shared_cipher", weak


def test_the_server_prefers_its_own_cipher_order(certs, serve):
    server = serve(listener_tls(certs))
    context = client_context(certs, maximum=ssl.TLSVersion.TLSv1_2)
    context.set_ciphers("ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256")
    assert fetch(server, context)["cipher"] == "ECDHE-ECDSA-AES128-GCM-SHA256"


def test_a_cipher_override(certs, serve):
    server = serve(listener_tls(certs, ciphers="ECDHE+CHACHA20"))
    tls12 = client_context(certs, maximum=ssl.TLSVersion.TLSv1_2)
    assert fetch(server, tls12)["cipher"] == "ECDHE-ECDSA-CHACHA20-POLY1305"


def test_an_override_cannot_turn_weak_ciphers_on():
    assert check_ciphers("ECDHE+AESGCM") is None
    assert check_ciphers("ECDHE-ECDSA-AES128-SHA") is None  # CBC, for old clients, on request
    for weak in ("AES128-SHA", "NULL-SHA256", "aNULL", "RC4", "DES-CBC3-SHA", "garbage"):
        assert "selects no cipher fastgw allows" in check_ciphers(weak), weak
    assert "not an OpenSSL cipher string" in check_ciphers("ECDHE AESGCM")
    with pytest.raises(TLSConfigError, match="ciphers: 'AES128-SHA' selects no cipher"):
        ListenerTLSContext(ListenerTLS(cert="x", key="y", ciphers="AES128-SHA"))


def test_alpn_gives_http_1_1_and_never_h2(certs, serve):
    server = serve(listener_tls(certs))
    assert fetch(server, client_context(certs, alpn=["h2", "http/1.1"]))["alpn"] == "http/1.1"
    assert fetch(server, client_context(certs, alpn=["h2"]))["alpn"] is None
    assert fetch(server, client_context(certs))["alpn"] is None


@needs_curl
def test_curl_is_served_http_1_1_even_when_it_offers_h2(certs, serve):
    server = serve(listener_tls(certs))
    result = curl(server, certs, "--http2", "-v")
    assert json.loads(result.stdout)["alpn"] == "http/1.1"
    assert "ALPN: server accepted http/1.1" in result.stderr or (
        "ALPN, server accepted to use http/1.1" in result.stderr
    )


def test_compression_is_off_and_tickets_are_issued(certs, serve):
    server = serve(listener_tls(certs))
    context = client_context(certs)
    with connect(server, context) as sock:
        ask(sock)
        assert sock.compression() is None
        session = sock.session
    assert session.has_ticket
    with connect(server, context, session=session) as sock:
        assert ask(sock)["reused"] is True
        assert sock.session_reused


@needs_openssl
def test_tls_1_2_renegotiation_is_refused(certs, serve):
    server = serve(listener_tls(certs))
    result = subprocess.run(
        f"(sleep 0.3; echo R; sleep 1) | openssl s_client -tls1_2 -connect 127.0.0.1:{server.port}",
        shell=True, capture_output=True, text=True, timeout=WAIT,
    )  # fmt: skip
    assert "RENEGOTIATING" in result.stderr
    assert "no renegotiation" in result.stderr


# --- SNI ---------------------------------------------------------------------------------------


def sni_listener(certs: Certs) -> ListenerTLS:
    return listener_tls(
        certs,
        certificates=(
            TLSCertificate(str(certs.alpha.chain), str(certs.alpha.key)),
            TLSCertificate(str(certs.wildcard.chain), str(certs.wildcard.key)),
            TLSCertificate(
                str(certs.rotated.chain), str(certs.rotated.key), server_names=("gamma.test",)
            ),
        ),
    )


@pytest.mark.parametrize(
    ("server_name", "expected"),
    [
        ("alpha.test", "alpha"),
        ("ALPHA.test", "alpha"),
        ("one.beta.test", "wildcard"),
        ("two.one.beta.test", "server"),
        ("beta.test", "server"),
        ("gamma.test", "rotated"),
        ("unknown.test", "server"),
        (None, "server"),
    ],
)
def test_sni_picks_the_certificate(certs, serve, server_name, expected):
    server = serve(sni_listener(certs))
    with connect(server, client_context(certs, verify=False), server_hostname=server_name) as sock:
        assert served_certificate(sock) == getattr(certs, expected).der
        ask(sock)


def test_sni_certificates_are_verified_by_name(certs, serve):
    server = serve(sni_listener(certs))
    assert fetch(server, client_context(certs), server_hostname="alpha.test")
    assert fetch(server, client_context(certs), server_hostname="x.beta.test")
    assert ListenerTLSContext(sni_listener(certs)).server_names == (
        "alpha.test", "gamma.test", "*.beta.test",
    )  # fmt: skip


@needs_openssl
def test_openssl_s_client_gets_the_certificate_of_its_server_name(certs, serve):
    server = serve(sni_listener(certs))
    result = s_client(server, "-servername", "alpha.test")
    assert "CN = alpha.test" in result.stdout


def test_the_uri_of_the_served_certificate_is_known(certs, serve):
    gateway = certs.server_with_uri
    server = serve(
        listener_tls(
            certs,
            certificates=(
                TLSCertificate(str(gateway.chain), str(gateway.key), server_names=("gw.test",)),
            ),
        )
    )
    context = client_context(certs, verify=False)
    assert fetch(server, context, server_hostname="gw.test")["by"] == "spiffe://gw/x"
    assert fetch(server, context)["by"] is None
    assert server_uri(None) is None


def test_two_certificates_cannot_claim_one_name(certs):
    twice = listener_tls(
        certs,
        certificates=(
            TLSCertificate(str(certs.alpha.chain), str(certs.alpha.key)),
            TLSCertificate(
                str(certs.rotated.chain), str(certs.rotated.key), server_names=("alpha.test",)
            ),
        ),
    )
    with pytest.raises(TLSConfigError, match=r"'alpha\.test' is also served by .*alpha-chain\.pem"):
        ListenerTLSContext(twice)


def test_a_certificate_without_dns_names_needs_server_names(certs):
    ip_only = certs.pki.server("192.0.2.7", name="ip-only", loopback=False)
    no_names = listener_tls(
        certs, certificates=(TLSCertificate(str(ip_only.chain), str(ip_only.key)),)
    )
    with pytest.raises(TLSConfigError, match="has no DNS name to be chosen by; list server_names"):
        ListenerTLSContext(no_names)


# --- reload ------------------------------------------------------------------------------------


def test_reload_swaps_the_certificate_for_new_handshakes_only(certs, serve):
    server = serve(listener_tls(certs))
    base = server.tls.context
    context = client_context(certs)
    established = connect(server, context)
    assert served_certificate(established) == certs.server.der
    ask(established)
    server.reload(listener_tls(certs, cert=str(certs.rotated.chain), key=str(certs.rotated.key)))
    assert server.tls.context is base
    with connect(server, context) as fresh:
        assert served_certificate(fresh) == certs.rotated.der
        ask(fresh)
    with established:
        assert ask(established)["version"] == "TLSv1.3"
        assert served_certificate(established) == certs.server.der


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def bad_pairs(certs: Certs, tmp: Path) -> dict[str, tuple[dict, str]]:
    encrypted = certs.rotated.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    garbage = write(tmp / "garbage.pem", b"-----BEGIN CERTIFICATE-----\nnot base64\n")
    return {
        "missing cert": (
            {"cert": str(tmp / "missing.crt")},
            r"missing.crt: cannot read the certificate: No such file",
        ),
        "missing key": (
            {"key": str(tmp / "missing.key")},
            r"missing.key: cannot read the key: No such file",
        ),
        "key of another cert": (
            {"key": str(certs.alpha.key)},
            r"alpha.key: the private key does not match the certificate in .*server-chain.pem",
        ),
        "garbage cert": ({"cert": garbage}, r"garbage.pem: the certificate file holds no PEM"),
        "garbage key": ({"key": garbage}, r"garbage.pem: not a PEM private key"),
        "cert as key": ({"key": str(certs.server.cert)}, r"server.crt: not a PEM private key"),
        "encrypted key": (
            {"cert": str(certs.rotated.chain), "key": write(tmp / "enc.key", encrypted)},
            r"enc.key: the private key is encrypted",
        ),
        "garbage client_ca": (
            {"client_auth": "require", "client_ca": garbage},
            r"garbage.pem: the client_ca file holds no PEM certificate",
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["missing cert", "missing key", "key of another cert", "garbage cert", "garbage key",
     "cert as key", "encrypted key", "garbage client_ca"],
)  # fmt: skip
def test_bad_files_are_refused_and_a_failed_reload_keeps_the_old(certs, serve, tmp_path, case):
    changes, message = bad_pairs(certs, tmp_path)[case]
    with pytest.raises(TLSConfigError, match=message):
        ListenerTLSContext(listener_tls(certs, **changes))
    server = serve(listener_tls(certs))
    base = server.tls.context
    with pytest.raises(TLSConfigError, match=message):
        server.reload(listener_tls(certs, **changes))
    assert server.tls.context is base
    assert server.tls.tls == listener_tls(certs)
    with connect(server, client_context(certs)) as sock:
        assert served_certificate(sock) == certs.server.der
        ask(sock)


def test_a_bad_sni_certificate_fails_the_whole_reload(certs, serve, tmp_path):
    server = serve(sni_listener(certs))
    broken = dataclasses.replace(
        sni_listener(certs),
        certificates=(TLSCertificate(str(certs.alpha.chain), str(certs.server.key)),),
    )
    with pytest.raises(TLSConfigError, match="does not match"):
        server.reload(broken)
    context = client_context(certs, verify=False)
    with connect(server, context, server_hostname="gamma.test") as sock:
        assert served_certificate(sock) == certs.rotated.der


def test_a_certificate_reload_keeps_sessions_resumable(certs, serve):
    server = serve(listener_tls(certs))
    context = client_context(certs)
    with connect(server, context) as sock:
        ask(sock)
        session = sock.session
    server.reload(listener_tls(certs, cert=str(certs.rotated.chain), key=str(certs.rotated.key)))
    with connect(server, context, session=session) as sock:
        assert ask(sock)["reused"] is True


def test_a_policy_reload_gives_a_new_context_and_ends_resumption(certs, serve):
    server = serve(mtls(certs, "optional"))
    base = server.tls.context
    context = client_context(certs, certs.orders)
    with connect(server, context) as sock:
        assert ask(sock)["subjects"]["san_uri"] == ORDERS_URI
        session = sock.session
    with connect(server, context, session=session) as sock:
        assert ask(sock)["reused"] is True
    # The new trust no longer includes the CA that issued the client certificate.
    other = certs.pki.other_ca()
    server.reload(mtls(certs, "optional", client_ca=str(other.ca_file)))
    assert server.tls.context is not base
    with pytest.raises((ssl.SSLError, ConnectionError)):
        fetch(server, context, session=session)
    assert handshake_failure_reason(server.failure()) == BAD_CLIENT_CERT


def test_reload_can_require_client_certificates(certs, serve):
    server = serve(listener_tls(certs))
    assert fetch(server, client_context(certs))["subjects"]["san_uri"] is None
    server.reload(mtls(certs))
    assert refused(server, client_context(certs)) == NO_CLIENT_CERT
    assert fetch(server, client_context(certs, certs.orders))["subjects"]["san_uri"] == ORDERS_URI


# --- client certificates -----------------------------------------------------------------------


def test_require_accepts_a_good_client_certificate(certs, serve):
    server = serve(mtls(certs))
    seen = fetch(server, client_context(certs, certs.orders))
    assert seen["subjects"] == {
        "san_uri": ORDERS_URI,
        "san_dns": "orders.internal.example.com",
        "cn": "orders",
    }
    for maximum in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = client_context(certs, certs.orders, maximum=maximum)
        assert fetch(server, context)["subjects"]["cn"] == "orders"


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
@pytest.mark.parametrize(
    ("client", "reason"),
    [
        (None, NO_CLIENT_CERT),
        ("expired", BAD_CLIENT_CERT),
        ("future", BAD_CLIENT_CERT),
        ("impostor", BAD_CLIENT_CERT),
        ("server_auth_only", BAD_CLIENT_CERT),
    ],
)
def test_require_refuses(certs, serve, client, reason, maximum):
    server = serve(mtls(certs))
    cert = getattr(certs, client) if client else None
    assert refused(server, client_context(certs, cert, maximum=maximum)) == reason


@pytest.mark.parametrize(
    ("client", "verify_message"),
    [
        ("expired", "certificate has expired"),
        ("future", "certificate is not yet valid"),
        ("impostor", "unable to get local issuer certificate"),
        ("server_auth_only", "unsuitable certificate purpose"),
    ],
)
def test_the_handshake_error_says_what_was_wrong(certs, serve, client, verify_message):
    server = serve(mtls(certs))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        fetch(server, client_context(certs, getattr(certs, client)))
    failure = server.failure()
    assert isinstance(failure, ssl.SSLCertVerificationError)
    assert failure.verify_message == verify_message


def test_optional_accepts_no_certificate_and_refuses_a_bad_one(certs, serve):
    server = serve(mtls(certs, "optional"))
    seen = fetch(server, client_context(certs))
    assert seen["subjects"] == {"san_uri": None, "san_dns": None, "cn": None}
    _, identity = server.connections.get(timeout=WAIT)
    assert identity is None
    assert fetch(server, client_context(certs, certs.orders))["subjects"]["cn"] == "orders"
    assert refused(server, client_context(certs, certs.expired)) == BAD_CLIENT_CERT


def test_no_client_auth_never_asks_for_a_certificate(certs, serve):
    server = serve(listener_tls(certs))
    assert fetch(server, client_context(certs, certs.orders))["subjects"]["cn"] is None


def test_an_intermediate_ca_chain_from_the_client(tmp_path, serve):
    pki = TestPKI(tmp_path, intermediate=True)
    server_cert = pki.server()
    client = pki.client("chained", uri=ORDERS_URI)
    tls = ListenerTLS(
        cert=str(server_cert.chain),
        key=str(server_cert.key),
        client_auth="require",
        client_ca=str(pki.ca_file),
    )
    server = serve(tls)
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    context.load_cert_chain(client.chain, client.key)
    assert fetch(server, context)["subjects"]["san_uri"] == ORDERS_URI
    leaf_only = ssl.create_default_context(cafile=str(pki.ca_file))
    leaf_only.load_cert_chain(client.cert, client.key)
    assert refused(server, leaf_only) == BAD_CLIENT_CERT


@needs_curl
def test_curl_with_a_client_certificate(certs, serve):
    server = serve(mtls(certs))
    result = curl(server, certs, "--cert", str(certs.orders.chain), "--key", str(certs.orders.key))
    assert json.loads(result.stdout)["subjects"]["san_uri"] == ORDERS_URI
    assert curl(server, certs, check=False).returncode != 0
    assert handshake_failure_reason(server.failure()) == NO_CLIENT_CERT


# --- identity ----------------------------------------------------------------------------------


def openssl_thumbprint(cert: IssuedCert) -> str:
    der = subprocess.run(
        ["openssl", "x509", "-in", str(cert.cert), "-outform", "DER"],
        capture_output=True,
        check=True,
    ).stdout
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-binary"], input=der, capture_output=True, check=True
    ).stdout
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@needs_openssl
def test_the_thumbprint_is_rfc_8705_x5t_s256(certs, serve):
    server = serve(mtls(certs))
    seen = fetch(server, client_context(certs, certs.orders))
    assert seen["thumbprint"] == openssl_thumbprint(certs.orders)
    assert len(seen["thumbprint"]) == 43 and "=" not in seen["thumbprint"]


def test_the_identity_is_read_from_the_verified_leaf(certs, serve):
    server = serve(mtls(certs))
    fetch(server, client_context(certs, certs.orders))
    ssl_object, identity = server.connections.get(timeout=WAIT)
    assert identity == identity_from_der(certs.orders.der)
    assert identity.der == certs.orders.der
    assert identity.san_uris == (ORDERS_URI,)
    assert identity.san_dns == ("orders.internal.example.com",)
    assert identity.cn == "orders"
    assert identity.dn == "CN=orders,O=fastgw tests"
    assert identity.issuer == "CN=fastgw Test CA,O=fastgw tests"
    assert identity.serial == format(certs.orders.certificate.serial_number, "x")
    assert identity.not_after == certs.orders.certificate.not_valid_after_utc
    assert identity.not_before == certs.orders.certificate.not_valid_before_utc
    assert identity.sha256 == hashlib.sha256(certs.orders.der).hexdigest()
    assert x509.load_pem_x509_certificate(identity.pem.encode()) == certs.orders.certificate
    assert client_identity(ssl_object, None).subject == ORDERS_URI


def test_a_subject_missing_from_the_certificate_is_none(certs):
    only_cn = certs.pki.client("only-cn", cn="billing")
    identity = identity_from_der(only_cn.der, "san_uri")
    assert (identity.subject, identity.cn, identity.san_uris) == (None, "billing", ())
    assert identity_from_der(only_cn.der, "cn").subject == "billing"
    no_cn = certs.pki.issue(
        "no-cn",
        subject=x509.Name([]),
        alt_names=[x509.DNSName("a.example"), x509.DNSName("b.example")],
        usages=("client",),
    )
    assert identity_from_der(no_cn.der, "cn").subject is None
    assert identity_from_der(no_cn.der, "san_dns").subject == "a.example"
    assert identity_from_der(no_cn.der).dn == ""


def test_a_leaf_without_client_auth_usage_gives_no_identity(certs):
    assert identity_from_der(certs.server_auth_only.der) is None
    any_purpose = certs.pki.client("any-purpose", uri=ORDERS_URI, usages=())
    assert identity_from_der(any_purpose.der).subject == ORDERS_URI
    both = certs.pki.client("both", uri=ORDERS_URI, usages=("server", "client"))
    assert identity_from_der(both.der).subject == ORDERS_URI


def test_client_identity_without_a_connection_or_certificate():
    assert client_identity(None, "san_uri") is None

    class Unverified:
        def getpeercert(self, binary_form=False):
            return b"\x30" if binary_form else {}

    assert client_identity(Unverified(), "san_uri") is None
    with pytest.raises(ValueError, match="subject_from 'email'"):
        identity_from_der(b"", "email")


# --- scopes ------------------------------------------------------------------------------------


def identity(subject: str, subject_from: str = "san_uri") -> ClientIdentity:
    return ClientIdentity(
        subject=subject,
        subject_from=subject_from,
        thumbprint="",
        der=b"",
        san_uris=(),
        san_dns=(),
        cn=None,
        dn="",
        issuer="",
        serial="1",
        not_before=datetime.datetime.now(datetime.UTC),
        not_after=datetime.datetime.now(datetime.UTC),
    )


URI_RULES = {
    ORDERS_URI: ["read_orders", "write_orders"],
    "spiffe://example.org/ns/prod/sa/*": ["read_catalog"],
    "spiffe://example.org/ns/*/sa/audit": ["read_logs"],
    "spiffe://example.org/ns/admin/**": ["admin"],
    "spiffe://example.org/ns/prod/sa/orders-*": "orders_family",
}


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        (ORDERS_URI, {"read_orders", "write_orders", "read_catalog"}),
        ("spiffe://example.org/ns/prod/sa/orders-v2", {"read_catalog", "orders_family"}),
        ("spiffe://example.org/ns/prod/sa/orders.v2", {"read_catalog"}),
        ("spiffe://example.org/ns/prod/sa/orders/x", set()),
        ("spiffe://example.org/ns/prod/sa/", set()),
        ("spiffe://example.org/ns/prod/sa/audit", {"read_catalog", "read_logs"}),
        ("spiffe://example.org/ns/dev/sa/audit", {"read_logs"}),
        ("spiffe://example.org/ns/admin/sa/root", {"admin"}),
        ("spiffe://example.org/ns/admin", set()),
        ("SPIFFE://example.org/ns/prod/sa/orders", set()),
        ("spiffe://example.org/ns/prod/sa/orders\n", set()),
        ("spiffe://evil.example/ns/prod/sa/orders", set()),
    ],
)
def test_uri_scopes(subject, expected):
    scopes = CertificateScopes(URI_RULES, "san_uri")
    assert scopes_for(identity(subject), scopes) == expected
    assert scopes_for(identity(subject), URI_RULES) == expected


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("orders.internal.example.com", {"orders", "internal"}),
        ("ORDERS.Internal.Example.com.", {"orders", "internal"}),
        ("billing.internal.example.com", {"internal"}),
        ("a.b.internal.example.com", set()),
        ("internal.example.com", set()),
        ("api-7.example.com", {"api"}),
    ],
)
def test_dns_scopes(subject, expected):
    scopes = CertificateScopes(
        [
            CertScopes("orders.internal.example.com", ("orders",)),
            CertScopes("*.internal.example.com", ("internal",)),
            CertScopes("api-*.example.com", ("api",)),
        ],
        "san_dns",
    )
    assert scopes_for(identity(subject, "san_dns"), scopes) == expected


def test_cn_scopes_and_mismatched_kinds():
    scopes = CertificateScopes({"orders": ["a"], "batch-*": ["b"]}, "cn")
    assert scopes_for(identity("orders", "cn"), scopes) == {"a"}
    assert scopes_for(identity("batch-a.b/c", "cn"), scopes) == {"b"}
    assert scopes_for(identity("Orders", "cn"), scopes) == set()
    assert scopes_for(identity("orders", "san_dns"), scopes) == set()
    assert scopes_for(None, scopes) == set()
    assert scopes_for(dataclasses.replace(identity("x"), subject=None), scopes) == set()
    assert not CertificateScopes({}, "cn")
    assert CertificateScopes({"a": ["b"]}, "cn")


@pytest.mark.parametrize(
    ("pattern", "subject_from", "message"),
    [
        ("orders", "san_uri", "is not a URI"),
        ("*://example.org/x", "san_uri", "is not a URI"),
        ("spiffe://example.org/**/x", "san_uri", "'\\*\\*' only as the whole last segment"),
        ("spiffe://example.org/a**", "san_uri", "'\\*\\*' only as the whole last segment"),
        ("spiffe://example.org/a b", "san_uri", "no spaces"),
        ("", "cn", "is not a subject pattern"),
        ("**.example.com", "san_dns", "is not a DNS name pattern"),
        ("orders..example.com", "san_dns", "is not a DNS name pattern"),
        ("spiffe://example.org/x", "san_dns", "is not a DNS name pattern"),
        ("batch-**", "cn", "'\\*\\*' is for URI patterns"),
        ("x", "email", "subject_from 'email'"),
    ],
)
def test_bad_scope_patterns(pattern, subject_from, message):
    with pytest.raises(ValueError, match=message):
        check_scope_pattern(pattern, subject_from)


# --- X-Forwarded-Client-Cert -------------------------------------------------------------------


def test_xfcc_for_a_client_certificate(certs):
    identity = identity_from_der(certs.orders.der)
    digest = hashlib.sha256(certs.orders.der).hexdigest()
    assert xfcc_value(identity) == (
        f'Hash={digest};Subject="CN=orders,O=fastgw tests";URI={ORDERS_URI};'
        "DNS=orders.internal.example.com"
    )
    assert xfcc_value(identity, "spiffe://example.org/gateway", fields=["URI"]) == (
        f"By=spiffe://example.org/gateway;Hash={digest};URI={ORDERS_URI}"
    )
    assert xfcc_value(identity, fields=()) == f"Hash={digest}"


def test_xfcc_cert_is_url_encoded_pem(certs):
    identity = identity_from_der(certs.orders.der)
    value = xfcc_value(identity, fields=["Cert"])
    assert value.startswith("Hash=") and ';Cert="-----BEGIN%20CERTIFICATE-----%0A' in value
    encoded = value.split(";Cert=", 1)[1]
    assert encoded.startswith('"') and encoded.endswith('"')
    pem = urllib.parse.unquote(encoded[1:-1])
    assert x509.load_pem_x509_certificate(pem.encode()) == certs.orders.certificate
    assert not set(encoded[1:-1]) & set(',;="\\ \r\n')


def test_xfcc_quotes_and_escapes_hostile_names(certs):
    hostile = certs.pki.issue(
        "hostile",
        subject=x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'Evil "Corp", Inc.'),
            x509.NameAttribute(NameOID.COMMON_NAME, "x\r\nX-Injected: 1;By=me\\"),
        ]),
        alt_names=[
            x509.UniformResourceIdentifier("spiffe://example.org/a;b=c,d"),
            x509.UniformResourceIdentifier('urn:x:"quoted"'),
            x509.DNSName("plain.example"),
        ],
        usages=("client",),
    )
    identity = identity_from_der(hostile.der)
    value = xfcc_value(identity)
    assert "\r" not in value and "\n" not in value and value.isascii() and value.isprintable()
    assert identity.dn == r"CN=x\0D\0AX-Injected: 1\;By=me\5C,O=Evil \22Corp\22\, Inc."
    assert x509.Name.from_rfc4514_string(identity.dn) == hostile.certificate.subject
    assert f'Subject="{identity.dn}"' in value
    assert ';URI="spiffe://example.org/a;b=c,d";' in value
    assert ";URI=urn:x:%22quoted%22;" in value
    assert value.endswith(";DNS=plain.example")
    for backslash_escapes in (True, False):
        pairs = parse_xfcc(value, backslash_escapes=backslash_escapes)
        assert pairs["Subject"] == [identity.dn]
        assert pairs["URI"] == ["spiffe://example.org/a;b=c,d", "urn:x:%22quoted%22"]
        assert pairs["DNS"] == ["plain.example"]
        assert "By" not in pairs


def test_xfcc_non_ascii_subjects_become_escapes(certs):
    named = certs.pki.client("unicode", cn="Zoë")
    identity = identity_from_der(named.der, "cn")
    assert identity.subject == "Zoë"
    assert identity.dn == r"CN=Zo\C3\AB,O=fastgw tests"
    assert r'Subject="CN=Zo\C3\AB,O=fastgw tests"' in xfcc_value(identity)
    assert x509.Name.from_rfc4514_string(identity.dn) == named.certificate.subject


def test_xfcc_fields_are_checked(certs):
    with pytest.raises(ValueError, match="unknown XFCC field 'Chain'"):
        xfcc_value(identity_from_der(certs.orders.der), fields=["Chain"])


def parse_xfcc(value: str, *, backslash_escapes: bool) -> dict[str, list[str]]:
    """One XFCC element read the two ways readers do: with or without backslash escapes."""
    pairs: dict[str, list[str]] = {}
    i = 0
    while i < len(value):
        key = value[i:].partition("=")[0]
        i += len(key) + 1
        if value[i : i + 1] == '"':
            end = i + 1
            while value[end] != '"':
                end += 2 if backslash_escapes and value[end] == "\\" else 1
            text, i = value[i + 1 : end], end + 1
        else:
            end = value.find(";", i)
            end = len(value) if end < 0 else end
            text, i = value[i:end], end
        pairs.setdefault(key, []).append(text)
        assert value[i : i + 1] in ("", ";")
        i += 1
    return pairs


# --- handshake failures ------------------------------------------------------------------------


def test_plain_http_to_a_tls_listener_is_not_tls(certs, serve):
    server = serve(listener_tls(certs))
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(100)
    assert handshake_failure_reason(server.failure()) == "not_tls"


def test_a_client_that_distrusts_the_gateway_is_a_client_alert(certs, serve):
    server = serve(listener_tls(certs, cert=str(certs.foreign_server.chain),
                                key=str(certs.foreign_server.key)))
    with pytest.raises(ssl.SSLCertVerificationError):
        fetch(server, client_context(certs))
    assert handshake_failure_reason(server.failure()) == "client_alert"


def test_a_client_that_hangs_up_is_connection_lost(certs, serve):
    server = serve(listener_tls(certs))
    socket.create_connection(("127.0.0.1", server.port), timeout=WAIT).close()
    assert handshake_failure_reason(server.failure()) == "connection_lost"


def test_a_client_that_never_finishes_is_a_timeout(certs, serve):
    server = serve(listener_tls(certs), handshake_timeout=0.2)
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT):
        assert handshake_failure_reason(server.failure()) == "timeout"


def test_failure_reasons_of_other_exceptions():
    assert handshake_failure_reason(TimeoutError()) == "timeout"
    assert handshake_failure_reason(ConnectionResetError()) == "connection_lost"
    assert handshake_failure_reason(ValueError("x")) == "handshake_failed"
    assert handshake_failure_reason(ssl.SSLError(1, "odd")) == "handshake_failed"


# --- upstreams ---------------------------------------------------------------------------------


async def upstream_exchange(
    server: TLSServer, context: ssl.SSLContext, server_hostname: str
) -> tuple[dict, ssl.SSLObject]:
    loop = asyncio.get_running_loop()
    answer = loop.create_future()

    class Client(asyncio.Protocol):
        data = b""

        def connection_made(self, transport):
            transport.write(b"GET / HTTP/1.1\r\nHost: upstream\r\n\r\n")

        def data_received(self, data):
            self.data += data
            body = self.data.partition(b"\r\n\r\n")[2]
            if body.endswith(b"}") and not answer.done():
                answer.set_result(json.loads(body))

        def connection_lost(self, exc):
            if not answer.done():
                answer.set_exception(exc or ConnectionResetError("closed"))

    transport, _ = await loop.create_connection(
        Client, "127.0.0.1", server.port, ssl=context, server_hostname=server_hostname
    )
    try:
        seen = await asyncio.wait_for(answer, WAIT)
    finally:
        ssl_object = transport.get_extra_info("ssl_object")
        transport.close()
    return seen, ssl_object


@pytest.fixture(params=list(LOOPS))
def run(request):
    def run(coroutine):
        loop = LOOPS[request.param]()
        try:
            return loop.run_until_complete(coroutine)
        finally:
            loop.close()

    return run


@pytest.fixture
def upstream(certs, serve):
    return serve(ListenerTLS(cert=str(certs.upstream.chain), key=str(certs.upstream.key)))


def test_upstream_context_verifies_chain_and_name(certs, upstream, run):
    context = upstream_context(ServiceTLS(ca=str(certs.pki.ca_file)))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    seen, ssl_object = run(upstream_exchange(upstream, context, "orders.internal"))
    assert seen["alpn"] == "http/1.1"
    assert ssl_object.selected_alpn_protocol() == "http/1.1"
    seen, _ = run(upstream_exchange(upstream, context, "127.0.0.1"))
    assert seen["version"] == "TLSv1.3"


def test_upstream_hostname_mismatch_is_refused(certs, upstream, run):
    context = upstream_context(ServiceTLS(ca=str(certs.pki.ca_file)))
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        run(upstream_exchange(upstream, context, "billing.internal"))


def test_upstream_from_an_untrusted_ca_is_refused(certs, serve, run):
    foreign = serve(ListenerTLS(cert=str(certs.foreign_server.chain),
                                key=str(certs.foreign_server.key)))
    context = upstream_context(ServiceTLS(ca=str(certs.pki.ca_file)))
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        run(upstream_exchange(foreign, context, "localhost"))
    system = upstream_context(None)
    with pytest.raises(ssl.SSLCertVerificationError):
        run(upstream_exchange(foreign, system, "localhost"))


def test_upstream_mtls_presents_the_gateway_certificate(certs, serve, run):
    server = serve(ListenerTLS(cert=str(certs.upstream.chain), key=str(certs.upstream.key),
                               client_auth="require", client_ca=str(certs.pki.ca_file)))
    gateway = certs.gateway
    with_cert = upstream_context(
        ServiceTLS(ca=str(certs.pki.ca_file), cert=str(gateway.chain), key=str(gateway.key),
                   server_name="orders.internal")
    )
    seen, _ = run(upstream_exchange(server, with_cert, "orders.internal"))
    assert seen["subjects"]["san_uri"] == "spiffe://example.org/gateway"
    without = upstream_context(ServiceTLS(ca=str(certs.pki.ca_file)))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        run(upstream_exchange(server, without, "orders.internal"))
    assert handshake_failure_reason(server.failure()) == NO_CLIENT_CERT


def test_upstream_sessions_are_resumed_through_the_loop(certs, upstream, run):
    context = upstream_context(ServiceTLS(ca=str(certs.pki.ca_file)))

    async def three():
        return [
            (await upstream_exchange(upstream, context, "orders.internal"))[0]["reused"]
            for _ in range(3)
        ]

    assert run(three()) == [False, True, True]
    tls12 = upstream_context(ServiceTLS(ca=str(certs.pki.ca_file)))
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2

    async def three_tls12():
        return [
            (await upstream_exchange(upstream, tls12, "orders.internal"))[0]["reused"]
            for _ in range(3)
        ]

    assert run(three_tls12()) == [False, True, True]


def test_upstream_sessions_are_kept_per_server_name(certs, upstream, run):
    context = upstream_context(ServiceTLS(ca=str(certs.pki.ca_file)))

    async def exchanges():
        first = await upstream_exchange(upstream, context, "orders.internal")
        other = await upstream_exchange(upstream, context, "localhost")
        again = await upstream_exchange(upstream, context, "orders.internal")
        return [seen["reused"] for seen, _ in (first, other, again)]

    assert run(exchanges()) == [False, False, True]


def test_upstream_context_file_errors(certs, tmp_path):
    with pytest.raises(TLSConfigError, match=r"missing\.pem: cannot read the ca"):
        upstream_context(ServiceTLS(ca=str(tmp_path / "missing.pem")))
    with pytest.raises(TLSConfigError, match="does not match the certificate"):
        upstream_context(ServiceTLS(cert=str(certs.orders.chain), key=str(certs.alpha.key)))
    with pytest.raises(TLSConfigError, match="the ca file holds no PEM certificate"):
        upstream_context(ServiceTLS(ca=str(certs.orders.key)))


# --- the test PKI itself -----------------------------------------------------------------------


def test_the_test_pki_writes_usable_pem_files(certs, tmp_path):
    pki = certs.pki
    server = certs.server
    assert server.cert.read_bytes() == server.pem
    assert server.chain.read_bytes() == server.pem
    assert server.key.stat().st_mode & 0o777 == 0o600
    names = server.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert names.value.get_values_for_type(x509.DNSName) == ["localhost", "gateway.test"]
    assert [str(ip) for ip in names.value.get_values_for_type(x509.IPAddress)] == [
        "127.0.0.1", "::1",
    ]  # fmt: skip
    assert certs.impostor.certificate.subject == certs.orders.certificate.subject
    assert certs.impostor.certificate.issuer == certs.orders.certificate.issuer
    assert certs.impostor.der != certs.orders.der
    with pytest.raises(ValueError, match="already issued"):
        pki.client("orders")
    with pytest.raises(ValueError, match="unknown usage 'email'"):
        pki.client("x", usages=["email"])
    with pytest.raises(ValueError, match="cannot name a file"):
        pki.client("../x")
    chained = TestPKI(tmp_path, intermediate=True).client("c")
    assert chained.chain.read_bytes().count(b"BEGIN CERTIFICATE") == 2


@needs_openssl
def test_openssl_verifies_the_test_pki_strictly(certs):
    for cert, purpose in [(certs.orders, "sslclient"), (certs.server, "sslserver")]:
        result = subprocess.run(
            ["openssl", "verify", "-x509_strict", "-purpose", purpose,
             "-CAfile", str(certs.pki.ca_file), str(cert.cert)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr


# --- command-line clients ----------------------------------------------------------------------


def s_client(server: TLSServer, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=WAIT,
    )


def curl(server: TLSServer, certs: Certs, *args: str, check: bool = True):
    return subprocess.run(
        ["curl", "-sS", "--cacert", str(certs.pki.ca_file), *args,
         f"https://localhost:{server.port}/"],
        capture_output=True, text=True, timeout=WAIT, check=check,
    )  # fmt: skip
