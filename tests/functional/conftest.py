"""Fixtures of the JWT tests, one set per module (a module may override any of them).

- ``idp``: the corp identity provider of ``door``, started for the module;
- ``auth_gateway``: a gateway over ``auth_config``, its work directory (and
  audit log) named after the module;
- ``door``: a ``Door`` through ``auth_gateway``, whose audit log must hold no
  credential the test sent.
"""

from __future__ import annotations

import pytest

from fastgw.testing import GatewayProcess

from .door import Door, auth_config, corp_identity_provider


@pytest.fixture(scope="module")
def idp():
    provider = corp_identity_provider()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def auth_gateway(request, idp, shared_upstream, make_config, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    with GatewayProcess(
        auth_config(make_config, shared_upstream.url, idp, workdir), workdir
    ) as gateway:
        yield gateway


@pytest.fixture
def door(auth_gateway, upstream, raw):
    door = Door(auth_gateway, upstream, raw)
    yield door
    door.assert_audit_is_clean()
