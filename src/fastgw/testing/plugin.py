"""pytest fixtures to test a gateway config; enable them in a ``conftest.py`` with
``pytest_plugins = ["fastgw.testing.plugin"]``.

- ``fastgw_gateway``: ``fastgw_gateway(config)`` starts an ``InProcessGateway``
  (a dict, a ``Config`` or a file path) and stops it after the test;
- ``fastgw_upstream``: a ``RecordingUpstream`` that records what reached it;
- ``fastgw_identity_provider``: a local OpenID Connect provider with a JWKS;
  its ``mint(...)`` signs tokens.
"""

from __future__ import annotations

import pytest

from .gateway import InProcessGateway
from .idp import IdentityProvider
from .upstream import RecordingUpstream


@pytest.fixture
def fastgw_gateway():
    started: list[InProcessGateway] = []

    def start(config) -> InProcessGateway:
        gateway = InProcessGateway(config)
        started.append(gateway)
        return gateway.start()

    yield start
    for gateway in reversed(started):
        gateway.stop()


@pytest.fixture
def fastgw_upstream():
    with RecordingUpstream() as upstream:
        yield upstream


@pytest.fixture
def fastgw_identity_provider():
    with IdentityProvider() as provider:
        yield provider
