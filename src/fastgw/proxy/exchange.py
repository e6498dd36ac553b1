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
import time
from collections import deque

from .._core import active
from ..http.headers import Headers
from ..http.status import error_response, status_line
from ..logs import rfc3339_ms
from ..metrics import method_index
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
    """A check's verdict against a request: the status and what goes with it.

    With a ``body`` it is a whole answer of the check's own (a CORS preflight,
    a Python filter's response) instead of the gateway's JSON error; with a
    ``forward`` path the request is routed again there instead (a fallback).
    """

    __slots__ = ("body", "error", "forward", "headers", "status")

    def __init__(self, status: int, error: str | None = None, headers=(),
                 body: bytes | None = None, *, forward: str | None = None) -> None:
        self.status = status
        self.error = error
        self.headers = headers
        self.body = body
        self.forward = forward

    def answer(self, ex: Exchange) -> bool:
        """Answer the request; True when it went on to another route instead."""
        if self.forward is not None:
            ex.forward(self.forward)
            return True
        if self.body is None:
            ex.respond_error(self.status, self.error, self.headers)
        else:
            ex.respond(self.status, self.headers, self.body)
        return False


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
        "backoff",
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
        self.backoff: asyncio.TimerHandle | None = None  # a retry's wait (Retry's backoff)
        self.started_at = 0.0
        self._finished = False
        self._resolved = True
        self._head: tuple[bytes, bytes | None, bytes] | None = None
        self._instance = None
        self._tried = None
        self._sent = False
        self._attempts = 0
        self._last_error = _NO_INSTANCE
        self._attempt_began = 0.0

    @classmethod
    def rejected(cls, connection, snapshot, status: int, error: str | None):
        """A request answered in its turn with an error, after which the connection closes."""
        ex = cls(connection, snapshot, None, False)
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
            hit = snapshot.router.match(request.method, request.host, request.path, None,
                                        request)
            if hit is None:
                cors = snapshot.unrouted_cors
                if cors is None or not cors.answer_unrouted(self):
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
            if not verdict.answer(self):
                self.finish()
            return
        for f in self.route.request_filters:
            answer = f.on_request(self.request)
            if answer is not None:
                # The filter answers itself (a redirect, a size refused).
                self.respond_error(*answer)
                self.finish()
                return
        if self.preset is not None:
            self.respond_error(*self.preset)
            self.finish()
            return
        self._head = self.request_head()
        self._attempt()

    async def _check_later(self, verdict, i: int) -> None:
        try:
            verdict = await verdict
            if self.connection.closing:
                self.finish()
            elif verdict is not None:
                if not verdict.answer(self):
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
        first_line, host_line, rest = self._head
        conn.begin(self)
        self.upstream = conn
        if self.connection.write_paused:
            conn.transport.pause_reading()
        conn.transport.write(b"".join((first_line, host_line or conn.pool.host_line, rest)))
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
            return
        retry = self.route.retry
        if retry is not None and retry.waits is not None:
            waits = retry.waits
            wait = waits[min(self._attempts, len(waits)) - 1]
            self.backoff = self.connection.loop.call_later(wait, self._after_backoff)
        else:
            self._attempt()

    def _after_backoff(self) -> None:
        self.backoff = None
        try:
            if self.connection.closing:
                self.finish()
            else:
                self._attempt()
        except Exception:
            self._failed_inside()

    def _give_up(self, error: UpstreamError) -> None:
        breaker = self.route.breaker
        if breaker is not None and self.preset is None and not self.response_started:
            breaker.record(True)
            if breaker.fallback is not None:
                self.forward(breaker.fallback)
                return
        if self.preset is not None:
            if not self.response_started:
                self.respond_error(*self.preset)
        elif not self.response_started:
            tried = self._tried
            log.warning("request %s route %s: %s (%s)", self.request.request_id, self.route.id,
                        error.reason, tried.name if tried else self.route.service.name)
            python = self.route.python
            if python is None or not python.failed(self, error):
                self.respond_error(error.status)
        self.finish()

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self.task = None
        connection = self.connection
        elapsed = connection.loop.time() - self.started_at
        route = self.route
        request = self.request
        stats = route.stats if route is not None else self.snapshot.unrouted
        stats.count(method_index(request.method) if request is not None else 0, self.status,
                    elapsed)
        if connection.access_log is not None:
            connection.access_log.write(access_entry(self, elapsed))
        if not connection.closing:
            connection.exchange_done(self)

    def _let_go(self) -> None:
        """End the attempt under way, if any, dropping its upstream connection."""
        conn = self.upstream
        if conn is not None and not self._resolved:
            self._resolved = True
            self.upstream = None
            conn.abandon()
            self._attempt_done()
            self._instance.pool.release(conn)

    def forward(self, path: str) -> None:
        """Route the request again, to ``path`` (``forward:`` in a fallback): once only."""
        request = self.request
        snapshot = self.snapshot
        hit = None
        if not request.route_id.startswith("forward:"):
            request.path = path
            hit = snapshot.router.match(request.method, request.host, path, None, request)
        if hit is None:
            self.respond_error(503, "no_fallback")
            self.finish()
            return
        route = self.route = snapshot.routes[hit[0]]
        request.route_id = "forward:" + route.id
        request.path_vars = hit[1]
        self._tried = None
        self._attempts = 0
        self._check(0)

    def _failed_inside(self) -> None:
        log.exception("request %s failed inside the gateway",
                      self.request.request_id if self.request is not None else "-")
        if self._finished:
            return
        # An attempt under way ends here: no later response may reach this client.
        self._let_go()
        if not self.response_started:
            self.keep_alive = False
            self.respond_error(500)
        else:
            self.connection.abort()
        self.finish()

    def client_gone(self) -> None:
        # A check or a connect still under way finds the connection closing when
        # it is done, and ends there; one on an upstream connection ends now, and
        # so does a wait before a retry.
        if self.backoff is not None:
            self.backoff.cancel()
            self.backoff = None
            self.finish()
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

    def respond(self, status: int, headers, body: bytes) -> None:
        """An answer of the gateway's own: HEADERS as (name, value) pairs, and BODY."""
        self._answering(status)
        request = self.request
        parts = [status_line(status)]
        for name, value in headers:
            parts.append(f"{name}: {value}\r\n".encode("latin-1"))
        if status not in NO_BODY_STATUS:
            parts.append(b"Content-Length: %d\r\n" % len(body))
        parts += (self.extra_headers, b"X-Request-Id: ", request.request_id_bytes, b"\r\n")
        if not self.keep_alive:
            parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        if self.method != "HEAD" and status not in NO_BODY_STATUS:
            parts.append(body)
        data = b"".join(parts)
        self.response_bytes += len(data)
        self.connection.write(data)

    def _answering(self, status: int) -> None:
        self.status = status
        self.response_started = True
        if (self.has_body and not self.body_done) or self.connection.draining:
            self.keep_alive = False

    def respond_error(self, status: int, error: str | None = None, headers=()) -> None:
        self._answering(status)
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

    # -- the upstream request -----------------------------------------------------------

    def request_head(self) -> tuple[bytes, bytes | None, bytes]:
        """The request line, the Host line (None: the instance's) and the other headers."""
        request = self.request
        route = self.route
        connection = self.connection
        headers = request.headers
        if not route.token_relay:
            headers.remove(b"authorization")
        if connection.trusted:
            ip = request.client_ip
            xff = ", ".join([*request.forwarded_for, ip]) if request.forwarded_for else ip
            forwarded = (f"X-Forwarded-For: {xff}\r\n"
                         f"X-Forwarded-Proto: {request.scheme}\r\n").encode("latin-1")
        else:
            forwarded = connection.forwarded
        parts = [
            encode_fields(headers.fields), forwarded,
            b"X-Forwarded-Host: ", request.host.encode("latin-1"),
            b"\r\nX-Request-Id: ", request.request_id_bytes, b"\r\n",
        ]
        if route.forward_client_cert is not None and request.client_cert is not None:
            xfcc = xfcc_value(request.client_cert, connection.server_uri,
                              fields=route.forward_client_cert)
            parts.append(f"X-Forwarded-Client-Cert: {xfcc}\r\n".encode("latin-1"))
        if self.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        elif self.length is not None:
            parts.append(b"Content-Length: %d\r\n" % self.length)
        if self.websocket:
            parts.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
        parts.append(b"\r\n")
        line = f"{request.method} {request.target} HTTP/1.1\r\n".encode("latin-1")
        host = route.host_header  # "": the client's own
        if host is not None:
            host = f"Host: {host or request.host}\r\n".encode("latin-1")
        return line, host, b"".join(parts)

    # -- relaying the upstream response (callbacks of UpstreamConnection) ---------------

    def pause_upstream(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_upstream(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()

    def upstream_head(self, status: int, kept: list, chunked: bool, length: int | None) -> None:
        """The response head: ``kept`` holds the upstream's end-to-end fields."""
        route = self.route
        if route.response_hooks:
            retry = route.retry
            if retry is not None and retry.wants(status, self.method, self.has_body,
                                                 self._attempts):
                # Nothing of this answer has reached the client: ask again.
                self.upstream.abandon()
                self._resolve(UpstreamError(status, f"answered {status}", retryable=True))
                return
            breaker = route.breaker
            if breaker is not None:
                failed = status in breaker.statuses
                breaker.record(failed)
                if failed and breaker.fallback is not None:
                    self._let_go()
                    self.forward(breaker.fallback)
                    return
        self.status = status
        self.response_started = True
        if not self.body_done:
            # The upstream answered before the whole body arrived; the rest of it
            # must never be read as a next request.
            self.keep_alive = False
        if self.connection.draining:
            self.keep_alive = False
        request = self.request
        if route.response_hooks and route.response_filters:
            view = Headers.from_raw(kept)
            for f in route.response_filters:
                changed = f.on_response(request, view)
                if changed is not None:
                    status = self.status = changed
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


def access_entry(ex: Exchange, elapsed: float) -> dict:
    request = ex.request
    route = ex.route
    return {
        "ts": rfc3339_ms(time.time()),
        "request_id": request.request_id if request else None,
        "client_ip": ex.connection.client_ip,
        "method": request.method if request is not None else "",
        "path": request.path if request else None,
        "route": route.id if route is not None else "",
        "status": ex.status,
        "bytes": ex.response_bytes,
        "duration_ms": round(elapsed * 1000, 3),
    }


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
