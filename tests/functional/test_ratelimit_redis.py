"""``store: redis`` against real redis-server processes started here.

Every server runs in a temporary directory on a free port, without
persistence, and is killed at the end of its test.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import random
import socket
import ssl
import subprocess
import time

import pytest
import uvloop
from cryptography import x509

from fastgw.ratelimit import Limit, RedisBuckets, SharedBuckets
from fastgw.ratelimit.redis import key_slot
from fastgw.testing import TestPKI

from .redis_server import REDIS_CLI, RedisServer, require


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


def run(coro):
    return uvloop.run(asyncio.wait_for(coro, 60))


async def started(url, **kwargs) -> RedisBuckets:
    buckets = RedisBuckets(url, **kwargs)
    await buckets.start()
    assert buckets.healthy, "could not reach redis"
    return buckets


async def until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def fields(decision):
    return (
        decision.allowed,
        decision.limit.name,
        decision.remaining,
        decision.reset,
        decision.retry_after,
    )


# -- exact across gateways -------------------------------------------------------------------


def test_n_per_minute_lets_exactly_n_through_across_two_gateways(redis_server):
    limit = Limit("per-client", 100, 60.0)  # one token back every 0.6 s

    async def main():
        gateways = [await started(redis_server.url, timeout=1.0) for _ in range(2)]

        async def client(buckets, key):
            return [await buckets.decide([(limit, key)]) for _ in range(10)]

        start = time.monotonic()
        results = await asyncio.gather(
            *[client(g, "alice") for g in gateways for _ in range(50)],
            *[client(g, "bob") for g in gateways for _ in range(10)],
        )
        elapsed = time.monotonic() - start
        for g in gateways:
            assert not g.fallbacks
            await g.close()
        return results, elapsed

    results, elapsed = run(main())
    alice = sum(d.allowed for r in results[:100] for d in r)
    bob = sum(d.allowed for r in results[100:] for d in r)
    assert elapsed < 0.6, "too slow to check exactness against a refill"
    assert (alice, bob) == (100, 100)
    assert sorted(d.remaining for r in results[:100] for d in r if d.allowed) == list(range(100))


def test_decisions_match_the_local_arithmetic(redis_server):
    per_second = Limit("per-second", 10, 1.0)

    async def main():
        buckets = await started(redis_server.url, timeout=1.0)
        decisions = [await buckets.decide([(per_second, "k")]) for _ in range(11)]
        await buckets.close()
        return decisions

    decisions = [fields(d) for d in run(main())]
    assert decisions[:10] == [(True, "per-second", 9 - i, 1, 0) for i in range(10)]
    assert decisions[10] == (False, "per-second", 0, 1, 1)


def test_several_limits_are_all_or_nothing(redis_server):
    wide = Limit("wide", 5, 60.0)
    narrow = Limit("narrow", 2, 60.0)

    async def main():
        buckets = await started(redis_server.url, timeout=1.0)
        both = [(wide, "alice"), (narrow, "alice")]
        decisions = await asyncio.gather(*[buckets.decide(both) for _ in range(4)])
        alone = await buckets.decide([(wide, "alice")])
        twice = await buckets.decide([(narrow, "bob"), (narrow, "bob")])
        await buckets.close()
        return [fields(d) for d in (*decisions, alone, twice)]

    d = run(main())
    assert d[:2] == [(True, "narrow", 1, 30, 0), (True, "narrow", 0, 60, 0)]
    assert d[2] == d[3] == (False, "narrow", 0, 60, 30)
    assert d[4] == (True, "wide", 2, 36, 0)  # two tokens spent before, not four
    assert d[5] == (True, "narrow", 1, 30, 0)  # one bucket named twice counts once


def test_keys_carry_ttls_until_the_bucket_is_full(redis_server):
    limit = Limit("per-client", 100, 60.0)
    fast = Limit("fast", 10, 1.0)

    async def main():
        buckets = await started(redis_server.url, timeout=1.0)
        await buckets.decide([(limit, "once")])
        for _ in range(100):
            await buckets.decide([(limit, "spent")])
        await buckets.decide([(fast, "brief")])
        await buckets.close()

    run(main())
    assert 400 < redis_server.command("PTTL", "fastgw:rl:{per-client:once}") <= 600
    assert 59_000 < redis_server.command("PTTL", "fastgw:rl:{per-client:spent}") <= 60_000
    time.sleep(0.15)
    assert redis_server.command("EXISTS", "fastgw:rl:{fast:brief}") == 0
    assert redis_server.command("PTTL", "fastgw:rl:{per-client:once}") > 0


def test_noscript_after_script_flush_recovers(redis_server):
    limit = Limit("l", 5, 60.0)

    async def main():
        buckets = await started(redis_server.url, timeout=1.0)
        first = await buckets.decide([(limit, "k")])
        redis_server.command("SCRIPT", "FLUSH")
        again = await asyncio.gather(*[buckets.decide([(limit, "k")]) for _ in range(3)])
        fallbacks = dict(buckets.fallbacks)
        await buckets.close()
        return [first.remaining] + [d.remaining for d in again], fallbacks

    remaining, fallbacks = run(main())
    assert remaining == [4, 3, 2, 1]
    assert fallbacks == {}


# -- when Redis fails ------------------------------------------------------------------------


@pytest.mark.parametrize("on_error", ["allow", "deny", "local"])
@pytest.mark.parametrize("failure", ["killed", "hung"])
def test_a_failing_redis_gives_the_on_error_decision_within_the_timeout(
    redis_server, on_error, failure
):
    limit = Limit("l", 2, 60.0)
    timeout = 0.2
    counted = []

    async def main():
        local = SharedBuckets.create(64)
        buckets = await started(
            redis_server.url,
            timeout=timeout,
            on_error=on_error,
            local_fallback=local,
            on_fallback=counted.append,
        )
        assert (await buckets.decide([(limit, "k")])).allowed
        if failure == "killed":
            redis_server.kill()
        else:
            redis_server.pause()
        start = time.monotonic()
        in_flight = await asyncio.gather(*[buckets.decide([(limit, "k")]) for _ in range(3)])
        elapsed = time.monotonic() - start
        later = await buckets.decide([(limit, "k")])
        state = buckets.state
        await buckets.close()
        return in_flight, later, elapsed, state, dict(buckets.fallbacks)

    in_flight, later, elapsed, state, fallbacks = run(main())
    assert elapsed < timeout + 0.15
    assert state == "failing"
    reason = "timeout" if failure == "hung" else "unavailable"
    assert fallbacks[reason] >= 3
    assert sum(fallbacks.values()) == 4 == len(counted)
    decisions = [d.allowed for d in (*in_flight, later)]
    if on_error == "allow":
        assert decisions == [True] * 4
    elif on_error == "deny":
        assert decisions == [False] * 4
        assert in_flight[0].retry_after >= 1
    else:
        assert decisions == [True, True, False, False]  # the host's own buckets, exact


def test_a_restarted_redis_restores_shared_limiting(redis_server, caplog):
    limit = Limit("l", 1000, 60.0)
    caplog.set_level(logging.INFO, logger="fastgw.ratelimit")

    async def main():
        buckets = await started(redis_server.url, timeout=0.2)
        assert (await buckets.decide([(limit, "k")])).allowed
        redis_server.kill()
        for _ in range(20):  # many requests, one log line
            await buckets.decide([(limit, "k")])
            await asyncio.sleep(0.01)
        failed = sum(buckets.fallbacks.values())
        redis_server.start()
        await until(lambda: buckets.healthy)
        decisions = [await buckets.decide([(limit, "k")]) for _ in range(5)]
        assert sum(buckets.fallbacks.values()) == failed
        await buckets.close()
        return failed, decisions

    failed, decisions = run(main())
    assert failed == 20
    # the restarted server is empty: the bucket starts full again, counted in Redis
    assert [d.remaining for d in decisions] == [999, 998, 997, 996, 995]
    assert int(redis_server.command("GET", "fastgw:rl:{l:k}")) > 0
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([m for m in messages if "unreachable" in m]) == 1, messages
    assert len([m for m in messages if "reachable again" in m]) == 1, messages


def test_a_client_started_while_redis_is_down_connects_later(tmp_path):
    server = RedisServer(tmp_path)
    limit = Limit("l", 10, 60.0)

    async def main():
        buckets = RedisBuckets(server.url, timeout=0.2, on_error="deny")
        await buckets.start()
        assert buckets.state == "failing"
        assert not (await buckets.decide([(limit, "k")])).allowed
        server.start()
        await until(lambda: buckets.healthy)
        decision = await buckets.decide([(limit, "k")])
        await buckets.close()
        return decision

    try:
        assert fields(run(main())) == (True, "l", 9, 6, 0)
    finally:
        server.kill()


def test_close_is_bounded_even_when_a_cancellation_is_lost(tmp_path):
    """A cancellation that lands as a connect completes can be swallowed (as
    ``wait_for`` may do); closing must still end, and reconnecting stop."""
    server = RedisServer(tmp_path)  # never started: every connect is refused

    async def main():
        buckets = RedisBuckets(server.url, timeout=0.2, on_error="deny")
        opens = 0
        inside = False
        real_open = buckets._open

        async def open_losing_one_cancel(address, **kwargs):
            nonlocal opens, inside
            opens += 1
            inside = True
            with contextlib.suppress(asyncio.CancelledError):  # lost, as in the race
                await asyncio.sleep(0.5)
            inside = False
            return await real_open(address, **kwargs)

        buckets._open = open_losing_one_cancel
        await buckets.start()
        assert buckets.state == "failing"
        await until(lambda: opens >= 2 and inside)
        closing = asyncio.ensure_future(buckets.close())
        done, _ = await asyncio.wait({closing}, timeout=10)
        if not done:  # cancel what hangs, then fail
            buckets._task.cancel()
            closing.cancel()
        assert done, "close() did not end"
        await until(lambda: buckets._task.done())
        return buckets.state

    assert run(main()) == "closed"


# -- URLs, AUTH, databases and TLS -----------------------------------------------------------


def test_password_and_database_from_the_url(tmp_path):
    server = RedisServer(tmp_path, args=["--requirepass", "s3cret"]).start()
    limit = Limit("l", 10, 60.0)

    async def main():
        good = await started(f"redis://:s3cret@127.0.0.1:{server.port}/3", timeout=1.0)
        assert (await good.decide([(limit, "k")])).allowed
        await good.close()
        bad = RedisBuckets(f"redis://:wrong@127.0.0.1:{server.port}/3", on_error="deny")
        await bad.start()
        state = bad.state
        await bad.close()
        return state

    try:
        assert run(main()) == "failing"
        assert server.command("EXISTS", "fastgw:rl:{l:k}", db=3, password="s3cret") == 1
        assert server.command("EXISTS", "fastgw:rl:{l:k}", db=0, password="s3cret") == 0
    finally:
        server.kill()


def tls_files(directory) -> dict:
    """redis-server's TLS options: a certificate of a test CA for localhost and
    127.0.0.1, good for clients too (cluster nodes present it to each other)."""
    pki = TestPKI(directory / "pki")
    cert = pki.issue(
        "redis",
        common_name="localhost",
        alt_names=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        usages=("server", "client"),
    )
    return {"cert-file": cert.cert, "key-file": cert.key, "ca-cert-file": pki.ca_file,
            "auth-clients": "no"}


def test_rediss_over_tls(tmp_path):
    tls = tls_files(tmp_path)
    server = RedisServer(tmp_path, tls=tls).start()
    context = ssl.create_default_context(cafile=str(tls["ca-cert-file"]))
    limit = Limit("l", 2, 60.0)

    async def main():
        buckets = await started(f"rediss://localhost:{server.port}/0", timeout=1.0, ssl=context)
        decisions = [await buckets.decide([(limit, "k")]) for _ in range(3)]
        await buckets.close()
        untrusted = RedisBuckets(f"rediss://localhost:{server.port}/0", on_error="deny")
        await untrusted.start()
        state = untrusted.state
        await untrusted.close()
        return [d.allowed for d in decisions], state

    try:
        assert run(main()) == ([True, True, False], "failing")
    finally:
        server.kill()


# -- Redis Cluster ---------------------------------------------------------------------------


def cluster_ports(count: int) -> list[int]:
    """Consecutive free ports whose cluster bus ports (+10000) are free too."""
    for _ in range(200):
        base = random.randrange(20000, 30000)
        ports = list(range(base, base + count))
        try:
            for port in ports:
                for p in (port, port + 10000):
                    with socket.socket() as sock:
                        sock.bind(("127.0.0.1", p))
        except OSError:
            continue
        return ports
    raise RuntimeError("no free ports for a cluster")


def start_cluster(directory, nodes: list, tls: dict | None = None) -> None:
    """Three masters in NODES; over TLS the cluster bus and redis-cli use it too."""
    args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    cli = [require(REDIS_CLI)]
    if tls:
        args += ["--tls-cluster", "yes"]
        cli += ["--tls", "--cacert", str(tls["ca-cert-file"])]
    for port in cluster_ports(3):
        (directory / str(port)).mkdir()
        nodes.append(RedisServer(directory / str(port), port, args, tls=tls).start())
    subprocess.run(
        [*cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
         "--cluster-replicas", "0", "--cluster-yes"],
        check=True, capture_output=True, timeout=60,
    )
    deadline = time.monotonic() + 30
    while not all(b"cluster_state:ok" in n.command("CLUSTER", "INFO") for n in nodes):
        assert time.monotonic() < deadline, "cluster did not come up"
        time.sleep(0.1)


@pytest.fixture
def cluster(tmp_path):
    nodes = []
    try:
        start_cluster(tmp_path, nodes)
        yield nodes
    finally:
        for node in nodes:
            node.kill()


@pytest.fixture
def tls_cluster(tmp_path):
    nodes = []
    try:
        start_cluster(tmp_path, nodes, tls=tls_files(tmp_path))
        yield nodes
    finally:
        for node in nodes:
            node.kill()


def cluster_url(nodes) -> str:
    return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes[:2])


def owner(nodes, slot: int) -> RedisServer:
    for node in nodes:
        for start, end, master, *_ in node.command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return next(n for n in nodes if n.port == master[1])
    raise LookupError(slot)


def node_id(node: RedisServer) -> str:
    return node.command("CLUSTER", "MYID").decode()


def test_cluster_n_per_day_across_two_gateways(cluster):
    limit = Limit("per-client", 50, 86400.0)  # no refill within the test, however slow
    keys = [f"client-{i}" for i in range(12)]
    slots = {key_slot(f"fastgw:rl:{{per-client:{k}}}".encode()) for k in keys}
    assert len({owner(cluster, s).port for s in slots}) == 3  # the keys span every node

    async def main():
        gateways = [await started(cluster_url(cluster), timeout=1.0) for _ in range(2)]

        async def client(buckets, key):
            return sum([(await buckets.decide([(limit, key)])).allowed for _ in range(20)])

        counts = await asyncio.gather(
            *[client(g, key) for key in keys for g in gateways for _ in range(3)]
        )
        for g in gateways:
            assert not g.fallbacks
            await g.close()
        return counts

    counts = run(main())
    per_key = [sum(counts[i * 6 : i * 6 + 6]) for i in range(len(keys))]
    assert per_key == [50] * len(keys)


def test_cluster_over_tls(tls_cluster, tmp_path):
    limit = Limit("per-client", 5, 86400.0)
    keys = [f"client-{i}" for i in range(12)]
    slots = {key_slot(f"fastgw:rl:{{per-client:{k}}}".encode()) for k in keys}
    assert len({owner(tls_cluster, s).port for s in slots}) == 3  # TLS to every node
    url = "rediss+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in tls_cluster[:2])
    context = ssl.create_default_context(cafile=str(tls_cluster[0].tls["ca-cert-file"]))

    async def main():
        buckets = await started(url, timeout=1.0, ssl=context)
        allowed = [sum([(await buckets.decide([(limit, key)])).allowed for _ in range(7)])
                   for key in keys]
        fallbacks = buckets.fallbacks
        await buckets.close()
        # the system's trust store does not know the test's certificate
        untrusted = RedisBuckets(url, on_error="deny")
        await untrusted.start()
        state = untrusted.state
        await untrusted.close()
        return allowed, fallbacks, state

    allowed, fallbacks, state = run(main())
    assert allowed == [5] * len(keys) and not fallbacks
    assert state == "failing"


def test_cluster_limits_in_different_slots_are_all_or_nothing(cluster):
    wide = Limit("wide", 5, 60.0)
    narrow = Limit("narrow", 2, 60.0)
    assert key_slot(b"fastgw:rl:{wide:alice}") != key_slot(b"fastgw:rl:{narrow:alice}")

    async def main():
        buckets = await started(cluster_url(cluster), timeout=1.0)
        both = [(wide, "alice"), (narrow, "alice")]
        decisions = [await buckets.decide(both) for _ in range(4)]
        await asyncio.sleep(0.1)  # refunds are sent after the answer
        alone = await buckets.decide([(wide, "alice")])
        await buckets.close()
        return [d.allowed for d in decisions], alone

    allowed, alone = run(main())
    assert allowed == [True, True, False, False]
    assert alone.remaining == 2  # the denied requests gave their wide token back


def test_cluster_follows_moved_and_ask_during_resharding(cluster):
    limit = Limit("l", 10, 60.0)
    key = "alice"
    slot = key_slot(f"fastgw:rl:{{l:{key}}}".encode())
    source = owner(cluster, slot)
    target = next(n for n in cluster if n is not source)

    async def main():
        buckets = await started(cluster_url(cluster), timeout=1.0)
        assert (await buckets.decide([(limit, key)])).remaining == 9
        # migrating: keys not yet moved are answered by the target after ASK
        target.command("CLUSTER", "SETSLOT", slot, "IMPORTING", node_id(source))
        source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", node_id(target))
        newcomer = next(
            k
            for k in (f"fresh-{i}" for i in itertools.count())
            if key_slot(f"fastgw:rl:{{l:{k}}}".encode()) == slot
        )
        assert (await buckets.decide([(limit, newcomer)])).remaining == 9
        assert target.command("EXISTS", f"fastgw:rl:{{l:{newcomer}}}", asking=True) == 1
        # moved: the key goes over, the slot is handed to the target everywhere
        source.command(
            "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", f"fastgw:rl:{{l:{key}}}"
        )
        for node in cluster:
            node.command("CLUSTER", "SETSLOT", slot, "NODE", node_id(target))
        decisions = [await buckets.decide([(limit, key)]) for _ in range(3)]
        await until(lambda: buckets._slots[slot] == ("127.0.0.1", target.port))
        fallbacks = dict(buckets.fallbacks)
        await buckets.close()
        return [d.remaining for d in decisions], fallbacks

    remaining, fallbacks = run(main())
    assert remaining == [8, 7, 6]  # the count carried over to the new owner
    assert fallbacks == {}
