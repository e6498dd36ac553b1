"""HTTPS listeners (SPEC section 3, ``listeners[].tls``; docs/configuration.md), over real sockets.

The module's gateway has one TLS listener: a default certificate for
``localhost``, ``127.0.0.1`` and ``gateway.test``, and two more chosen by
SNI, ``api.example.test`` (by the name in the certificate) and
``legacy.example.test`` / ``*.legacy.example.test`` (by ``server_names``).
Clients are curl, openssl s_client and Python's ``ssl`` (through ``tls_client``).
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from fastgw.testing import GatewayProcess, free_port
from fastgw.testing.certs import IssuedCert, TestPKI

from .support import assert_nothing_reached, fetch, wait_until
from .tls_client import TLSConnection, client_context, get, tls_listener

SERVER_NAME = "gateway.test"


# -- the module's gateway --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> TestPKI:
    return TestPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def default_cert(pki) -> IssuedCert:
    return pki.server(SERVER_NAME)


@pytest.fixture(scope="module")
def api_cert(pki) -> IssuedCert:
    return pki.server("api.example.test", name="api", loopback=False)


@pytest.fixture(scope="module")
def legacy_cert(pki) -> IssuedCert:
    return pki.server("legacy.example.test", name="legacy", loopback=False)


@pytest.fixture(scope="module")
def gateway_config(make_config, shared_upstream, default_cert, api_cert, legacy_cert):
    listener = tls_listener(
        default_cert,
        certificates=[
            {"cert": str(api_cert.chain), "key": str(api_cert.key)},
            {
                "cert": str(legacy_cert.chain),
                "key": str(legacy_cert.key),
                "server_names": ["legacy.example.test", "*.legacy.example.test"],
            },
        ],
    )
    return make_config(shared_upstream.url, listeners=[listener])


def https_url(gateway: GatewayProcess, path: str, host: str = "127.0.0.1") -> str:
    return f"https://{host}:{gateway.port}{path}"


# -- requests over HTTPS ---------------------------------------------------------------------------


def test_curl_with_the_gateway_ca_reaches_the_upstream(gateway, upstream, pki):
    response = fetch(https_url(gateway, "/echo/curl?x=1"), "--cacert", str(pki.ca_file))
    assert response.exit_code == 0, response
    assert response.status == 200, response
    [received] = upstream.wait_for_requests(1)
    assert received.target == "/echo/curl?x=1"
    assert received.header_values("x-forwarded-proto") == ["https"]
    assert received.header_values("x-forwarded-for") == ["127.0.0.1"]


def test_curl_verifies_the_gateway_by_name(gateway, upstream, pki):
    resolve = f"{SERVER_NAME}:{gateway.port}:127.0.0.1"
    url = https_url(gateway, "/echo/by-name", host=SERVER_NAME)
    response = fetch(url, "--cacert", str(pki.ca_file), "--resolve", resolve)
    assert response.status == 200, response
    [received] = upstream.wait_for_requests(1)
    assert received.header("x-forwarded-host") == f"{SERVER_NAME}:{gateway.port}"


def test_curl_without_the_gateway_ca_refuses_the_certificate(gateway, upstream):
    response = fetch(https_url(gateway, "/echo/untrusted"))
    assert response.exit_code == 60, response  # peer certificate cannot be authenticated
    assert_nothing_reached(upstream)


def test_python_client_keeps_a_tls_connection_alive(gateway, upstream, pki):
    with TLSConnection(gateway.port, client_context(pki.ca_file)) as connection:
        first = get(connection, "/echo/one", [("X-Forwarded-Proto", "http")])
        second = get(connection, "/echo/two")
        assert connection.sock.version() == "TLSv1.3"
    assert first.status == 200, first
    assert second.status == 200, second
    received = upstream.wait_for_requests(2)
    assert [r.target for r in received] == ["/echo/one", "/echo/two"]
    for request in received:
        # A caller's own X-Forwarded-Proto never survives: this hop was HTTPS.
        assert request.header_values("x-forwarded-proto") == ["https"], request.headers


def test_tls_1_2_is_accepted_by_default(gateway, upstream, pki):
    context = client_context(pki.ca_file, maximum=ssl.TLSVersion.TLSv1_2)
    with TLSConnection(gateway.port, context) as connection:
        assert connection.sock.version() == "TLSv1.2"
        cipher, _, _ = connection.sock.cipher()
        response = get(connection, "/echo/tls12")
    assert response.status == 200, response
    # Forward secrecy and AEAD only.
    assert cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher), cipher


@pytest.mark.parametrize(
    ("offered", "agreed"),
    [(["h2", "http/1.1"], "http/1.1"), (["http/1.1"], "http/1.1"), (["h2"], None)],
    ids=["h2-and-http1.1", "http1.1", "h2-only"],
)
def test_alpn_agrees_on_http_1_1_only(gateway, pki, offered, agreed):
    with TLSConnection(gateway.port, client_context(pki.ca_file, alpn=offered)) as connection:
        assert connection.sock.selected_alpn_protocol() == agreed


def test_curl_is_told_http_1_1_by_alpn(gateway, pki):
    result = subprocess.run(
        ["curl", "--silent", "--verbose", "--max-time", "30", "--cacert", str(pki.ca_file),
         "--output", "/dev/null", https_url(gateway, "/echo/alpn")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ALPN: server accepted http/1.1" in result.stderr, result.stderr


def test_plain_http_on_the_tls_port_gets_no_http_answer(gateway, upstream, raw):
    connection = raw(gateway.port)
    connection.request("GET", "/echo/plain")
    assert connection.closed_by_peer(), "the connection stayed open"
    assert not connection.buffer.startswith(b"HTTP/"), connection.buffer
    assert_nothing_reached(upstream)


def test_a_listener_without_tls_stays_plain(start_gateway, make_config, upstream, raw):
    gateway = start_gateway(make_config(upstream.url))
    with pytest.raises(ssl.SSLError), socket.create_connection(("127.0.0.1", gateway.port)) as s:
        ssl.create_default_context().wrap_socket(s, server_hostname="localhost")
    response = raw(gateway.port).exchange("GET", "/echo/plain")
    assert response.status == 200, response
    assert upstream.wait_for_requests(1)[0].header_values("x-forwarded-proto") == ["http"]


def test_a_silent_client_is_dropped_within_the_header_timeout(gateway, upstream, raw):
    connection = raw(gateway.port)  # TCP only: not one byte of a ClientHello
    assert connection.closed_by_peer(timeout=10), "an idle handshake holds the connection"
    connection = raw(gateway.port)
    connection.send(bytes.fromhex("160301"))  # the start of a TLS record, then nothing
    assert connection.closed_by_peer(timeout=10), "a stalled handshake holds the connection"
    assert_nothing_reached(upstream)


# -- protocol versions -----------------------------------------------------------------------------


def s_client(port: int, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *options],
        input="", capture_output=True, text=True, timeout=30,
    )  # fmt: skip


# Lets the local OpenSSL offer old versions, so a refusal is the gateway's.
OLD_CLIENT_CIPHERS = "DEFAULT@SECLEVEL=0"


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
def test_openssl_s_client_with_tls_1_0_or_1_1_is_refused(gateway, upstream, pki, version):
    result = s_client(
        gateway.port, version, "-cipher", OLD_CLIENT_CIPHERS, "-CAfile", str(pki.ca_file)
    )
    assert "no protocols available" not in result.stderr, "the client offered nothing"
    assert result.returncode != 0, result.stdout
    assert "Cipher is (NONE)" in result.stdout, result.stdout
    assert_nothing_reached(upstream)


def test_curl_with_at_most_tls_1_1_is_refused(gateway, upstream, pki):
    response = fetch(
        https_url(gateway, "/echo/old"), "--cacert", str(pki.ca_file), "--tlsv1.0",
        "--tls-max", "1.1", "--ciphers", OLD_CLIENT_CIPHERS,
    )  # fmt: skip
    assert response.exit_code == 35, response  # the TLS handshake failed
    assert_nothing_reached(upstream)


def old_tls_client(pki: TestPKI, maximum: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(pki.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = maximum
    context.set_ciphers(OLD_CLIENT_CIPHERS)
    return context


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("maximum", ["TLSv1", "TLSv1_1"])
def test_python_client_with_tls_1_0_or_1_1_is_refused(gateway, upstream, pki, maximum):
    context = old_tls_client(pki, getattr(ssl.TLSVersion, maximum))
    with pytest.raises(ssl.SSLError) as refused:
        TLSConnection(gateway.port, context).close()
    assert refused.value.reason != "NO_PROTOCOLS_AVAILABLE", "the client offered nothing"
    assert_nothing_reached(upstream)


@pytest.mark.xfail(
    strict=True,
    reason="the event loop's TLS layer (uvloop 0.23, asyncio before CPython gh-98078) closes a "
    "failed handshake without flushing OpenSSL's alert; the client sees EOF, not the reason",
)
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_a_tls_1_1_client_is_told_why_with_a_protocol_version_alert(gateway, pki):
    # RFC 8446 section 4.2.1 and RFC 5246 appendix E: a server that does not
    # support the client's version aborts with a protocol_version alert, so
    # the client can say why instead of reporting a dropped connection.
    with pytest.raises(ssl.SSLError) as refused:
        TLSConnection(gateway.port, old_tls_client(pki, ssl.TLSVersion.TLSv1_1)).close()
    assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION", refused.value


def test_min_version_1_3_refuses_a_tls_1_2_only_client(
    start_gateway, make_config, upstream, pki, default_cert
):
    listener = tls_listener(default_cert, min_version="1.3")
    gateway = start_gateway(make_config(upstream.url, listeners=[listener]))

    context = client_context(pki.ca_file, maximum=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError) as refused:
        TLSConnection(gateway.port, context).close()
    assert refused.value.reason != "NO_PROTOCOLS_AVAILABLE", "the client offered nothing"
    response = fetch(
        https_url(gateway, "/echo/tls12"), "--cacert", str(pki.ca_file), "--tls-max", "1.2"
    )
    assert response.exit_code == 35, response
    assert_nothing_reached(upstream)

    with TLSConnection(gateway.port, client_context(pki.ca_file)) as connection:
        assert connection.sock.version() == "TLSv1.3"
        response = get(connection, "/echo/tls13")
    assert response.status == 200, response
    assert [r.target for r in upstream.wait_for_requests(1)] == ["/echo/tls13"]


# -- certificates chosen by SNI --------------------------------------------------------------------


def served_certificate(port: int, pki: TestPKI, server_name: str | None) -> bytes:
    """The certificate the gateway presents to a client naming ``server_name`` (None: no SNI)."""
    context = client_context(pki.ca_file)
    context.check_hostname = False  # the chain is still verified
    with TLSConnection(port, context, server_name) as connection:
        return connection.peer_der


@pytest.mark.parametrize(
    ("server_name", "expected"),
    [
        ("api.example.test", "api"),
        ("API.Example.Test", "api"),
        ("legacy.example.test", "legacy"),
        ("eu.legacy.example.test", "legacy"),
        ("a.eu.legacy.example.test", "default"),  # '*' is one label
        ("example.test", "default"),
        ("unknown.example.test", "default"),
        (SERVER_NAME, "default"),
        (None, "default"),
    ],
)
def test_sni_picks_the_certificate(gateway, pki, request, server_name, expected):
    certificate = request.getfixturevalue(f"{expected}_cert")
    assert served_certificate(gateway.port, pki, server_name) == certificate.der


def test_curl_gets_the_certificate_of_the_name_it_asks_for(gateway, upstream, pki):
    resolve = f"api.example.test:{gateway.port}:127.0.0.1"
    url = https_url(gateway, "/echo/api", host="api.example.test")
    response = fetch(url, "--cacert", str(pki.ca_file), "--resolve", resolve)
    assert response.status == 200, response  # curl checked the name against the certificate
    [received] = upstream.wait_for_requests(1)
    assert received.header("x-forwarded-host") == f"api.example.test:{gateway.port}"


# -- certificate reload on SIGHUP ------------------------------------------------------------------


def install(cert: IssuedCert, directory: Path) -> None:
    """Put ``cert`` in place as ``directory/live.crt`` and ``live.key`` (replaced in place)."""
    shutil.copyfile(cert.key, directory / "live.key")
    shutil.copyfile(cert.chain, directory / "live.crt")


@pytest.fixture
def rotating(start_gateway, make_config, upstream, pki, tmp_path):
    """A gateway whose listener reads ``live.crt`` / ``live.key``, first holding ``first``."""
    live = tmp_path / "live"
    live.mkdir()
    first = pki.server(SERVER_NAME, name=f"first-{tmp_path.name}")
    install(first, live)
    listener = {
        "address": f"127.0.0.1:{free_port()}",
        "tls": {"cert": str(live / "live.crt"), "key": str(live / "live.key")},
    }
    gateway = start_gateway(make_config(upstream.url, listeners=[listener]))
    return gateway, live, first


def test_sighup_serves_a_rotated_certificate_to_new_connections(rotating, upstream, pki, tmp_path):
    gateway, live, first = rotating
    second = pki.server("rotated.gateway.test", name=f"second-{tmp_path.name}")
    assert second.certificate.serial_number != first.certificate.serial_number
    context = client_context(pki.ca_file)
    with TLSConnection(gateway.port, context) as established:
        assert established.peer_der == first.der
        assert get(established, "/echo/before").status == 200

        install(second, live)
        gateway.send_signal(signal.SIGHUP)
        assert wait_until(
            lambda: served_certificate(gateway.port, pki, "localhost") == second.der
        ), gateway.stderr_text()

        # The connection made before the reload goes on.
        response = get(established, "/echo/after")
        assert response.status == 200, response
    with TLSConnection(gateway.port, context, "rotated.gateway.test") as fresh:
        assert get(fresh, "/echo/fresh").status == 200
    targets = [r.target for r in upstream.wait_for_requests(3)]
    assert targets == ["/echo/before", "/echo/after", "/echo/fresh"]
    assert gateway.returncode is None


@pytest.mark.parametrize("damage", ["garbage-certificate", "key-of-another-certificate"])
def test_sighup_with_an_unusable_certificate_keeps_the_old_one(
    rotating, upstream, pki, tmp_path, damage
):
    gateway, live, first = rotating
    if damage == "garbage-certificate":
        (live / "live.crt").write_bytes(b"this is not a certificate\n")
    else:
        other = pki.server(SERVER_NAME, name=f"other-{tmp_path.name}")
        shutil.copyfile(other.key, live / "live.key")
    context = client_context(pki.ca_file)
    with TLSConnection(gateway.port, context) as established:
        assert get(established, "/echo/before").status == 200
        gateway.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "keeping the running config" in gateway.stderr_text()), (
            gateway.stderr_text()
        )
        log = gateway.stderr_text()
        # The log names the file at fault.
        faulty = "live.crt" if damage == "garbage-certificate" else "live.key"
        assert faulty in log, log
        assert gateway.returncode is None
        assert get(established, "/echo/kept").status == 200
    assert served_certificate(gateway.port, pki, "localhost") == first.der
    with TLSConnection(gateway.port, context) as fresh:
        assert get(fresh, "/echo/fresh").status == 200
    targets = [r.target for r in upstream.wait_for_requests(3)]
    assert targets == ["/echo/before", "/echo/kept", "/echo/fresh"]
