"""The Spring Cloud Gateway layout, predicates and filters, over real sockets.

Each route is the SCG reference's own example, behind a Path of its own so
that the examples do not meet; ``/plain/**`` has no filter of its own and is
where each change must not show.
"""

from __future__ import annotations

import itertools
import time
from urllib.parse import quote

import pytest

from fastgw.testing import GatewayProcess, RecordingUpstream

from .support import assert_error, scrape, wait_until

CONFIG = r"""
services:
  echo:
    instances: [{upstream}]
spring:
  cloud:
    gateway:
      default-filters:
        - AddResponseHeader=X-Response-Default-Red, Default-Blue
      routes:
        - id: plain
          uri: lb://echo
          predicates: [Path=/plain/**]
        - id: late
          uri: lb://echo
          order: 5
          predicates: [Path=/order/**]
          filters: ['SetResponseHeader=X-Route, late']
        - id: early
          uri: lb://echo
          order: -1
          predicates: [Path=/order/**]
          filters: ['SetResponseHeader=X-Route, early']
        - id: header_route
          uri: lb://echo
          predicates: [Path=/header/**, 'Header=X-Request-Id, \d+']
        - id: cookie_route
          uri: lb://echo
          predicates: [Path=/cookie/**, 'Cookie=chocolate, ch.p']
        - id: after_route
          uri: lb://echo
          predicates: [Path=/after/**, 'After=2017-01-20T17:42:47.789-07:00[America/Denver]']
        - id: before_route
          uri: lb://echo
          predicates: [Path=/before/**, 'Before=2017-01-20T17:42:47.789-07:00[America/Denver]']
        - id: between_route
          uri: lb://echo
          predicates:
            - Path=/between/**
            - >-
              Between=2017-01-20T17:42:47.789-07:00[America/Denver],
              2017-01-21T17:42:47.789-07:00[America/Denver]
        - id: host_route
          uri: lb://echo
          predicates: [Path=/host/**, 'Host=**.somehost.org,**.anotherhost.org']
        - id: sub_route
          uri: lb://echo
          predicates: [Path=/sub/**, 'Host={sub}.myhost.org']
          filters: ['AddRequestHeader=X-Sub, {sub}']
        - id: method_route
          uri: lb://echo
          predicates: [Path=/method/**, 'Method=GET,POST']
        - id: path_route
          uri: lb://echo
          predicates: ['Path=/red/{segment},/blue/{segment}']
          filters: ['AddRequestHeader=X-Request-Red, Blue-{segment}']
        - id: strict_path_route
          uri: lb://echo
          predicates:
            - name: Path
              args: {patterns: '/strict/{segment}', match-trailing-slash: false}
        - id: query_route
          uri: lb://echo
          predicates: [Path=/query/**, Query=green]
        - id: query_regex_route
          uri: lb://echo
          predicates: [Path=/query-regex/**, 'Query=red, gree.']
        - id: remoteaddr_route
          uri: lb://echo
          predicates: [Path=/remote/**, RemoteAddr=192.168.1.1/24]
        - id: local_route
          uri: lb://echo
          predicates: [Path=/local/**, 'RemoteAddr=127.0.0.0/8, ::1']
        - id: xforwarded_remoteaddr_route
          uri: lb://echo
          predicates: [Path=/xff/**, XForwardedRemoteAddr=192.168.1.1/24]
        - id: weight_high
          uri: lb://echo
          predicates: [Path=/weight/**, 'Weight=group1, 8']
          filters: ['SetResponseHeader=X-Weight, high']
        - id: weight_low
          uri: lb://echo
          predicates: [Path=/weight/**, 'Weight=group1, 2']
          filters: ['SetResponseHeader=X-Weight, low']
        - id: add_request_headers_route
          uri: lb://echo
          predicates: [Path=/f/if-not-present/**]
          filters: ['AddRequestHeadersIfNotPresent=X-Request-Color-1:blue,X-Request-Color-2:green']
        - id: add_request_parameter_route
          uri: lb://echo
          predicates: [Path=/f/add-parameter/**]
          filters: ['AddRequestParameter=red, blue']
        - id: map_request_header_route
          uri: lb://echo
          predicates: [Path=/f/map-header/**]
          filters: ['MapRequestHeader=Blue, X-Request-Red']
        - id: removerequestparameter_route
          uri: lb://echo
          predicates: [Path=/f/remove-parameter/**]
          filters: [RemoveRequestParameter=red]
        - id: rewriterequestparameter_route
          uri: lb://echo
          predicates: [Path=/f/rewrite-parameter/**]
          filters: ['RewriteRequestParameter=campaign,fall2023']
        - id: rewriterequestparameter_expanded
          uri: lb://echo
          predicates: [Path=/f/rewrite-parameter-args/**]
          filters:
            - name: RewriteRequestParameter
              args: {name: campaign, replacement: 'a b,c'}
        - id: removerequestheader_route
          uri: lb://echo
          predicates: [Path=/f/remove-header/**]
          filters: [RemoveRequestHeader=X-Request-Foo]
        - id: setrequestheader_route
          uri: lb://echo
          predicates: [Path=/f/set-header/**]
          filters: ['SetRequestHeader=X-Request-Red, Blue']
        - id: set_request_host_header_route
          uri: lb://echo
          predicates: [Path=/f/set-host/**]
          filters:
            - name: SetRequestHostHeader
              args: {host: example.org}
        - id: preserve_host_route
          uri: lb://echo
          predicates: [Path=/f/preserve-host/**]
          filters: [PreserveHostHeader]
        - id: add_response_header_route
          uri: lb://echo
          predicates: [Path=/f/add-response-header/**]
          filters: ['AddResponseHeader=X-Response-Red, Blue']
        - id: dedupe_response_header_route
          uri: lb://echo
          predicates: [Path=/f/dedupe/**]
          filters:
            - DedupeResponseHeader=Access-Control-Allow-Credentials Access-Control-Allow-Origin
        - id: removeresponseheader_route
          uri: lb://echo
          predicates: [Path=/f/remove-response-header/**]
          filters: [RemoveResponseHeader=X-Response-Foo]
        - id: rewriteresponseheader_route
          uri: lb://echo
          predicates: [Path=/f/rewrite-response-header/**]
          filters: ['RewriteResponseHeader=X-Response-Red, password=[^&]+, password=***']
        - id: rewritelocationresponseheader_route
          uri: lb://echo
          predicates: ['Path=/f/location/**,/v3/location/**']
          filters: ['RewriteLocationResponseHeader=AS_IN_REQUEST, Location, ,']
        - id: rewritelocation_always_route
          uri: lb://echo
          predicates: [Path=/f/location-always/**]
          filters:
            - name: RewriteLocationResponseHeader
              args: {stripVersionMode: ALWAYS_STRIP, hostValue: api.example.com,
                     protocolsRegex: https}
        - id: setresponseheader_route
          uri: lb://echo
          predicates: [Path=/f/set-response-header/**]
          filters: ['SetResponseHeader=X-Response-Red, Blue']
        - id: secure_headers_route
          uri: lb://echo
          predicates: [Path=/f/secure/**]
          filters: [SecureHeaders]
        - id: prefixpath_route
          uri: lb://echo
          predicates: [Path=/f/prefix/**]
          filters: [PrefixPath=/mypath]
        - id: rewritepath_route
          uri: lb://echo
          predicates: [Path=/f/rewrite/red/**]
          filters: ['RewritePath=/f/rewrite/red/?(?<segment>.*), /$\{segment}']
        - id: setpath_route
          uri: lb://echo
          predicates: ['Path=/f/setpath/red/{segment}']
          filters: ['SetPath=/{segment}']
        - id: nameRoot
          uri: lb://echo
          predicates: [Path=/f/strip/**]
          filters: [StripPrefix=2]
        - id: redirect_route
          uri: lb://echo
          predicates: [Path=/f/redirect/**]
          filters: ['RedirectTo=302, https://acme.org']
        - id: setstatusint_route
          uri: lb://echo
          predicates: [Path=/f/status/**]
          filters: [SetStatus=401]
        - id: request_size_route
          uri: lb://echo
          predicates: [Path=/f/size/**]
          filters:
            - name: RequestSize
              args: {maxSize: 5000000}
        - id: request_header_size_route
          uri: lb://echo
          predicates: [Path=/f/header-size/**]
          filters: [RequestHeaderSize=1000B]
"""


@pytest.fixture(scope="module")
def gateway(shared_upstream, tmp_path_factory):
    config = CONFIG.replace("{upstream}", shared_upstream.url)
    with GatewayProcess(config, tmp_path_factory.mktemp("spring")) as gw:
        yield gw


def get(raw, gateway, target, *, method="GET", headers=(), host="gateway.test", body=None):
    return raw(gateway.port).exchange(method, target, headers=list(headers), host=host, body=body)


def forwarded(upstream):
    [request] = upstream.requests
    return request


def test_default_filters_apply_to_every_route(gateway, upstream, raw):
    for target in ("/plain/x", "/f/set-response-header/x"):
        response = get(raw, gateway, target)
        assert response.status == 200, response
        assert response.header("x-response-default-red") == "Default-Blue"


def test_a_lower_order_comes_first(gateway, upstream, raw):
    assert get(raw, gateway, "/order/x").header("x-route") == "early"


# -- predicates -----------------------------------------------------------------------------


def test_header_sees_the_request_id_the_client_sent(gateway, upstream, raw):
    response = get(raw, gateway, "/header/x", headers=[("X-Request-Id", "12345")])
    assert response.status == 200, response
    assert get(raw, gateway, "/header/x", headers=[("X-Request-Id", "abc")]).status == 404
    assert get(raw, gateway, "/header/x").status == 404


def test_cookie(gateway, upstream, raw):
    cookie = [("Cookie", "session=1; chocolate=chip")]
    assert get(raw, gateway, "/cookie/x", headers=cookie).status == 200
    assert get(raw, gateway, "/cookie/x", headers=[("Cookie", "chocolate=mint")]).status == 404
    assert get(raw, gateway, "/cookie/x").status == 404


def test_after_before_and_between(gateway, upstream, raw):
    assert get(raw, gateway, "/after/x").status == 200
    assert get(raw, gateway, "/before/x").status == 404
    assert get(raw, gateway, "/between/x").status == 404


def test_host(gateway, upstream, raw):
    assert get(raw, gateway, "/host/x", host="www.somehost.org").status == 200
    assert get(raw, gateway, "/host/x", host="beta.anotherhost.org:8080").status == 200
    assert get(raw, gateway, "/host/x", host="www.otherhost.org").status == 404


def test_host_variables_reach_filters(gateway, upstream, raw):
    assert get(raw, gateway, "/sub/x", host="www.myhost.org").status == 200
    assert forwarded(upstream).header("x-sub") == "www"
    assert get(raw, gateway, "/sub/x", host="myhost.org").status == 404


def test_method(gateway, upstream, raw):
    assert get(raw, gateway, "/method/x", method="POST", body=b"").status == 200
    assert get(raw, gateway, "/method/x", method="DELETE").status == 404


def test_path_variables_reach_filters(gateway, upstream, raw):
    assert get(raw, gateway, "/red/apple").status == 200
    assert forwarded(upstream).header("x-request-red") == "Blue-apple"
    assert get(raw, gateway, "/red/apple/pie").status == 404


def test_path_matches_a_trailing_slash_unless_told_not_to(gateway, upstream, raw):
    assert get(raw, gateway, "/blue/sky/").status == 200
    assert get(raw, gateway, "/strict/x").status == 200
    assert get(raw, gateway, "/strict/x/").status == 404


def test_query(gateway, upstream, raw):
    assert get(raw, gateway, "/query/x?green=1").status == 200
    assert get(raw, gateway, "/query/x?red=1").status == 404
    assert get(raw, gateway, "/query-regex/x?red=greet").status == 200
    assert get(raw, gateway, "/query-regex/x?red=grey").status == 404


def test_remote_addr(gateway, upstream, raw):
    assert get(raw, gateway, "/local/x").status == 200
    assert get(raw, gateway, "/remote/x").status == 404
    # An untrusted peer's X-Forwarded-For is not its address.
    spoofed = [("X-Forwarded-For", "192.168.1.7")]
    assert get(raw, gateway, "/remote/x", headers=spoofed).status == 404


def test_remote_addr_through_a_trusted_proxy(start_gateway, upstream, raw):
    config = {
        "trusted_proxies": ["127.0.0.1/32"],
        "services": {"echo": {"instances": [upstream.url]}},
        "spring": {"cloud": {"gateway": {"routes": [{
            "id": "remoteaddr_route", "uri": "lb://echo",
            "predicates": ["RemoteAddr=192.168.1.1/24"],
        }]}}},
    }
    gw = start_gateway(config)
    assert get(raw, gw, "/x", headers=[("X-Forwarded-For", "192.168.1.7")]).status == 200
    assert get(raw, gw, "/x", headers=[("X-Forwarded-For", "10.1.1.7")]).status == 404
    assert get(raw, gw, "/x").status == 404


def test_x_forwarded_remote_addr(gateway, upstream, raw):
    xff = [("X-Forwarded-For", "10.0.0.1, 192.168.1.10")]
    assert get(raw, gateway, "/xff/x", headers=xff).status == 200
    farther = [("X-Forwarded-For", "192.168.1.10, 10.0.0.1")]
    assert get(raw, gateway, "/xff/x", headers=farther).status == 404
    assert get(raw, gateway, "/xff/x").status == 404


def test_weight_splits_a_group_by_weight(gateway, upstream, raw):
    connection = raw(gateway.port)
    seen = {"high": 0, "low": 0}
    for _ in range(200):
        response = connection.exchange("GET", "/weight/x")
        assert response.status == 200, response
        seen[response.header("x-weight")] += 1
    # 8:2 over 200 draws: far from both ends.
    assert 100 < seen["high"] < 200 and 0 < seen["low"] < 100, seen


# -- filters --------------------------------------------------------------------------------


def test_add_request_headers_if_not_present(gateway, upstream, raw):
    get(raw, gateway, "/f/if-not-present/x", headers=[("X-Request-Color-1", "red")])
    request = forwarded(upstream)
    assert request.header_values("x-request-color-1") == ["red"]
    assert request.header_values("x-request-color-2") == ["green"]
    upstream.clear()
    get(raw, gateway, "/plain/x")
    assert not forwarded(upstream).has_header("x-request-color-2")


def test_add_request_parameter(gateway, upstream, raw):
    get(raw, gateway, "/f/add-parameter/x?a=1")
    assert forwarded(upstream).query == "a=1&red=blue"
    upstream.clear()
    get(raw, gateway, "/plain/x?a=1")
    assert forwarded(upstream).query == "a=1"


def test_map_request_header(gateway, upstream, raw):
    get(raw, gateway, "/f/map-header/x", headers=[("Blue", "sky")])
    assert forwarded(upstream).header_values("x-request-red") == ["sky"]
    upstream.clear()
    get(raw, gateway, "/f/map-header/x")
    assert not forwarded(upstream).has_header("x-request-red")


def test_remove_request_parameter(gateway, upstream, raw):
    get(raw, gateway, "/f/remove-parameter/x?red=1&green=2")
    assert forwarded(upstream).query == "green=2"
    upstream.clear()
    get(raw, gateway, "/plain/x?red=1&green=2")
    assert forwarded(upstream).query == "red=1&green=2"


def test_rewrite_request_parameter(gateway, upstream, raw):
    get(raw, gateway, "/f/rewrite-parameter/x?campaign=old")
    assert forwarded(upstream).query == "campaign=fall2023"
    upstream.clear()
    get(raw, gateway, "/f/rewrite-parameter/x?campaign=a&red=1&campaign=b")
    assert forwarded(upstream).query == "red=1&campaign=fall2023"
    upstream.clear()
    get(raw, gateway, "/f/rewrite-parameter/x?red=1")
    assert forwarded(upstream).query == "red=1"
    upstream.clear()
    get(raw, gateway, "/f/rewrite-parameter-args/x?campaign=old")
    assert forwarded(upstream).query == "campaign=a+b%2Cc"


def test_remove_and_set_request_header(gateway, upstream, raw):
    get(raw, gateway, "/f/remove-header/x", headers=[("X-Request-Foo", "1")])
    assert not forwarded(upstream).has_header("x-request-foo")
    upstream.clear()
    get(raw, gateway, "/f/set-header/x", headers=[("X-Request-Red", "Green")])
    assert forwarded(upstream).header_values("x-request-red") == ["Blue"]
    upstream.clear()
    get(raw, gateway, "/plain/x", headers=[("X-Request-Foo", "1"), ("X-Request-Red", "Green")])
    request = forwarded(upstream)
    assert request.header("x-request-foo") == "1" and request.header("x-request-red") == "Green"


def test_host_header_filters(gateway, upstream, raw):
    get(raw, gateway, "/f/set-host/x", host="api.test")
    assert forwarded(upstream).header_values("host") == ["example.org"]
    upstream.clear()
    get(raw, gateway, "/f/preserve-host/x", host="api.test")
    assert forwarded(upstream).header_values("host") == ["api.test"]
    upstream.clear()
    get(raw, gateway, "/plain/x", host="api.test")
    assert forwarded(upstream).header_values("host") == [upstream.url.split("//")[1]]


def test_response_header_filters(gateway, upstream, raw):
    response = get(raw, gateway, "/f/add-response-header/x")
    assert response.header_values("x-response-red") == ["Blue"]
    response = get(raw, gateway, "/f/set-response-header/x?header=X-Response-Red:Green")
    assert response.header_values("x-response-red") == ["Blue"]
    response = get(raw, gateway, "/f/remove-response-header/x?header=X-Response-Foo:1")
    assert response.header("x-response-foo") is None
    query = "header=X-Response-Red:a=1%26password=secret%26b=2"
    response = get(raw, gateway, f"/f/rewrite-response-header/x?{query}")
    assert response.header_values("x-response-red") == ["a=1&password=***&b=2"]
    response = get(raw, gateway, f"/plain/x?{query}&header=X-Response-Foo:1")
    assert response.header_values("x-response-red") == ["a=1&password=secret&b=2"]
    assert response.header("x-response-foo") == "1"


def test_rewrite_location_response_header(gateway, upstream, raw):
    def location(target, value):
        response = get(raw, gateway, f"{target}?header=Location:{quote(value, safe='')}")
        assert response.status == 200, response
        return response.header("location")

    # SCG's example: the upstream's host and version give way to the client's Host
    assert (location("/f/location/x", "http://object-service.prod.example.net/v2/some/object/id")
            == "http://gateway.test/some/object/id")
    assert location("/f/location/x", "https://svc:8443/a?b=1") == "https://gateway.test/a?b=1"
    # a versioned request keeps the version; other protocols and relative ones stay as they are
    assert location("/v3/location/x", "http://svc:8080/v2/a") == "http://gateway.test/v2/a"
    assert location("/f/location/x", "ws://svc/v2/a") == "ws://svc/v2/a"
    assert location("/f/location/x", "/v2/a") == "/v2/a"
    # expanded form: always strip, a set host, https only
    assert location("/f/location-always/x", "https://svc/v1/a") == "https://api.example.com/a"
    assert location("/f/location-always/x", "http://svc/v1/a") == "http://svc/v1/a"
    # a route without the filter
    assert location("/plain/x", "http://svc/v2/a") == "http://svc/v2/a"


def test_dedupe_response_header(gateway, upstream, raw):
    query = ("header=Access-Control-Allow-Origin:https://a.test"
             "&header=Access-Control-Allow-Origin:https://a.test"
             "&header=Access-Control-Allow-Credentials:true")
    response = get(raw, gateway, f"/f/dedupe/x?{query}")
    assert response.header_values("access-control-allow-origin") == ["https://a.test"]
    response = get(raw, gateway, f"/plain/x?{query}")
    assert len(response.header_values("access-control-allow-origin")) == 2


def test_secure_headers(gateway, upstream, raw):
    response = get(raw, gateway, "/f/secure/x?header=X-Frame-Options:SAMEORIGIN")
    assert response.header_values("x-frame-options") == ["SAMEORIGIN"]
    assert response.header("x-content-type-options") == "nosniff"
    assert response.header("strict-transport-security") == "max-age=631138519"
    assert get(raw, gateway, "/plain/x").header("x-content-type-options") is None


def test_path_filters(gateway, upstream, raw):
    cases = [
        ("/f/prefix/x", "/mypath/f/prefix/x"),
        ("/f/rewrite/red/blue", "/blue"),
        ("/f/setpath/red/blue", "/blue"),
        ("/f/strip/a/b", "/a/b"),
        ("/plain/a/b", "/plain/a/b"),
    ]
    for target, path in cases:
        upstream.clear()
        assert get(raw, gateway, target).status == 200
        assert forwarded(upstream).path == path, target


def test_redirect_to(gateway, upstream, raw):
    response = get(raw, gateway, "/f/redirect/x")
    assert response.status == 302, response
    assert response.header("location") == "https://acme.org"
    assert upstream.requests == []


def test_set_status(gateway, upstream, raw):
    assert get(raw, gateway, "/f/status/x").status == 401
    assert get(raw, gateway, "/plain/status/418").status == 418


def test_request_size(gateway, upstream, raw):
    connection = raw(gateway.port)
    connection.send(b"POST /f/size/x HTTP/1.1\r\nHost: g\r\nContent-Length: 5000001\r\n\r\n")
    response = connection.read_response()
    assert response.status == 413, response
    assert "5000000" in response.header("errormessage")
    assert upstream.requests == []
    assert get(raw, gateway, "/f/size/x", method="POST", body=b"x" * 1000).status == 200


def test_request_header_size(gateway, upstream, raw):
    big = [("X-Big", "x" * 1000)]
    response = get(raw, gateway, "/f/header-size/x", headers=big)
    assert response.status == 431, response
    assert response.header("errormessage")
    assert get(raw, gateway, "/f/header-size/x").status == 200
    assert get(raw, gateway, "/plain/x", headers=big).status == 200


# -- Retry ----------------------------------------------------------------------------------

UNAVAILABLE = b"HTTP/1.1 503 Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndown"


@pytest.fixture
def flaky_pair(start_gateway, upstream):
    """Two instances of one service: ``upstream`` and one that answers 503 to /flaky."""
    with RecordingUpstream() as down:
        down.set_raw_response("flaky", UNAVAILABLE)

        def start(filters):
            return start_gateway({
                "services": {"pair": {"instances": [down.url, upstream.url], "retries": 0}},
                "spring": {"cloud": {"gateway": {"routes": [{
                    "id": "retry_test", "uri": "lb://pair",
                    "predicates": ["Path=/flaky/**"], "filters": filters,
                }]}}},
            })

        yield start, down


def test_retry_asks_another_instance_after_a_status_it_names(flaky_pair, upstream, raw):
    start, down = flaky_pair
    gw = start([{"name": "Retry", "args": {"retries": 3, "statuses": "SERVICE_UNAVAILABLE",
                                           "methods": ["GET", "HEAD"]}}])
    statuses = [raw(gw.port).exchange("GET", "/flaky/x").status for _ in range(6)]
    assert statuses == [200] * 6
    assert down.requests, "the failing instance was never asked"
    # POST is not among the methods: its 503 reaches the client.
    statuses = [raw(gw.port).exchange("POST", "/flaky/x", body=b"").status for _ in range(4)]
    assert 503 in statuses, statuses


def test_without_retry_the_status_reaches_the_client(flaky_pair, upstream, raw):
    start, _ = flaky_pair
    gw = start([])
    statuses = [raw(gw.port).exchange("GET", "/flaky/x").status for _ in range(4)]
    assert 503 in statuses and 200 in statuses, statuses


def test_retry_gives_the_last_answer_when_every_attempt_fails(start_gateway, upstream, raw):
    gw = start_gateway({
        "services": {"echo": {"instances": [upstream.url]}},
        "spring": {"cloud": {"gateway": {"routes": [{
            "id": "retry_test", "uri": "lb://echo", "predicates": ["Path=/status/**"],
            "filters": ["Retry=2, INTERNAL_SERVER_ERROR"],
        }]}}},
    })
    response = raw(gw.port).exchange("GET", "/status/500")
    assert response.status == 500, response
    assert len(upstream.requests) == 3
    upstream.clear()
    assert raw(gw.port).exchange("GET", "/status/502").status == 502
    assert len(upstream.requests) == 1


def test_retry_waits_its_backoff_between_attempts(start_gateway, upstream, raw):
    gw = start_gateway({
        "services": {"echo": {"instances": [upstream.url]}},
        "spring": {"cloud": {"gateway": {"routes": [{
            "id": "retry_test", "uri": "lb://echo", "predicates": ["Path=/status/**"],
            "filters": ["Retry=3, INTERNAL_SERVER_ERROR, GET, 100ms, 300ms, 2, false"],
        }]}}},
    })
    assert raw(gw.port).exchange("GET", "/status/500").status == 500
    arrivals = [request.arrived for request in upstream.requests]
    assert len(arrivals) == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    # 100ms, 200ms, then 400ms capped at 300ms: lower bounds only
    waits = (0.1, 0.2, 0.3)
    assert [gap >= wait for gap, wait in zip(gaps, waits, strict=True)] == [True] * 3, gaps
    upstream.clear()
    assert raw(gw.port).exchange("GET", "/status/200").status == 200
    assert len(upstream.requests) == 1


def test_a_client_gone_during_a_backoff_causes_no_further_attempt(start_gateway, upstream,
                                                                  raw):
    gw = start_gateway({
        "services": {"echo": {"instances": [upstream.url]}},
        "spring": {"cloud": {"gateway": {"routes": [{
            "id": "retry_test", "uri": "lb://echo", "predicates": ["Path=/status/**"],
            "filters": [{"name": "Retry", "args": {
                "retries": 2, "statuses": 500,
                "backoff": {"first-backoff": "1s", "factor": 1}}}],
        }]}}},
    })
    client = raw(gw.port)
    client.send(b"GET /status/500 HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
    deadline = time.monotonic() + 10
    while not upstream.requests:
        assert time.monotonic() < deadline, "the first attempt never arrived"
        time.sleep(0.01)
    client.close()  # during the 1 s wait before the retry
    time.sleep(1.5)  # past the wait: a retry would have arrived by now
    assert len(upstream.requests) == 1
    assert raw(gw.port).exchange("GET", "/status/200").status == 200


# -- CircuitBreaker -------------------------------------------------------------------------

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


@pytest.fixture
def breaker_gateway(start_gateway, upstream):
    """``/cb/**`` to an instance that answers 503 (until told otherwise) behind a breaker
    whose fallback is ``/fallback/**`` on ``upstream``; ``/bare/**`` has no fallback."""
    breaker = {"failureRateThreshold": 50, "slidingWindowSize": 4, "minimumNumberOfCalls": 4,
               "waitDurationInOpenState": "1s", "permittedNumberOfCallsInHalfOpenState": 1,
               "statusCodes": [503, "BAD_GATEWAY"]}
    with RecordingUpstream() as down:
        down.set_raw_response("cb", UNAVAILABLE)
        down.set_raw_response("bare", UNAVAILABLE)
        gw = start_gateway({
            "services": {"down": {"instances": [down.url], "retries": 0},
                         "echo": {"instances": [upstream.url]}},
            "spring": {"cloud": {"gateway": {"routes": [
                {"id": "circuitbreaker_route", "uri": "lb://down", "predicates": ["Path=/cb/**"],
                 "filters": [{"name": "CircuitBreaker", "args": {
                     "name": "myCircuitBreaker",
                     "fallbackUri": "forward:/fallback/inCaseOfFailureUseThis", **breaker}}]},
                {"id": "bare", "uri": "lb://down", "predicates": ["Path=/bare/**"],
                 "filters": [{"name": "CircuitBreaker", "args": breaker}]},
                {"id": "fallback", "uri": "lb://echo", "predicates": ["Path=/fallback/**"],
                 "filters": ["SetResponseHeader=X-Fallback, yes"]},
            ]}}},
        })
        yield gw, down


def state(gateway, raw, route_id, name):
    """The one state /metrics shows the breaker in (``name`` is a label, so read by hand)."""
    lines = scrape(gateway, raw).splitlines()
    states = [s for s in ("closed", "open", "half_open")
              if f'fastgw_circuit_breaker_state{{route="{route_id}",name="{name}",state="{s}"}} 1'
              in lines]
    return states[0] if len(states) == 1 else states


def test_circuit_breaker_answers_failures_through_the_fallback_then_opens(
    breaker_gateway, upstream, raw
):
    gw, down = breaker_gateway
    assert state(gw, raw, "circuitbreaker_route", "myCircuitBreaker") == "closed"
    for _ in range(4):
        response = raw(gw.port).exchange("GET", "/cb/x")
        assert response.status == 200 and response.header("x-fallback") == "yes", response
    assert [r.path for r in upstream.requests] == ["/fallback/inCaseOfFailureUseThis"] * 4
    assert len(down.requests) == 4
    assert state(gw, raw, "circuitbreaker_route", "myCircuitBreaker") == "open"
    # Open: the fallback answers, and nothing reaches the failing instance.
    for _ in range(3):
        assert raw(gw.port).exchange("GET", "/cb/x").header("x-fallback") == "yes"
    assert len(down.requests) == 4
    # After the wait one probe goes through; it fails, and the breaker opens again.
    def probe_reaches_it():
        raw(gw.port).exchange("GET", "/cb/x")
        return len(down.requests) > 4

    assert wait_until(probe_reaches_it)
    assert len(down.requests) == 5
    assert state(gw, raw, "circuitbreaker_route", "myCircuitBreaker") == "open"
    # The instance recovers: the next probe closes the breaker, and requests go through.
    down.set_raw_response("cb", OK)
    assert wait_until(lambda: raw(gw.port).exchange("GET", "/cb/x").header("x-fallback") is None)
    assert state(gw, raw, "circuitbreaker_route", "myCircuitBreaker") == "closed"
    response = raw(gw.port).exchange("GET", "/cb/x")
    assert response.status == 200 and response.body == b"ok", response


def test_circuit_breaker_without_fallback_answers_503_while_open(breaker_gateway, upstream, raw):
    gw, down = breaker_gateway
    assert [raw(gw.port).exchange("GET", "/bare/x").status for _ in range(4)] == [503] * 4
    response = raw(gw.port).exchange("GET", "/bare/x")
    assert_error(response, 503)
    assert response.json()["error"] == "circuit_open"
    assert len(down.requests) == 4
    assert upstream.requests == []
