"""``store: redis`` at the door: two gateway processes sharing one real redis-server.

Each test starts its own redis-server (no persistence, a temporary directory,
a free port) and two gateways whose ``/limited/**`` route spends from
``per-client``: ``N`` per day keyed by ``header.X-Client-Id`` in Redis. A
day-long period means no token comes back while a test runs, so counts are
exact however slow the machine. Redis is then killed, hung or restarted
under the gateways, which are never restarted.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import time

import pytest

from fastgw.testing.certs import TestPKI

from .redis_server import REDIS_CLI, RedisServer, require
from .support import assert_error, concurrently, metric, route, scrape

N = 50
PERIOD_MS = 86_400_000
TIMEOUT = "200ms"
ANSWER_WITHIN = 5.0
"""Seconds any one request may take while Redis is down or hung (25 times the
timeout: a request left waiting on Redis would take the client's 10 s)."""

_serial = itertools.count()


def fresh(name: str) -> str:
    """A key nobody has spent from yet."""
    return f"{name}-{os.getpid()}-{next(_serial)}"


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


def fleet_config(make_config, upstream_url: str, redis_url: str, on_error: str) -> dict:
    return make_config(
        upstream_url,
        redis={"url": redis_url, "timeout": TIMEOUT, "on_error": on_error},
        rate_limits={
            "per-client": {"rate": f"{N}/day", "key": "header.X-Client-Id", "store": "redis"}
        },
        routes=[route("limited", "Path=/limited/**", filters=["RateLimit=per-client"])],
    )


@pytest.fixture
def fleet(start_gateway, make_config, upstream, redis_server):
    """``start(on_error)``: two gateways on ``redis_server``."""

    def start(on_error: str = "local"):
        config = fleet_config(make_config, upstream.url, redis_server.url, on_error)
        return start_gateway(config), start_gateway(config)

    return start


def get(gateway, raw, client: str, path: str = "/limited/x"):
    """One GET on a new connection, closed afterwards."""
    connection = raw(gateway.port)
    try:
        return connection.exchange("GET", path, headers=[("X-Client-Id", client)])
    finally:
        connection.close()


def timed(gateway, raw, client: str):
    """One GET and how long its answer took."""
    started = time.monotonic()
    response = get(gateway, raw, client)
    return response, time.monotonic() - started


def remaining(response) -> int:
    return int(response.header("RateLimit-Remaining"))


def load(gateways, raw, client: str, threads: int = 20, each: int = 10) -> list[int]:
    """Statuses of ``threads * each`` requests for ``client``, from threads taking
    turns over ``gateways``, each request on a new connection."""

    def work(i: int) -> list[int]:
        return [get(gateways[(i + j) % len(gateways)], raw, client).status for j in range(each)]

    return [status for batch in concurrently(threads, work) for status in batch]


def fallbacks(gateway, raw) -> float:
    """``fastgw_ratelimit_store_fallbacks_total`` summed over its reasons."""
    text = scrape(gateway, raw)
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("fastgw_ratelimit_store_fallbacks_total{")
    )


def redis_cli(server: RedisServer, *args: str) -> str:
    result = subprocess.run(
        [require(REDIS_CLI), "-p", str(server.port), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout


def assert_shared_exactly(gateways, raw, upstream) -> None:
    """Concurrent load through every gateway lets exactly N through for one client."""
    upstream.settle()
    upstream.clear()
    results = load(gateways, raw, fresh("shared"))
    assert set(results) <= {200, 429}, results
    assert results.count(200) == N, results
    upstream.settle()
    assert len(upstream.requests) == N


def wait_until_shared(gateways, raw, timeout: float = 30.0) -> None:
    """Poll until the gateways spend from one bucket again: a fresh client's first
    request at one and its second at the other count down the same budget."""
    first, second = gateways
    deadline = time.monotonic() + timeout
    while True:
        client = fresh("probe")
        one, two = get(first, raw, client), get(second, raw, client)
        if one.status == two.status == 200 and (remaining(one), remaining(two)) == (N - 1, N - 2):
            return
        assert time.monotonic() < deadline, f"still not shared: {one!r} {two!r}"
        time.sleep(0.1)


# -- shared limiting ---------------------------------------------------------------------------


def test_two_gateways_let_exactly_n_through_in_total(fleet, raw, upstream, redis_server):
    gateways = fleet()
    assert_shared_exactly(gateways, raw, upstream)
    for gateway in gateways:
        assert fallbacks(gateway, raw) == 0

    keys = redis_cli(redis_server, "--scan").split()
    assert keys, "no limit keys in Redis"
    for key in keys:
        assert key.startswith("fastgw:rl:{per-client:"), keys
        ttl = int(redis_cli(redis_server, "PTTL", key))
        assert 0 < ttl <= PERIOD_MS, (key, ttl)


def test_a_client_throttled_at_one_gateway_is_throttled_at_the_other(fleet, raw, upstream):
    first, second = fleet()
    client = fresh("roaming")
    for i in range(N):
        response = get((first, second)[i % 2], raw, client)
        assert response.status == 200, response
        assert remaining(response) == N - 1 - i, response
    for gateway in (first, second):
        response = get(gateway, raw, client)
        assert_error(response, 429)
        assert int(response.header("Retry-After")) >= 1, response
    other = get(second, raw, fresh("other"))
    assert (other.status, remaining(other)) == (200, N - 1), other


# -- when Redis fails --------------------------------------------------------------------------


@pytest.mark.parametrize("on_error", ["deny", "allow", "local"])
def test_a_killed_redis_gives_on_error_and_a_restart_restores_sharing(
    fleet, raw, upstream, redis_server, on_error
):
    gateways = fleet(on_error)
    assert_shared_exactly(gateways, raw, upstream)
    redis_server.kill()

    sent = 0
    for gateway in gateways:
        client = fresh("outage")
        answers = [timed(gateway, raw, client) for _ in range(N + 5)]
        sent += len(answers)
        slowest = max(seconds for _, seconds in answers)
        assert slowest < ANSWER_WITHIN, f"a request waited {slowest:.1f}s on a dead Redis"
        codes = [response.status for response, _ in answers]
        if on_error == "deny":
            for response, _ in answers:
                assert_error(response, 429)
                assert response.header("Retry-After") == "1", response
        elif on_error == "allow":
            assert codes == [200] * len(answers), codes
        else:  # this gateway's own buckets, exact
            assert codes == [200] * N + [429] * 5, codes
        assert fallbacks(gateway, raw) == len(answers)

    redis_server.start()
    wait_until_shared(gateways, raw)
    counted = [fallbacks(gateway, raw) for gateway in gateways]
    assert_shared_exactly(gateways, raw, upstream)
    assert [fallbacks(gateway, raw) for gateway in gateways] == counted
    assert sum(counted) >= sent


def test_a_hung_redis_is_answered_by_deny_within_the_timeout(fleet, raw, redis_server):
    gateways = fleet("deny")
    for gateway in gateways:
        assert get(gateway, raw, fresh("before")).status == 200
    redis_server.pause()
    try:
        for gateway in gateways:
            client = fresh("hung")
            answers = [timed(gateway, raw, client) for _ in range(10)]
            for response, seconds in answers:
                assert_error(response, 429)
                assert response.header("Retry-After") == "1", response
                assert seconds < ANSWER_WITHIN, f"a request waited {seconds:.1f}s on a hung Redis"
            assert fallbacks(gateway, raw) == len(answers)
            text = scrape(gateway, raw)
            assert metric(text, "fastgw_ratelimit_store_fallbacks_total", reason="timeout") >= 1, (
                text
            )
            assert metric(text, "fastgw_rate_limited_total", limit="per-client") == len(answers)
    finally:
        redis_server.resume()
    wait_until_shared(gateways, raw)


def test_a_fleet_on_redis_over_mutual_tls(start_gateway, make_config, upstream, raw, tmp_path):
    """``redis.tls``: the gateways trust Redis's CA and present a client
    certificate, which this Redis requires; a gateway without one falls back."""
    pki = TestPKI(tmp_path / "pki")
    server_cert = pki.server(name="redis")
    client_cert = pki.client("gateway")
    server = RedisServer(tmp_path, tls={
        "cert-file": server_cert.cert, "key-file": server_cert.key,
        "ca-cert-file": pki.ca_file, "auth-clients": "yes",
    }).start()
    try:
        url = f"rediss://localhost:{server.port}/0"
        config = fleet_config(make_config, upstream.url, url, "local")
        config["redis"]["tls"] = {"ca": str(pki.ca_file), "cert": str(client_cert.cert),
                                  "key": str(client_cert.key)}
        gateways = [start_gateway(config), start_gateway(config)]
        assert_shared_exactly(gateways, raw, upstream)
        assert [fallbacks(gateway, raw) for gateway in gateways] == [0, 0]

        config["redis"]["tls"] = {"ca": str(pki.ca_file)}  # no client certificate
        anonymous = start_gateway(config)
        assert get(anonymous, raw, fresh("anonymous")).status == 200  # on_error: local
        assert fallbacks(anonymous, raw) >= 1
    finally:
        server.kill()
