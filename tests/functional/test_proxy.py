"""Routing, predicates, filters, keep-alive and pipelining through a real gateway."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from .support import assert_error, assert_nothing_reached, fetch, route

# Spring's syntax, where "$\{" keeps the placeholder from environment expansion.
REWRITE = "RewritePath=/rw/?(?<segment>.*), /v2/$\\{segment}"


@pytest.fixture(scope="module")
def gateway_config(shared_upstream, make_config):
    def tagged(route_id, *predicates, filters=()):
        tag = f"AddRequestHeader=X-Route, {route_id}"
        return route(route_id, *predicates, filters=[tag, *filters])

    routes = [
        tagged("shadow-wide", "Path=/shadow/**"),
        tagged("shadow-narrow", "Path=/shadow/deep/**"),
        tagged("ordered-narrow", "Path=/ordered/deep/**"),
        tagged("ordered-wide", "Path=/ordered/**"),
        tagged("post-or-put", "Path=/method/**", "Method=POST,PUT"),
        tagged("any-method", "Path=/method/**"),
        tagged("get-only", "Path=/getonly/**", "Method=GET"),
        tagged("host", "Path=/host/**", "Host=*.example.com"),
        tagged("header", "Path=/tenant/**", "Header=X-Tenant, ac.*"),
        tagged("segment", "Path=/users/{id}/profile"),
        tagged("star", "Path=/files/*/meta"),
        tagged("expanded", {"name": "Path", "args": {"patterns": ["/expanded/**"]}}),
        route("strip2", "Path=/strip2/**", uri=shared_upstream.url, filters=["StripPrefix=2"]),
        route("rewrite", "Path=/rw/**", filters=[REWRITE]),
        route("add", "Path=/add/**", filters=["AddRequestHeader=X-Added, gateway"]),
        route("set", "Path=/set/**", filters=["SetRequestHeader=X-Set, gateway"]),
        route("remove", "Path=/remove/**", filters=["RemoveRequestHeader=X-Secret"]),
        route("response", "Path=/respond/**", filters=["AddResponseHeader=X-Resp, added"]),
        route("echo", "Path=/echo/**"),
        route("direct", "Path=/direct/**", uri=shared_upstream.url, filters=["StripPrefix=1"]),
    ]
    return make_config(shared_upstream.url, routes=routes)


def test_get_reaches_upstream_with_query_and_comes_back(gateway, upstream):
    response = fetch(f"{gateway.url}/echo/hello?x=1&y=two", "-H", "X-Client: yes")
    assert response.status == 200, response
    [received] = upstream.requests
    assert received.method == "GET"
    assert received.target == "/echo/hello?x=1&y=two"
    assert received.header("x-client") == "yes"
    assert response.json()["target"] == "/echo/hello?x=1&y=two"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_methods_and_bodies_are_forwarded(gateway, upstream, method):
    response = fetch(f"{gateway.url}/echo/m", "-X", method, "--data-binary", "payload-bytes")
    assert response.status == 200, response
    [received] = upstream.requests
    assert received.method == method
    assert received.body == b"payload-bytes"


def test_head_gets_headers_only_and_connection_stays_usable(gateway, upstream, raw):
    connection = raw(gateway.port)
    head = connection.exchange("HEAD", "/echo/head")
    assert head.status == 200, head
    assert head.body == b""
    following = connection.exchange("GET", "/echo/after-head")
    assert following.status == 200, following
    assert following.json()["target"] == "/echo/after-head"
    assert [r.method for r in upstream.requests] == ["HEAD", "GET"]


def test_no_body_status_from_upstream_keeps_connection_usable(gateway, upstream, raw):
    connection = raw(gateway.port)
    no_content = connection.exchange("GET", "/echo/status/204")
    assert no_content.status == 204, no_content
    assert no_content.body == b""
    following = connection.exchange("GET", "/echo/after-204")
    assert following.status == 200, following
    assert following.json()["target"] == "/echo/after-204"


def test_upstream_error_status_is_relayed_unchanged(gateway, upstream):
    response = fetch(f"{gateway.url}/echo/status/503")
    assert response.status == 503, response
    assert response.json()["target"] == "/echo/status/503"


def test_no_route_is_404_json_and_nothing_reaches_upstream(gateway, upstream, raw):
    response = raw(gateway.port).exchange("GET", "/nowhere/at/all")
    assert_error(response, 404)
    assert_nothing_reached(upstream)


def test_admin_paths_are_not_served_on_the_listener(gateway, upstream, raw):
    for path in ("/metrics", "/healthz", "/readyz"):
        assert_error(raw(gateway.port).exchange("GET", path), 404)
    assert_nothing_reached(upstream)


@pytest.mark.parametrize(
    ("path", "expected_route"),
    [
        ("/shadow/deep/x", "shadow-wide"),  # first match wins, not the most specific
        ("/shadow/x", "shadow-wide"),
        ("/ordered/deep/x", "ordered-narrow"),
        ("/ordered/x", "ordered-wide"),
    ],
)
def test_first_matching_route_wins(gateway, upstream, path, expected_route):
    assert fetch(gateway.url + path).status == 200
    assert upstream.requests[0].header_values("x-route") == [expected_route]


@pytest.mark.parametrize(
    ("method", "expected_route"),
    [("POST", "post-or-put"), ("PUT", "post-or-put"), ("GET", "any-method")],
)
def test_method_predicate(gateway, upstream, method, expected_route):
    assert fetch(f"{gateway.url}/method/x", "-X", method).status == 200
    assert upstream.requests[0].header_values("x-route") == [expected_route]


def test_method_predicate_without_fallback_is_404(gateway, upstream, raw):
    assert raw(gateway.port).exchange("GET", "/getonly/x").status == 200
    upstream.clear()
    assert_error(raw(gateway.port).exchange("POST", "/getonly/x", body=b"x"), 404)
    assert_nothing_reached(upstream)


@pytest.mark.parametrize("host", ["api.example.com", "api.example.com:8080"])
def test_host_predicate_matches(gateway, upstream, raw, host):
    response = raw(gateway.port).exchange("GET", "/host/x", host=host)
    assert response.status == 200, response
    assert upstream.requests[0].header_values("x-route") == ["host"]


@pytest.mark.parametrize("host", ["example.org", "api.example.org", "example.com.evil.org"])
def test_host_predicate_mismatch_is_404(gateway, upstream, raw, host):
    assert_error(raw(gateway.port).exchange("GET", "/host/x", host=host), 404)
    assert_nothing_reached(upstream)


def test_header_predicate(gateway, upstream, raw):
    matched = raw(gateway.port).exchange("GET", "/tenant/x", headers=[("X-Tenant", "acme")])
    assert matched.status == 200, matched
    assert upstream.requests[0].header_values("x-route") == ["header"]
    upstream.clear()
    for headers in ([("X-Tenant", "other")], []):
        assert_error(raw(gateway.port).exchange("GET", "/tenant/x", headers=headers), 404)
    assert_nothing_reached(upstream)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/users/42/profile", 200),
        ("/users/42/extra/profile", 404),
        ("/users/profile", 404),
        ("/files/a.txt/meta", 200),
        ("/files/a/b/meta", 404),
        ("/expanded/anything/below", 200),
    ],
)
def test_path_patterns(gateway, upstream, raw, path, status):
    assert raw(gateway.port).exchange("GET", path).status == status
    assert [r.target for r in upstream.requests] == ([path] if status == 200 else [])


def test_double_star_matches_the_prefix_itself(gateway, upstream, raw):
    assert raw(gateway.port).exchange("GET", "/echo").status == 200
    assert upstream.requests[0].path == "/echo"


@pytest.mark.parametrize(
    ("path", "received"),
    [
        ("/direct/a/b?q=1", "/a/b?q=1"),
        ("/strip2/one/two/three", "/two/three"),
        ("/rw/some/thing?q=1", "/v2/some/thing?q=1"),
    ],
)
def test_path_filters(gateway, upstream, path, received):
    assert fetch(gateway.url + path).status == 200
    assert upstream.requests[0].target == received


def test_add_request_header_keeps_the_callers_value_too(gateway, upstream):
    assert fetch(f"{gateway.url}/add/x", "-H", "X-Added: caller").status == 200
    assert sorted(upstream.requests[0].header_values("x-added")) == ["caller", "gateway"]


def test_add_request_header(gateway, upstream):
    assert fetch(f"{gateway.url}/add/x").status == 200
    assert upstream.requests[0].header_values("x-added") == ["gateway"]


def test_set_request_header_replaces_the_callers_value(gateway, upstream):
    assert fetch(f"{gateway.url}/set/x", "-H", "X-Set: caller").status == 200
    assert upstream.requests[0].header_values("x-set") == ["gateway"]


def test_remove_request_header(gateway, upstream):
    response = fetch(f"{gateway.url}/remove/x", "-H", "X-Secret: s3cr3t", "-H", "X-Kept: k")
    assert response.status == 200, response
    assert not upstream.requests[0].has_header("x-secret")
    assert upstream.requests[0].header("x-kept") == "k"


def test_add_response_header(gateway, upstream):
    response = fetch(f"{gateway.url}/respond/x")
    assert response.status == 200, response
    assert response.header_values("x-resp") == ["added"]
    assert not upstream.requests[0].has_header("x-resp")


def test_hundred_requests_on_one_keep_alive_connection(gateway, upstream, raw):
    connection = raw(gateway.port)
    client_address = connection.sock.getsockname()
    for i in range(100):
        response = connection.exchange("GET", f"/echo/keep-alive/{i}")
        assert response.status == 200, (i, response)
        assert response.json()["target"] == f"/echo/keep-alive/{i}"
        assert (response.header("connection") or "").lower() != "close"
    assert connection.sock.getsockname() == client_address
    assert [r.target for r in upstream.requests] == [f"/echo/keep-alive/{i}" for i in range(100)]


def test_pipelined_requests_are_answered_in_order(gateway, upstream, raw):
    connection = raw(gateway.port)
    request = b"GET /echo/pipelined/%d HTTP/1.1\r\nHost: gateway.test\r\n\r\n"
    connection.send(b"".join(request % i for i in range(10)))
    targets = [connection.read_response().json()["target"] for _ in range(10)]
    assert targets == [f"/echo/pipelined/{i}" for i in range(10)]


def test_pipelined_requests_with_bodies(gateway, upstream, raw):
    connection = raw(gateway.port)
    connection.send(
        b"POST /echo/first HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 5\r\n\r\nhello"
        b"POST /echo/second HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
        b"GET /echo/third HTTP/1.1\r\nHost: gateway.test\r\n\r\n"
    )
    bodies = [connection.read_response().json() for _ in range(3)]
    assert [(b["target"], b["body"]) for b in bodies] == [
        ("/echo/first", "hello"),
        ("/echo/second", "abc"),
        ("/echo/third", ""),
    ]


def test_connection_close_from_the_client_closes_after_the_response(gateway, upstream, raw):
    connection = raw(gateway.port)
    response = connection.exchange("GET", "/echo/bye", headers=[("Connection", "close")])
    assert response.status == 200, response
    assert connection.closed_by_peer()
    assert connection.buffer == b""


def test_http_1_0_request_is_answered_and_closed(gateway, upstream, raw):
    connection = raw(gateway.port)
    connection.send(b"GET /echo/old HTTP/1.0\r\nHost: gateway.test\r\n\r\n")
    response = connection.read_response()
    assert response.status == 200, response
    assert response.complete
    assert response.json()["target"] == "/echo/old"
    assert connection.closed_by_peer()


def test_request_id_is_new_per_request_and_matches_upstream(gateway, upstream):
    ids = []
    for _ in range(2):
        response = fetch(f"{gateway.url}/echo/id")
        assert response.status == 200
        ids.append(response.header("x-request-id"))
    assert ids[0] and ids[1] and ids[0] != ids[1]
    assert [r.header("x-request-id") for r in upstream.requests] == ids


def test_access_log_has_one_json_line_for_the_request(gateway, upstream):
    path = f"/echo/logged-{uuid.uuid4().hex}"
    assert fetch(gateway.url + path).status == 200
    deadline = time.monotonic() + 5
    while not (lines := [ln for ln in gateway.stderr_text().splitlines() if path in ln]):
        assert time.monotonic() < deadline, gateway.stderr_text()[-2000:]
        time.sleep(0.1)
    assert len(lines) == 1, lines
    assert isinstance(json.loads(lines[0]), dict)
