"""One request's life: route, checks, filters, upstream, response (SPEC section 4).

Theory of operation. The client connection makes an ``Exchange`` for every
request head and calls ``start()`` when its turn comes. From there the
request runs as one chain of plain calls: route, each check, the request
filters, an idle pooled connection, the head written upstream. The upstream
connection's read callbacks relay the response (``upstream_head``,
``upstream_body``) and end the attempt (``upstream_complete``,
``upstream_failed``, ``upstream_switched``), which decides, again by plain
calls, whether to retry, answer, or finish and hand the client connection
its next request.

A coroutine runs only where something must be waited for, and resumes the
chain where it stopped: a check that answers later (a key the provider may
just have published, a Redis decision), a new upstream connection or a free
pool slot, and a request body. The common request creates no Task, Future
or coroutine.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from .._core import active
from ..http.headers import Headers
from ..http.status import error_response, status_line
from ..tls import xfcc_value
from .upstream import UpstreamError

log = logging.getLogger("fastgw.proxy")

encode_fields = active("head").encode_fields

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
NO_BODY_STATUS = frozenset({204, 304})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CLIENT_GONE = UpstreamError(499, "client closed the connection")
_NO_INSTANCE = UpstreamError(503, "no healthy upstream instance")

# How the response body is framed towards the client.
NONE, LENGTH, CHUNKED, UNTIL_CLOSE = range(4)


class Rejection:
    """A check's verdict against a request: the status and what goes with it."""

    __slots__ = ("error", "headers", "status")

    def __init__(self, status: int, error: str | None = None, headers=()) -> None:
        self.status = status
        self.error = error
        self.headers = headers

    def answer(self, ex: Exchange) -> None:
        ex.respond_error(self.status, self.error, self.headers)


class Exchange:
    __slots__ = (
        "_attempt_began",
        "_attempts",
        "_body_waiter",
        "_finished",
        "_head",
        "_instance",
        "_last_error",
        "_resolved",
        "_sent",
        "_tried",
        "body",
        "body_bytes",
        "body_done",
        "chunked",
        "connection",
        "expect_continue",
        "extra_headers",
        "framing",
        "has_body",
        "keep_alive",
        "length",
        "method",
        "out",
        "preset",
        "request",
        "response_bytes",
        "response_started",
        "route",
        "snapshot",
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
        connection,
        snapshot,
        request,
        *,
        keep_alive: bool = True,
        chunked: bool = False,
        length: int | None = None,
        has_body: bool = False,
        expect_continue: bool = False,
        websocket: bool = False,
    ) -> None:
        self.connection = connection
        self.snapshot = snapshot
        self.request = request
        self.method = request.method if request is not None else "GET"
        self.keep_alive = keep_alive
        self.chunked = chunked
        self.length = length
        self.has_body = has_body
        self.expect_continue = expect_continue
        self.websocket = websocket
        self.extra_headers = b""  # header lines every answer carries (RateLimit-*)
        self.body: deque[bytes] | None = deque() if has_body else None
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
        self.started_at = 0.0
        self._finished = False
        self._resolved = True
        self._head: tuple[bytes, bytes] | None = None
        self._instance = None
        self._tried = None
        self._sent = False
        self._attempts = 0
        self._last_error = _NO_INSTANCE
        self._attempt_began = 0.0

    @classmethod
    def rejected(cls, connection, snapshot, status: int, error: str | None):
        """A request answered in its turn with an error, after which the connection closes."""
        ex = cls(connection, snapshot, None, keep_alive=False)
        ex.preset = (status, error)
        return ex

    # -- the request's life, in order -----------------------------------------------

    def start(self) -> None:
        self.started_at = self.connection.loop.time()
        try:
            if self.preset is not None:
                self.respond_error(*self.preset)
                self.finish()
                return
            request = self.request
            snapshot = self.snapshot
            hit = snapshot.router.match(request.method, request.host, request.path,
                                        request.headers.getall)
            if hit is None:
                self.respond_error(404)
                self.finish()
                return
            route = self.route = snapshot.routes[hit[0]]
            request.route_id = route.id
            request.path_vars = hit[1]
            self._check(0)
        except Exception:
            self._failed_inside()

    def _check(self, i: int) -> None:
        """Run the route's checks from the I-th on: authenticate, authorize, rate-limit."""
        checks = self.route.checks
        n = len(checks)
        while i < n:
            verdict = checks[i](self)
            i += 1
            if verdict is None:
                continue
            if type(verdict) is not Rejection:
                self.task = self.connection.loop.create_task(self._check_later(verdict, i))
                return
            verdict.answer(self)
            self.finish()
            return
        for f in self.route.request_filters:
            f.on_request(self.request)
        if self.preset is not None:
            self.respond_error(*self.preset)
            self.finish()
            return
        self._head = request_head(self, self.route, self.connection.trusted)
        self._attempt()

    async def _check_later(self, verdict, i: int) -> None:
        try:
            verdict = await verdict
            if self.connection.closing:
                self.finish()
            elif verdict is not None:
                verdict.answer(self)
                self.finish()
            else:
                self._check(i)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._failed_inside()

    def _attempt(self) -> None:
        """Pick an instance and send the request to it: at once on an idle pooled
        connection, else once a connection is opened or a pool slot is free."""
        service = self.route.service
        tried = self._tried
        instance = service.pick(tried) or (tried and service.pick())
        if not instance:
            self._give_up(self._last_error)
            return
        self._attempts += 1
        self._tried = self._instance = instance
        instance.in_flight += 1
        self._sent = False
        self._attempt_began = self.connection.loop.time()
        conn = instance.pool.take_idle()
        if conn is None:
            self.task = self.connection.loop.create_task(self._connect(instance))
        else:
            self._send(conn)

    async def _connect(self, instance) -> None:
        try:
            try:
                conn = await instance.pool.acquire()
            except UpstreamError as exc:
                self._attempt_over(exc, None)
                return
            if self.connection.closing:
                instance.pool.release(conn)
                self._attempt_over(_CLIENT_GONE, None)
                return
            self._send(conn)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._failed_inside()

    def _send(self, conn) -> None:
        if self.preset is not None:
            # The body turned out bad while the connection was being opened.
            self._instance.pool.release(conn)
            self._attempt_over(UpstreamError(self.preset[0], "bad request body"), None)
            return
        self._sent = True
        self._resolved = False
        first_line, rest = self._head
        conn.begin(self)
        self.upstream = conn
        if self.connection.write_paused:
            conn.transport.pause_reading()
        conn.transport.write(b"".join((first_line, conn.pool.host_line, rest)))
        if self.has_body:
            self.send_continue()
            self.task = self.connection.loop.create_task(self._send_body(conn))
        else:
            conn.request_complete(self.route.service.config.response_timeout)

    async def _send_body(self, conn) -> None:
        """Stream the request body to CONN, with flow control, until it is all
        sent or the attempt has ended (the upstream answered early, or failed)."""
        try:
            write = conn.transport.write
            chunked = self.chunked
            while not self._resolved:
                chunk = await self.read_body()
                if self._resolved or conn.closed or self.preset is not None:
                    return
                if not chunk:
                    if chunked:
                        write(b"0\r\n\r\n")
                    conn.request_complete(self.route.service.config.response_timeout)
                    return
                if chunked:
                    conn.transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    write(chunk)
                if conn.write_paused:
                    await conn.drain()
        except asyncio.CancelledError:
            raise
        except Exception:
            self._failed_inside()

    def _resolve(self, outcome) -> None:
        """The attempt on the current upstream connection has an outcome."""
        if self._resolved:
            return
        self._resolved = True
        conn = self.upstream
        self.upstream = None
        self.wake_body()
        try:
            if type(outcome) is tuple:
                self._attempt_done()
                Tunnel(self, outcome[1], outcome[2])
                self.finish()
                return
            self._attempt_over(outcome, conn)
        except Exception:
            self._failed_inside()

    def _attempt_done(self) -> None:
        instance = self._instance
        instance.in_flight -= 1
        instance.timing.observe(self.connection.loop.time() - self._attempt_began)

    def _attempt_over(self, outcome, conn) -> None:
        """OUTCOME (None, or an UpstreamError) of one attempt: done, retry, or answer."""
        instance = self._instance
        self._attempt_done()
        if conn is not None:
            if conn.reusable and self.connection.write_paused:
                # Paused while this client could not keep up; its next user must read.
                conn.transport.resume_reading()
            instance.pool.release(conn)
        service = self.route.service
        if outcome is None:
            service.answered(instance, self.status)
            self.finish()
            return
        if outcome.status == 499 or self.connection.closing:
            self.finish()
            return
        if outcome.status in (502, 504):
            service.failed(instance, outcome.reason)
        self._last_error = outcome
        if (self.response_started or self.preset is not None or not outcome.retryable
                or (self._sent and (self.has_body or self.method not in IDEMPOTENT))
                or self._attempts > service.config.retries):
            self._give_up(outcome)
        else:
            self._attempt()

    def _give_up(self, error: UpstreamError) -> None:
        if self.preset is not None:
            if not self.response_started:
                self.respond_error(*self.preset)
        elif not self.response_started:
            tried = self._tried
            log.warning("request %s route %s: %s (%s)", self.request.request_id, self.route.id,
                        error.reason, tried.name if tried else self.route.service.name)
            self.respond_error(error.status)
        self.finish()

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self.task = None
        connection = self.connection
        connection.exchange_finished(self)
        if not connection.closing:
            connection.exchange_done(self)

    def _failed_inside(self) -> None:
        log.exception("request %s failed inside the gateway",
                      self.request.request_id if self.request is not None else "-")
        if self._finished:
            return
        conn = self.upstream
        if conn is not None and not self._resolved:
            # An attempt under way ends here: no later response may reach this client.
            self._resolved = True
            self.upstream = None
            conn.abandon()
            self._attempt_done()
            self._instance.pool.release(conn)
        if not self.response_started:
            self.keep_alive = False
            self.respond_error(500)
        else:
            self.connection.abort()
        self.finish()

    def client_gone(self) -> None:
        # A check or a connect still under way finds the connection closing when
        # it is done, and ends there; one on an upstream connection ends now.
        conn = self.upstream
        if conn is not None:
            conn.abandon()
            self._resolve(_CLIENT_GONE)
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
        conn = self.upstream
        if conn is not None:
            conn.abandon()
            self._resolve(UpstreamError(status, error or "bad request body"))
        self.wake_body()

    async def read_body(self) -> bytes:
        """The next chunk of the request body, b"" at its end."""
        body = self.body
        while not body:
            if self.body_done or self.connection.closing:
                return b""
            self._body_waiter = self.connection.loop.create_future()
            await self._body_waiter
            self._body_waiter = None
        chunk = body.popleft()
        self.connection.body_consumed(len(chunk))
        return chunk

    # -- answers of the gateway's own ------------------------------------------------

    def respond_error(self, status: int, error: str | None = None, headers=()) -> None:
        self.status = status
        self.response_started = True
        if (self.has_body and not self.body_done) or self.connection.draining:
            self.keep_alive = False
        request = self.request
        request_id = request.request_id if request else self.connection.new_request_id()
        data = error_response(
            status,
            request_id,
            error=error,
            close=not self.keep_alive,
            headers=headers,
            lines=self.extra_headers if status != 429 else b"",
            head_only=self.method == "HEAD",
        )
        self.response_bytes += len(data)
        self.connection.write(data)

    def send_continue(self) -> None:
        if self.expect_continue and not self.body_done:
            self.expect_continue = False
            self.connection.write(_CONTINUE)

    # -- relaying the upstream response (callbacks of UpstreamConnection) ---------------

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
        if self.connection.draining:
            self.keep_alive = False
        request = self.request
        route = self.route
        if route.response_filters:
            view = Headers.from_raw(kept)
            for f in route.response_filters:
                f.on_response(request, view)
            kept = view.fields
        out = [status_line(status), encode_fields(kept), self.extra_headers]
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
        out += (b"X-Request-Id: ", request.request_id_bytes, b"\r\n")
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
            self.connection.write(out[0] if len(out) == 1 else b"".join(out))
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
            self.connection.abort()
        self._resolve(error)

    def upstream_switched(self, conn, rest: bytes) -> None:
        self.flush()
        self._resolve(("switched", conn, rest))


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
        encode_fields(headers.fields),
        f"X-Forwarded-For: {xff}\r\nX-Forwarded-Proto: {request.scheme}\r\n"
        f"X-Forwarded-Host: {request.host}\r\n".encode("latin-1"),
        b"X-Request-Id: ", request.request_id_bytes, b"\r\n",
    ]
    if route.forward_client_cert is not None and request.client_cert is not None:
        xfcc = xfcc_value(request.client_cert, ex.connection.server_uri,
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


class Tunnel:
    """Bytes both ways after a 101, with flow control both ways."""

    __slots__ = ("client", "upstream")

    def __init__(self, ex: Exchange, conn, rest: bytes) -> None:
        self.client = ex.connection
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
