"""The processes of a run: the upstream, Redis, and the contenders, with their configs.

A ``Lab`` starts each in a process group of its own, on the CPU it belongs
on, with its output in a log file of the run's folder, and stops them all
(SIGTERM, then SIGKILL) when it closes.
"""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .shared import (
    free_port,
    gateway_env,
    nginx_upstream_config,
    pinned,
    start_redis,
    stop_all,
    wait_port,
)
from .tokens import AUDIENCE, ISSUER, SCOPE

NGINX_PROXY = """
worker_processes 1;
worker_rlimit_nofile {nofile};
error_log {dir}/{name}-error.log;
pid {dir}/{name}.pid;
events {{ worker_connections {connections}; }}
http {{
  access_log off;
  upstream backend {{
    server 127.0.0.1:{upstream};
    keepalive 128;
    keepalive_requests 1000000000;
  }}
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    keepalive_requests 1000000000;
    keepalive_timeout 600s;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""

# HAProxy 2.6 has no JWT validation of its own beyond the signature: the claims
# are read with jwt_payload_query and compared in ACLs. A sample that is
# missing leaves its variable unset, and an unset variable fails every match,
# so each check is written "deny unless it matches". `aud` is compared as a
# string: 2.6's JSON query yields nothing for an array.
HAPROXY = """
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:{port}
  stick-table type string len 64 size 200k expire 60s store http_req_rate(60s)
  http-request deny deny_status 401 unless {{ http_auth_bearer -m found }}
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')
  http-request deny deny_status 401 unless {{ var(txn.alg) -m str RS256 }}
  http-request set-var(txn.verified) var(txn.bearer),jwt_verify("RS256","{pem}")
  http-request deny deny_status 401 unless {{ var(txn.verified) -m int 1 }}
  http-request set-var(txn.iss) var(txn.bearer),jwt_payload_query('$.iss')
  http-request deny deny_status 401 unless {{ var(txn.iss) -m str {issuer} }}
  http-request set-var(txn.aud) var(txn.bearer),jwt_payload_query('$.aud')
  http-request deny deny_status 401 unless {{ var(txn.aud) -m str {audience} }}
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')
  http-request deny deny_status 401 unless {{ var(txn.exp) -m found }}
  http-request set-var(txn.now) date()
  http-request deny deny_status 401 if {{ var(txn.exp),sub(txn.now) -m int le 0 }}
  http-request set-var(txn.scope) var(txn.bearer),jwt_payload_query('$.scope')
  http-request deny deny_status 403 unless {{ var(txn.scope) -m reg '(^| ){scope}( |$)' }}
  http-request set-var(txn.sub) var(txn.bearer),jwt_payload_query('$.sub')
  http-request deny deny_status 401 unless {{ var(txn.sub) -m found }}
  http-request track-sc0 var(txn.sub)
  http-request deny deny_status 429 if {{ sc_http_req_rate(0) gt {limit} }}
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:{upstream}
"""

# Far more than a run sends: every request pays for a decision, none is refused.
NEVER_LIMITED = 1_000_000_000

FASTGW_BASE = """
listeners: [{{address: "127.0.0.1:{port}"}}]
admin: {{address: "127.0.0.1:{admin_port}"}}
workers: 1
drain_timeout: 1s
limits: {{max_connections: {max_connections}}}
services:
  backend: {{instances: ["http://127.0.0.1:{upstream}"], max_connections: 256}}
"""
FASTGW_OPEN = """
routes:
  - {{id: orders, uri: "lb://backend", predicates: ["Path=/orders/**"], auth: none}}
"""
FASTGW_SECURED = """
auth:
  jwt:
    providers:
      - {{name: bench, issuer: "{issuer}", jwks_file: "{jwks}", audiences: [{audience}],
         algorithms: [RS256]}}
rate_limits:
  per-client: {{rate: "{limit}/min", key: jwt.sub, store: {store}}}
routes:
  - id: orders
    uri: "lb://backend"
    predicates: ["Path=/orders/**"]
    filters: ["RequireScopes={scope}", "RateLimit=per-client", "TokenRelay="]
"""
FASTGW_REDIS = """
redis: {{url: "{redis_url}", timeout: 200ms, on_error: deny}}
"""


@dataclass
class Instance:
    """A started process and where it listens."""

    name: str
    process: subprocess.Popen
    port: int
    admin_port: int | None = None
    log: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Lab:
    """Starts the processes of one run in ``directory`` and stops them all on ``close``."""

    def __init__(self, directory: Path, tools: dict[str, str], *, contender_cpu: int | None,
                 load_cpu: int | None) -> None:
        self.dir = directory
        self.tools = tools
        self.contender_cpu = contender_cpu
        self.load_cpu = load_cpu
        self.processes: list[subprocess.Popen] = []

    def close(self) -> None:
        stop_all(self.processes)
        self.processes.clear()

    def stop(self, instance: Instance) -> None:
        stop_all([instance.process])
        self.processes.remove(instance.process)

    def _start(self, name: str, command: list[str], port: int, *, cpu: int | None,
               env: dict[str, str] | None = None, admin_port: int | None = None) -> Instance:
        log = self.dir / f"{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen([*pinned(cpu), *command], stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=subprocess.STDOUT, env=env,
                                       cwd=self.dir, start_new_session=True)
        self.processes.append(process)
        instance = Instance(name, process, port, admin_port, log)
        try:
            wait_port(port, timeout=30, process=process)
            if admin_port is not None:
                wait_ready(admin_port, process)
        except RuntimeError as exc:
            raise RuntimeError(f"{name} did not start: {exc}\n{instance.log_tail()}") from None
        return instance

    def _nginx(self, name: str, config: str, port: int, cpu: int | None) -> Instance:
        path = self.dir / f"{name}.conf"
        path.write_text(config)
        return self._start(name, [self.tools["nginx"], "-p", str(self.dir), "-c", str(path),
                                  "-g", "daemon off;"], port, cpu=cpu)

    def upstream(self) -> tuple[Instance, int]:
        """The nginx upstream on the load CPU, and the port of its stub_status."""
        port, status_port = free_port(), free_port()
        config = nginx_upstream_config(self.dir, port, status_port=status_port)
        return self._nginx("upstream", config, port, self.load_cpu), status_port

    def redis(self) -> tuple[subprocess.Popen, str]:
        process, url = start_redis(self.dir, cpu=self.load_cpu)
        self.processes.append(process)
        return process, url

    def nginx_proxy(self, name: str, upstream: int, connections: int = 4096) -> Instance:
        port = free_port()
        config = NGINX_PROXY.format(dir=self.dir, name=name, port=port, upstream=upstream,
                                    connections=connections, nofile=connections + 1024)
        return self._nginx(name, config, port, self.contender_cpu)

    def haproxy(self, name: str, upstream: int, pem: Path) -> Instance:
        port = free_port()
        path = self.dir / f"{name}.cfg"
        path.write_text(HAPROXY.format(port=port, upstream=upstream, pem=pem, issuer=ISSUER,
                                       audience=AUDIENCE, scope=SCOPE, limit=NEVER_LIMITED))
        check = subprocess.run([self.tools["haproxy"], "-c", "-f", str(path)],
                               capture_output=True, text=True)  # fmt: skip
        if check.returncode != 0:
            raise RuntimeError(f"haproxy rejects {path}:\n{check.stdout}{check.stderr}")
        return self._start(name, [self.tools["haproxy"], "-db", "-f", str(path)], port,
                           cpu=self.contender_cpu)

    def fastgw(self, name: str, upstream: int, *, secured: bool, jwks: Path | None = None,
               redis_url: str | None = None, max_connections: int = 10_000) -> Instance:
        port, admin_port = free_port(), free_port()
        config = FASTGW_BASE.format(port=port, admin_port=admin_port, upstream=upstream,
                                    max_connections=max_connections)
        if secured:
            config += FASTGW_SECURED.format(issuer=ISSUER, jwks=jwks, audience=AUDIENCE,
                                            scope=SCOPE, limit=NEVER_LIMITED,
                                            store="redis" if redis_url else "local")
            if redis_url:
                config += FASTGW_REDIS.format(redis_url=redis_url)
        else:
            config += FASTGW_OPEN.format()
        path = self.dir / f"{name}.yaml"
        path.write_text(config)
        return self._start(name, [sys.executable, "-m", "fastgw", "run", "-c", str(path)], port,
                           cpu=self.contender_cpu, env=gateway_env(), admin_port=admin_port)


def wait_ready(admin_port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    """Wait until the gateway's /readyz answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}")
        connection = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=2)
        try:
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
        time.sleep(0.05)
    raise RuntimeError(f"not ready after {timeout:.0f}s")
