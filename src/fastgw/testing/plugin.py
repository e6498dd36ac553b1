"""pytest fixtures to test a gateway config; enable them in a ``conftest.py`` with
``pytest_plugins = ["fastgw.testing.plugin"]``.

- ``fastgw_gateway``: ``fastgw_gateway(config)`` starts an ``InProcessGateway``
  (a dict, a ``Config`` or a file path) and stops it after the test;
- ``fastgw_upstream``: a ``RecordingUpstream`` that records what reached it;
- ``fastgw_identity_provider``: a local OpenID Connect provider with a JWKS;
  its ``mint(...)`` signs tokens;
- ``fastgw_filters``: ``fastgw_filters("filters.py", ...)`` starts a gateway
  that serves every path from ``fastgw_upstream`` through those Python
  filters (see ``filters_config`` for the config and what changes it).
"""

from __future__ import annotations

import pytest

from .gateway import InProcessGateway, filters_config
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


@pytest.fixture
def fastgw_filters(fastgw_gateway, fastgw_upstream):
    def start(*filters, **changes) -> InProcessGateway:
        return fastgw_gateway(filters_config(filters, fastgw_upstream.url, **changes))

    return start
