"""One request through the gateway: route, checks, filters, upstream, response.

An ``Exchange`` is created by the client protocol for every request head.
When its turn comes it runs ``handle()``: the pipeline of SPEC section 4
(route -> authenticate -> authorize -> rate-limit -> filters -> upstream).
The upstream response is relayed by callbacks from the upstream connection,
re-framed for the client, with flow control both ways.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from .http.headers import Headers
from .http.status import error_response, status_line
from .tls import xfcc_value
from .upstream.connection import UpstreamError

log = logging.getLogger("fastgw.proxy")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
NO_BODY_STATUS = frozenset({204, 304})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# How the response body is framed towards the client.
NONE, LENGTH, CHUNKED, UNTIL_CLOSE = range(4)


class Exchange:
    __slots__ = (
        "_body_waiter",
        "_done",
        "body",
        "body_bytes",
        "body_done",
        "chunked",
        "expect_continue",
        "extra_headers",
        "framing",
        "has_body",
        "keep_alive",
        "length",
        "method",
        "out",
        "preset",
        "protocol",
        "request",
        "response_bytes",
        "response_started",
        "route",
        "started_at",
        "status",
        "task",
        "until_close",
        "upgrade_rest",
        "upstream",
        "websocket",
    )

    def __init__(
        self,
        protocol,
        request,
        *,
        keep_alive: bool = True,
        chunked: bool = False,
        length: int | None = None,
        has_body: bool = False,
        expect_continue: bool = False,
        websocket: bool = False,
    ) -> None:
        self.protocol = protocol
        self.request = request
        self.method = request.method if request is not None else "GET"
        self.keep_alive = keep_alive
        self.chunked = chunked
        self.length = length
        self.has_body = has_body
        self.expect_continue = expect_continue
        self.websocket = websocket
        self.extra_headers: tuple[tuple[str, str], ...] = ()
        self.body: deque[bytes] = deque()
        self.body_bytes = 0
        self.body_done = not has_body
        self._body_waiter: asyncio.Future | None = None
        self.upgrade_rest: list[bytes] | None = None
        self.response_started = False
        self.response_bytes = 0
        self.framing = NONE
        self.out: list[bytes] = []
        self.status = 0
        self.route = None
        self.upstream = None
        self.until_close = False
        self.preset: tuple[int, str | None] | None = None
        self.task: asyncio.Task | None = None
        self._done: asyncio.Future | None = None
        self.started_at = 0.0

    @classmethod
    def rejected(cls, protocol, status: int, error: str | None):
        """A request answered in its turn with an error, after which the connection closes."""
        ex = cls(protocol, None, keep_alive=False)
        ex.preset = (status, error)
        return ex

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        gateway = self.protocol.gateway
        self.started_at = gateway.loop.time()
        if self.preset is not None:
            self.respond_error(*self.preset)
            self.finish()
            return
        self.task = gateway.loop.create_task(self.run())

    async def run(self) -> None:
        try:
            await self.protocol.gateway.pipeline(self)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("request %s failed inside the gateway", self.request.request_id)
            if not self.response_started:
                self.keep_alive = False
                self.respond_error(500)
            else:
                self.protocol.abort()
        self.finish()

    def finish(self) -> None:
        gateway = self.protocol.gateway
        gateway.exchange_finished(self)
        if not self.protocol.closing:
            self.protocol.exchange_done(self)

    def client_gone(self) -> None:
        if self.upstream is not None:
            self.upstream.abandon()
            self.upstream = None
        if self._done is not None and not self._done.done():
            self._done.set_result(UpstreamError(499, "client closed the connection"))
        self.wake_body()

    # -- the request body ----------------------------------------------------------

    def wake_body(self) -> None:
        waiter = self._body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail_request(self, status: int, error: str | None) -> None:
        """The request turned out bad while its body was arriving (413, 400)."""
        self.keep_alive = False
        self.body_done = True
        self.preset = (status, error)
        if self.upstream is not None:
            self.upstream.abandon()
            self.upstream = None
        self._resolve(UpstreamError(status, error or "bad request body"))
        self.wake_body()

    async def read_body(self) -> bytes:
        """The next chunk of the request body, b"" at its end."""
        body = self.body
        while not body:
            if self.body_done or self.protocol.closing:
                return b""
            self._body_waiter = self.protocol.loop.create_future()
            await self._body_waiter
            self._body_waiter = None
        chunk = body.popleft()
        self.protocol.body_consumed(len(chunk))
        return chunk

    # -- answers of the gateway's own ------------------------------------------------

    def respond_error(self, status: int, error: str | None = None, headers=()) -> None:
        self.status = status
        self.response_started = True
        if self.has_body and not self.body_done:
            self.keep_alive = False
        request = self.request
        request_id = request.request_id if request else self.protocol.gateway.new_request_id()
        if self.extra_headers and status != 429:
            headers = (*headers, *self.extra_headers)
        data = error_response(
            status,
            request_id,
            error=error,
            close=not self.keep_alive,
            headers=headers,
            head_only=self.method == "HEAD",
        )
        self.response_bytes += len(data)
        self.protocol.write(data)

    def send_continue(self) -> None:
        if self.expect_continue and not self.body_done:
            self.expect_continue = False
            self.protocol.write(_CONTINUE)

    # -- relaying the upstream response (callbacks of UpstreamConnection) ---------------

    def attach(self, conn) -> None:
        self.upstream = conn
        if self.protocol.write_paused:
            conn.transport.pause_reading()

    def pause_upstream(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_upstream(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()

    def upstream_head(self, status: int, kept: list, chunked: bool, length: int | None) -> None:
        """The response head: ``kept`` holds the upstream's end-to-end fields."""
        self.status = status
        self.response_started = True
        if not self.body_done:
            # The upstream answered before the whole body arrived; the rest of it
            # must never be read as a next request.
            self.keep_alive = False
        request = self.request
        view = Headers.from_raw(kept)
        route = self.route
        if route is not None:
            for f in route.response_filters:
                f.on_response(request, view)
        for name, value in self.extra_headers:
            view.add(name, value)
        out = [status_line(status), view.encode()]
        self.until_close = length is None and not chunked
        if status == 101:
            self.framing = NONE
        elif self.method == "HEAD" or status in NO_BODY_STATUS:
            self.framing = NONE
            if length is not None and status != 204:
                out.append(b"Content-Length: %d\r\n" % length)
        elif length is not None:
            self.framing = LENGTH
            out.append(b"Content-Length: %d\r\n" % length)
        elif request.version == "1.1":
            self.framing = CHUNKED
            out.append(b"Transfer-Encoding: chunked\r\n")
        else:
            self.framing = UNTIL_CLOSE
            self.keep_alive = False
        out += (b"X-Request-Id: ", request.request_id.encode(), b"\r\n")
        if status == 101:
            pass
        elif not self.keep_alive:
            out.append(b"Connection: close\r\n")
        elif request.version == "1.0":
            out.append(b"Connection: keep-alive\r\n")
        out.append(b"\r\n")
        self.out += out

    def upstream_body(self, chunk: bytes) -> None:
        self.response_bytes += len(chunk)
        if self.framing == CHUNKED:
            self.out += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
        elif self.framing != NONE:
            self.out.append(chunk)

    def upstream_complete(self, conn) -> None:
        if self.framing == CHUNKED:
            self.out.append(b"0\r\n\r\n")
        self.flush()
        self._resolve(None)

    def flush(self) -> None:
        """One write per upstream read: the response head, body and end together."""
        out = self.out
        if out:
            self.protocol.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def upstream_eof(self, conn) -> None:
        if self.until_close:
            self.upstream_complete(conn)
        else:
            self.upstream_failed(UpstreamError(502, "upstream response cut short"), conn)

    def upstream_failed(self, error: UpstreamError, conn) -> None:
        self.flush()
        if self.response_started:
            # Bytes of this response are already out: the only honest signal left
            # is to cut the client connection.
            self.keep_alive = False
            self.protocol.abort()
        self._resolve(error)

    def upstream_switched(self, conn, rest: bytes) -> None:
        self.flush()
        self._resolve(("switched", conn, rest))

    def _resolve(self, outcome) -> None:
        done = self._done
        if done is not None and not done.done():
            done.set_result(outcome)

    # -- forwarding ---------------------------------------------------------------------

    async def exchange_with(self, conn, head: bytes, response_timeout: float):
        """Send the request on ``conn`` and wait until its response is relayed."""
        self._done = done = self.protocol.loop.create_future()
        conn.begin(self)
        self.attach(conn)
        conn.transport.write(head)
        if self.has_body:
            self.send_continue()
            await self._send_body(conn)
        if not done.done():
            conn.request_complete(response_timeout)
        outcome = await done
        self._done = None
        self.upstream = None
        return outcome

    async def _send_body(self, conn) -> None:
        write = conn.transport.write
        chunked = self.chunked
        done = self._done
        while not done.done():
            chunk = await self.read_body()
            if done.done() or conn.closed or self.preset is not None:
                return
            if not chunk:
                if chunked:
                    write(b"0\r\n\r\n")
                return
            if chunked:
                conn.transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                write(chunk)
            if conn.write_paused:
                await conn.drain()


# -- the pipeline ------------------------------------------------------------------------


async def handle(ex: Exchange) -> None:
    """SPEC section 4, in order: route, authenticate, authorize, rate-limit, filters, upstream."""
    snapshot = ex.protocol.gateway.snapshot
    request = ex.request
    hit = snapshot.router.match(request.method, request.host, request.path, request.headers.getall)
    if hit is None:
        ex.respond_error(404)
        return
    route = snapshot.routes[hit[0]]
    ex.route = route
    request.route_id = route.id
    request.path_vars = hit[1]
    for check in route.checks:
        rejection = check(ex)
        if rejection is not None and not isinstance(rejection, Rejection):
            rejection = await rejection
        if rejection is not None:
            rejection.answer(ex)
            return
    for f in route.request_filters:
        f.on_request(request)
    if ex.preset is not None:
        ex.respond_error(*ex.preset)
        return
    await forward(ex, route)


class Rejection:
    """A check's verdict against a request: the status and what goes with it."""

    __slots__ = ("error", "headers", "status")

    def __init__(self, status: int, error: str | None = None, headers=()) -> None:
        self.status = status
        self.error = error
        self.headers = headers

    def answer(self, ex: Exchange) -> None:
        ex.respond_error(self.status, self.error, self.headers)


def request_head(ex: Exchange, route, trusted: bool) -> tuple[bytes, bytes]:
    """The request line and headers for the upstream, split around the Host line."""
    request = ex.request
    headers = request.headers
    if not route.token_relay:
        headers.remove(b"authorization")
    ip = request.client_ip
    xff = ", ".join([*request.forwarded_for, ip]) if trusted and request.forwarded_for else ip
    parts = [
        f"{request.method} {request.target} HTTP/1.1\r\n".encode("latin-1"),
        headers.encode(),
        f"X-Forwarded-For: {xff}\r\nX-Forwarded-Proto: {request.scheme}\r\n"
        f"X-Forwarded-Host: {request.host}\r\nX-Request-Id: {request.request_id}\r\n".encode(
            "latin-1"
        ),
    ]
    if route.forward_client_cert is not None and request.client_cert is not None:
        xfcc = xfcc_value(request.client_cert, ex.protocol.server_uri,
                          fields=route.forward_client_cert)
        parts.append(f"X-Forwarded-Client-Cert: {xfcc}\r\n".encode("latin-1"))
    if ex.chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif ex.length is not None:
        parts.append(b"Content-Length: %d\r\n" % ex.length)
    if ex.websocket:
        parts.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
    parts.append(b"\r\n")
    return parts[0], b"".join(parts[1:])


async def forward(ex: Exchange, route) -> None:
    service = route.service
    config = service.config
    first_line, rest = request_head(ex, route, ex.protocol.trusted)
    replayable = ex.method in IDEMPOTENT and not ex.has_body
    error = UpstreamError(503, "no healthy upstream instance")
    tried = None
    for _ in range(1 + config.retries):
        instance = service.pick(tried) or (tried and service.pick())
        if not instance:
            break
        tried = instance
        instance.in_flight += 1
        sent = False
        began = ex.protocol.loop.time()
        try:
            conn = await instance.pool.acquire()
            if ex.protocol.closing:
                instance.pool.release(conn)
                return
            sent = True
            head = b"".join((first_line, instance.pool.host_line, rest))
            outcome = await ex.exchange_with(conn, head, config.response_timeout)
            if isinstance(outcome, tuple):
                Tunnel(ex, outcome[1], outcome[2])
                return
            instance.pool.release(conn)
        except UpstreamError as exc:
            outcome = exc
        finally:
            instance.in_flight -= 1
            ex.protocol.gateway.metrics.upstream_duration.observe(
                (service.name,), ex.protocol.loop.time() - began
            )
        if outcome is None:
            service.succeeded(instance)
            return
        error = outcome
        if error.status == 499 or ex.protocol.closing:
            return
        if error.status in (502, 504):
            service.failed(instance, error.reason)
        if ex.response_started or ex.preset is not None:
            break
        if not error.retryable or (sent and not replayable):
            break
    if ex.preset is not None:
        if not ex.response_started:
            ex.respond_error(*ex.preset)
        return
    if not ex.response_started:
        log.warning(
            "request %s route %s: %s (%s)", ex.request.request_id, route.id, error.reason,
            tried.name if tried else service.name,
        )
        ex.respond_error(error.status)


class Tunnel:
    """Bytes both ways after a 101, with flow control both ways."""

    __slots__ = ("client", "upstream")

    def __init__(self, ex: Exchange, conn, rest: bytes) -> None:
        self.client = ex.protocol
        self.upstream = conn
        self.client.tunnel = self
        conn.tunnel = self
        if rest:
            self.client.write(rest)
        for chunk in ex.upgrade_rest or ():
            conn.transport.write(chunk)
        ex.upgrade_rest = None
        self.client.read_paused = True
        self.client.resume_reading_for_tunnel()

    def from_client(self, data: bytes) -> None:
        self.upstream.transport.write(data)

    def from_upstream(self, data: bytes) -> None:
        self.client.write(data)

    def pause_upstream(self) -> None:
        self.upstream.transport.pause_reading()

    def resume_upstream(self) -> None:
        self.upstream.transport.resume_reading()

    def upstream_closed(self) -> None:
        self.client.close()

    def client_closed(self) -> None:
        self.upstream.transport.close()
