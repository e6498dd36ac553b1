"""Plain-proxy throughput of fastgw side by side with nginx and haproxy, in one run.

All proxies forward to the same upstream (an nginx answering a small static
body) with keep-alive on both sides, one worker each, and are loaded by wrk
with the same settings. The result that matters is the ratio in the last
column, not the absolute numbers: these machines are shared and noisy.

    python bench/bench_proxy.py [--duration 10] [--connections 50] [--workers 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from shared import (
    find_tool,
    free_port,
    gateway_env,
    nginx_upstream_config,
    require_tools,
    run_wrk,
    stop_all,
    wait_port,
)

NGINX_PROXY = """
worker_processes {workers};
error_log {dir}/proxy-error.log;
pid {dir}/proxy.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream backend {{ server 127.0.0.1:{upstream}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port} reuseport;
    keepalive_requests 1000000;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $remote_addr;
    }}
  }}
}}
"""

HAPROXY = """
global
  nbthread {workers}
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:{port}
  option forwardfor
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:{upstream}
"""

FASTGW = """
listeners: [{{address: "127.0.0.1:{port}"}}]
admin: null
workers: {workers}
services:
  backend: {{instances: ["http://127.0.0.1:{upstream}"], max_connections: 256}}
routes:
  - {{id: all, uri: "lb://backend", predicates: ["Path=/**"], auth: none}}
"""


def wrk(port: int, duration: int, connections: int, threads: int) -> tuple[float, str]:
    """Requests/s and p99 of one wrk run; any error response fails it."""
    result = run_wrk(f"http://127.0.0.1:{port}/bench", duration=duration,
                     connections=connections, threads=threads)
    if result.non_2xx:
        raise RuntimeError(f"{result.non_2xx} non-2xx responses on port {port}:\n"
                           f"{result.output}")
    return result.rps, f"{result.p99:.2f}ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    nginx = require_tools("wrk", "nginx")["nginx"]
    haproxy = find_tool("haproxy")
    tmp = Path(tempfile.mkdtemp(prefix="fastgw-bench-"))
    procs: list[subprocess.Popen] = []

    def start(cmd: list[str], port: int) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        procs.append(proc)
        wait_port(port)
        return proc

    try:
        upstream = free_port()
        (tmp / "upstream.conf").write_text(nginx_upstream_config(tmp, upstream))
        start([nginx, "-p", str(tmp), "-c", str(tmp / "upstream.conf"), "-g", "daemon off;"],
              upstream)
        rows = []
        targets = {}
        port = free_port()
        (tmp / "proxy.conf").write_text(
            NGINX_PROXY.format(dir=tmp, port=port, upstream=upstream, workers=args.workers))
        start([nginx, "-p", str(tmp), "-c", str(tmp / "proxy.conf"), "-g", "daemon off;"], port)
        targets["nginx proxy_pass"] = port
        if haproxy is not None:
            port = free_port()
            (tmp / "haproxy.cfg").write_text(
                HAPROXY.format(port=port, upstream=upstream, workers=args.workers))
            start([haproxy, "-f", str(tmp / "haproxy.cfg")], port)
            targets["haproxy"] = port
        port = free_port()
        (tmp / "gateway.yaml").write_text(
            FASTGW.format(port=port, upstream=upstream, workers=args.workers))
        env = gateway_env()
        proc = subprocess.Popen([sys.executable, "-m", "fastgw", "run", "-c",
                                 str(tmp / "gateway.yaml")], env=env, start_new_session=True)
        procs.append(proc)
        wait_port(port)
        targets["fastgw"] = port

        wrk(upstream, 2, args.connections, args.threads)  # warm-up
        direct = wrk(upstream, args.duration, args.connections, args.threads)
        rows.append(("upstream direct", *direct))
        for name, port in targets.items():
            wrk(port, 2, args.connections, args.threads)  # warm-up: pools, caches
            rows.append((name, *wrk(port, args.duration, args.connections, args.threads)))
        base = dict((r[0], r[1]) for r in rows)["nginx proxy_pass"]
        print(f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
              f"{args.workers} worker(s) per proxy, {os.cpu_count()} cores shared by all\n")
        print(f"{'target':<20} {'req/s':>10} {'p99':>10} {'vs nginx':>9}")
        for name, rps, p99 in rows:
            print(f"{name:<20} {rps:>10.0f} {p99:>10} {rps / base:>9.2f}")
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
