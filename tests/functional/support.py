"""Checks and helpers shared by the functional tests."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time

from conftest import RawResponse

from fastgw.testing import GatewayProcess, RecordingUpstream, pattern_bytes
from fastgw.testing.process import SOURCE_ROOT


def route(route_id: str, *predicates: str, uri: str = "lb://echo", filters=(), **extra) -> dict:
    """An unauthenticated route to the echo service (or ``uri``)."""
    return {
        "id": route_id,
        "uri": uri,
        "predicates": list(predicates),
        "auth": "none",
        "filters": list(filters),
        **extra,
    }


def assert_error(response, status: int) -> dict:
    """``response`` is a fastgw error: that status, a small JSON body naming the request id."""
    assert response.status == status, response
    assert (response.header("content-type") or "").startswith("application/json"), response
    body = json.loads(response.body)
    assert isinstance(body.get("error"), str), body
    assert body.get("request_id"), body
    assert response.header("x-request-id") == body["request_id"], response
    return body


def assert_nothing_reached(upstream: RecordingUpstream) -> None:
    """Not one byte of a request reached the upstream."""
    assert upstream.requests == [], upstream.requests
    assert upstream.aborted == [], upstream.aborted
    assert upstream.rejected == [], upstream.rejected


def assert_still_serves(raw, port: int, upstream: RecordingUpstream) -> None:
    """A fresh connection gets a normal answer, and only that request reached the upstream."""
    response = raw(port).exchange("GET", "/echo/still-serving")
    assert response.status == 200, response
    assert [r.target for r in upstream.requests] == ["/echo/still-serving"]
    assert upstream.aborted == []
    assert upstream.rejected == []


def curl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run curl quietly; stdout is bytes."""
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", str(int(timeout)), *args],
        capture_output=True,
        timeout=timeout + 10,
    )


class CurlResponse(RawResponse):
    """A response as curl saw it, with curl's exit code."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes, exit_code: int):
        super().__init__("1.1", status, "", headers, body, exit_code == 0)
        self.exit_code = exit_code

    def __repr__(self) -> str:
        return f"<CurlResponse {self.status} {self.headers} {self.body[:200]!r}>"


def fetch(url: str, *args: str, timeout: float = 60) -> CurlResponse:
    """One request with curl; the final response's status, headers and body."""
    result = curl("--include", "--path-as-is", *args, url, timeout=timeout)
    status, headers, body = 0, [], result.stdout
    while body.startswith(b"HTTP/"):
        head, _, body = body.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
        if status >= 200:
            break
    return CurlResponse(status, headers, body, result.returncode)


def pattern_sha256(size: int) -> str:
    """The sha256 of the first ``size`` bytes of the download pattern."""
    digest = hashlib.sha256()
    block = pattern_bytes(251 * 4096)
    for offset in range(0, size, len(block)):
        digest.update(block[: size - offset])
    return digest.hexdigest()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one series in a Prometheus text page (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    series = f"{name}{{{wanted}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def scrape(gateway: GatewayProcess, raw) -> str:
    response = raw(gateway.admin_port).exchange("GET", "/metrics")
    assert response.status == 200, response
    return response.body.decode()


def concurrently(count: int, work) -> list:
    """Run ``work(i)`` for i in range(count) on threads; the results in order."""
    results: list = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = work(i)
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    if errors:
        raise errors[0]
    return results


def run_python(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run this Python with the source tree importable; ``env`` values of None unset."""
    environment = {**os.environ, **(env or {})}
    environment = {name: value for name, value in environment.items() if value is not None}
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(SOURCE_ROOT), environment.get("PYTHONPATH")])
    )
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, env=environment
    )


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
