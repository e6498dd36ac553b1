"""Run the real gateway as a subprocess, on free loopback ports.

::

    with GatewayProcess({"routes": [...], "services": {...}}, tmp_path) as gw:
        urllib.request.urlopen(f"{gw.url}/orders/1")

The config (a dict, or YAML/JSON text) gets a listener and an admin listener
on free ports unless it names them; it is written to ``gateway.yaml`` in the
given folder, which is also the gateway's working directory and holds its
stdout and stderr (``stderr_text()``).
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

__all__ = ["GatewayProcess", "GatewayStartError", "free_port"]

SOURCE_ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class GatewayStartError(RuntimeError):
    """The gateway exited or did not become ready in time."""


class GatewayProcess:
    """``python -m fastgw run -c FILE`` as a context-managed subprocess."""

    def __init__(
        self,
        config: dict | str,
        workdir: str | os.PathLike,
        *,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        ready_timeout: float = 20.0,
    ) -> None:
        if isinstance(config, str):
            config = yaml.safe_load(config)
        self.config = with_ports(config)
        self.workdir = Path(workdir)
        self.config_path = self.workdir / "gateway.yaml"
        self.args = tuple(args)
        self.env = env
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen | None = None
        self.port = address_port(self.config["listeners"][0]["address"])
        self.admin_port = address_port(self.config["admin"]["address"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def write_config(self, config: dict | str) -> None:
        """Replace the config file (the listeners keep their ports unless named)."""
        if isinstance(config, str):
            config = yaml.safe_load(config)
        config = copy.deepcopy(config)
        config.setdefault("listeners", self.config["listeners"])
        config.setdefault("admin", self.config["admin"])
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self) -> GatewayProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE_ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        command = [sys.executable, "-m", "fastgw", "run", "-c", str(self.config_path), *self.args]
        with (
            open(self.workdir / "gateway.stdout", "wb") as stdout,
            open(self.workdir / "gateway.stderr", "wb") as stderr,
        ):
            self.process = subprocess.Popen(
                command,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise GatewayStartError(
                    f"gateway exited with {self.process.returncode}:\n{self.stderr_text()}"
                )
            if self.admin_status("/readyz") == 200 and accepts_connections(self.port):
                return
            time.sleep(0.05)
        raise GatewayStartError(
            f"gateway not ready after {self.ready_timeout}s:\n{self.stderr_text()}"
        )

    def admin_status(self, path: str) -> int | None:
        """Status of GET ``path`` on the admin listener, or None if it does not answer."""
        connection = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=2)
        try:
            connection.request("GET", path)
            return connection.getresponse().status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            connection.close()

    def stderr_text(self) -> str:
        return self._read_output("gateway.stderr")

    def stdout_text(self) -> str:
        return self._read_output("gateway.stdout")

    def _read_output(self, name: str) -> str:
        try:
            return (self.workdir / name).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def send_signal(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; its exit status (raises on timeout)."""
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the drain to finish; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL the gateway and any worker it started."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def children(self) -> list[int]:
        """PIDs of the gateway's direct child processes (its workers)."""
        return child_pids(self.process.pid)

    def rss_bytes(self) -> int:
        """Resident memory of the gateway and its workers together."""
        pids = [self.process.pid, *self.children()]
        return sum(resident_bytes(pid) for pid in pids)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        if self.process is None:
            return
        try:
            self.stop(timeout=30)
        finally:
            self.kill()


def with_ports(config: dict) -> dict:
    """A copy of ``config`` with a listener and an admin listener on free ports where missing."""
    config = copy.deepcopy(config)
    if not config.get("listeners"):
        config["listeners"] = [{"address": f"127.0.0.1:{free_port()}"}]
    if not config.get("admin"):
        config["admin"] = {"address": f"127.0.0.1:{free_port()}"}
    return config


def address_port(address: str) -> int:
    return int(str(address).rsplit(":", 1)[1])


def accepts_connections(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def child_pids(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children += [int(child) for child in task.read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return children


def resident_bytes(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
