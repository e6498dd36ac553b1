"""One keep-alive connection to an upstream instance, and the response it reads.

The response is parsed by the ``h1`` parser (llhttp) and relayed to the client exchange as it
arrives: head, body chunks, end. The end is reported only once the parser has
returned, so the exchange may hand this connection to the next request at
once. A connection goes back to its pool only after a complete, well-framed
response to a completely sent request; anything ambiguous closes it, and so
do bytes after the end of a response, which nobody asked for.
"""

from __future__ import annotations

import asyncio

from .._core import active
from ..http.parsing import Upgrade

scan_response = active("head").scan_response
ResponseParser = active("h1").ResponseParser


class UpstreamError(Exception):
    """A failed exchange with an upstream, with the status the client gets."""

    def __init__(self, status: int, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retryable = retryable


class UpstreamConnection:
    """An asyncio protocol (by its methods: a compiled class cannot derive from
    asyncio.Protocol)."""

    __slots__ = (
        "_completed",
        "_drain_waiter",
        "_response_head_seen",
        "_timeout",
        "_timer",
        "closed",
        "exchange",
        "idle_since",
        "last_read",
        "loop",
        "parser",
        "pool",
        "request_sent",
        "reusable",
        "transport",
        "tunnel",
        "write_paused",
    )

    def __init__(self, pool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.exchange = None
        self._completed = None  # the exchange whose response ended in this read
        self.parser = None
        self.closed = False
        self.write_paused = False
        self._drain_waiter: asyncio.Future | None = None
        self._response_head_seen = False
        self._timer: asyncio.TimerHandle | None = None
        self._timeout = 0.0
        self.request_sent = False
        self.reusable = False
        self.idle_since = 0.0
        self.last_read = 0.0
        self.tunnel = None

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._cancel_timer()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        if self.tunnel is not None:
            self.tunnel.upstream_closed()
            return
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            if self.parser is not None and not self._response_head_seen:
                exchange.upstream_failed(
                    UpstreamError(502, "upstream closed the connection", retryable=True), self
                )
            else:
                # A close-delimited body ends here; any other framing was cut short.
                exchange.upstream_eof(self)
        else:
            self.pool.forget(self)

    def eof_received(self) -> None:
        return None  # the transport closes itself

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.tunnel is not None:
            self.tunnel.client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.tunnel is not None:
            self.tunnel.client.transport.resume_reading()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.from_upstream(data)
            return
        exchange = self.exchange
        if exchange is None:
            # Bytes nobody asked for: this connection can no longer be trusted.
            self.reusable = False
            self.transport.close()
            return
        self.last_read = self.loop.time()
        try:
            self.parser.feed(data)
        except Upgrade as exc:
            self._upgraded(data[exc.offset :])
            return
        except Exception as exc:  # BadMessage, or what a callback raised
            if self._completed is None:
                if type(exc) is not UpstreamError:
                    exc = UpstreamError(502, "malformed upstream response")
                self._fail(exc)
                return
            # Bytes after the end of the response: this connection is not reused.
            self.reusable = False
            self.transport.abort()
        completed = self._completed
        if completed is not None:
            self._completed = None
            completed.upstream_complete(self)
        else:
            exchange.flush()

    # -- the exchange -----------------------------------------------------

    def begin(self, exchange) -> None:
        self.exchange = exchange
        if self.parser is None:
            # llhttp resets itself after each complete message; a fresh parser is
            # only needed after a response that did not end as a message (HEAD).
            self.parser = ResponseParser(self)
        self._response_head_seen = False
        self.request_sent = False
        self.reusable = False

    async def drain(self) -> None:
        if self.write_paused and not self.closed:
            self._drain_waiter = self.loop.create_future()
            await self._drain_waiter
            self._drain_waiter = None

    def request_complete(self, response_timeout: float) -> None:
        """The whole request is written; from now on the response is due.

        One timer per connection, re-armed only when it fires early: reading
        pushes ``last_read`` forward, so the timeout is between reads.
        """
        self.request_sent = True
        if self.exchange is not None:
            self._timeout = response_timeout
            self.last_read = self.loop.time()
            if self._timer is None:
                self._timer = self.loop.call_at(self.last_read + response_timeout,
                                                self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        if self.exchange is None or self.closed or not self.request_sent:
            return
        deadline = self.last_read + self._timeout
        if self.loop.time() < deadline:
            self._timer = self.loop.call_at(deadline, self._timed_out)
            return
        self._fail(UpstreamError(504, "upstream timed out"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, error: UpstreamError) -> None:
        exchange = self.exchange
        self.exchange = None
        self._cancel_timer()
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()
        if exchange is not None:
            exchange.upstream_failed(error, self)

    def abandon(self) -> None:
        """The client went away or the exchange was cut short: never reuse this."""
        self.exchange = None
        self._cancel_timer()
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    # -- parser callbacks -------------------------------------------------

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        parser = self.parser
        if exchange is None:
            raise UpstreamError(502, "upstream sent a response nobody asked for")
        status = parser.status
        headers = parser.headers
        if 100 <= status < 200 and status != 101:
            return  # interim response (103, or a stray 100): not relayed
        self._response_head_seen = True
        scanned = scan_response(headers, status == 101)
        if type(scanned) is str:
            raise UpstreamError(502, scanned)
        if parser.version not in ("1.1", "1.0"):
            raise UpstreamError(502, "unsupported upstream HTTP version")
        kept, chunked, length = scanned
        exchange.upstream_head(status, kept, chunked, length)
        if exchange.method == "HEAD" and self.exchange is exchange:
            # llhttp cannot be told the request was HEAD, so the head is the whole
            # answer; a connection whose head promised a body is not trusted again.
            reusable = length == 0 and parser.keep_alive()
            self.parser = None
            self._finish(reusable=reusable)

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.upstream_body(body)

    def on_message_complete(self) -> None:
        if not self._response_head_seen or self.exchange is None:
            return
        if self.parser.status == 101:
            return  # the upgrade itself is reported by feed right after
        self._finish(reusable=self.request_sent and self.parser.keep_alive())

    def _finish(self, reusable: bool) -> None:
        self._completed = self.exchange
        self.exchange = None
        self.reusable = reusable

    def _upgraded(self, rest: bytes) -> None:
        exchange = self.exchange
        self.exchange = None
        self._cancel_timer()
        if exchange is None or self.parser.status != 101:
            self._fail(UpstreamError(502, "unexpected upstream upgrade"))
            return
        exchange.upstream_switched(self, rest)
