"""Shared fixtures: a recording upstream, gateway processes, a raw HTTP client.

- ``upstream``: a ``RecordingUpstream`` shared by the tests of a module and
  emptied before each test;
- ``gateway``: a gateway process per module, started from ``gateway_config``
  (a module may override that fixture), routing ``/echo/**`` to ``upstream``
  through the ``lb://echo`` service and ``/direct/**`` to it directly;
- ``start_gateway(config, args=(), env=None)``: start another gateway for
  one test, stopped at its end;
- ``make_config(upstream_url, **changes)``: the base config, top-level keys
  replaced (dicts merged one level deep);
- ``raw(port)``: a ``RawConnection`` for bytes no client library would send;
- ``free_port()``: a loopback port nothing listens on.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from fastgw.testing import GatewayProcess, RecordingUpstream
from fastgw.testing import free_port as find_free_port

pytest_plugins = ["pytester"]  # tests of fastgw.testing.plugin run a user's test file


def base_config(upstream_url: str, **changes) -> dict:
    config = {
        "limits": {"header_timeout": "1s", "max_body": "1MiB"},
        "drain_timeout": "10s",
        "access_log": {"path": "-"},
        "services": {
            "echo": {
                "instances": [upstream_url],
                "connect_timeout": "1s",
                "response_timeout": "2s",
                "retries": 1,
            }
        },
        "routes": [
            {"id": "echo", "uri": "lb://echo", "predicates": ["Path=/echo/**"], "auth": "none"},
            {
                "id": "direct",
                "uri": upstream_url,
                "predicates": ["Path=/direct/**"],
                "auth": "none",
                "filters": ["StripPrefix=1"],
            },
        ],
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


@pytest.fixture(scope="session")
def make_config():
    return base_config


@pytest.fixture
def free_port():
    return find_free_port


@pytest.fixture(scope="module")
def shared_upstream():
    with RecordingUpstream() as up:
        yield up


@pytest.fixture
def upstream(shared_upstream):
    shared_upstream.settle()
    shared_upstream.clear()
    return shared_upstream


@pytest.fixture(scope="module")
def gateway_config(shared_upstream):
    return base_config(shared_upstream.url)


@pytest.fixture(scope="module")
def gateway(gateway_config, tmp_path_factory):
    with GatewayProcess(gateway_config, tmp_path_factory.mktemp("gateway")) as gw:
        yield gw


@pytest.fixture
def start_gateway(tmp_path):
    started = []

    def start(config, *, args=(), env=None) -> GatewayProcess:
        gw = GatewayProcess(config, tmp_path / f"gateway-{len(started)}", args=args, env=env)
        started.append(gw)
        return gw.start()

    yield start
    for gw in started:
        gw.__exit__(None, None, None)


@pytest.fixture
def raw():
    connections = []

    def connect(port: int, timeout: float = 10.0) -> RawConnection:
        connection = RawConnection(port, timeout)
        connections.append(connection)
        return connection

    yield connect
    for connection in connections:
        connection.close()


class RawResponse:
    def __init__(self, version, status, reason, headers, body, complete):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.complete = complete

    def header_values(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<RawResponse {self.status} {self.headers} {self.body[:200]!r}>"


class PeerClosed(ConnectionError):
    """The peer closed the connection before a response began."""


class RawConnection:
    """A client socket that sends exact bytes and parses what comes back."""

    def __init__(self, port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.buffer = b""
        self._deadline = 0.0

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self,
        method: str = "GET",
        target: str = "/echo/",
        headers: list[tuple[str, str]] | tuple = (),
        body: bytes | None = None,
        host: str = "gateway.test",
    ) -> None:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        lines += [f"{name}: {value}" for name, value in headers]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))

    def exchange(self, method: str = "GET", target: str = "/echo/", **kwargs) -> RawResponse:
        self.request(method, target, **kwargs)
        return self.read_response(method)

    def read_response(self, method: str = "GET", timeout: float | None = None) -> RawResponse:
        """Read one response (an interim 1xx counts as one); raise PeerClosed if none came."""
        self._deadline = time.monotonic() + (timeout or self.timeout)
        try:
            status_line = self._line()
        except EOFError:
            raise PeerClosed(f"connection closed; unread bytes {self.buffer!r}") from None
        version, status, reason = [*status_line.decode("latin-1").split(" ", 2), ""][:3]
        response = RawResponse(version, int(status), reason, [], b"", True)
        body = bytearray()
        try:
            while line := self._line():
                name, _, value = line.decode("latin-1").partition(":")
                response.headers.append((name, value.strip()))
            codings = response.header("transfer-encoding")
            length = response.header("content-length")
            if method == "HEAD" or response.status in (204, 304) or response.status < 200:
                pass
            elif codings and codings.lower().endswith("chunked"):
                while size := int(self._line().split(b";")[0], 16):
                    body += self._exact(size)
                    self._exact(2)
                while self._line():
                    pass
            elif length is not None:
                body += self._exact(int(length))
            else:
                while self._fill():
                    pass
                body += self.buffer
                self.buffer = b""
        except EOFError:
            response.complete = False
            body += self.buffer
            self.buffer = b""
        response.body = bytes(body)
        return response

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """Wait for the peer to close (True) or for ``timeout`` (False); bytes that
        arrive meanwhile are kept in ``buffer``."""
        self._deadline = time.monotonic() + timeout
        try:
            while self._fill():
                pass
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> bool:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no complete response in time")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return False
        self.buffer += data
        return bool(data)

    def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if not self._fill():
                raise EOFError
        line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
        return line

    def _exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise EOFError
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data
