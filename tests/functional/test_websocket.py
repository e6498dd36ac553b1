"""Upgrade: websocket is tunnelled after the route's checks; nothing else upgrades."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import threading
import time

import pytest

from fastgw.testing.idp import IdentityProvider

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class EchoTunnelUpstream:
    """Answers a websocket upgrade with 101 and then echoes every byte back.

    ``refuse`` makes it answer the upgrade with a plain 403 instead.
    """

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.heads: list[bytes] = []
        self.ready = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self.tasks: set[asyncio.Task] = set()

    def __enter__(self) -> EchoTunnelUpstream:
        self.thread.start()
        self.ready.wait(5)
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        await self.stop.wait()
        server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            key = b""
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"sec-websocket-key:"):
                    key = line.split(b":", 1)[1].strip()
            if self.refuse:
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
                await writer.drain()
                return
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self.tasks.discard(task)


def upgrade_head(path: str, extra: str = "") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra}\r\n"
    ).encode()


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def read_exactly(sock: socket.socket, n: int, already: bytes = b"") -> bytes:
    data = already
    while len(data) < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def ws_config(make_config, upstream_url: str, **changes) -> dict:
    config = make_config(upstream_url, **changes)
    config["services"]["ws"] = {"instances": [upstream_url]}
    config["routes"].insert(
        0, {"id": "ws", "uri": "lb://ws", "predicates": ["Path=/ws/**"], "auth": "none"}
    )
    return config


def test_websocket_is_tunnelled_both_ways(start_gateway, make_config):
    with EchoTunnelUpstream() as up:
        gw = start_gateway(ws_config(make_config, up.url))
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
            # bytes right behind the head must reach the tunnel, not be parsed as HTTP
            sock.sendall(upgrade_head("/ws/chat") + b"early-bytes")
            head, rest = read_head(sock)
            assert head.startswith(b"HTTP/1.1 101 "), head
            assert b"sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=" in head.lower()
            assert read_exactly(sock, len(b"early-bytes"), rest) == b"early-bytes"
            payload = bytes(range(256)) * 400
            sock.sendall(payload)
            assert read_exactly(sock, len(payload)) == payload
        forwarded = up.heads[0].lower()
        assert b"upgrade: websocket" in forwarded
        assert b"x-forwarded-for: 127.0.0.1" in forwarded


def test_refused_upgrade_is_relayed_and_the_connection_closed(start_gateway, make_config):
    with EchoTunnelUpstream(refuse=True) as up:
        gw = start_gateway(ws_config(make_config, up.url))
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
            sock.sendall(upgrade_head("/ws/chat"))
            head, rest = read_head(sock)
            assert head.startswith(b"HTTP/1.1 403 "), head
            assert read_exactly(sock, 2, rest)[:2] == b"no"
            sock.settimeout(5)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if sock.recv(65536) == b"":
                    break
            else:
                pytest.fail("connection left open after a refused upgrade")


def test_upgrade_is_tunnelled_only_after_the_checks(start_gateway, make_config):
    with IdentityProvider() as idp, EchoTunnelUpstream() as up:
        config = ws_config(
            make_config, up.url,
            auth={"jwt": {"providers": [{"name": "corp", "issuer": idp.issuer,
                                         "jwks_uri": idp.jwks_uri}]}},
        )
        config["routes"][0]["auth"] = "jwt"
        gw = start_gateway(config)
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
            sock.sendall(upgrade_head("/ws/chat") + b"GET /ws/x HTTP/1.1\r\nHost: gw\r\n\r\n")
            head, _ = read_head(sock)
            assert head.startswith(b"HTTP/1.1 401 "), head
        assert up.heads == []
        token = idp.mint(sub="alice")
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
            sock.sendall(upgrade_head("/ws/chat", f"Authorization: Bearer {token}\r\n"))
            head, rest = read_head(sock)
            assert head.startswith(b"HTTP/1.1 101 "), head
            sock.sendall(b"ping")
            assert read_exactly(sock, 4, rest) == b"ping"


def test_upgrade_with_a_body_is_refused(start_gateway, make_config):
    with EchoTunnelUpstream() as up:
        gw = start_gateway(ws_config(make_config, up.url))
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
            sock.sendall(upgrade_head("/ws/chat", "Content-Length: 5\r\n") + b"hello")
            head, _ = read_head(sock)
            assert head.startswith(b"HTTP/1.1 400 "), head
        assert up.heads == []
