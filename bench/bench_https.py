"""HTTPS throughput of fastgw side by side with nginx terminating TLS, in one run.

Both terminate TLS with the same certificate (ECDSA P-256, from a throwaway
test CA) and forward to the same upstream (an nginx answering a small static
body) over plain HTTP with keep-alive, one worker each. wrk loads each with
keep-alive connections, so the handshakes are few and the cost measured is
that of record encryption plus proxying. The same two proxies without TLS
are measured too, so what TLS itself adds to each shows apart from the cost
of proxying. Rounds are interleaved so drift on a shared machine hits all
alike; the best round of each is reported. The CPU time per request comes
from /proc (the proxy's processes only), which a noisy machine disturbs much
less than requests/s.

    python bench/bench_https.py [--duration 10] [--connections 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import re
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
    process_ticks,
    require_tools,
    run_wrk,
    stop_all,
    wait_port,
)

from fastgw.testing.certs import TestPKI

NGINX_PROXY = """
worker_processes 1;
error_log {dir}/{name}-error.log;
pid {dir}/{name}.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream backend {{ server 127.0.0.1:{upstream}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port} {ssl} reuseport;
    {certificate}
    keepalive_requests 1000000;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
    }}
  }}
}}
"""

NGINX_CERTIFICATE = (
    "ssl_certificate {cert}; ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3;"
)

FASTGW = """
listeners: [{listener}]
admin: null
workers: 1
services:
  backend: {{instances: ["http://127.0.0.1:{upstream}"], max_connections: 256}}
routes:
  - {{id: all, uri: "lb://backend", predicates: ["Path=/**"], auth: none}}
"""


def negotiated(port: int) -> str:
    """The protocol and cipher a default OpenSSL client gets from ``port``."""
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-alpn", "http/1.1"],
        input="", capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    found = re.search(r"New, (\S+), Cipher is (\S+)", out)
    return f"{found.group(1)} {found.group(2)}" if found else "?"


def wrk(url: str, duration: int, connections: int, threads: int) -> tuple[int, float, str]:
    """Requests done, requests/s and p99 latency of one wrk run."""
    result = run_wrk(url, duration=duration, connections=connections, threads=threads)
    if result.non_2xx:
        raise RuntimeError(f"error responses from {url}:\n{result.output}")
    return result.requests, result.rps, f"{result.p99:.2f}ms"


def measure(pid: int, url: str, args) -> tuple[float, float, str]:
    """Requests/s, CPU microseconds per request of ``pid`` (and children), p99."""
    before = process_ticks(pid)
    requests, rps, p99 = wrk(url, args.duration, args.connections, args.threads)
    seconds = (process_ticks(pid) - before) / os.sysconf("SC_CLK_TCK")
    return rps, seconds / requests * 1e6, p99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    nginx = require_tools("wrk", "nginx")["nginx"]
    if find_tool("openssl") is None:
        sys.exit("openssl is needed (apt-get install -y openssl)")
    tmp = Path(tempfile.mkdtemp(prefix="fastgw-bench-https-"))
    server = TestPKI(tmp / "pki").server("bench.test")
    cert, key = server.chain, server.key
    procs: list[subprocess.Popen] = []

    def start(cmd: list[str], port: int, env=None) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=env, start_new_session=True)  # fmt: skip
        procs.append(proc)
        wait_port(port)
        return proc

    def start_nginx(name: str, port: int, **template) -> subprocess.Popen:
        config = tmp / f"{name}.conf"
        config.write_text(NGINX_PROXY.format(dir=tmp, name=name, port=port, **template))
        return start([nginx, "-p", str(tmp), "-c", str(config), "-g", "daemon off;"], port)

    def start_fastgw(name: str, port: int, listener: str) -> subprocess.Popen:
        config = tmp / f"{name}.yaml"
        config.write_text(FASTGW.format(listener=listener, upstream=upstream))
        env = gateway_env()
        return start([sys.executable, "-m", "fastgw", "run", "-c", str(config)], port, env)

    try:
        upstream = free_port()
        (tmp / "upstream.conf").write_text(nginx_upstream_config(tmp, upstream))
        start([nginx, "-p", str(tmp), "-c", str(tmp / "upstream.conf"), "-g", "daemon off;"],
              upstream)  # fmt: skip

        # name: (pid, url, port); the TLS rows are the comparison, the plain ones their baseline.
        targets: dict[str, tuple[int, str, int]] = {}
        certificate = NGINX_CERTIFICATE.format(cert=cert, key=key)
        for name, scheme, ssl, lines in (
            ("nginx", "http", "", ""),
            ("nginx-tls", "https", "ssl", certificate),
        ):
            port = free_port()
            proc = start_nginx(name, port, upstream=upstream, ssl=ssl, certificate=lines)
            targets[name] = (proc.pid, f"{scheme}://127.0.0.1:{port}/bench", port)
        for name, scheme, tls in (
            ("fastgw", "http", ""),
            ("fastgw-tls", "https", f', tls: {{cert: "{cert}", key: "{key}"}}'),
        ):
            port = free_port()
            proc = start_fastgw(name, port, f'{{address: "127.0.0.1:{port}"{tls}}}')
            targets[name] = (proc.pid, f"{scheme}://127.0.0.1:{port}/bench", port)

        for _, url, _ in targets.values():  # warm-up: pools, caches
            wrk(url, 2, args.connections, args.threads)
        results: dict[str, list[tuple[float, float, str]]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, (pid, url, _) in targets.items():
                results[name].append(measure(pid, url, args))

        print(f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration}s with keep-alive, "
              f"best of {args.rounds} interleaved rounds, one worker per proxy, "
              f"{os.cpu_count()} cores shared by all\n")  # fmt: skip
        print(f"{'target':<12} {'TLS':<32} {'req/s':>9} {'p99':>9} {'CPU us/req':>11}")
        best = {}
        for name, runs in results.items():
            fastest = max(runs, key=lambda run: run[0])
            best[name] = (fastest[0], min(run[1] for run in runs))
            _, url, port = targets[name]
            tls = negotiated(port) if url.startswith("https:") else "-"
            print(f"{name:<12} {tls:<32} {best[name][0]:>9.0f} {fastest[2]:>9} "
                  f"{best[name][1]:>11.1f}")  # fmt: skip
        rps, cpu = best["fastgw-tls"]
        nginx_rps, nginx_cpu = best["nginx-tls"]
        print(f"\nover TLS, fastgw / nginx: {rps / nginx_rps:.2f}x the requests/s, "
              f"{cpu / nginx_cpu:.2f}x the CPU per request")  # fmt: skip
        for name in ("fastgw", "nginx"):
            added = best[f"{name}-tls"][1] - best[name][1]
            print(f"TLS adds {added:.1f} us of CPU per request to {name}")
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
