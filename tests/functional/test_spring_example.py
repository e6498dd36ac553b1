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
def example(start_gateway, upstream, idp, free_port):
    config = yaml.safe_load(EXAMPLE.read_text())
    config["services"]["order-service"]["instances"] = [upstream.url]
    config["services"]["stock-service"]["instances"] = [f"http://127.0.0.1:{free_port()}"]
    config["auth"]["jwt"]["providers"] = [provider_config(idp)]
    return start_gateway(config)


def test_the_example_passes_check():
    result = subprocess.run([sys.executable, "-m", "fastgw", "check", "-c", str(EXAMPLE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ok (5 routes" in result.stdout


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


def test_legacy_gets_are_asked_again_after_a_503(example, upstream, idp, raw):
    bearer = [("Authorization", f"Bearer {idp.mint(sub='dave', aud=AUDIENCE)}")]
    response = raw(example.port).exchange("GET", "/legacy/status/503", headers=bearer)
    assert response.status == 503, response
    assert [r.path for r in upstream.requests] == ["/status/503"] * 3


def test_stock_is_answered_by_the_fallback_while_stock_service_fails(example, upstream, raw):
    for _ in range(6):
        response = raw(example.port).exchange("GET", "/stock/7")
        assert response.status == 200, response
    assert {r.path for r in upstream.requests} == {"/fallback/stock"}
    metrics = raw(example.admin_port).exchange("GET", "/metrics").body.decode()
    assert 'fastgw_circuit_breaker_state{route="stock",name="stock",state="open"} 1' in metrics


def test_the_shop_may_call_orders_from_the_browser(example, upstream, raw):
    preflight = [("Origin", "https://shop.example.test"),
                 ("Access-Control-Request-Method", "POST"),
                 ("Access-Control-Request-Headers", "authorization")]
    response = raw(example.port).exchange("OPTIONS", "/orders/42", headers=preflight)
    assert response.status == 200, response
    assert response.header("access-control-allow-origin") == "https://shop.example.test"
    assert response.header("access-control-max-age") == "3600"
    refused = [("Origin", "https://evil.example.test"), *preflight[1:]]
    response = raw(example.port).exchange("OPTIONS", "/orders/42", headers=refused)
    assert response.status == 403, response
    assert response.header("access-control-allow-origin") is None
    assert upstream.requests == []
