"""Helpers to test a fastgw configuration from pytest, over real sockets.

- ``RecordingUpstream``: a real HTTP/1.1 server that records every request it
  receives and answers echo, download, slow, reset and close routes;
- ``InProcessGateway``: a gateway on its own event loop in a thread of the
  test's process; ``fastgw.testing.plugin`` makes it a pytest fixture;
- ``filters_config``: a config that serves an upstream through Python filters;
- ``GatewayProcess``: runs ``python -m fastgw run -c FILE`` on free ports and
  waits until it is ready;
- ``free_port``: a loopback TCP port nobody listens on right now;
- ``IdentityProvider``, ``SigningKey``, ``mint_token``: a local OpenID Connect
  provider with a rotatable JWKS, and tokens signed by its keys;
- ``TestPKI``: a CA with server and client certificates, good and bad.
"""

from .certs import IssuedCert, TestPKI
from .gateway import InProcessGateway, Response, filters_config
from .idp import IdentityProvider, SigningKey, jwks, mint_token
from .process import GatewayProcess, GatewayStartError, free_port
from .upstream import PATTERN, RecordedRequest, RecordingUpstream, pattern_bytes

__all__ = [
    "PATTERN",
    "GatewayProcess",
    "GatewayStartError",
    "IdentityProvider",
    "InProcessGateway",
    "IssuedCert",
    "RecordedRequest",
    "RecordingUpstream",
    "Response",
    "SigningKey",
    "TestPKI",
    "filters_config",
    "free_port",
    "jwks",
    "mint_token",
    "pattern_bytes",
]
