"""Upstream failures, retries, balancing and health."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from fastgw.testing import RecordingUpstream

from .support import assert_error


def service_config(make_config, instances, **service):
    settings = {"instances": instances, "connect_timeout": "1s", "response_timeout": "2s"}
    return make_config(instances[0], services={"echo": {**settings, **service}})


def test_connection_refused_is_502(start_gateway, make_config, raw, free_port):
    gw = start_gateway(service_config(make_config, [f"http://127.0.0.1:{free_port()}"]))
    assert_error(raw(gw.port).exchange("GET", "/echo/refused"), 502)


def test_slow_upstream_is_504(start_gateway, make_config, upstream, raw):
    gw = start_gateway(service_config(make_config, [upstream.url]))
    response = raw(gw.port, timeout=30).exchange("GET", "/echo/slow/8")
    assert_error(response, 504)
    assert upstream.requests and all(r.path == "/echo/slow/8" for r in upstream.requests)


@pytest.mark.parametrize(("retries", "attempts"), [(0, 1), (1, 2)])
@pytest.mark.parametrize("failure", ["reset", "close"])
def test_get_failing_before_the_response_is_502_after_retries(
    start_gateway, make_config, upstream, raw, failure, retries, attempts
):
    gw = start_gateway(service_config(make_config, [upstream.url], retries=retries))
    assert_error(raw(gw.port).exchange("GET", f"/echo/{failure}"), 502)
    assert [r.method for r in upstream.requests] == ["GET"] * attempts


@pytest.mark.parametrize("failure", ["reset", "close"])
def test_post_is_never_retried(start_gateway, make_config, upstream, raw, failure):
    gw = start_gateway(service_config(make_config, [upstream.url], retries=2))
    response = raw(gw.port).exchange("POST", f"/echo/{failure}", body=b"once")
    assert_error(response, 502)
    assert [(r.method, r.body) for r in upstream.requests] == [("POST", b"once")]


def test_reset_mid_response_is_never_passed_off_as_complete(
    start_gateway, make_config, upstream, raw
):
    gw = start_gateway(service_config(make_config, [upstream.url]))
    connection = raw(gw.port)
    response = connection.exchange("GET", "/echo/truncate/100000")
    if response.status == 502:
        assert_error(response, 502)
    else:
        assert response.status == 200, response
        assert not response.complete, "a truncated upstream body was delivered as complete"
        assert len(upstream.requests) == 1, "retried after bytes were sent to the client"
        assert connection.closed_by_peer()


@pytest.mark.parametrize(
    "raw_response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
    ids=["content-length-and-chunked", "two-content-lengths", "chunked-twice", "garbage"],
)
def test_ambiguous_or_broken_upstream_response_is_502(
    start_gateway, make_config, raw, raw_response
):
    with RecordingUpstream() as broken:
        broken.set_raw_response("broken", raw_response)
        gw = start_gateway(service_config(make_config, [broken.url]))
        assert_error(raw(gw.port).exchange("GET", "/echo/broken"), 502)


def test_one_instance_down_requests_still_succeed(
    start_gateway, make_config, upstream, raw, free_port
):
    instances = [f"http://127.0.0.1:{free_port()}", upstream.url]
    gw = start_gateway(service_config(make_config, instances, retries=1))
    statuses = [raw(gw.port).exchange("GET", f"/echo/spread/{i}").status for i in range(20)]
    assert statuses == [200] * 20
    assert len(upstream.requests) == 20


def test_round_robin_uses_every_instance(start_gateway, make_config, upstream, raw):
    with RecordingUpstream() as second:
        instances = [upstream.url, second.url]
        gw = start_gateway(service_config(make_config, instances, balancer="round_robin"))
        ports = Counter(
            raw(gw.port).exchange("GET", f"/echo/rr/{i}").header("x-upstream-port")
            for i in range(10)
        )
        assert ports == {str(upstream.port): 5, str(second.port): 5}
        assert len(second.requests) == 5
    assert len(upstream.requests) == 5


def test_no_healthy_instance_is_503_and_recovery_is_noticed(
    start_gateway, make_config, upstream, raw, free_port
):
    port = free_port()
    health = {"path": "/healthz", "interval": "250ms", "unhealthy_after": 1, "healthy_after": 1}
    gw = start_gateway(
        service_config(make_config, [f"http://127.0.0.1:{port}"], health_check=health)
    )
    wait_for_status(raw, gw.port, 503)
    with RecordingUpstream(port=port) as revived:
        wait_for_status(raw, gw.port, 200)
        assert any(r.path == "/healthz" for r in revived.requests)


def wait_for_status(raw, port: int, status: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        response = raw(port).exchange("GET", "/echo/health-probe")
        if response.status == status:
            if status >= 400:
                assert_error(response, status)
            return
        seen.append(response.status)
        time.sleep(0.2)
    raise AssertionError(f"never got {status}; got {Counter(seen)}")


def test_upstream_connections_are_reused(gateway, upstream, raw):
    for i in range(10):
        assert raw(gateway.port).exchange("GET", f"/echo/pooled/{i}").status == 200
    assert len({r.connection for r in upstream.requests}) <= 2
