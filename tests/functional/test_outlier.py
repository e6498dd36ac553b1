"""Outlier detection, bounded waiting, and the 503 when nothing can take a request."""

from __future__ import annotations

import socket
import time
from collections import Counter

import pytest

from fastgw.testing import RecordingUpstream

from .support import assert_error, concurrently, metric, scrape, wait_until


def service_config(make_config, instances, **service):
    settings = {"instances": instances, "connect_timeout": "1s", "response_timeout": "2s",
                "retries": 1}
    return make_config(instances[0], services={"echo": {**settings, **service}})


def ejections(gw, raw, instance: str) -> float:
    return metric(scrape(gw, raw), "fastgw_upstream_ejections_total", service="echo",
                  instance=instance)


def ejected(gw, raw, instance: str) -> float:
    return metric(scrape(gw, raw), "fastgw_upstream_ejected", service="echo", instance=instance)


def test_one_failing_endpoint_never_ejects_the_sole_instance(
    start_gateway, make_config, upstream, raw
):
    gw = start_gateway(service_config(make_config, [upstream.url]))
    # each request fails twice (its retry too): far past consecutive_failures
    for i in range(8):
        assert_error(raw(gw.port).exchange("GET", f"/echo/close/{i}"), 502)
    for i in range(20):
        assert raw(gw.port).exchange("GET", f"/echo/fine/{i}").status == 200
    assert ejections(gw, raw, upstream.url) == 0


def test_a_burst_of_failures_is_one_ejection(
    start_gateway, make_config, upstream, raw, free_port
):
    dead = f"http://127.0.0.1:{free_port()}"
    gw = start_gateway(service_config(
        make_config, [dead, upstream.url],
        outlier={"consecutive_failures": 2, "base_ejection": "1m"},
    ))

    def get(i: int) -> int:
        return raw(gw.port).exchange("GET", f"/echo/burst/{i}").status

    for _ in range(3):
        assert concurrently(30, get) == [200] * 30
    assert ejections(gw, raw, dead) == 1
    assert ejected(gw, raw, dead) == 1
    assert ejections(gw, raw, upstream.url) == 0
    text = scrape(gw, raw)
    assert metric(text, "fastgw_upstream_healthy", service="echo", instance=dead) == 0
    assert metric(text, "fastgw_upstream_healthy", service="echo", instance=upstream.url) == 1


def test_a_restarted_instance_takes_traffic_again_after_one_base_ejection(
    start_gateway, make_config, upstream, raw, free_port
):
    port = free_port()
    gone = f"http://127.0.0.1:{port}"
    gw = start_gateway(service_config(
        make_config, [gone, upstream.url],
        outlier={"consecutive_failures": 2, "base_ejection": "1s"},
    ))
    for i in range(6):
        assert raw(gw.port).exchange("GET", f"/echo/while-down/{i}").status == 200
    assert ejections(gw, raw, gone) == 1
    with RecordingUpstream(port=port) as back:
        started = time.monotonic()

        def served() -> bool:
            raw(gw.port).exchange("GET", "/echo/after-restart")
            return bool(back.requests)

        assert wait_until(served, timeout=10, interval=0.1)
        # one base_ejection (1s), and no longer: the backoff did not grow in the burst
        assert time.monotonic() - started < 3
    assert ejections(gw, raw, gone) == 1


def test_ejection_stops_at_max_ejected_percent(start_gateway, make_config, raw, free_port):
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    gw = start_gateway(service_config(
        make_config, dead, outlier={"consecutive_failures": 1, "base_ejection": "1m"},
    ))
    for i in range(10):
        # both refuse: the one left taking traffic is never ejected, so the client
        # learns what is wrong (502), not that nothing is configured (503)
        assert_error(raw(gw.port).exchange("GET", f"/echo/both-down/{i}"), 502)
    assert sorted(ejections(gw, raw, d) for d in dead) == [0, 1]


def test_below_the_panic_threshold_every_instance_takes_traffic(
    start_gateway, make_config, upstream, raw, free_port
):
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    gw = start_gateway(service_config(
        make_config, [*dead, upstream.url], retries=2,
        outlier={"consecutive_failures": 1, "base_ejection": "1m",
                 "max_ejected_percent": 100, "panic_threshold": 50},
    ))
    for i in range(10):
        assert raw(gw.port).exchange("GET", f"/echo/panic/{i}").status == 200
    text = scrape(gw, raw)
    assert [metric(text, "fastgw_upstream_ejected", service="echo", instance=d)
            for d in dead] == [1, 1]
    # one of three taking traffic is below 50%: the ejected ones are tried again
    assert [metric(text, "fastgw_upstream_healthy", service="echo", instance=i)
            for i in (*dead, upstream.url)] == [1, 1, 1]


@pytest.mark.parametrize("count_5xx", [True, False])
def test_upstream_5xx_counts_only_when_asked(
    start_gateway, make_config, upstream, raw, count_5xx
):
    with RecordingUpstream() as second:
        instances = [upstream.url, second.url]
        gw = start_gateway(service_config(
            make_config, instances,
            outlier={"consecutive_failures": 2, "base_ejection": "1m", "count_5xx": count_5xx},
        ))
        for i in range(10):
            assert raw(gw.port).exchange("GET", f"/echo/status/503?n={i}").status == 503
        total = sum(ejections(gw, raw, i) for i in instances)
    assert total == (1 if count_5xx else 0)


def test_a_full_pending_queue_is_503_at_once(start_gateway, make_config, upstream, raw):
    gw = start_gateway(service_config(
        make_config, [upstream.url], connect_timeout="5s", response_timeout="10s",
        max_connections=1, max_pending=1,
    ))

    def get(i: int):
        started = time.monotonic()
        response = raw(gw.port, timeout=30).exchange("GET", "/echo/slow/2")
        return response, time.monotonic() - started

    results = concurrently(3, get)
    assert Counter(r.status for r, _ in results) == {200: 2, 503: 1}
    turned_away, waited = next((r, t) for r, t in results if r.status == 503)
    assert_error(turned_away, 503)
    assert waited < 1.5  # not after the first request's 2 s, nor a connect timeout
    assert metric(scrape(gw, raw), "fastgw_upstream_pending_full_total", service="echo",
                  instance=upstream.url) == 1


def test_every_instance_down_by_health_check_is_503_at_once(start_gateway, make_config, raw):
    hung = socket.create_server(("127.0.0.1", 0))  # takes connections, never answers
    try:
        instance = f"http://127.0.0.1:{hung.getsockname()[1]}"
        health = {"path": "/healthz", "interval": "200ms", "unhealthy_after": 1}
        gw = start_gateway(service_config(
            make_config, [instance], connect_timeout="500ms", response_timeout="2s",
            health_check=health,
        ))
        assert wait_until(lambda: metric(scrape(gw, raw), "fastgw_upstream_healthy",
                                         service="echo", instance=instance) == 0, timeout=15)
        for i in range(5):
            started = time.monotonic()
            assert_error(raw(gw.port).exchange("GET", f"/echo/down/{i}"), 503)
            assert time.monotonic() - started < 1  # no response_timeout spent on it
    finally:
        hung.close()


def test_a_dns_instance_serves_at_every_address_of_its_name(
    start_gateway, make_config, upstream, raw
):
    # localhost is the one name that resolves here without a DNS server; a name
    # under .invalid never resolves (RFC 6761)
    names = [f"dns://localhost:{upstream.port}", "dns://no-such-host.invalid:80"]
    service = {"instances": names, "resolve_interval": "200ms", "connect_timeout": "1s"}
    gw = start_gateway(make_config(upstream.url, services={"echo": service}))
    assert wait_until(lambda: raw(gw.port).exchange("GET", "/echo/by-name").status == 200)
    assert upstream.requests[-1].header("host") == f"localhost:{upstream.port}"
    resolved = f"http://127.0.0.1:{upstream.port}"
    assert metric(scrape(gw, raw), "fastgw_upstream_healthy", service="echo",
                  instance=resolved) == 1
    assert wait_until(lambda: "cannot resolve dns://no-such-host.invalid:80" in gw.stderr_text(),
                      timeout=20)
    # the service serves on from the name that resolves
    assert raw(gw.port).exchange("GET", "/echo/still-by-name").status == 200
