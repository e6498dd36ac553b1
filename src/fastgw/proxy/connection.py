"""The client side of the gateway: one HTTP/1.1 connection from a client.

Theory of operation. The ``h1`` parser (llhttp) parses bytes into requests;
each complete request head becomes an ``Exchange`` queued on the connection. Exchanges run
one at a time, in order (pipelined requests are answered in order), each
started only once the parser has returned, never from inside its callbacks;
while one runs, later heads and bodies are parsed into the queue until the
buffered body bytes or the queue length pass a high-water mark, then reading
pauses.
Every rule llhttp is lenient about is checked here, before anything can
reach an upstream. A rejected request ends the connection whenever its body
could otherwise be read as the next request.

Deadlines: one per connection, kept by the gateway's ``Deadlines``. While a
head is incomplete it is the header deadline (408); while the connection has
nothing to do it is the idle deadline (silent close).
"""

from __future__ import annotations

import asyncio
import logging

from .._core import active
from ..http.headers import Headers
from ..http.parsing import BadMessage, HeadTooLarge, Upgrade
from ..http.request import Request
from ..http.status import error_response
from ..http.target import BadTarget, split_target
from ..tls import client_identity, server_uri
from .client import Client
from .deadlines import RESOLUTION
from .exchange import Exchange

log = logging.getLogger("fastgw.proxy")

scan_request = active("head").scan_request
RequestParser = active("h1").RequestParser

BODY_HIGH_WATER = 256 * 1024
BODY_LOW_WATER = 64 * 1024
MAX_QUEUED = 16

class Rejected(Exception):
    """A request the gateway answers itself; the connection is closed afterwards."""

    def __init__(self, status: int, error: str | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.error = error


class ClientConnection(Client):
    """An asyncio protocol (by its methods: a compiled class cannot derive from
    asyncio.Protocol)."""

    __slots__ = (
        "_deadline",
        "_head_bytes",
        "_in_head",
        "_limits",
        "_next",
        "_running",
        "_timer_kind",
        "active",
        "buffered",
        "client_cert",
        "gateway",
        "last",
        "parser",
        "queue",
        "read_paused",
        "reading",
        "requests",
        "scheme",
        "tick",
        "transport",
        "tunnel",
    )

    def __init__(self, gateway, scheme: str = "http") -> None:
        Client.__init__(self, gateway.loop, gateway.access_log, gateway.request_ids)
        self.gateway = gateway
        self.scheme = scheme
        self.transport: asyncio.Transport | None = None
        self.client_cert = None
        self.parser = RequestParser(self)
        self.read_paused = False
        self.tunnel = None
        self.queue: list = []  # pipelined exchanges waiting their turn, from queue[_next]
        self._next = 0
        self.active = None
        self.reading = None  # the exchange whose body is being parsed
        self.last = None  # the exchange of the latest head
        self.buffered = 0
        self.requests = 0
        self._running = False
        # the request head being parsed
        self._in_head = False
        self._limits = None  # of the snapshot the head being parsed is held to, and the parser
        self._head_bytes = 0
        self.tick = 0  # of the gateway's deadlines this connection is due in; 0 when not
        self._deadline = 0.0
        self._timer_kind = ""

    # -- connection ----------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else "unix"
        self.trusted = self.gateway.is_trusted(self.client_ip)
        if not self.trusted:
            self.forwarded = (f"X-Forwarded-For: {self.client_ip}\r\n"
                              f"X-Forwarded-Proto: {self.scheme}\r\n").encode("latin-1")
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.client_cert = client_identity(
                ssl_object, self.gateway.config.auth.client_cert_subject_from)
            self.server_uri = server_uri(ssl_object)
        self.gateway.connection_opened(self)
        self._arm("head", self.gateway.snapshot.limits.header_timeout)

    def connection_lost(self, exc) -> None:
        self.closing = True
        self._disarm()
        if self.tick:
            self.gateway.deadlines.forget(self)
        self.gateway.connection_closed(self)
        if self.tunnel is not None:
            self.tunnel.client_closed()
        for ex in self.queue[self._next :]:
            ex.client_gone()
        if self.active is not None:
            self.active.client_gone()
        self.queue.clear()
        self._next = 0

    def eof_received(self) -> None:
        return None  # the transport closes itself

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.active is not None:
            self.active.pause_upstream()
        if self.tunnel is not None:
            self.tunnel.pause_upstream()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.active is not None:
            self.active.resume_upstream()
        if self.tunnel is not None:
            self.tunnel.resume_upstream()

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.from_client(data)
            return
        if self.closing or self.parser is None:
            return
        if self.reading is not None and self.reading.upgrade_rest is not None:
            self.reading.upgrade_rest.append(data)
            self._pause_reading()
            return
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed(data)
        except Upgrade as exc:
            self._upgrade(data[exc.offset :])
        except Rejected as exc:
            self.reject(exc.status, exc.error)
        except HeadTooLarge as exc:
            self.reject(exc.status)
        except BadMessage:
            self.reject(400, "malformed_request")
        except Exception:
            log.exception("connection from %s: failed inside the gateway", self.client_ip)
            self.reject(500)
        else:
            if self._in_head:
                limits = self._limits
                if self._head_bytes > limits.max_request_line + limits.max_header_bytes + 4096:
                    self.reject(431 if self.parser.url_size else 414)
        if self.active is None and self._next < len(self.queue):
            self._run_next()

    # -- parser callbacks ----------------------------------------------------

    def on_message_begin(self) -> None:
        limits = self.gateway.snapshot.limits
        if limits is not self._limits:
            self._limits = limits
            self.parser.limit(limits.max_request_line, limits.max_header_bytes,
                              limits.max_headers)
        self._in_head = True
        self._head_bytes = 0
        if self._timer_kind != "head":
            self._arm("head", limits.header_timeout)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        self.requests += 1
        ex = self._exchange()
        self.reading = self.last = ex
        self.queue.append(ex)
        if len(self.queue) - self._next > MAX_QUEUED:
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        ex = self.reading
        ex.body_bytes += len(body)
        if ex.body_bytes > self._limits.max_body:
            raise Rejected(413)
        ex.body.append(body)
        self.buffered += len(body)
        if self.buffered > BODY_HIGH_WATER:
            self._pause_reading()
        ex.wake_body()

    def on_message_complete(self) -> None:
        ex = self.reading
        if ex is None:
            return
        ex.body_done = True
        ex.keep_alive = ex.keep_alive and self.parser.keep_alive()
        ex.wake_body()
        self.reading = None

    # -- building the exchange ---------------------------------------------------

    def _exchange(self) -> Exchange:
        parser = self.parser
        version = parser.version
        if version not in ("1.1", "1.0"):
            raise Rejected(505)
        head = scan_request(parser.headers)
        if head.error is not None:
            raise Rejected(400, head.error)
        te = head.te
        # RFC 9112 section 6.1: chunked, alone, on HTTP/1.1 only.
        if te is not None and (version != "1.1" or te.strip().lower() != b"chunked"):
            raise Rejected(400, "bad_transfer_encoding")
        try:
            path, query = split_target(parser.url)
        except BadTarget as exc:
            raise Rejected(400, str(exc).replace(" ", "_")) from None
        snapshot = self.gateway.snapshot
        length = head.length
        if length is not None and length > snapshot.limits.max_body:
            raise Rejected(413)
        method = parser.method
        has_body = te is not None or bool(length)
        websocket = False
        if parser.upgrade:
            if method == "CONNECT":
                raise Rejected(405, "method_not_allowed")
            if has_body:
                raise Rejected(400, "upgrade_with_body")
            upgrade = head.upgrade
            websocket = (
                upgrade is not None
                and upgrade.strip().lower() == b"websocket"
                and method == "GET"
                and version == "1.1"
            )
        expect = head.expect
        if expect is not None:
            if expect.strip().lower() != b"100-continue":
                raise Rejected(417, "expectation_failed")
            if not has_body:
                expect = None
        request = Request(
            method, path, query, version, Headers.from_raw(head.fields),
            head.host.decode("latin-1"), self.client_ip, self.scheme,
            head.request_id or self.request_ids.next(),
        )
        request.forwarded_for = head.forwarded
        request.sent = parser.headers
        request.client_cert = self.client_cert
        return Exchange(self, snapshot, request, parser.keep_alive() and not websocket,
                        te is not None, length, has_body, expect is not None, websocket)

    def _upgrade(self, rest: bytes) -> None:
        ex = self.last
        if ex is None or not ex.body_done:
            self.reject(400, "malformed_request")
            return
        if ex.websocket:
            # Bytes after the head belong to the tunnel, if the upstream agrees to one.
            self.reading = ex
            ex.upgrade_rest = [rest] if rest else []
            return
        # Any other upgrade (h2c among them) is refused by serving the request as
        # plain HTTP/1.1; it carried no body, so the rest is the next request.
        self.reading = None
        self.parser = RequestParser(self)
        self._limits = None
        if rest:
            self.data_received(rest)

    # -- running exchanges ----------------------------------------------------------

    def _run_next(self) -> None:
        """Start queued exchanges, in order, while none is active. An exchange
        that finishes at once (a 404, a 401) returns here, not deeper."""
        if self._running:
            return
        self._running = True
        queue = self.queue
        try:
            while self.active is None and not self.closing and self._next < len(queue):
                ex = queue[self._next]
                queue[self._next] = None
                self._next += 1
                if self._next == len(queue):
                    queue.clear()
                    self._next = 0
                self.active = ex
                if self.read_paused and len(queue) - self._next <= MAX_QUEUED:
                    self.body_consumed(0)
                ex.start()
        finally:
            self._running = False
        if self.active is None and not self.closing and not self._in_head and not queue:
            self._arm("idle", self.gateway.snapshot.limits.idle_timeout)

    def exchange_done(self, ex) -> None:
        """Called by the active exchange once its response is completely written."""
        self.active = None
        if self.tunnel is not None:
            return
        if self.last is ex:
            self.last = None
        if ex.body:
            for chunk in ex.body:
                self.buffered -= len(chunk)
            ex.body.clear()
        if not ex.keep_alive or not ex.body_done or self.draining:
            self.close()
            return
        self._run_next()

    def body_consumed(self, n: int) -> None:
        self.buffered -= n
        if (self.read_paused and self.buffered < BODY_LOW_WATER
                and len(self.queue) - self._next <= MAX_QUEUED):
            self._resume_reading()

    def write(self, data: bytes) -> None:
        if not self.closing:
            self.transport.write(data)

    def writelines(self, data) -> None:
        if not self.closing:
            self.transport.writelines(data)

    def reject(self, status: int, error: str | None = None) -> None:
        """Answer a bad request, then close: nothing after it is parsed."""
        if self.closing:
            return
        ex = self.reading
        if ex is not None:
            # The head was fine, the body was not (too large, bad chunking).
            self.reading = None
            self.parser = None
            self.closing_after_queue()
            ex.fail_request(status, error)
            return
        if self.active is not None or self.queue:
            # Earlier requests are still being answered; answer this one in its turn.
            self.queue.append(Exchange.rejected(self, self.gateway.snapshot, status, error))
            self.parser = None
            self.closing_after_queue()
            return
        request_id = self.new_request_id()
        self.gateway.log_rejection(self, status, error, request_id)
        self.transport.write(error_response(status, request_id, error=error, close=True))
        self.close()

    def closing_after_queue(self) -> None:
        self._pause_reading()
        self._in_head = False
        self._disarm()

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self._disarm()
            self.transport.close()

    def resume_reading_for_tunnel(self) -> None:
        self.read_paused = False
        self.transport.resume_reading()

    def _pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and not self.closing:
            self.read_paused = False
            self.transport.resume_reading()

    # -- deadlines ------------------------------------------------------------------

    def _arm(self, kind: str, timeout: float) -> None:
        self._timer_kind = kind
        deadline = self._deadline = self.loop.time() + timeout
        tick = self.tick
        if not tick or tick * RESOLUTION > deadline + RESOLUTION:
            # Not watched, or watched for later than this deadline.
            deadlines = self.gateway.deadlines
            if tick:
                deadlines.forget(self)
            deadlines.watch(self, deadline)

    def _disarm(self) -> None:
        self._timer_kind = ""

    def expired(self) -> None:
        """Called by the gateway's deadlines at or after this connection's deadline."""
        if not self._timer_kind or self.closing:
            return
        if self.loop.time() < self._deadline:
            self.gateway.deadlines.watch(self, self._deadline)
            return
        if self._timer_kind == "head" and self.active is None and not self.queue:
            self._disarm()
            if self._in_head or self.requests == 0:
                self.reject(408)
            else:
                self.close()
        elif self._timer_kind == "idle" and self.active is None and not self.queue:
            self.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.closing = True
            self._disarm()
            self.transport.abort()
