"""The redis-server processes the rate-limit tests start, and the Redis binaries they use.

``RedisServer`` runs one redis-server (optionally over TLS) on a free
loopback port, without persistence; ``require`` fails a test whose Redis
binary is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time

import hiredis
import pytest

from fastgw.ratelimit.redis import encode
from fastgw.testing import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def require(path: str) -> str:
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"{os.path.basename(path)} not found: install Redis (apt-get install redis-server)"
        )
    return path


class RedisServer:
    """One redis-server process; ``kill``, ``pause`` and ``start`` again on the same port."""

    def __init__(self, directory, port: int | None = None, args=(), tls: dict | None = None):
        self.directory = directory
        self.port = port or free_port()
        self.args = list(args)
        self.tls = tls
        self.process: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        ports = ["--port", str(self.port)]
        if self.tls:
            ports = ["--port", "0", "--tls-port", str(self.port)]
            for name, value in self.tls.items():
                ports += [f"--tls-{name}", str(value)]
        self.process = subprocess.Popen(
            [
                require(REDIS_SERVER),
                *ports,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                *self.args,
            ],
            stdout=open(self.directory / f"redis-{self.port}.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on {self.port} did not start") from None
                time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, *args, db: int = 0, password: str | None = None, asking: bool = False):
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", self.port), 5))
            if self.tls:
                context = ssl.create_default_context(cafile=str(self.tls["ca-cert-file"]))
                sock = stack.enter_context(context.wrap_socket(sock, server_hostname="127.0.0.1"))
            reader = hiredis.Reader()
            commands = []
            if password:
                commands.append(encode("AUTH", password))
            if db:
                commands.append(encode("SELECT", db))
            if asking:
                commands.append(encode("ASKING"))
            commands.append(encode(*args))
            sock.sendall(b"".join(commands))
            replies = []
            while len(replies) < len(commands):
                reply = reader.gets()
                if reply is False:
                    reader.feed(sock.recv(65536))
                else:
                    replies.append(reply)
            return replies[-1]

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)
