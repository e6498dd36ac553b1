"""What JWT costs on the request path: one gateway, two routes, measured in one run.

``/open/**`` is ``auth: none``; ``/secure/**`` verifies an RS256 token (the
same token every time, so after the first request it comes from the
verified-token cache while exp/nbf are still checked). Both get the same
Authorization header so the bytes on the wire are equal. Reported: wrk
requests/s and the gateway's CPU time per request (from /proc).

A shared machine drifts by tens of percent within a minute, so the two routes
are measured in many short pairs, back to back, in alternating order, and
what is reported is the median of the per-pair ratios. The gateway has one
CPU to itself and wrk and the upstream share the other, when the machine has
two or more. ``--control`` makes ``/secure/**`` ``auth: none`` too: the same
measurement of two equal routes, whose spread is the noise floor.

    python bench/bench_auth.py [--pairs 12] [--duration 3] [--connections 50] [--control]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from shared import (
    cpu_ticks,
    free_port,
    gateway_env,
    nginx_upstream_config,
    pinned,
    require_tools,
    stop_all,
    wait_port,
)

from fastgw.testing.idp import SigningKey, jwks, mint_token

GATEWAY = """
listeners: [{{address: "127.0.0.1:{port}"}}]
admin: null
audit: {{path: "{dir}/audit.log"}}
auth:
  jwt:
    providers:
      - {{name: bench, issuer: "https://idp.bench", jwks_file: "{dir}/jwks.json",
         audiences: [bench-api], algorithms: [RS256]}}
services:
  backend: {{instances: ["http://127.0.0.1:{upstream}"], max_connections: 256}}
routes:
  - {{id: open, uri: "lb://backend", predicates: ["Path=/open/**"], auth: none}}
  - {{id: secure, uri: "lb://backend", predicates: ["Path=/secure/**"], {secure}}}
"""
SECURE = 'filters: ["RequireScopes=bench"]'
CONTROL = "auth: none"


def measure(pid: int, port: int, path: str, token: str, args, cpu) -> tuple[float, float]:
    before = cpu_ticks(pid)
    out = subprocess.run(
        [*pinned(cpu), "wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "-H",
         f"Authorization: Bearer {token}", f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True,
    ).stdout
    ticks = cpu_ticks(pid) - before
    if "Non-2xx" in out:
        raise RuntimeError(f"errors on {path}:\n{out}")
    requests = int(out.split(" requests in ")[0].split()[-1])
    rps = float(out.split("Requests/sec:")[1].split()[0])
    return rps, ticks / os.sysconf("SC_CLK_TCK") / requests * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--control", action="store_true",
                        help="both routes auth: none, to show the noise floor")
    args = parser.parse_args()
    nginx = require_tools("wrk", "nginx")["nginx"]
    # the gateway alone on CPU 0; the load and the upstream on CPU 1
    gateway_cpu, load_cpu = (0, 1) if (os.cpu_count() or 1) >= 2 else (None, None)
    tmp = Path(tempfile.mkdtemp(prefix="fastgw-bench-auth-"))
    key = SigningKey.generate("RS256")
    (tmp / "jwks.json").write_text(json.dumps(jwks(key)))
    token = mint_token(key, iss="https://idp.bench", aud="bench-api", scope="bench", ttl=3600)
    procs = []
    try:
        upstream = free_port()
        (tmp / "upstream.conf").write_text(nginx_upstream_config(tmp, upstream))
        procs.append(subprocess.Popen(
            [*pinned(load_cpu), nginx, "-p", str(tmp), "-c", str(tmp / "upstream.conf"),
             "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        wait_port(upstream)
        port = free_port()
        (tmp / "gateway.yaml").write_text(GATEWAY.format(
            port=port, upstream=upstream, dir=tmp, secure=CONTROL if args.control else SECURE))
        gateway = subprocess.Popen(
            [*pinned(gateway_cpu), sys.executable, "-m", "fastgw", "run",
             "-c", str(tmp / "gateway.yaml")],
            env=gateway_env(), start_new_session=True)
        procs.append(gateway)
        wait_port(port)
        for path in ("/open/x", "/secure/x"):  # warm-up: pools, the token cache
            subprocess.run(["wrk", "-t1", "-c8", "-d1s", "-H", f"Authorization: Bearer {token}",
                            f"http://127.0.0.1:{port}{path}"], capture_output=True, check=True)
        paths = ("/open/x", "/secure/x")
        results: dict[str, list[tuple[float, float]]] = {path: [] for path in paths}
        for i in range(args.pairs):
            for path in paths if i % 2 == 0 else paths[::-1]:
                results[path].append(measure(gateway.pid, port, path, token, args, load_cpu))
        report(results, args)
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def report(results: dict[str, list[tuple[float, float]]], args) -> None:
    opened, secured = results.values()
    rps_cost = sorted(1 - s[0] / o[0] for o, s in zip(opened, secured, strict=True))
    cpu_cost = sorted(s[1] / o[1] - 1 for o, s in zip(opened, secured, strict=True))
    second = "auth: none (control)" if args.control else "RS256 JWT (cached) + scope"
    print(f"\nwrk -t1 -c{args.connections}, {args.pairs} pairs of {args.duration} s in "
          "alternating order, one gateway worker; medians\n")
    print(f"{'route':<28} {'req/s':>9} {'CPU us/req':>11}")
    for name, runs in (("auth: none", opened), (second, secured)):
        print(f"{name:<28} {statistics.median(r[0] for r in runs):>9.0f} "
              f"{statistics.median(r[1] for r in runs):>11.1f}")

    def spread(costs: list[float]) -> str:
        quarter = len(costs) // 4
        return (f"{100 * statistics.median(costs):.1f}% (middle half of the pairs "
                f"{100 * costs[quarter]:.1f}% to {100 * costs[-1 - quarter]:.1f}%)")

    print(f"\nThe second route costs {spread(rps_cost)} of throughput,")
    print(f"and {spread(cpu_cost)} more CPU per request.")


if __name__ == "__main__":
    sys.exit(main())
