"""HTTPS upstreams (SPEC section 3, ``services.*.tls``; docs/configuration.md), over real sockets.

The upstream here is the recording upstream behind TLS, with a certificate
for ``orders.internal`` only (no loopback names) from an internal CA, and
it demands a client certificate from that CA: the gateway must verify it,
name it with ``server_name``, and present its own certificate. It records
the SNI of every handshake and the client certificate of every connection
that got as far as HTTP.
"""

from __future__ import annotations

import asyncio
import ssl

import pytest

from fastgw.testing import RecordingUpstream
from fastgw.testing.certs import IssuedCert, TestPKI
from fastgw.testing.upstream import MAX_HEAD

from .support import assert_error, assert_nothing_reached, wait_until

UPSTREAM_NAME = "orders.internal"


class TLSRecordingUpstream(RecordingUpstream):
    """The recording upstream, serving HTTPS with ``context``.

    ``server_names`` lists the SNI of every ClientHello (failed handshakes
    too); ``client_certificates`` the verified client certificate (as
    ``getpeercert()`` gives it) of every connection that completed its
    handshake. A failed handshake never reaches the HTTP side, so it adds
    nothing to ``requests``, ``aborted`` or ``rejected``.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__()
        self.context = context
        self.server_names: list[str | None] = []
        self.client_certificates: list[dict] = []
        context.sni_callback = self._server_name

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def clear(self) -> None:
        super().clear()
        self.server_names.clear()
        self.client_certificates.clear()

    def _server_name(self, ssl_object, server_name, context) -> None:
        self.server_names.append(server_name)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._serve_connection, self.host, self.port, limit=MAX_HEAD, ssl=self.context
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve_connection(self, reader, writer) -> None:
        self._record(self.client_certificates, writer.get_extra_info("peercert"))
        await super()._serve_connection(reader, writer)


@pytest.fixture(scope="module")
def internal(tmp_path_factory) -> TestPKI:
    """The CA of the internal network: upstream certificates and the gateway's own."""
    return TestPKI(tmp_path_factory.mktemp("internal-pki"), name="Internal CA")


@pytest.fixture(scope="module")
def gateway_client(internal) -> IssuedCert:
    return internal.client("gateway", dns="gateway.internal", cn="fastgw gateway")


@pytest.fixture(scope="module")
def tls_upstream(internal):
    server = internal.server(UPSTREAM_NAME, name="orders-upstream", loopback=False)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server.chain, server.key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(internal.ca_file)
    context.set_alpn_protocols(["http/1.1"])
    with TLSRecordingUpstream(context) as upstream:
        yield upstream


@pytest.fixture
def secure_upstream(tls_upstream):
    tls_upstream.settle()
    tls_upstream.clear()
    return tls_upstream


def orders_config(upstream: TLSRecordingUpstream, tls: dict) -> dict:
    """A gateway routing ``/orders/**`` to the TLS upstream through the service ``orders``."""
    service = {
        "instances": [upstream.url],
        "connect_timeout": "2s",
        "response_timeout": "5s",
        "retries": 0,
        "tls": tls,
    }
    route = {"id": "orders", "uri": "lb://orders", "predicates": ["Path=/orders/**"],
             "auth": "none"}  # fmt: skip
    return {"access_log": {"path": "-"}, "services": {"orders": service}, "routes": [route]}


def mutual_tls(internal: TestPKI, client: IssuedCert | None, **changes) -> dict:
    tls = {"ca": str(internal.ca_file), "server_name": UPSTREAM_NAME}
    if client is not None:
        tls.update(cert=str(client.chain), key=str(client.key))
    tls.update(changes)
    return {key: value for key, value in tls.items() if value is not None}


def logged(gateway, *fragments: str) -> bool:
    text = gateway.stderr_text().lower()
    return all(fragment.lower() in text for fragment in fragments)


def test_upstream_requiring_mtls_is_reached_with_the_client_certificate(
    start_gateway, secure_upstream, internal, gateway_client, raw
):
    config = orders_config(secure_upstream, mutual_tls(internal, gateway_client))
    gateway = start_gateway(config)
    connection = raw(gateway.port)
    first = connection.exchange("GET", "/orders/1")
    second = connection.exchange("POST", "/orders", body=b'{"item": 7}')
    assert (first.status, second.status) == (200, 200), (first, second)
    received = secure_upstream.wait_for_requests(2)
    assert [(r.method, r.target) for r in received] == [("GET", "/orders/1"), ("POST", "/orders")]
    assert received[1].body == b'{"item": 7}'
    assert received[0].header("host") == f"127.0.0.1:{secure_upstream.port}"
    [presented, *_] = secure_upstream.client_certificates
    subject = dict(pair for rdn in presented["subject"] for pair in rdn)
    assert subject["commonName"] == "fastgw gateway", presented
    assert set(secure_upstream.server_names) == {UPSTREAM_NAME}


def test_server_name_override_is_sent_and_verified(
    start_gateway, secure_upstream, internal, gateway_client, raw
):
    # The instance is an IP address the certificate does not name; server_name says what to
    # ask for and what to verify.
    config = orders_config(secure_upstream, mutual_tls(internal, gateway_client))
    gateway = start_gateway(config)
    assert raw(gateway.port).exchange("GET", "/orders/by-name").status == 200
    assert secure_upstream.wait_for_requests(1)[0].target == "/orders/by-name"
    assert secure_upstream.server_names[0] == UPSTREAM_NAME


def test_without_a_client_certificate_the_upstream_refuses_and_the_answer_is_502(
    start_gateway, secure_upstream, internal, raw
):
    config = orders_config(secure_upstream, mutual_tls(internal, None))
    gateway = start_gateway(config)
    response = raw(gateway.port).exchange("GET", "/orders/1")
    assert_error(response, 502)
    assert secure_upstream.server_names, "the gateway never tried to connect"
    assert_nothing_reached(secure_upstream)


def test_untrusted_upstream_certificate_is_502_before_any_request_byte(
    start_gateway, secure_upstream, tmp_path, gateway_client, raw
):
    elsewhere = TestPKI(tmp_path / "elsewhere", name="Some Other CA")
    tls = {"ca": str(elsewhere.ca_file), "server_name": UPSTREAM_NAME,
           "cert": str(gateway_client.chain), "key": str(gateway_client.key)}  # fmt: skip
    gateway = start_gateway(orders_config(secure_upstream, tls))

    response = raw(gateway.port).exchange("POST", "/orders", body=b"secret order")
    assert_error(response, 502)
    assert secure_upstream.server_names, "the gateway never tried to connect"
    # The handshake failed on the gateway's side, before any request byte was written.
    assert_nothing_reached(secure_upstream)
    assert secure_upstream.client_certificates == []
    assert wait_until(lambda: logged(gateway, "certificate verify failed")), gateway.stderr_text()


def test_upstream_certificate_for_another_name_is_502(
    start_gateway, secure_upstream, internal, gateway_client, raw
):
    tls = mutual_tls(internal, gateway_client, server_name="billing.internal")
    gateway = start_gateway(orders_config(secure_upstream, tls))
    response = raw(gateway.port).exchange("GET", "/orders/1")
    assert_error(response, 502)
    assert secure_upstream.server_names == ["billing.internal"]
    assert_nothing_reached(secure_upstream)
    assert wait_until(lambda: logged(gateway, "certificate verify failed", "hostname mismatch")), (
        gateway.stderr_text()
    )


def test_upstream_host_is_verified_without_server_name(
    start_gateway, secure_upstream, internal, gateway_client, raw
):
    # No server_name: the instance host, 127.0.0.1, must be in the certificate. It is not.
    tls = mutual_tls(internal, gateway_client, server_name=None)
    gateway = start_gateway(orders_config(secure_upstream, tls))
    response = raw(gateway.port).exchange("GET", "/orders/1")
    assert_error(response, 502)
    assert_nothing_reached(secure_upstream)
    assert wait_until(lambda: logged(gateway, "certificate verify failed")), gateway.stderr_text()
