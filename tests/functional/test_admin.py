"""The admin listener: health, readiness and Prometheus metrics."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

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


def test_readyz_with_two_workers_needs_both(start_gateway, make_config, upstream):
    """The admin worker answers for the host: a worker that stops reporting makes
    the host not ready, and it is ready again once that worker is back."""
    gw = start_gateway(make_config(upstream.url, workers=2))
    assert gw.admin_status("/readyz") == 200
    assert wait_until(lambda: len(gw.children()) == 2, 10), gw.children()
    other = next(pid for pid in gw.children() if not serves_admin(pid, gw.admin_port))
    os.kill(other, signal.SIGSTOP)
    try:
        assert wait_until(lambda: gw.admin_status("/readyz") == 503, 10)
        assert gw.admin_status("/healthz") == 200
    finally:
        os.kill(other, signal.SIGCONT)
    assert wait_until(lambda: gw.admin_status("/readyz") == 200, 10)


def serves_admin(pid: int, port: int) -> bool:
    """Whether ``pid`` holds the socket listening on ``port``."""
    listening = set()
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            listening.add(f"socket:[{fields[9]}]")
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) in listening:
                return True
        except OSError:
            continue
    return False


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False
