"""CORS: preflights answered at the door, actual cross-origin responses, check-time refusals.

The config is SCG's "CORS Configuration" example under fastgw's ``cors:`` key,
plus a route of its own with ``metadata.cors`` (SCG 4.x's per-route form).
"""

from __future__ import annotations

import pytest

from .support import assert_error, assert_nothing_reached, fetch, route, run_python

SECRET = "a-shared-secret-of-at-least-32-bytes!"
PREFLIGHT = ("-X", "OPTIONS", "-H", "Access-Control-Request-Method: GET")


@pytest.fixture(scope="module")
def gateway_config(shared_upstream, make_config):
    return make_config(
        shared_upstream.url,
        auth={"jwt": {"providers": [{"name": "local", "issuer": "https://idp.test",
                                     "secret": SECRET, "algorithms": ["HS256"]}]}},
        cors={
            "cors-configurations": {
                "[/**]": {
                    "allowedOrigins": "https://docs.spring.io",
                    "allowedMethods": ["GET"],
                    "exposedHeaders": ["X-Total"],
                },
            },
            "add-to-simple-url-handler-mapping": True,
        },
        routes=[
            route("open", "Path=/echo/**"),
            {**route("secure", "Path=/secure/**"), "auth": "jwt"},
            route("shop", "Path=/shop/**", metadata={"cors": {
                "allowedOriginPatterns": "https://*.shop.test:[*]",
                "allowedMethods": "GET, PUT",
                "allowedHeaders": "*",
                "allowCredentials": True,
                "maxAge": "30m",
            }}),
        ],
    )


def url(gateway, path: str) -> str:
    return f"{gateway.url}{path}"


def test_preflight_from_an_allowed_origin_is_answered_before_authentication(gateway, upstream):
    response = fetch(url(gateway, "/secure/orders"), *PREFLIGHT,
                     "-H", "Origin: https://docs.spring.io")
    assert response.status == 200, response
    assert response.header("access-control-allow-origin") == "https://docs.spring.io"
    assert response.header("access-control-allow-methods") == "GET"
    assert "Origin" in response.header("vary")
    assert response.header("access-control-allow-credentials") is None
    assert response.body == b""
    assert_nothing_reached(upstream)


def test_preflight_from_another_origin_is_403_without_allow_origin(gateway, upstream):
    response = fetch(url(gateway, "/secure/orders"), *PREFLIGHT,
                     "-H", "Origin: https://evil.test")
    assert_error(response, 403)
    assert response.header("access-control-allow-origin") is None
    assert_nothing_reached(upstream)


def test_preflight_for_a_method_not_allowed_is_403(gateway, upstream):
    response = fetch(url(gateway, "/echo/x"), "-X", "OPTIONS",
                     "-H", "Access-Control-Request-Method: DELETE",
                     "-H", "Origin: https://docs.spring.io")
    assert_error(response, 403)
    assert response.header("access-control-allow-origin") is None
    assert_nothing_reached(upstream)


def test_preflight_no_route_takes_is_answered_by_the_global_policy(gateway, upstream):
    response = fetch(url(gateway, "/nowhere"), *PREFLIGHT, "-H", "Origin: https://docs.spring.io")
    assert response.status == 200, response
    assert response.header("access-control-allow-origin") == "https://docs.spring.io"
    assert_error(fetch(url(gateway, "/nowhere"), "-H", "Origin: https://docs.spring.io"), 404)
    assert_nothing_reached(upstream)


def test_route_policy_with_credentials_echoes_the_origin(gateway, upstream):
    response = fetch(url(gateway, "/shop/cart"), "-X", "OPTIONS",
                     "-H", "Access-Control-Request-Method: PUT",
                     "-H", "Access-Control-Request-Headers: X-Cart, Content-Type",
                     "-H", "Origin: https://eu.shop.test:8443")
    assert response.status == 200, response
    assert response.header("access-control-allow-origin") == "https://eu.shop.test:8443"
    assert response.header("access-control-allow-credentials") == "true"
    assert response.header("access-control-allow-headers") == "X-Cart, Content-Type"
    assert response.header("access-control-max-age") == "1800"
    assert set(response.header("access-control-allow-methods").split(", ")) == {"GET", "PUT"}
    refused = fetch(url(gateway, "/shop/cart"), *PREFLIGHT, "-H", "Origin: https://shop.evil")
    assert_error(refused, 403)
    assert_nothing_reached(upstream)


def test_actual_cross_origin_request_gets_the_allow_lines(gateway, upstream):
    response = fetch(url(gateway, "/echo/list"), "-H", "Origin: https://docs.spring.io")
    assert response.status == 200, response
    assert response.header("access-control-allow-origin") == "https://docs.spring.io"
    assert response.header("access-control-expose-headers") == "X-Total"
    assert "Origin" in response.header("vary")
    assert [r.header("origin") for r in upstream.requests] == ["https://docs.spring.io"]


def test_actual_request_on_an_authenticated_route_gets_them_on_its_401(gateway, upstream):
    response = fetch(url(gateway, "/secure/orders"), "-H", "Origin: https://docs.spring.io")
    assert_error(response, 401)
    assert response.header("access-control-allow-origin") == "https://docs.spring.io"
    assert_nothing_reached(upstream)


def test_actual_request_from_a_disallowed_origin_is_403(gateway, upstream):
    response = fetch(url(gateway, "/echo/list"), "-H", "Origin: https://evil.test")
    assert_error(response, 403)
    assert response.header("access-control-allow-origin") is None
    assert_nothing_reached(upstream)


def test_same_origin_and_origin_less_requests_are_not_cors(gateway, upstream):
    plain = fetch(url(gateway, "/echo/plain"))
    same = fetch(url(gateway, "/echo/same"), "-H", f"Origin: {gateway.url}")
    for response in (plain, same):
        assert response.status == 200, response
        assert response.header("access-control-allow-origin") is None
    assert len(upstream.requests) == 2


def test_upstream_cors_lines_give_way_to_the_gateways(gateway, upstream):
    response = fetch(url(gateway, "/echo/headers?header=Access-Control-Allow-Origin:*"),
                     "-H", "Origin: https://docs.spring.io")
    assert response.status == 200, response
    assert response.header_values("access-control-allow-origin") == ["https://docs.spring.io"]


CREDENTIALS_WITH_ANY_ORIGIN = """\
services:
  echo: {instances: ["http://127.0.0.1:9001"]}
cors:
  cors-configurations:
    '[/**]':
      allowedOrigins: "*"
      allowCredentials: true
routes:
  - id: echo
    uri: lb://echo
    predicates: [Path=/echo/**]
    auth: none
    metadata:
      cors:
        allowedOrigins: "https://a.test/path"
        maxAge: soon
"""


def test_check_refuses_any_origin_with_credentials_and_bad_values(tmp_path):
    path = tmp_path / "application.yml"
    path.write_text(CREDENTIALS_WITH_ANY_ORIGIN)
    result = run_python("-m", "fastgw", "check", "-c", str(path))
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert any(line.startswith(f"{path}:7: ") and "allowCredentials" in line
               and "'*'" in line for line in lines), lines
    assert any(line.startswith(f"{path}:15: ") and "not an origin" in line for line in lines)
    assert any(line.startswith(f"{path}:16: ") and "maxAge" in line for line in lines), lines
