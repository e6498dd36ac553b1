"""A small asynchronous HTTP/1.1 GET client for key documents.

JWKS and OpenID discovery documents are fetched on the gateway's own event
loop, so the client must never block: it connects with asyncio streams,
parses the answer with httptools and gives up as a whole after ``timeout``.
It is deliberately narrow. One request per connection, no redirects (a key
document that moved is found again through discovery, never by following a
``Location`` the network handed us), no content codings, only ``200`` counts,
and the body is capped at ``max_size`` bytes. ``https://`` is verified
against the system CAs with the host name checked, unless the caller passes
its own ``ssl_context``.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any
from urllib.parse import urlsplit

import httptools
import orjson

__all__ = ["DEFAULT_TIMEOUT", "MAX_DOCUMENT", "FetchError", "fetch", "fetch_json"]

DEFAULT_TIMEOUT = 10.0
MAX_DOCUMENT = 1024 * 1024
MAX_HEAD = 64 * 1024
READ_SIZE = 64 * 1024

_system_context: ssl.SSLContext | None = None


class FetchError(Exception):
    """A fetch that gave no usable document.

    ``kind`` is a short, stable name for the failure, fit for a log line or a
    metric label: ``bad_url``, ``connect``, ``tls``, ``timeout``, ``status``,
    ``bad_response``, ``too_large``, ``not_json``; the key-set layer adds its
    own (``not_jwks``, ``no_keys``, ``discovery``, ``file``).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


async def fetch_json(
    url: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_size: int = MAX_DOCUMENT,
    ssl_context: ssl.SSLContext | None = None,
) -> Any:
    """GET ``url`` and decode its body as JSON."""
    body = await fetch(url, timeout=timeout, max_size=max_size, ssl_context=ssl_context)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FetchError(
            "not_json", f"{url} answered with a body that is not JSON: {exc}"
        ) from None


async def fetch(
    url: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_size: int = MAX_DOCUMENT,
    ssl_context: ssl.SSLContext | None = None,
) -> bytes:
    """GET ``url``; return the body of a ``200`` answer or raise ``FetchError``."""
    host, port, tls, request = _request(url)
    try:
        async with asyncio.timeout(timeout):
            if tls and ssl_context is None:
                ssl_context = await _system_ssl_context()
            return await _exchange(host, port, ssl_context if tls else None, request, max_size)
    except TimeoutError:
        raise FetchError(
            "timeout", f"{url} gave no complete answer within {timeout:g}s"
        ) from None
    except ssl.SSLError as exc:
        raise FetchError("tls", f"TLS with {url} failed: {exc}") from None
    except OSError as exc:
        raise FetchError("connect", f"cannot reach {url}: {exc.strerror or exc}") from None
    except FetchError as exc:
        raise FetchError(exc.kind, f"{url}: {exc}") from None


def _request(url: str) -> tuple[str, int, bool, bytes]:
    if any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in url):
        raise FetchError("bad_url", f"{url!r} holds spaces, control or non-ASCII characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError("bad_url", f"{url!r} is not an http:// or https:// URL")
    try:
        port = parts.port
    except ValueError:
        raise FetchError("bad_url", f"{url!r} has an invalid port") from None
    if not parts.hostname:
        raise FetchError("bad_url", f"{url!r} names no host")
    if parts.username is not None or parts.password is not None:
        raise FetchError("bad_url", f"{url!r} carries credentials; they are never sent")
    tls = parts.scheme == "https"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = (
        f"GET {target} HTTP/1.1\r\n"
        f"Host: {parts.netloc}\r\n"
        "Accept: application/json, application/jwk-set+json\r\n"
        "Accept-Encoding: identity\r\n"
        "User-Agent: fastgw\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    return parts.hostname, port or (443 if tls else 80), tls, request


async def _system_ssl_context() -> ssl.SSLContext:
    global _system_context
    if _system_context is None:
        # Loading the system CA bundle reads files: keep it off the loop.
        _system_context = await asyncio.to_thread(ssl.create_default_context)
    return _system_context


async def _exchange(
    host: str, port: int, ssl_context: ssl.SSLContext | None, request: bytes, max_size: int
) -> bytes:
    reader, writer = await asyncio.open_connection(
        host, port, ssl=ssl_context, server_hostname=host if ssl_context else None
    )
    try:
        writer.write(request)
        response = _Response(max_size)
        parser = httptools.HttpResponseParser(response)
        response.parser = parser
        received = 0
        while not response.complete:
            data = await reader.read(READ_SIZE)
            if not data:
                response.eof()
                break
            received += len(data)
            if received > max_size + MAX_HEAD:
                raise FetchError("too_large", f"answer is larger than {max_size} bytes")
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                raise FetchError("bad_response", "unexpected protocol upgrade") from None
            except httptools.HttpParserError as exc:
                if isinstance(exc.__context__, FetchError):
                    raise exc.__context__ from None
                raise FetchError("bad_response", f"malformed HTTP response: {exc}") from None
        return bytes(response.body)
    finally:
        writer.transport.abort()


class _Response:
    """httptools callbacks collecting one bounded ``200`` answer."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.parser: httptools.HttpResponseParser | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.head_done = False
        self.framed = False
        self.interim = False
        self.complete = False

    def on_message_begin(self) -> None:
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value.strip()))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.interim = True
            return
        if self.parser.get_http_version() not in ("1.0", "1.1"):
            raise FetchError("bad_response", "unsupported HTTP version")
        if status != 200:
            raise FetchError("status", f"answered HTTP {status}, not 200")
        lengths = [v for n, v in self.headers if n == b"content-length"]
        codings = [v for n, v in self.headers if n == b"transfer-encoding"]
        if codings and (lengths or len(codings) > 1 or codings[0].lower() != b"chunked"):
            raise FetchError("bad_response", "ambiguous or unsupported framing")
        if len(set(lengths)) > 1:
            raise FetchError("bad_response", "conflicting Content-Length headers")
        if lengths and int(lengths[0]) > self.max_size:
            raise FetchError("too_large", f"announces {int(lengths[0])} bytes, the limit is "
                                          f"{self.max_size}")
        for name, value in self.headers:
            if name == b"content-encoding" and value.lower() not in (b"", b"identity"):
                raise FetchError("bad_response", f"unsupported Content-Encoding {value!r}")
        self.framed = bool(lengths or codings)
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        if len(self.body) + len(body) > self.max_size:
            raise FetchError("too_large", f"answer is larger than {self.max_size} bytes")
        self.body += body

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.complete = True

    def eof(self) -> None:
        if not self.head_done:
            raise FetchError("bad_response", "connection closed before a complete response head")
        if self.framed:
            raise FetchError("bad_response", "connection closed in the middle of the body")
        self.complete = True  # a close-delimited body ends here
