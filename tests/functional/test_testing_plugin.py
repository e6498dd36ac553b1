"""``fastgw.testing.plugin`` as a user meets it (SPEC section 7): a test file of
theirs, run by pytest, with the in-process gateway, upstream and identity
provider fixtures."""

from __future__ import annotations

USER_TESTS = '''
import http.client
import urllib.request

import pytest

from fastgw.testing import InProcessGateway


def config(upstream, idp, **changes):
    return {
        "listeners": [{"address": "127.0.0.1:0"}],
        "admin": {"address": "127.0.0.1:0"},
        "auth": {"jwt": {"providers": [{
            "name": "corp", "issuer": idp.issuer, "jwks_uri": idp.jwks_uri,
            "audiences": [idp.audience], "algorithms": ["RS256"]}]}},
        "services": {"orders": {"instances": [upstream.url]}},
        "routes": [{"id": "orders", "uri": "lb://orders", "predicates": ["Path=/orders/**"],
                    "filters": ["RequireScopes=read_orders"]}],
        **changes,
    }


def get(gateway, path, token=None):
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_the_door(fastgw_gateway, fastgw_upstream, fastgw_identity_provider):
    idp = fastgw_identity_provider
    gateway = fastgw_gateway(config(fastgw_upstream, idp))
    assert gateway.ready and gateway.url == f"http://127.0.0.1:{gateway.port}"
    assert get(gateway, "/orders/1") == 401
    assert get(gateway, "/orders/1", idp.mint(sub="alice", scope="profile")) == 403
    assert fastgw_upstream.requests == []
    assert get(gateway, "/orders/1", idp.mint(sub="alice", scope="read_orders")) == 200
    [request] = fastgw_upstream.wait_for_requests(1)
    assert request.header("x-auth-subject") == "alice"
    assert request.header("authorization") is None
    metrics = urllib.request.urlopen(gateway.admin_url + "/metrics", timeout=10).read()
    assert b'fastgw_auth_failures_total{reason="missing_token"} 1' in metrics


def test_a_reload(fastgw_gateway, fastgw_upstream, fastgw_identity_provider):
    idp = fastgw_identity_provider
    gateway = fastgw_gateway(config(fastgw_upstream, idp))
    open_routes = [{"id": "orders", "uri": "lb://orders", "predicates": ["Path=/orders/**"],
                    "auth": "none"}]
    gateway.reload(config(fastgw_upstream, idp, routes=open_routes))
    assert get(gateway, "/orders/1") == 200
    with pytest.raises(Exception, match="routes"):
        gateway.reload(config(fastgw_upstream, idp, routes=[{"id": "x"}]))
    assert get(gateway, "/orders/1") == 200  # the running config stays


def test_without_the_fixture(fastgw_upstream, tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "listeners: [{address: '127.0.0.1:0'}]\\nadmin: null\\n"
        f"services: {{up: {{instances: ['{fastgw_upstream.url}']}}}}\\n"
        "routes: [{id: all, uri: 'lb://up', predicates: ['Path=/**'], auth: none}]\\n"
    )
    with InProcessGateway(str(path)) as gateway:
        assert get(gateway, "/anything") == 200
    with pytest.raises(RuntimeError, match="no admin listener"):
        gateway.admin_url
'''


def test_a_users_tests_pass_with_the_plugin(pytester):
    pytester.makeconftest('pytest_plugins = ["fastgw.testing.plugin"]\n')
    pytester.makepyfile(test_gateway=USER_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_the_gateway_is_stopped_after_the_test(pytester):
    pytester.makeconftest('pytest_plugins = ["fastgw.testing.plugin"]\n')
    pytester.makepyfile(test_stop='''
import socket

PORTS = []


def test_start(fastgw_gateway, fastgw_upstream):
    gateway = fastgw_gateway({
        "listeners": [{"address": "127.0.0.1:0"}],
        "admin": None,
        "services": {"up": {"instances": [fastgw_upstream.url]}},
        "routes": [{"id": "all", "uri": "lb://up", "predicates": ["Path=/**"], "auth": "none"}],
    })
    PORTS.append(gateway.port)


def test_port_is_closed_afterwards():
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", PORTS[0])) != 0
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
