"""The HTTP/1.1 parsers on httptools: the Python twin of ``_h1_c``.

A parser hands its protocol whole heads. It calls ``on_message_begin()``
(a request parser only), then ``on_headers_complete()`` once the head is in
``url``, ``headers``, ``method``, ``version`` and ``status``, then
``on_body(chunk)`` and ``on_message_complete()``. Fields after the head (a chunked body's trailers)
are dropped. ``feed`` raises ``Upgrade``, ``HeadTooLarge`` or ``BadMessage``
(``fastgw.http.parsing``), or what a callback raised.
"""

from __future__ import annotations

import sys

import httptools

from ..http.parsing import BadMessage, HeadTooLarge, Upgrade


class _Parser:
    __slots__ = ("_header_bytes", "_in_head", "_parser", "_protocol", "_url", "headers",
                 "max_header_bytes", "max_headers", "max_url", "method", "status", "upgrade",
                 "url", "url_size", "version")

    def __init__(self, protocol) -> None:
        self._protocol = protocol
        self.max_url = self.max_header_bytes = self.max_headers = sys.maxsize
        self._url: list[bytes] = []
        self.url = b""
        self.url_size = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._in_head = False
        self.method = ""
        self.version = ""
        self.status = 0
        self.upgrade = False

    def limit(self, max_url: int, max_header_bytes: int, max_headers: int) -> None:
        """Limits for the head being parsed, and every later one."""
        self.max_url = max_url
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers

    def keep_alive(self) -> bool:
        return self._parser.should_keep_alive()

    def feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            raise Upgrade(exc.args[0]) from None
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if cause is None:
                raise BadMessage(str(exc)) from None
            raise cause from None
        except httptools.HttpParserError as exc:
            raise BadMessage(str(exc)) from None

    # -- httptools callbacks --------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._url = []
        self.url_size = 0
        self.headers = []
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url_size += len(url)
        if self.url_size > self.max_url:
            raise HeadTooLarge(414)
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return
        self._header_bytes += len(name) + len(value) + 4
        self.headers.append((name, value))
        if self._header_bytes > self.max_header_bytes or len(self.headers) > self.max_headers:
            raise HeadTooLarge(431)

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        self.url = b"".join(self._url)
        self._url = []
        self.version = parser.get_http_version()
        self.upgrade = parser.should_upgrade()
        self._head(parser)
        self._protocol.on_headers_complete()
        # An idle connection keeps nothing of its last head.
        self.headers = None
        self.url = b""

    def on_body(self, body: bytes) -> None:
        self._protocol.on_body(body)

    def on_message_complete(self) -> None:
        self._protocol.on_message_complete()


class RequestParser(_Parser):
    __slots__ = ()

    def __init__(self, protocol) -> None:
        super().__init__(protocol)
        self._parser = httptools.HttpRequestParser(self)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._protocol.on_message_begin()

    def _head(self, parser) -> None:
        self.method = parser.get_method().decode("ascii")


class ResponseParser(_Parser):
    __slots__ = ()

    def __init__(self, protocol) -> None:
        super().__init__(protocol)
        self._parser = httptools.HttpResponseParser(self)

    def _head(self, parser) -> None:
        self.status = parser.get_status_code()
