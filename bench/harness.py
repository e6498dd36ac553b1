"""``python -m bench``: fastgw against nginx and HAProxy, every figure of the table in one run.

Each contender runs alone on CPU 1; wrk, the nginx upstream and redis-server
share CPU 0. Every contender is first asked real questions (a good token,
none, a bad signature, an expired token, a wrong audience, a missing scope)
and must answer them right; then the contenders take turns over the rounds,
each warmed up before its first measured run, and each figure is the median
over the rounds. The upstream's own request count (stub_status) is read
around every run, so a contender that answers without forwarding shows.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .contenders import Instance, Lab
from .report import Figure, IdleResult, Report
from .shared import (
    TICKS_PER_SECOND,
    UPSTREAM_BYTES,
    cpu_user_ticks,
    find_tool,
    process_ticks,
    resident_bytes,
    run_wrk,
    upstream_requests,
)
from .tokens import Probe, SigningKey, fresh_tokens, probes, write_key_files

RESULTS = Path(__file__).resolve().parent / "results"
TOOLS = ("wrk", "nginx", "haproxy", "redis-server", "taskset")
INSTALL = "apt-get install -y wrk nginx haproxy redis-server"
PATH = "/orders/1"
CONTENDER_CPU, LOAD_CPU = 1, 0
FORWARD_TOLERANCE = 0.03  # in-flight requests at wrk's end, retries: a few percent at most

# A different token on every request, in the order of the file, from a given line on.
FRESH_LUA = """
local tokens = {}
local index = 0
local host

function init(args)
  for line in io.lines(args[1]) do
    tokens[#tokens + 1] = line
  end
  index = tonumber(args[2]) % #tokens
  host = wrk.headers["Host"]
end

function request()
  index = index % #tokens + 1
  return wrk.format(nil, nil, {["Host"] = host, ["Authorization"] = "Bearer " .. tokens[index]})
end
"""


class CheckFailed(Exception):
    """A contender answered a check wrongly, or could not be measured."""


@dataclass(frozen=True)
class Row:
    """One line of the table: a load on one contender."""

    key: str
    label: str
    instance: str | None  # None: wrk straight to the upstream
    secured: bool = False
    fresh: bool = False
    redis: bool = False


def rows(tokens: int, haproxy: str) -> list[Row]:
    return [
        Row("upstream", "wrk straight to the upstream (ceiling)", None),
        Row("nginx", "nginx `proxy_pass`, no auth", "nginx"),
        Row("haproxy", f"{haproxy} `jwt_verify` RS256 + claims + stick-table limit", "haproxy",
            secured=True),
        Row("haproxy-fresh", "same HAProxy, a different valid token on every request", "haproxy",
            secured=True, fresh=True),
        Row("fastgw-none", "fastgw `auth: none`", "fastgw-none"),
        Row("fastgw", "fastgw secured: RS256 (JWKS file), `RequireScopes`, local per-sub "
            "`RateLimit`, `TokenRelay`", "fastgw", secured=True),
        Row("fastgw-redis", "fastgw secured, limit in Redis (redis-server on CPU 0)",
            "fastgw-redis", secured=True, redis=True),
        Row("fastgw-fresh", f"fastgw secured, a different valid token on every request "
            f"({tokens:,} tokens cycled)", "fastgw-fresh", secured=True, fresh=True),
    ]  # fmt: skip


IDLE_KINDS = ("fastgw", "nginx")


@dataclass
class Settings:
    duration: int
    warmup: int
    connections: int
    rounds: int
    tokens: int
    idle: int
    smoke: bool
    only: list[str] | None
    output: Path | None  # None: a new temporary directory
    pinned: bool = True
    pin_note: str = ""

    def describe(self) -> str:
        placement = (f"contender alone on CPU {CONTENDER_CPU} (taskset -c {CONTENDER_CPU}); wrk, "
                     f"the nginx upstream and redis-server on CPU {LOAD_CPU}") if self.pinned else (
                     f"UNPINNED ({self.pin_note}): every process shares every CPU")
        return (f"wrk -t1 -c{self.connections} -d{self.duration}s --latency, GET {PATH} with an "
                f"RS256 bearer token for every contender; {self.rounds} interleaved round(s), "
                f"median per figure; {self.warmup} s warm-up per load; {placement}; "
                f"{self.tokens:,} fresh tokens; {self.idle:,} idle connections"
                + ("; SMOKE MODE (figures mean nothing)" if self.smoke else ""))


@dataclass
class Run:
    """One measured wrk run against one row."""

    rps: float
    p50: float
    p99: float
    cpu_us: float | None
    user_us: float | None
    forwarded: float  # upstream requests per completed request
    requests: int
    non_2xx: int
    socket_errors: int
    redis_us: float | None = None


@dataclass
class Bench:
    settings: Settings
    lab: Lab
    selected: list[Row]
    idle_kinds: list[str]
    key: SigningKey = field(default_factory=lambda: SigningKey.generate("RS256"))
    instances: dict[str, Instance] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dir = self.lab.dir
        self.probes: list[Probe] = probes(self.key)
        self.token = self.probes[0].token
        self.jwks, self.pem = write_key_files(self.key, self.dir)
        self.redis_process = None

    # -- setting up ---------------------------------------------------------------

    def start(self) -> None:
        lab = self.lab
        self.upstream, self.status_port = lab.upstream()
        needed = {row.instance for row in self.selected if row.instance}
        redis_url = None
        if "fastgw-redis" in needed:
            self.redis_process, redis_url = lab.redis()
        upstream = self.upstream.port
        starters = {
            "nginx": lambda: lab.nginx_proxy("nginx", upstream),
            "haproxy": lambda: lab.haproxy("haproxy", upstream, self.pem),
            "fastgw-none": lambda: lab.fastgw("fastgw-none", upstream, secured=False),
            "fastgw": lambda: lab.fastgw("fastgw", upstream, secured=True, jwks=self.jwks),
            "fastgw-redis": lambda: lab.fastgw("fastgw-redis", upstream, secured=True,
                                               jwks=self.jwks, redis_url=redis_url),
            "fastgw-fresh": lambda: lab.fastgw("fastgw-fresh", upstream, secured=True,
                                               jwks=self.jwks),
        }
        for name in starters:
            if name in needed:
                self.instances[name] = starters[name]()
        if any(row.fresh for row in self.selected):
            began = time.monotonic()
            tokens = fresh_tokens(self.key, self.settings.tokens)
            self.fresh = tokens
            (self.dir / "tokens.txt").write_text("\n".join(tokens) + "\n")
            (self.dir / "fresh.lua").write_text(FRESH_LUA)
            say(f"minted {len(tokens):,} RS256 tokens in {time.monotonic() - began:.1f} s")

    def port(self, row: Row) -> int:
        return self.upstream.port if row.instance is None else self.instances[row.instance].port

    def check(self) -> None:
        """Every contender answers right before it is loaded; raises CheckFailed if not."""
        checked = set()
        for row in self.selected:
            port = self.port(row)
            if row.instance not in checked:
                checked.add(row.instance)
                for probe in self.probes if row.secured else self.probes[:1]:
                    expect(row, port, probe)
            if row.fresh:
                for index in (0, len(self.fresh) - 1):
                    expect(row, port, Probe(f"fresh token #{index}", self.fresh[index], 200))
        say(f"checked the answers of {len(checked)} contender(s): all right")

    # -- measuring ----------------------------------------------------------------

    def wrk(self, row: Row, duration: int):
        url = f"http://127.0.0.1:{self.port(row)}{PATH}"
        options = dict(duration=duration, connections=self.settings.connections,
                       cpu=self.lab.load_cpu)
        if not row.fresh:
            return run_wrk(url, headers=(f"Authorization: Bearer {self.token}",), **options)
        offset = self.offsets.get(row.key, 0)
        result = run_wrk(url, script=str(self.dir / "fresh.lua"),
                         script_args=(str(self.dir / "tokens.txt"), str(offset)), **options)
        # The next run starts after the last token this one sent: a token comes back
        # only after all the others, long after any cache of fewer entries let it go.
        self.offsets[row.key] = (offset + result.requests + self.settings.connections
                                 ) % len(self.fresh)
        return result

    def measure(self, row: Row) -> Run:
        instance = self.instances.get(row.instance) if row.instance else None
        cpu = self.lab.contender_cpu
        forwarded_before = upstream_requests(self.status_port)
        ticks_before = process_ticks(instance.pid) if instance else 0
        user_before = cpu_user_ticks(cpu)
        redis_before = process_ticks(self.redis_process.pid) if row.redis else 0
        result = self.wrk(row, self.settings.duration)
        redis_ticks = process_ticks(self.redis_process.pid) - redis_before if row.redis else 0
        user_ticks = cpu_user_ticks(cpu) - user_before
        ticks = process_ticks(instance.pid) - ticks_before if instance else 0
        forwarded = upstream_requests(self.status_port) - forwarded_before - 1  # minus this read
        if instance is not None and instance.process.poll() is not None:
            raise CheckFailed(f"{row.label} exited with {instance.process.returncode} "
                              f"under load:\n{instance.log_tail()}")
        requests = max(result.requests, 1)

        def per_request(t: int) -> float:
            return t / TICKS_PER_SECOND / requests * 1e6

        return Run(
            rps=result.rps, p50=result.p50, p99=result.p99,
            cpu_us=per_request(ticks) if instance else None,
            user_us=per_request(user_ticks) if instance else None,
            forwarded=forwarded / requests, requests=result.requests,
            non_2xx=result.non_2xx, socket_errors=result.errors,
            redis_us=per_request(redis_ticks) if row.redis else None,
        )  # fmt: skip

    def rounds(self) -> dict[str, list[Run]]:
        runs: dict[str, list[Run]] = {row.key: [] for row in self.selected}
        for number in range(1, self.settings.rounds + 1):
            for row in self.selected:
                if number == 1:
                    self.wrk(row, self.settings.warmup)  # pools, caches, the code paths
                run = self.measure(row)
                runs[row.key].append(run)
                cpu = f"{run.cpu_us:7.1f} µs/req" if run.cpu_us is not None else " " * 14
                say(f"round {number}/{self.settings.rounds}  {row.key:<14}{run.rps:>10,.0f} req/s"
                    f"  p99 {run.p99:6.2f} ms  {cpu}  forwarded {run.forwarded:.3f}")
        return runs

    # -- idle connections ---------------------------------------------------------

    def idle(self, kind: str) -> IdleResult:
        count = self.settings.idle
        upstream = self.upstream.port
        if kind == "fastgw":
            instance = self.lab.fastgw("idle-fastgw", upstream, secured=True, jwks=self.jwks,
                                       max_connections=count + 1000)
        else:
            instance = self.lab.nginx_proxy("idle-nginx", upstream, connections=count + 1000)
        row = Row(f"idle-{kind}", f"{kind} (idle connections)", instance.name)
        try:
            expect(row, instance.port, self.probes[0])
            warm(instance.port, self.token, 200)
            time.sleep(0.5)
            before = resident_bytes(instance.pid)
            request = (f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{instance.port}\r\n"
                       f"Authorization: Bearer {self.token}\r\n\r\n").encode()
            began = time.monotonic()
            sockets = open_idle(instance.port, count, request)
            try:
                opened = time.monotonic() - began
                time.sleep(1.0)
                after = resident_bytes(instance.pid)
                established = count_established(instance.port)
                closed = count_closed(sockets)
                active = None
                if instance.admin_port is not None:
                    active = metric(instance.admin_port, "fastgw_active_connections")
            finally:
                for sock in sockets:
                    sock.close()
        finally:
            self.lab.stop(instance)
        result = IdleResult(kind, count, before, after, established, closed, active, opened)
        say(f"idle {kind}: {count:,} connections opened in {opened:.1f} s, "
            f"RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB, "
            f"{established:,} established, {closed} closed"
            + (f", fastgw_active_connections {active:.0f}" if active is not None else ""))
        return result


# -- talking to a contender ---------------------------------------------------------


def get(port: int, token: str | None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        connection.request("GET", PATH, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def expect(row: Row, port: int, probe: Probe) -> None:
    try:
        status, body = get(port, probe.token)
    except (OSError, http.client.HTTPException) as exc:
        raise CheckFailed(f"{row.label}: no answer to {probe.name}: {exc}") from None
    if status != probe.status:
        raise CheckFailed(f"{row.label} answered {status} to {probe.name}, "
                          f"expected {probe.status}")
    if status == 200 and body != UPSTREAM_BYTES:
        raise CheckFailed(f"{row.label} answered {probe.name} with a body that is not the "
                          f"upstream's: {body[:200]!r}")


def warm(port: int, token: str, requests: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(requests):
            connection.request("GET", PATH, headers={"Authorization": f"Bearer {token}"})
            connection.getresponse().read()
    finally:
        connection.close()


def metric(admin_port: int, name: str) -> float | None:
    connection = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith((name + " ", name + "{"))]
    return sum(values) if values else None


def read_response(sock: socket.socket) -> int:
    """Read one response with a Content-Length body; its status."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
        elif name.strip().lower() == "transfer-encoding":
            raise ConnectionError("a chunked answer; the idle client reads Content-Length only")
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    return int(lines[0].split()[1])


def open_idle(port: int, count: int, request: bytes) -> list[socket.socket]:
    """``count`` keep-alive connections, each left open after one answered GET."""
    sockets: list[socket.socket] = []
    try:
        for index in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sockets.append(sock)
            sock.sendall(request)
            status = read_response(sock)
            if status != 200:
                raise CheckFailed(f"idle connection {index} got {status}")
    except BaseException as exc:
        for sock in sockets:
            sock.close()
        if isinstance(exc, OSError):
            raise CheckFailed(f"opening idle connection {len(sockets)}: {exc}") from None
        raise
    return sockets


def count_closed(sockets: list[socket.socket]) -> int:
    """Connections the contender closed (readable: EOF, or anything at all)."""
    poller = select.poll()
    for sock in sockets:
        poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
    return len(poller.poll(0))


def count_established(port: int) -> int:
    """Server-side ESTABLISHED sockets on ``port``, from /proc/net/tcp."""
    total = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(name) as table:
            next(table)
            for line in table:
                fields = line.split()
                if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    total += 1
    return total


# -- the run --------------------------------------------------------------------------


def say(text: str) -> None:
    print(text, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.splitlines()[0],
        epilog="contenders for --only: upstream, nginx, haproxy, haproxy-fresh, fastgw-none, "
               "fastgw, fastgw-redis, fastgw-fresh, idle (idle-fastgw, idle-nginx)")
    parser.add_argument("--duration", type=int, help="seconds per measured wrk run (8)")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections (50)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds, medians reported (3)")
    parser.add_argument("--warmup", type=int, help="seconds of wrk before a first run (2)")
    parser.add_argument("--tokens", type=int, help="fresh tokens cycled (40000)")
    parser.add_argument("--idle-connections", type=int, dest="idle",
                        help="idle keep-alive connections for the RSS row (10000)")
    parser.add_argument("--only", help="NAME[,NAME]: a subset of the rows, for development")
    parser.add_argument("--smoke", action="store_true",
                        help="a few seconds of everything, for CI: files go to a temporary "
                             "directory and the figures mean nothing")
    parser.add_argument("--output", type=Path,
                        help="where latest.md and latest.png go (bench/results/ for a full "
                             "run, a temporary directory otherwise)")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    smoke = args.smoke

    def pick(value, full, quick):
        return value if value is not None else (quick if smoke else full)

    only = [name.strip() for name in args.only.split(",") if name.strip()] if args.only else None
    output = args.output
    if output is None and not (smoke or only):
        output = RESULTS
    return Settings(
        duration=pick(args.duration, 8, 1), warmup=pick(args.warmup, 2, 1),
        connections=args.connections, rounds=pick(args.rounds, 3, 1),
        tokens=pick(args.tokens, 40_000, 1_000), idle=pick(args.idle, 10_000, 1_000),
        smoke=smoke, only=only, output=output,
    )  # fmt: skip


def check_tools() -> dict[str, str]:
    paths = {name: find_tool(name) for name in TOOLS}
    missing = [name for name in ("wrk", "nginx", "haproxy", "redis-server") if not paths[name]]
    if missing:
        say(f"missing: {', '.join(missing)}\ninstall them with:\n  {INSTALL}")
        sys.exit(1)
    return paths  # type: ignore[return-value]


def raise_open_files(needed: int) -> int:
    """Lift RLIMIT_NOFILE (inherited by every process started) to at least ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, max(hard, needed)))
        return needed
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def placement(tools: dict[str, str]) -> tuple[int | None, int | None, str]:
    if not tools.get("taskset"):
        return None, None, "taskset is missing"
    cpus = os.sched_getaffinity(0)
    if not {CONTENDER_CPU, LOAD_CPU} <= cpus:
        return None, None, f"this process may only use CPUs {sorted(cpus)}"
    return CONTENDER_CPU, LOAD_CPU, ""


def summarize(row: Row, runs: list[Run], tolerance: float) -> Figure:
    def median(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    flags = []
    forwarded = median(r.forwarded for r in runs)
    worst = max(runs, key=lambda r: abs(r.forwarded - 1))
    if worst.forwarded < 1 - tolerance:
        flags.append(f"NOT FORWARDING ({worst.forwarded:.3f})")
    elif worst.forwarded > 1 + tolerance:
        flags.append(f"FORWARDS MORE THAN IT ANSWERS ({worst.forwarded:.3f})")
    non_2xx = sum(r.non_2xx for r in runs)
    if non_2xx:
        flags.append(f"ERRORS: {non_2xx:,} non-2xx")
    if row.redis and not any(r.redis_us for r in runs):
        flags.append("REDIS NOT USED (redis-server spent no CPU)")
    requests = sum(r.requests for r in runs)
    errors = sum(r.socket_errors for r in runs)
    if errors > 0.001 * requests:
        flags.append(f"SOCKET ERRORS: {errors:,}")
    return Figure(
        key=row.key, label=row.label, rps=median(r.rps for r in runs),
        p50=median(r.p50 for r in runs), p99=median(r.p99 for r in runs),
        cpu_us=median(r.cpu_us for r in runs), user_us=median(r.user_us for r in runs),
        forwarded=forwarded, flags=flags, redis_us=median(r.redis_us for r in runs),
        rounds=[(r.rps, r.cpu_us) for r in runs], socket_errors=errors,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    tools = check_tools()
    contender_cpu, load_cpu, why = placement(tools)
    settings.pinned, settings.pin_note = contender_cpu is not None, why
    if not settings.pinned:
        say(f"running UNPINNED: {why}; the figures are less stable and 'user µs' is the "
            "user time of all CPUs")
    haproxy_version = subprocess.run([tools["haproxy"], "-v"], capture_output=True,
                                     text=True).stdout.split()
    haproxy_name = f"HAProxy {'.'.join(haproxy_version[2].split('.')[:2])}" \
        if len(haproxy_version) > 2 else "HAProxy"
    all_rows = rows(settings.tokens, haproxy_name)
    known = {row.key for row in all_rows} | {"idle", *(f"idle-{k}" for k in IDLE_KINDS)}
    if settings.only:
        unknown = [name for name in settings.only if name not in known]
        if unknown:
            say(f"unknown contender(s) for --only: {', '.join(unknown)}; one of "
                f"{', '.join(sorted(known))}")
            return 2
    wanted = set(settings.only) if settings.only else known
    selected = [row for row in all_rows if row.key in wanted]
    idle_kinds = [k for k in IDLE_KINDS if "idle" in wanted or f"idle-{k}" in wanted]
    limit = raise_open_files(2 * settings.idle + 4096)
    if idle_kinds and limit < settings.idle + 1024:
        say(f"RLIMIT_NOFILE is {limit}, too low for {settings.idle:,} idle connections")
        return 2

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    began = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="fastgw-bench-"))
    lab = Lab(scratch, tools, contender_cpu=contender_cpu, load_cpu=load_cpu)
    try:
        bench = Bench(settings, lab, selected, idle_kinds)
        bench.start()
        bench.check()
        runs = bench.rounds() if selected else {}
        idle = [bench.idle(kind) for kind in idle_kinds]
        figures = [summarize(row, runs[row.key], FORWARD_TOLERANCE) for row in selected]
        report = Report(settings, figures, idle, tools, time.monotonic() - began)
        report.print()
        output = settings.output or Path(tempfile.mkdtemp(prefix="fastgw-bench-results-"))
        written = report.write(output)
        say("\nwrote " + ", ".join(str(path) for path in written))
        failed = report.failures()
        if failed:
            say("\nFAILED: " + "; ".join(failed))
            return 1
        return 0
    except (CheckFailed, RuntimeError) as exc:
        say(f"\nABORTED: {exc}")
        return 1
    except KeyboardInterrupt:
        say("\ninterrupted: stopping everything")
        return 130
    finally:
        lab.close()
        shutil.rmtree(scratch, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
