"""Rate-limit decisions per second, local and Redis, and how exact they stay under load.

1. one process calling ``decide`` in a loop: compiled and Python twins, on one
   hot key, on 10k keys, and with two limits per request;
2. forked workers sharing one table: decisions per second in total, and the
   hot key's allowed count against its limit (must be exact);
3. asyncio under load: many concurrent tasks, each request an event-loop hop,
   optional per-request work (``--work-us``, what the rest of the gateway
   spends on a request) and a decision; ``store: local`` against
   ``store: redis`` on a redis-server started here (or ``--redis-url``), with
   two clients standing for two gateways. Allowed counts must be exact.

    python bench/bench_ratelimit.py [--duration 3] [--tasks 500] [--workers 2]
                                    [--work-us 0,25,100] [--redis-url redis://...]

The machines these run on are shared and noisy: compare the columns of one
run, not numbers across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid

import uvloop
from shared import start_redis, stop_all

from fastgw._core import CORE
from fastgw.ratelimit import Limit, RedisBuckets, SharedBuckets


def sync_rates(duration: float) -> None:
    print("1. decide() in one process (ns per decision)")
    print(f"   {'implementation':<16}{'one key':>10}{'10k keys':>12}{'two limits':>12}")
    keys = [f"client-{i}" for i in range(10_000)]
    for name, impl in CORE["bucket"].items():
        buckets = SharedBuckets.create(1 << 18, implementation=impl)
        per_second = impl.Limit("per-second", 10**6, 1.0)
        per_minute = impl.Limit("per-minute", 10**7, 60.0)
        cases = [
            [[(per_second, "hot")]] * 10_000,
            [[(per_second, key)] for key in keys[:10_000]],
            [[(per_second, key), (per_minute, key)] for key in keys[:10_000]],
        ]
        row = []
        for checks in cases:
            decide = buckets.decide
            n = 0
            start = time.perf_counter()
            deadline = start + duration / 3
            while time.perf_counter() < deadline:
                for c in checks:
                    decide(c)
                n += 10_000
            row.append((time.perf_counter() - start) / n * 1e9)
        print(f"   {name:<16}" + "".join(f"{v:>10.0f}  " for v in row))
        buckets.close()
    print()


def forked_rates(workers: int, duration: float) -> None:
    burst = 10_000
    buckets = SharedBuckets.create(1 << 18)
    hot = Limit("hot", burst, 86400.0)  # no refill during the run: exactly `burst` pass
    spread = Limit("spread", 10**6, 1.0)
    pipes = []
    start_at = time.monotonic() + 0.2
    for index in range(workers):
        r, w = os.pipe()
        if os.fork() == 0:
            os.close(r)
            while time.monotonic() < start_at:
                pass
            deadline = start_at + duration
            n = allowed = 0
            while time.monotonic() < deadline:
                for i in range(1000):
                    allowed += buckets.decide([(hot, "hot")]).allowed
                    buckets.decide([(spread, f"w{index}-{i}")])
                n += 2000
            os.write(w, f"{n} {allowed}".encode())
            os._exit(0)
        os.close(w)
        pipes.append(r)
    total = allowed = 0
    for r in pipes:
        with os.fdopen(r) as f:
            n, a = map(int, f.read().split())
        total += n
        allowed += a
        os.wait()
    print(f"2. {workers} forked workers on one table ({buckets.implementation.__name__})")
    print(f"   {total / duration:,.0f} decisions/s in total")
    verdict = "exact" if allowed == burst else "WRONG"
    print(f"   hot key: {allowed} allowed for a burst of {burst}: {verdict}")
    print()


def busy(us: float) -> None:
    end = time.perf_counter() + us / 1e6
    while time.perf_counter() < end:
        pass


async def under_load(store: str, url: str, tasks: int, work_us: float, duration: float):
    keys = 10_000
    burst = 20
    limit = Limit(f"bench-{uuid.uuid4().hex[:8]}", burst, 86400.0)
    if store == "local":
        local = SharedBuckets.create(1 << 16)
        deciders = [local.decide]
        clients = []
    else:
        clients = [RedisBuckets(url, timeout=1.0, on_error="deny") for _ in range(2)]
        for c in clients:
            await c.start()
            assert c.healthy, f"cannot reach {url}"
        deciders = [c.decide for c in clients]
    names = [f"client-{k}" for k in range(keys)]
    counts = {"n": 0, "allowed": 0}
    attempts = [0] * keys
    stop = time.perf_counter() + duration

    async def task(i: int) -> None:
        decide = deciders[i % len(deciders)]
        k = i
        n = allowed = 0
        while time.perf_counter() < stop:
            k = (k + tasks) % keys
            key = names[k]
            await asyncio.sleep(0)
            if work_us:
                busy(work_us)
            decision = decide([(limit, key)])
            if store != "local":
                decision = await decision
            n += 1
            allowed += decision.allowed
            attempts[k] += 1
        counts["n"] += n
        counts["allowed"] += allowed

    start = time.perf_counter()
    await asyncio.gather(*[task(i) for i in range(tasks)])
    elapsed = time.perf_counter() - start
    fallbacks = sum(sum(c.fallbacks.values()) for c in clients)
    for c in clients:
        await c.close()
    expected = sum(min(a, burst) for a in attempts)
    return counts["n"] / elapsed, counts["allowed"], expected, fallbacks


def async_rates(url: str, tasks: int, works: list[float], duration: float) -> None:
    print(f"3. asyncio (uvloop), {tasks} concurrent tasks, 10k keys, two Redis clients")
    print(f"   {'work/request':>13}{'local/s':>12}{'redis/s':>12}{'redis/local':>13}   allowed")
    for work in works:
        local = uvloop.run(under_load("local", url, tasks, work, duration))
        redis = uvloop.run(under_load("redis", url, tasks, work, duration))
        exact = all(r[1] == r[2] for r in (local, redis)) and redis[3] == 0
        print(
            f"   {work:>11g}us{local[0]:>12,.0f}{redis[0]:>12,.0f}{redis[0] / local[0]:>12.0%}"
            f"   local {local[1]}/{local[2]}, redis {redis[1]}/{redis[2]}"
            f" {'exact' if exact else 'WRONG'}"
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--work-us", default="0,25,100")
    parser.add_argument("--redis-url")
    args = parser.parse_args()
    sync_rates(args.duration)
    forked_rates(args.workers, args.duration)
    with tempfile.TemporaryDirectory() as directory:
        process = None
        url = args.redis_url
        if url is None:
            process, url = start_redis(directory)
        try:
            works = [float(w) for w in args.work_us.split(",")]
            async_rates(url, args.tasks, works, args.duration)
        finally:
            if process is not None:
                stop_all([process])


if __name__ == "__main__":
    main()
