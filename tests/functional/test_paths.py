"""Path normalisation before routing; the upstream receives the normalised path."""

from __future__ import annotations

import pytest

from .support import assert_error, assert_nothing_reached, fetch


@pytest.mark.parametrize(
    ("target", "received"),
    [
        ("/echo/a/../b", "/echo/b"),
        ("/echo/a/%2e%2e/x", "/echo/x"),
        ("/echo/a/%2E%2e/x", "/echo/x"),
        ("/echo/./a/./b", "/echo/a/b"),
        ("/echo/a/%2e/b", "/echo/a/b"),
        ("/echo//a///b", "/echo/a/b"),
        ("/echo/%41%62c%7E%2D%5F%2E", "/echo/Abc~-_."),
        ("/echo/a%20b", "/echo/a%20b"),
        ("/echo/a%252Fb", "/echo/a%252Fb"),
        ("/echo/a/../b?x=../y&z=%2F", "/echo/b?x=../y&z=%2F"),
        ("/other/../echo/x", "/echo/x"),
        ("/echo/%2E%2E/direct/x", "/x"),  # routed as /direct/x, whose prefix is stripped
    ],
)
def test_path_is_normalised_before_routing(gateway, upstream, raw, target, received):
    response = raw(gateway.port).exchange("GET", target)
    assert response.status == 200, response
    assert [r.target for r in upstream.requests] == [received]


@pytest.mark.parametrize(
    "target",
    [
        "/echo/%2e%2e/x",  # resolves to /x: no route, however it was spelt
        "/direct/%2e%2e/nowhere",
        "/echo/../nowhere",
    ],
)
def test_dot_segments_cannot_escape_a_route(gateway, upstream, raw, target):
    assert_error(raw(gateway.port).exchange("GET", target), 404)
    assert_nothing_reached(upstream)


@pytest.mark.parametrize(
    "target",
    [
        "/echo/a%2Fb",
        "/echo/a%2fb",
        "/echo/a%5Cb",
        "/echo/a%5cb",
        "/echo/a%00b",
        "/echo/a\\b",
        "/echo/../../etc/passwd",
        "/..",
        "/echo/%2e%2e/%2e%2e/x",
        "/echo/a/..%2F..%2Fx",
    ],
)
def test_dangerous_paths_are_400(gateway, upstream, raw, target):
    assert_error(raw(gateway.port).exchange("GET", target), 400)
    assert_nothing_reached(upstream)


def test_rejected_path_with_curl_path_as_is(gateway, upstream):
    response = fetch(f"{gateway.url}/echo/../../secret")
    assert response.status == 400, response
    assert_nothing_reached(upstream)
