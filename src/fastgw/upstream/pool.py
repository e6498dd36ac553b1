"""Keep-alive connection pools, one per upstream instance.

``max_connections`` bounds the connections of one instance in this worker
(busy and idle together). A request that finds the pool full waits for a
release up to the service's ``connect_timeout``, in a queue of at most
``max_pending``; past that it is answered 503 at once.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque

from ..config.model import Instance
from ..proxy.upstream import UpstreamConnection, UpstreamError

# Upstreams commonly close idle keep-alive connections after 5-75 s; closing
# ours first avoids most races where a request is written into a dying socket.
IDLE_TIMEOUT = 30.0


class InstancePool:
    __slots__ = (
        "_idle",
        "_waiters",
        "connect_timeout",
        "host_line",
        "instance",
        "loop",
        "max_connections",
        "max_pending",
        "open",
        "overflowed",
        "server_hostname",
        "ssl",
    )

    def __init__(
        self,
        instance: Instance,
        *,
        connect_timeout: float,
        max_connections: int,
        max_pending: int,
        loop: asyncio.AbstractEventLoop,
        ssl=None,
        server_hostname: str | None = None,
        host_name: str | None = None,
        overflowed=None,
    ) -> None:
        self.instance = instance
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.max_pending = max_pending
        self.overflowed = overflowed  # called for each request turned away by a full queue
        self.loop = loop
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.open = 0
        host = host_name or instance.host  # the name an address was resolved from
        host = f"[{host}]" if ":" in host else host
        default = 443 if instance.scheme == "https" else 80
        authority = host if instance.port == default else f"{host}:{instance.port}"
        self.host_line = f"Host: {authority}\r\n".encode()
        self._idle: deque[UpstreamConnection] = deque()
        self._waiters: deque[asyncio.Future] = deque()

    def take_idle(self) -> UpstreamConnection | None:
        """The most recently used idle connection that is still good, if any."""
        idle = self._idle
        if idle:
            now = self.loop.time()
            while idle:
                conn = idle.pop()
                if not conn.closed and now - conn.idle_since < IDLE_TIMEOUT:
                    return conn
                self._close(conn)
        return None

    async def acquire(self) -> UpstreamConnection:
        conn = self.take_idle()
        if conn is not None:
            return conn
        if self.open >= self.max_connections:
            if len(self._waiters) >= self.max_pending:
                if self.overflowed is not None:
                    self.overflowed()
                raise UpstreamError(503, "upstream connection pool full")
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                conn = await asyncio.wait_for(waiter, self.connect_timeout)
            except TimeoutError:
                raise UpstreamError(503, "upstream connection pool exhausted") from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if conn is not None:
                return conn
        return await self._connect()

    async def _connect(self) -> UpstreamConnection:
        self.open += 1
        inst = self.instance
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: UpstreamConnection(self, self.loop),
                    inst.host,
                    inst.port,
                    ssl=self.ssl,
                    server_hostname=self.server_hostname if self.ssl else None,
                    ssl_handshake_timeout=self.connect_timeout if self.ssl else None,
                ),
                self.connect_timeout,
            )
        except TimeoutError:
            self._released_slot()
            raise UpstreamError(504, "upstream connect timed out", retryable=True) from None
        except OSError as exc:
            self._released_slot()
            raise UpstreamError(502, f"upstream connect failed: {exc.strerror or exc}",
                                retryable=True) from None
        sock = conn.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Hand a connection back after an exchange; only a clean one is kept."""
        if not conn.reusable or conn.closed:
            self._close(conn)
            return
        conn.reusable = False
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle_since = self.loop.time()
        self._idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        """An idle connection was closed by the upstream."""
        try:
            self._idle.remove(conn)
        except ValueError:
            return
        self._released_slot()

    def _close(self, conn: UpstreamConnection) -> None:
        if conn.transport is not None and not conn.closed:
            conn.closed = True
            conn.transport.close()
        self._released_slot()

    def _released_slot(self) -> None:
        self.open -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the waiter may now open its own
                return

    def close(self) -> None:
        while self._idle:
            self._close(self._idle.pop())
