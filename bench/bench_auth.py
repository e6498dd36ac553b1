"""What JWT costs on the request path: one gateway, two routes, measured in one run.

``/open/**`` is ``auth: none``; ``/secure/**`` verifies an RS256 token (the
same token every time, so after the first request it comes from the
verified-token cache while exp/nbf are still checked). Both get the same
Authorization header so the bytes on the wire are equal. Reported: wrk
requests/s and the gateway's CPU time per request (from /proc, which a noisy
shared machine disturbs much less than wall-clock throughput).

    python bench/bench_auth.py [--duration 10] [--connections 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout


from bench_proxy import NGINX_UPSTREAM, free_port, gateway_env, stop_all, wait_port

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
  - {{id: secure, uri: "lb://backend", predicates: ["Path=/secure/**"],
     filters: ["RequireScopes=bench"]}}
"""


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def measure(pid: int, port: int, path: str, token: str, args) -> tuple[float, float]:
    before = cpu_ticks(pid)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "-H",
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
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    tmp = Path(tempfile.mkdtemp(prefix="fastgw-bench-auth-"))
    key = SigningKey.generate("RS256")
    (tmp / "jwks.json").write_text(json.dumps(jwks(key)))
    token = mint_token(key, iss="https://idp.bench", aud="bench-api", scope="bench", ttl=3600)
    procs = []
    try:
        upstream = free_port()
        (tmp / "upstream.conf").write_text(NGINX_UPSTREAM.format(dir=tmp, port=upstream))
        procs.append(subprocess.Popen(
            [nginx, "-p", str(tmp), "-c", str(tmp / "upstream.conf"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        wait_port(upstream)
        port = free_port()
        (tmp / "gateway.yaml").write_text(GATEWAY.format(port=port, upstream=upstream, dir=tmp))
        gateway = subprocess.Popen(
            [sys.executable, "-m", "fastgw", "run", "-c", str(tmp / "gateway.yaml")],
            env=gateway_env(), start_new_session=True)
        procs.append(gateway)
        wait_port(port)
        for path in ("/open/x", "/secure/x"):  # warm-up: pools, the token cache
            subprocess.run(["wrk", "-t1", "-c8", "-d1s", "-H", f"Authorization: Bearer {token}",
                            f"http://127.0.0.1:{port}{path}"], capture_output=True, check=True)
        results = {"/open/x": [], "/secure/x": []}
        for _ in range(args.rounds):  # interleaved, so drift hits both alike
            for path in results:
                results[path].append(measure(gateway.pid, port, path, token, args))
        best = {p: (max(r[0] for r in rs), min(r[1] for r in rs)) for p, rs in results.items()}
        (open_rps, open_cpu), (jwt_rps, jwt_cpu) = best["/open/x"], best["/secure/x"]
        print(f"\nwrk -t1 -c{args.connections} -d{args.duration}s, best of {args.rounds} "
              f"interleaved rounds, one gateway worker\n")
        print(f"{'route':<28} {'req/s':>9} {'CPU us/req':>11}")
        print(f"{'auth: none':<28} {open_rps:>9.0f} {open_cpu:>11.1f}")
        print(f"{'RS256 JWT (cached) + scope':<28} {jwt_rps:>9.0f} {jwt_cpu:>11.1f}")
        print(f"\nJWT costs {100 * (1 - jwt_rps / open_rps):.1f}% of throughput, "
              f"{100 * (jwt_cpu / open_cpu - 1):.1f}% more CPU per request")
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
