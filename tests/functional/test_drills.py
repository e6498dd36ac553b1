"""Fault drills: a real gateway process under wrk load while something goes wrong.

Each drill is bounded in time and prints its figures (``pytest -s`` shows
them; a failing drill shows them in its assertion). nginx instances are the
upstreams, so the gateway is the slowest part under test.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PeerClosed, RawConnection

from fastgw.testing import pattern_bytes
from fastgw.testing.process import free_port

from .redis_server import RedisServer
from .support import concurrently, curl, metric, pattern_sha256, route, scrape, wait_until
from .test_ratelimit_fleet import assert_shared_exactly, fleet_config, wait_until_shared

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (shutil.which("wrk") and shutil.which("nginx")),
                       reason="the drills need wrk and nginx"),
]

# A single nginx process (no master), so that SIGKILL really kills the instance.
NGINX = """
daemon off;
master_process off;
worker_processes 1;
error_log {dir}/error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port} reuseport;
    keepalive_requests 1000000000;
    keepalive_timeout 600s;
    location = /nginx-status {{ stub_status; }}
    location ~ /broken {{ return 444; }}
    location / {{ default_type text/plain; return 200 "served by {port}\\n"; }}
  }}
}}
"""

# wrk's own figures as one JSON line, after its usual report.
SUMMARY = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "non_2xx": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "timeout": %d, "p50_ms": %.3f, "p99_ms": %.3f}\\n',
    summary.requests, summary.duration / 1e6, e.status, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3))
end
"""


class Nginx:
    """One nginx instance on a fixed port: start, SIGKILL, start again."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (self.dir / "nginx.conf").write_text(NGINX.format(dir=self.dir, port=self.port))
        self.process: subprocess.Popen | None = None
        self.polls = 0

    def start(self) -> Nginx:
        self.process = subprocess.Popen(
            ["nginx", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        assert wait_until(self._answers, timeout=10), (self.dir / "error.log").read_text()
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def served(self) -> int:
        """Requests this instance has answered, not counting these status polls."""
        self.polls += 1
        with urllib.request.urlopen(f"{self.url}/nginx-status", timeout=5) as answer:
            text = answer.read().decode()
        return int(text.splitlines()[2].split()[2]) - self.polls

    def _answers(self) -> bool:
        try:
            self.served()
        except OSError:
            return False
        return True


@pytest.fixture
def nginx(tmp_path):
    started: list[Nginx] = []

    def start(port: int | None = None) -> Nginx:
        instance = Nginx(tmp_path / f"nginx-{len(started)}", port).start()
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.kill()


@dataclass
class Load:
    """Figures of one wrk run."""

    requests: int
    seconds: float
    non_2xx: int
    connect: int
    read: int
    write: int
    timeout: int
    p50_ms: float
    p99_ms: float

    @property
    def socket_errors(self) -> int:
        return self.connect + self.read + self.write + self.timeout


class Wrk:
    """wrk against URL in the background, for DURATION seconds."""

    def __init__(self, workdir: Path, url: str, *, duration: float, connections: int = 8,
                 timeout: str = "5s", headers: tuple[str, ...] = ()) -> None:
        script = workdir / "summary.lua"
        script.write_text(SUMMARY)
        self.process = subprocess.Popen(
            ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", f"--timeout={timeout}",
             *(arg for header in headers for arg in ("-H", header)), "-s", str(script), url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.duration = duration

    def result(self) -> Load:
        out, err = self.process.communicate(timeout=self.duration + 30)
        assert self.process.returncode == 0, out + err
        last = [line for line in out.splitlines() if line.startswith("{")][-1]
        return Load(**json.loads(last))


def calmest(runs) -> Load:
    return min(runs, key=lambda load: load.p99_ms)


def report(drill: str, **figures) -> str:
    text = f"drill {drill}: " + ", ".join(f"{k}={v}" for k, v in figures.items())
    print(text)
    return text


def echo_config(make_config, instances: list[str], **service) -> dict:
    settings = {"instances": instances, "connect_timeout": "1s", "response_timeout": "5s",
                "retries": 1}
    return make_config(instances[0], services={"echo": {**settings, **service}})


def header_of(url: str, name: str) -> str | None:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.headers.get(name)


# -- reloads ---------------------------------------------------------------------------


def reload_config(make_config, instance: str, tag: str) -> dict:
    config = echo_config(make_config, [instance])
    config["routes"].append(route("drill", "Path=/drill/**",
                                  filters=[f"AddResponseHeader=X-Config, {tag}"]))
    return config


@pytest.mark.parametrize("broken", [False, True], ids=["valid", "every-other-invalid"])
def test_drill_sighup_every_half_second_under_load(
    start_gateway, make_config, nginx, tmp_path, broken
):
    instance = nginx()
    configs = [reload_config(make_config, instance.url, tag) for tag in ("a", "b")]
    gw = start_gateway(configs[0])
    load = Wrk(tmp_path, f"{gw.url}/drill/reload", duration=8)
    time.sleep(0.5)  # wrk connected: every reload below happens under load
    good = "a"
    reloads = 0
    for i in range(1, 16):
        if broken and i % 2:
            gw.config_path.write_text("routes: [\n  {id: broken, uri: lb://nowhere, x: 1}\n")
        else:
            good = "ab"[reloads % 2 == 0]
            gw.write_config(configs["ab".index(good)])
            reloads += 1
        gw.send_signal(signal.SIGHUP)
        time.sleep(0.5)  # the pace of the drill, not a wait for an outcome
    result = load.result()
    figures = report(f"sighup ({'every other invalid' if broken else 'valid'})",
                     sighups=15, valid_reloads=reloads, requests=result.requests,
                     non_2xx=result.non_2xx, socket_errors=result.socket_errors,
                     p99_ms=result.p99_ms)
    assert result.requests > 1000, figures
    assert (result.non_2xx, result.socket_errors) == (0, 0), figures
    assert wait_until(lambda: header_of(f"{gw.url}/drill/after", "X-Config") == good, 10), figures
    assert gw.returncode is None


# -- drain -------------------------------------------------------------------------------


class KeepAliveClient(threading.Thread):
    """Requests one after another on keep-alive connections until the gateway stops
    answering new ones; counts the requests sent into a connection it had used
    before that got no answer (what a drain must never cause)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.answered = 0
        self.told_to_close = 0
        self.unanswered_on_reused = 0
        self.unanswered_on_new = 0

    def run(self) -> None:
        while True:
            try:
                conn = RawConnection(self.port, timeout=15)
            except OSError:
                return  # the listener is closed: the drill's end
            used = False
            try:
                while True:
                    response = conn.exchange("GET", "/echo/drain-probe")
                    assert response.status == 200 and response.complete, response
                    self.answered += 1
                    used = True
                    if response.header("connection") == "close":
                        self.told_to_close += 1
                        break
            except (PeerClosed, OSError):
                if used:
                    self.unanswered_on_reused += 1
                else:
                    self.unanswered_on_new += 1
            finally:
                conn.close()


def test_drill_sigterm_under_load(start_gateway, make_config, nginx, tmp_path):
    instance = nginx()
    gw = start_gateway(echo_config(make_config, [instance.url]) | {"drain_timeout": "10s"})
    load = Wrk(tmp_path, f"{gw.url}/echo/drain", duration=3, connections=20)
    clients = [KeepAliveClient(gw.port) for _ in range(8)]
    for client in clients:
        client.start()
    time.sleep(1.5)  # under load
    stopped = time.monotonic()
    gw.send_signal(signal.SIGTERM)
    code = gw.wait(timeout=30)
    exit_s = time.monotonic() - stopped
    for client in clients:
        client.join(timeout=30)
    result = load.result()
    figures = report(
        "sigterm", exit_code=code, exit_s=f"{exit_s:.2f}", wrk_requests=result.requests,
        wrk_non_2xx=result.non_2xx, wrk_read_errors=result.read,
        wrk_timeouts=result.timeout,
        probe_answered=sum(c.answered for c in clients),
        probe_told_to_close=sum(c.told_to_close for c in clients),
        unanswered_on_reused_connections=sum(c.unanswered_on_reused for c in clients),
        unanswered_on_new_connections=sum(c.unanswered_on_new for c in clients),
    )
    assert code == 0, figures
    assert exit_s < 10, figures  # drain_timeout
    assert not any(c.is_alive() for c in clients), figures
    # No response cut short or lost. wrk's connect and write errors are its
    # reconnects knocking on the closed listener afterwards, and not counted.
    assert (result.non_2xx, result.read, result.timeout) == (0, 0, 0), figures
    assert sum(c.unanswered_on_reused for c in clients) == 0, figures
    assert sum(c.told_to_close for c in clients) > 0, figures


# -- instances failing -------------------------------------------------------------------


def test_drill_instance_killed_and_restarted_under_load(
    start_gateway, make_config, nginx, tmp_path
):
    steady, victim = nginx(), nginx()
    base_ejection = 5.0
    gw = start_gateway(echo_config(make_config, [steady.url, victim.url],
                                   outlier={"base_ejection": f"{base_ejection:g}s"}))
    load = Wrk(tmp_path, f"{gw.url}/echo/kill", duration=10)
    time.sleep(1)
    victim.kill()
    time.sleep(3)  # the outage the drill is about
    restarted = nginx(victim.port)
    back_at = time.monotonic()
    returned = wait_until(lambda: restarted.served() > 0, timeout=2 * base_ejection,
                          interval=0.05)
    return_s = time.monotonic() - back_at
    result = load.result()
    errors = result.non_2xx + result.socket_errors
    figures = report("instance killed", requests=result.requests, non_2xx=result.non_2xx,
                     socket_errors=result.socket_errors,
                     error_percent=f"{100 * errors / max(result.requests, 1):.3f}",
                     traffic_back_after_restart_s=f"{return_s:.2f}",
                     restarted_served=restarted.served())
    assert result.requests > 1000, figures
    assert errors <= 0.005 * result.requests, figures
    assert returned and return_s <= base_ejection + 0.5, figures


def test_drill_one_endpoint_always_failing(start_gateway, make_config, nginx, tmp_path):
    instance = nginx()
    gw = start_gateway(echo_config(make_config, [instance.url]))
    broken = Wrk(tmp_path, f"{gw.url}/echo/broken", duration=3, connections=4)
    healthy = Wrk(tmp_path, f"{gw.url}/echo/fine", duration=3, connections=4)
    bad, good = broken.result(), healthy.result()
    figures = report("one endpoint failing", failing_requests=bad.requests,
                     failing_non_2xx=bad.non_2xx, other_requests=good.requests,
                     other_non_2xx=good.non_2xx, other_socket_errors=good.socket_errors)
    assert bad.non_2xx == bad.requests > 0, figures  # every one a 502, never a hang
    assert good.requests > 1000, figures
    assert (good.non_2xx, good.socket_errors) == (0, 0), figures


# -- the gateway's own processes, and crawling clients -----------------------------------


def test_drill_worker_killed_under_load(start_gateway, make_config, nginx, tmp_path, raw):
    instance = nginx()
    limit = 20
    config = echo_config(make_config, [instance.url])
    config["workers"] = 2
    config["rate_limits"] = {"per-host": {"rate": f"{limit}/day", "key": "header.X-Client-Id"}}
    config["routes"].append(route("limited", "Path=/limited/**", filters=["RateLimit=per-host"]))
    gw = start_gateway(config)
    assert wait_until(lambda: len(gw.children()) == 2, timeout=15)
    workers = gw.children()
    load = Wrk(tmp_path, f"{gw.url}/echo/workers", duration=4, connections=16,
               timeout="2s")
    time.sleep(1)
    killed_at = time.monotonic()
    os.kill(workers[0], signal.SIGKILL)
    replaced = wait_until(
        lambda: workers[0] not in gw.children() and len(gw.children()) == 2, timeout=15,
        interval=0.01)
    replaced_s = time.monotonic() - killed_at
    result = load.result()

    def limited(i: int) -> int:
        return raw(gw.port).exchange(
            "GET", f"/limited/{i}", headers=[("X-Client-Id", "after-the-kill")]).status

    statuses = concurrently(2 * limit, limited)
    figures = report("worker killed", replaced_s=f"{replaced_s:.2f}", requests=result.requests,
                     non_2xx=result.non_2xx, read_errors=result.read,
                     timeouts=result.timeout, p99_ms=result.p99_ms,
                     host_limit=limit, let_through_after=statuses.count(200))
    assert replaced, figures
    # the dead worker's own connections break (read errors); the other worker's never stall
    assert (result.non_2xx, result.timeout) == (0, 0), figures
    assert result.read <= 16, figures
    assert sorted(set(statuses)) == [200, 429] and statuses.count(200) == limit, figures


def test_drill_slowloris_beside_normal_traffic(start_gateway, make_config, nginx, tmp_path,
                                               raw):
    instance = nginx()
    config = echo_config(make_config, [instance.url])
    config["limits"] = {**config["limits"], "header_timeout": "8s"}
    gw = start_gateway(config)
    Wrk(tmp_path, f"{gw.url}/echo/warm-up", duration=1).result()
    # the better of two runs each: a neighbour's burst on a shared machine is not ours
    baseline = calmest(Wrk(tmp_path, f"{gw.url}/echo/baseline", duration=2).result()
                       for _ in range(2))
    slow = []
    for _ in range(500):
        sock = socket.create_connection(("127.0.0.1", gw.port), timeout=20)
        sock.sendall(b"GET /echo/slowloris HTTP/1.1\r\nHost: gateway.test\r\nX-Slow: ")
        slow.append(sock)
    try:
        assert wait_until(lambda: metric(scrape(gw, raw), "fastgw_active_connections") >= 500,
                          timeout=10)
        beside = calmest(Wrk(tmp_path, f"{gw.url}/echo/beside", duration=2).result()
                         for _ in range(2))
        answers = []
        for sock in slow:
            data = b""
            with contextlib.suppress(OSError):
                while chunk := sock.recv(4096):
                    data += chunk
            answers.append(data.split(b" ", 2)[1] if data.startswith(b"HTTP/1.1 ") else data)
    finally:
        for sock in slow:
            sock.close()
    figures = report("slowloris", slow_connections=len(slow),
                     baseline_p99_ms=baseline.p99_ms, beside_p99_ms=beside.p99_ms,
                     beside_requests=beside.requests, beside_errors=beside.socket_errors,
                     slow_answered_408=answers.count(b"408"))
    assert (beside.non_2xx, beside.socket_errors) == (0, 0), figures
    assert beside.p99_ms <= 2 * baseline.p99_ms, figures
    assert answers.count(b"408") == len(slow), figures


# -- big bodies ----------------------------------------------------------------------------

MiB = 1024 * 1024


def test_drill_512_mib_up_and_down(start_gateway, make_config, upstream, tmp_path):
    size = 512 * MiB
    config = echo_config(make_config, [upstream.url], response_timeout="60s")
    gw = start_gateway(config | {"limits": {**config["limits"], "max_body": "1GiB"}})
    upload = tmp_path / "upload.bin"
    with upload.open("wb") as out:
        block = pattern_bytes(251 * 4096)
        for offset in range(0, size, len(block)):
            out.write(block[: size - offset])
    baseline = gw.rss_bytes()
    peak = baseline
    done = threading.Event()

    def watch_memory() -> None:
        nonlocal peak
        while not done.wait(0.05):
            peak = max(peak, gw.rss_bytes())

    watcher = threading.Thread(target=watch_memory)
    watcher.start()
    try:
        up = curl("--data-binary", f"@{upload}", "-H", "Content-Type: application/octet-stream",
                  f"{gw.url}/echo/upload")
        upload.unlink()
        down = curl("-o", str(tmp_path / "download.bin"), "-w", "%{http_code}",
                    f"{gw.url}/echo/bytes/{size}")
    finally:
        done.set()
        watcher.join()
    echoed = json.loads(up.stdout)
    downloaded = tmp_path / "download.bin"
    down_sha256 = hashlib.sha256()
    with downloaded.open("rb") as data:
        while chunk := data.read(MiB):
            down_sha256.update(chunk)
    expected = pattern_sha256(size)
    figures = report("512 MiB", upload_exact=echoed.get("body_sha256") == expected,
                     download_exact=down_sha256.hexdigest() == expected,
                     rss_growth_mib=f"{(peak - baseline) / MiB:.1f}")
    assert up.returncode == 0 and echoed.get("body_length") == size, (figures, echoed)
    assert echoed["body_sha256"] == expected, figures
    assert down.stdout == b"200" and downloaded.stat().st_size == size, figures
    assert down_sha256.hexdigest() == expected, figures
    assert peak - baseline < 64 * MiB, figures


# -- Redis -----------------------------------------------------------------------------------


def test_drill_redis_killed_and_restarted_under_load(
    start_gateway, make_config, nginx, tmp_path, raw, upstream
):
    server = RedisServer(tmp_path).start()
    try:
        config = fleet_config(make_config, upstream.url, server.url, "local")
        config["services"] = {**config["services"], "bulk": {"instances": [nginx().url]}}
        config["rate_limits"]["bulk"] = {"rate": "100000000/day", "key": "header.X-Client-Id",
                                         "store": "redis"}
        config["routes"].append(route("bulk", "Path=/bulk/**", uri="lb://bulk",
                                      filters=["RateLimit=bulk"]))
        gateways = start_gateway(config), start_gateway(config)
        assert_shared_exactly(gateways, raw, upstream)
        load = Wrk(tmp_path, f"{gateways[0].url}/bulk/x", duration=6,
                   headers=("X-Client-Id: wrk",))
        time.sleep(1.5)
        server.kill()
        time.sleep(1.5)  # under load without Redis
        server.start()
        back_at = time.monotonic()
        wait_until_shared(gateways, raw)
        shared_s = time.monotonic() - back_at
        result = load.result()
        assert_shared_exactly(gateways, raw, upstream)
    finally:
        server.kill()
    figures = report("redis killed", requests=result.requests, non_2xx=result.non_2xx,
                     socket_errors=result.socket_errors,
                     shared_again_after_restart_s=f"{shared_s:.2f}")
    assert result.requests > 1000, figures
    assert (result.non_2xx, result.socket_errors) == (0, 0), figures
    assert shared_s < 10, figures
