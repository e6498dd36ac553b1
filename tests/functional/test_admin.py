"""The admin listener: health, readiness and Prometheus metrics."""

from __future__ import annotations

import re

from .support import fetch


def test_healthz_and_readyz(gateway):
    assert fetch(f"{gateway.admin_url}/healthz").status == 200
    assert fetch(f"{gateway.admin_url}/readyz").status == 200


def test_metrics_count_requests_by_route_method_and_status(gateway, upstream):
    for path in ("/echo/counted", "/echo/counted", "/nowhere"):
        fetch(gateway.url + path)
    metrics = fetch(f"{gateway.admin_url}/metrics")
    assert metrics.status == 200, metrics
    assert (metrics.header("content-type") or "").startswith("text/plain"), metrics
    text = metrics.body.decode()
    samples = {
        tuple(sorted(re.findall(r'(\w+)="([^"]*)"', labels))): float(value)
        for labels, value in re.findall(r"^fastgw_requests_total\{([^}]*)\} (\S+)$", text, re.M)
    }
    echo = (("method", "GET"), ("route", "echo"), ("status", "200"))
    assert samples.get(echo, 0) >= 2, text
    assert any(dict(labels).get("status") == "404" for labels in samples), text
    for family in (
        "fastgw_request_duration_seconds",
        "fastgw_upstream_duration_seconds",
        "fastgw_active_connections",
    ):
        assert re.search(rf"^{family}\S* ", text, re.M), family
    assert re.search(r'^fastgw_upstream_healthy\{[^}]*service="echo"[^}]*\} 1(\.0)?$', text, re.M)


def test_admin_listener_does_not_proxy(gateway, upstream):
    response = fetch(f"{gateway.admin_url}/echo/x")
    assert response.status == 404, response
    assert upstream.requests == []
