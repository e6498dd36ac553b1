"""What the benchmarks share: peers, ports, processes, wrk, and CPU time from /proc.

The scripts in this folder import it as ``shared`` (they run as
``python bench/NAME.py``); the ``python -m bench`` harness as ``bench.shared``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
INSTALL = "apt-get install -y wrk nginx haproxy redis-server"

# An upstream answering every request with the same small body, with keep-alive
# that never ends; with ``status_port`` it also serves stub_status there, so the
# requests it answered can be counted from outside.
NGINX_UPSTREAM = """
worker_processes 1;
worker_rlimit_nofile {nofile};
error_log {dir}/{name}-error.log;
pid {dir}/{name}.pid;
events {{ worker_connections {connections}; }}
http {{
  access_log off;
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    keepalive_requests 1000000000;
    keepalive_timeout 600s;
    location / {{ default_type text/plain; return 200 "{body}"; }}
  }}
  {status}
}}
"""
NGINX_STATUS = """server {{
    listen 127.0.0.1:{port};
    location = /status {{ stub_status; }}
  }}"""
# 98 bytes, about what a small JSON API answers ("\\n" is nginx's newline escape).
UPSTREAM_BODY = (
    "orders/1: shipped, 3 items, total 42.00 EUR; "
    "a fixed body of ninety-eight bytes from the upstream\\n"
)
UPSTREAM_BYTES = UPSTREAM_BODY.replace("\\n", "\n").encode()


def nginx_upstream_config(directory: str | os.PathLike, port: int, *, name: str = "upstream",
                          status_port: int | None = None, connections: int = 4096) -> str:
    """The nginx.conf of the upstream on ``port`` (stub_status on ``status_port``)."""
    status = "" if status_port is None else NGINX_STATUS.format(port=status_port)
    return NGINX_UPSTREAM.format(dir=directory, name=name, port=port, body=UPSTREAM_BODY,
                                 status=status, connections=connections,
                                 nofile=max(2 * connections, 1024))


def upstream_requests(status_port: int) -> int:
    """Requests the upstream has answered so far, this stub_status request included."""
    with urllib.request.urlopen(f"http://127.0.0.1:{status_port}/status", timeout=10) as answer:
        text = answer.read().decode()
    # "Active connections: 1 \nserver accepts handled requests\n 5 5 17 \nReading: ..."
    return int(text.splitlines()[2].split()[2])


def find_tool(name: str) -> str | None:
    """The path of ``name`` on PATH or in /usr/sbin (nginx, haproxy), else None."""
    found = shutil.which(name)
    if found is None and Path(f"/usr/sbin/{name}").exists():
        found = f"/usr/sbin/{name}"
    return found


def require_tools(*names: str) -> dict[str, str]:
    """The paths of ``names``; exits with the install command when one is missing."""
    paths = {name: find_tool(name) for name in names}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        sys.exit(f"missing: {', '.join(missing)}; install them with:\n  {INSTALL}")
    return paths  # type: ignore[return-value]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, process: subprocess.Popen | None = None) -> None:
    """Wait until something accepts connections on ``port`` (and ``process`` still runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def gateway_env() -> dict[str, str]:
    """The environment for a gateway subprocess: the installed fastgw, quiet logs."""
    return {**os.environ, "FASTGW_LOG_LEVEL": "WARNING"}


def pinned(cpu: int | None) -> list[str]:
    """The taskset prefix that runs a command on ``cpu``; nothing when it cannot."""
    return ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") else []


def stop_all(procs: list[subprocess.Popen], timeout: float = 10.0) -> None:
    """SIGTERM each process group (graceful), SIGKILL what is still there after ``timeout``."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # What the group leader left behind (workers of a killed master).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def start_redis(directory: str | os.PathLike, cpu: int | None = None
                ) -> tuple[subprocess.Popen, str]:
    """A throwaway redis-server on a free port (no persistence); the process and its URL."""
    server = find_tool("redis-server")
    if server is None:
        raise SystemExit(f"redis-server not found; install it with:\n  {INSTALL}")
    port = free_port()
    process = subprocess.Popen(
        [*pinned(cpu), server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_port(port, process=process)
    except BaseException:
        stop_all([process])
        raise
    return process, f"redis://127.0.0.1:{port}/0"


# -- CPU time and memory from /proc -------------------------------------------------


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process in clock ticks, all its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def child_pids(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            children += [int(child) for child in task.read_text().split()]
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (a supervisor's workers, nginx's workers)."""
    tree, queue = [], [pid]
    while queue:
        each = queue.pop()
        tree.append(each)
        queue += child_pids(each)
    return tree


def process_ticks(pid: int) -> int:
    """CPU clock ticks used so far by ``pid`` and its descendants."""
    total = 0
    for each in process_tree(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += cpu_ticks(each)
    return total


def resident_bytes(pid: int) -> int:
    """VmRSS of ``pid`` and its descendants, summed."""
    total = 0
    for each in process_tree(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def cpu_user_ticks(cpu: int | None) -> int:
    """User-mode (user + nice) ticks of one CPU from /proc/stat, or of all with None."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0] == name:
            return int(fields[1]) + int(fields[2])
    raise RuntimeError(f"no {name} line in /proc/stat")


# -- wrk ----------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


@dataclass
class WrkResult:
    """What one wrk run reports; latencies in milliseconds."""

    requests: int
    seconds: float
    rps: float
    latency: dict[int, float] = field(default_factory=dict)  # percentile -> ms
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    output: str = ""

    @property
    def p50(self) -> float:
        return self.latency.get(50, float("nan"))

    @property
    def p99(self) -> float:
        return self.latency.get(99, float("nan"))

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values())


def _milliseconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()
    return float(value) * _UNITS[unit]


def parse_wrk(output: str) -> WrkResult:
    found = re.search(r"(\d+) requests in ([\d.]+)(\w+),", output)
    if found is None:
        raise RuntimeError(f"no result in wrk's output:\n{output}")
    requests = int(found.group(1))
    seconds = _milliseconds(found.group(2) + found.group(3)) / 1e3
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    latency = {int(p): _milliseconds(v)
               for p, v in re.findall(r"^\s+(\d+)%\s+([\d.]+[a-z]+)\s*$", output, re.M)}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)
    socket_errors = {}
    if errors:
        socket_errors = dict(zip(("connect", "read", "write", "timeout"),
                                 map(int, errors.groups()), strict=True))
    return WrkResult(requests, seconds, rps, latency, int(non_2xx.group(1)) if non_2xx else 0,
                     socket_errors, output)


def run_wrk(url: str, *, duration: float, connections: int, threads: int = 1,
            headers: tuple[str, ...] = (), script: str | None = None,
            script_args: tuple[str, ...] = (), cpu: int | None = None,
            latency: bool = True) -> WrkResult:
    """One wrk run (on ``cpu`` when given), parsed."""
    command = [*pinned(cpu), "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s"]
    if latency:
        command.append("--latency")
    for header in headers:
        command += ["-H", header]
    if script is not None:
        command += ["-s", script]
    command.append(url)
    if script_args:
        command += ["--", *script_args]
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return parse_wrk(out.stdout)
