"""examples/spring/application.yml passes ``fastgw check``, runs, and does what its comments say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .door import AUDIENCE, provider_config
from .support import assert_error

EXAMPLE = Path(__file__).parents[2] / "examples" / "spring" / "application.yml"


@pytest.fixture
def example(start_gateway, upstream, idp):
    config = yaml.safe_load(EXAMPLE.read_text())
    config["services"]["order-service"]["instances"] = [upstream.url]
    config["auth"]["jwt"]["providers"] = [provider_config(idp)]
    return start_gateway(config)


def test_the_example_passes_check():
    result = subprocess.run([sys.executable, "-m", "fastgw", "check", "-c", str(EXAMPLE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ok (3 routes" in result.stdout


def test_orders_relay_the_token_and_limit_each_caller(example, upstream, idp, raw):
    assert_error(raw(example.port).exchange("GET", "/orders/42"), 401)
    token = idp.mint(sub="alice", aud=AUDIENCE)
    bearer = [("Authorization", f"Bearer {token}")]
    response = raw(example.port).exchange("GET", "/orders/42", headers=bearer)
    assert response.status == 200, response
    assert response.header("x-gateway") == "fastgw"
    [request] = upstream.requests
    assert request.path == "/orders/42"
    assert request.header("authorization") == f"Bearer {token}"
    connection = raw(example.port)
    statuses = [connection.exchange("GET", "/orders/1", headers=bearer).status
                for _ in range(40)]
    assert 429 in statuses, statuses
    # Another caller has a bucket of its own.
    other = [("Authorization", f"Bearer {idp.mint(sub='bob', aud=AUDIENCE)}")]
    assert raw(example.port).exchange("GET", "/orders/1", headers=other).status == 200


def test_legacy_paths_lose_their_prefix(example, upstream, idp, raw):
    bearer = [("Authorization", f"Bearer {idp.mint(sub='carol', aud=AUDIENCE)}")]
    response = raw(example.port).exchange("GET", "/legacy/orders/7", headers=bearer)
    assert response.status == 200, response
    assert upstream.requests[0].path == "/orders/7"


def test_the_old_host_redirects_without_reaching_an_upstream(example, upstream, raw):
    response = raw(example.port).exchange("GET", "/orders/7", host="orders.old.example.test")
    assert response.status == 301, response
    assert response.header("location") == "https://orders.example.test"
    assert upstream.requests == []
