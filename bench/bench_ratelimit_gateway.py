"""What a rate limit costs a proxied request, and how exact a shared limit stays under load.

1. Throughput: wrk through fastgw (one worker) to an nginx upstream, with
   (a) no limit, (b) a ``store: local`` limit and (c) a ``store: redis`` limit
   on a redis-server started here; both limits keyed by ip and far too high
   to throttle, so every request pays for a decision and none is refused.
   For each: requests/s, p99, and CPU time per request of the gateway process
   (utime + stime from /proc/PID/stat over the run, divided by the requests
   its /metrics counted), and for (c) of redis-server too. The cases take
   turns over ``--rounds`` rounds; the median of each is shown.
2. Accuracy: two gateways share one Redis-backed limit keyed by ip
   (``--accuracy-rate``, 1000 per day by default, so no token comes back during
   the run and the count must equal the limit exactly) while wrk loads both at
   once; the 200s counted by the gateways against the limit.

    python bench/bench_ratelimit_gateway.py [--duration 10] [--connections 50]
        [--rounds 3] [--accuracy-duration 5] [--accuracy-rate 1000/day]

The machines these run on are shared and noisy: the ratios between the rows
of one run are the result, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_proxy import wrk
from shared import (
    TICKS_PER_SECOND,
    cpu_ticks,
    free_port,
    gateway_env,
    nginx_upstream_config,
    require_tools,
    start_redis,
    stop_all,
    wait_port,
)

from fastgw.config.units import parse_rate
from fastgw.testing import GatewayProcess

HIGH = "100000000/min"

CASES = {
    "no limit": None,
    "local limit": {"rate": HIGH, "key": "ip"},
    "redis limit": {"rate": HIGH, "key": "ip", "store": "redis"},
}


def gateway_config(upstream: int, redis_url: str, limit: dict | None, audit: Path) -> dict:
    """One worker, one route to the upstream, behind ``limit`` when there is one."""
    route = {"id": "all", "uri": "lb://backend", "predicates": ["Path=/**"], "auth": "none"}
    config = {
        "workers": 1,
        "audit": {"path": str(audit)},
        "services": {
            "backend": {"instances": [f"http://127.0.0.1:{upstream}"], "max_connections": 256}
        },
        "routes": [route],
    }
    if limit is not None:
        config["rate_limits"] = {"bench": limit}
        route["filters"] = ["RateLimit=bench"]
        if limit.get("store") == "redis":
            config["redis"] = {"url": redis_url, "timeout": "200ms", "on_error": "deny"}
    return config


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads included."""
    return cpu_ticks(pid) / TICKS_PER_SECOND


def metrics(gateway: GatewayProcess) -> str:
    with urllib.request.urlopen(f"{gateway.admin_url}/metrics", timeout=10) as response:
        return response.read().decode()


def series_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the series of ``name`` that carry ``labels``."""
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(label in line for label in wanted):
            total += float(line.rsplit(" ", 1)[1])
    return total


def answered(gateway: GatewayProcess) -> float:
    return series_sum(metrics(gateway), "fastgw_requests_total")


def measure(gateway, redis_pid, duration, connections, threads) -> dict:
    """One wrk run against ``gateway``, with the CPU it and Redis spent per request."""
    requests_before = answered(gateway)
    cpu_before = cpu_seconds(gateway.pid)
    redis_before = cpu_seconds(redis_pid)
    rps, p99 = wrk(gateway.port, duration, connections, threads)
    cpu = cpu_seconds(gateway.pid) - cpu_before
    redis_cpu = cpu_seconds(redis_pid) - redis_before
    requests = answered(gateway) - requests_before
    return {
        "rps": rps,
        "p99": p99,
        "gateway_us": cpu / requests * 1e6,
        "redis_us": redis_cpu / requests * 1e6,
    }


def wrk_counts(port: int, duration: int, connections: int) -> subprocess.Popen:
    return subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", f"http://127.0.0.1:{port}/shared"],
        stdout=subprocess.PIPE,
        text=True,
    )


def parse_counts(output: str) -> tuple[int, int]:
    """``(responses, non-2xx responses)`` from wrk's report."""
    total = int(re.search(r"(\d+) requests in", output).group(1))
    refused = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return total, int(refused.group(1)) if refused else 0


def throughput(args, upstream: int, redis_url: str, redis_pid: int, tmp: Path) -> None:
    env = gateway_env()
    gateways = {}
    for name, limit in CASES.items():
        workdir = tmp / name.replace(" ", "-")
        config = gateway_config(upstream, redis_url, limit, workdir / "audit.log")
        gateways[name] = GatewayProcess(config, workdir, env=env).start()
    try:
        for gateway in gateways.values():
            wrk(gateway.port, 2, args.connections, args.threads)  # warm-up: pools, caches
        runs: dict[str, list[dict]] = {name: [] for name in CASES}
        for _ in range(args.rounds):
            for name, gateway in gateways.items():
                runs[name].append(
                    measure(gateway, redis_pid, args.duration, args.connections, args.threads)
                )
        redis_text = metrics(gateways["redis limit"])
        fallbacks = series_sum(redis_text, "fastgw_ratelimit_store_fallbacks_total")
        limited = series_sum(redis_text, "fastgw_rate_limited_total")
    finally:
        for gateway in gateways.values():
            gateway.__exit__(None, None, None)

    median = {}
    for name, results in runs.items():
        middle = sorted(results, key=lambda r: r["rps"])[len(results) // 2]
        median[name] = {
            "rps": middle["rps"],
            "p99": middle["p99"],  # of the round with the median throughput
            "gateway_us": statistics.median(r["gateway_us"] for r in results),
            "redis_us": statistics.median(r["redis_us"] for r in results),
        }
    print(
        f"\n1. throughput: wrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
        f"median of {args.rounds} rounds, one gateway worker, nginx upstream, "
        f"{os.cpu_count()} cores shared by all\n"
    )
    print(
        f"   {'case':<14}{'req/s':>10}{'p99':>10}{'gw µs/req':>11}{'redis µs/req':>14}"
        f"{'req/s vs none':>15}"
    )
    base = median["no limit"]["rps"]
    for name, m in median.items():
        redis_us = f"{m['redis_us']:.1f}" if name == "redis limit" else "-"
        print(
            f"   {name:<14}{m['rps']:>10.0f}{m['p99']:>10}{m['gateway_us']:>11.1f}"
            f"{redis_us:>14}{m['rps'] / base:>15.2f}"
        )
    local, redis = median["local limit"], median["redis limit"]
    print(
        f"\n   redis vs local: throughput x{redis['rps'] / local['rps']:.2f}, "
        f"gateway CPU per request x{redis['gateway_us'] / local['gateway_us']:.2f} "
        f"({redis['gateway_us'] - local['gateway_us']:+.1f} µs), "
        f"plus {redis['redis_us']:.1f} µs of redis-server per request"
    )
    print(
        f"   local vs none: gateway CPU per request "
        f"{local['gateway_us'] - median['no limit']['gateway_us']:+.1f} µs"
    )
    print(f"   redis case: {fallbacks:.0f} fallbacks, {limited:.0f} refused (both must be 0)")


def accuracy(args, upstream: int, redis_url: str, tmp: Path) -> None:
    rate = parse_rate(args.accuracy_rate)
    limit = {"rate": args.accuracy_rate, "key": "ip", "store": "redis"}
    env = gateway_env()
    gateways = []
    try:
        for i in range(2):
            workdir = tmp / f"shared-{i}"
            config = gateway_config(upstream, redis_url, limit, workdir / "audit.log")
            gateways.append(GatewayProcess(config, workdir, env=env).start())
        started = time.monotonic()
        loads = [wrk_counts(g.port, args.accuracy_duration, args.connections) for g in gateways]
        outputs = [load.communicate()[0] for load in loads]
        elapsed = time.monotonic() - started
        texts = [metrics(g) for g in gateways]
    finally:
        for gateway in gateways:
            gateway.__exit__(None, None, None)

    counted = [parse_counts(output) for output in outputs]
    allowed = [series_sum(text, "fastgw_requests_total", status="200") for text in texts]
    refused = [series_sum(text, "fastgw_requests_total", status="429") for text in texts]
    fallbacks = sum(series_sum(t, "fastgw_ratelimit_store_fallbacks_total") for t in texts)
    # Tokens that may come back while the load runs (none for a long period).
    refill = int(elapsed * rate.count / rate.period)
    total = sum(allowed)
    if total == rate.count:
        verdict = "exact"
    elif rate.count < total <= rate.count + refill:
        verdict = "within the refill"
    else:
        verdict = "WRONG"
    print(
        f"\n2. accuracy: limit {args.accuracy_rate} keyed by ip in one Redis, "
        f"two gateways loaded at once by wrk -c{args.connections} -d{args.accuracy_duration}s\n"
    )
    print(f"   {'gateway':<10}{'answered':>10}{'200':>8}{'429':>8}{'wrk 2xx':>9}")
    for i, ((responses, non_2xx), ok, no) in enumerate(zip(counted, allowed, refused, strict=True)):
        print(f"   {i:<10}{responses:>10}{ok:>8.0f}{no:>8.0f}{responses - non_2xx:>9}")
    print(
        f"\n   allowed {total:.0f} in total vs the limit {rate.count} "
        f"(+{refill} refilled over {elapsed:.1f}s): {verdict}; {fallbacks:.0f} fallbacks"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--accuracy-duration", type=int, default=5)
    parser.add_argument("--accuracy-rate", default="1000/day")
    args = parser.parse_args()
    nginx = require_tools("wrk", "nginx", "redis-server")["nginx"]
    tmp = Path(tempfile.mkdtemp(prefix="fastgw-bench-ratelimit-"))
    upstream_process = redis_process = None
    try:
        upstream = free_port()
        (tmp / "upstream.conf").write_text(nginx_upstream_config(tmp, upstream))
        upstream_process = subprocess.Popen(
            [nginx, "-p", str(tmp), "-c", str(tmp / "upstream.conf"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_port(upstream)
        redis_process, redis_url = start_redis(str(tmp))
        throughput(args, upstream, redis_url, redis_process.pid, tmp)
        accuracy(args, upstream, redis_url, tmp)
    finally:
        stop_all([p for p in (upstream_process, redis_process) if p is not None])
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
