"""The TLS client helpers of the HTTPS listener tests (``test_tls``, ``test_mtls``).

``TLSConnection`` is a ``RawConnection`` over TLS, ``client_context`` the
client's ``ssl`` context, ``tls_listener`` a listener serving a certificate,
``refusal`` the error a refused client sees, and ``get`` one GET on a
connection.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from conftest import RawConnection, RawResponse

from fastgw.testing import free_port
from fastgw.testing.certs import IssuedCert


class TLSConnection(RawConnection):
    """A ``RawConnection`` over TLS; the handshake is done when it is made.

    ``server_name`` is sent as SNI and, when ``context.check_hostname`` is
    on, verified; None sends no SNI. ``session`` is offered for resumption.
    """

    def __init__(
        self,
        port: int,
        context: ssl.SSLContext,
        server_name: str | None = "localhost",
        timeout: float = 10.0,
        session: ssl.SSLSession | None = None,
    ) -> None:
        super().__init__(port, timeout)
        try:
            self.sock = context.wrap_socket(self.sock, server_hostname=server_name, session=session)
        except BaseException:
            self.sock.close()
            raise

    @property
    def peer_der(self) -> bytes:
        """The certificate the gateway presented (DER)."""
        return self.sock.getpeercert(binary_form=True)

    def __enter__(self) -> TLSConnection:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def client_context(
    ca_file: str | Path,
    cert: IssuedCert | None = None,
    *,
    maximum: ssl.TLSVersion | None = None,
    alpn: list[str] | None = None,
) -> ssl.SSLContext:
    """A verifying client context trusting ``ca_file``, presenting ``cert`` when given."""
    context = ssl.create_default_context(cafile=str(ca_file))
    if cert is not None:
        context.load_cert_chain(cert.chain, cert.key)
    if maximum is not None:
        context.maximum_version = maximum
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    return context


def tls_listener(server: IssuedCert, **tls) -> dict:
    """A listener on a free loopback port serving ``server``; ``tls`` adds keys."""
    return {
        "address": f"127.0.0.1:{free_port()}",
        "tls": {"cert": str(server.chain), "key": str(server.key), **tls},
    }


def refusal(port: int, context: ssl.SSLContext, path: str = "/echo/refused") -> Exception:
    """Connect and send one request; the error that ended it. Fails if an answer came.

    With TLS 1.2 a refused client fails in the handshake. With TLS 1.3 the
    client's handshake is over before the server has checked its
    certificate, so the refusal shows when the client reads.
    """
    try:
        with TLSConnection(port, context) as connection:
            response = connection.exchange("GET", path)
    except (ssl.SSLError, ConnectionError) as exc:
        return exc
    raise AssertionError(f"the gateway answered a client it should have refused: {response}")


def get(connection: RawConnection, path: str, headers=()) -> RawResponse:
    return connection.exchange("GET", path, headers=list(headers))
