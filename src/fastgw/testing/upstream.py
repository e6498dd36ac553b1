"""A real HTTP/1.1 upstream that records every request it receives.

It serves on a loopback port from a background thread with its own event
loop, so it works from plain (sync) pytest tests::

    with RecordingUpstream() as up:
        ...  # point a route at up.url, send requests through the gateway
        assert up.requests[0].path == "/orders/42"

What it answers depends on the request path. The first path segment that
names an action picks it, and the segments after it are its arguments, so
``/slow/2`` and ``/api/v1/slow/2`` behave alike:

==================  =========================================================
``/bytes/N``        200 with N bytes of a fixed pattern (see ``pattern_bytes``);
                    ``?chunked=1`` streams it chunked, ``?chunk=SIZE`` sets the
                    write size, ``?delay=SECONDS`` pauses between writes
``/slow/SECONDS``   waits, then answers like echo
``/status/CODE``    answers with that status and an echo body
``/reset``          reads the request, then resets the connection (TCP RST)
``/truncate/N``     sends a head announcing 2N bytes, N of them, then resets
``/close``          reads the request, then closes without answering
anything else       echo: 200 with a JSON description of the request
==================  =========================================================

``?header=Name:Value`` (repeatable) adds a header to any answer. Keywords
registered with ``set_raw_response`` answer with exactly the given bytes and
close, to test how a gateway treats a broken upstream.

Requests are parsed strictly: a head this server cannot frame without
guessing (both Content-Length and Transfer-Encoding, bare CR or LF, obs-fold,
NUL, ...) gets a 400, is kept in ``rejected`` and never in ``requests``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl

from ._background import BackgroundServer

__all__ = ["PATTERN", "RecordedRequest", "RecordingUpstream", "pattern_bytes"]

PATTERN = bytes(range(251))
"""The download pattern: byte ``i`` of a ``/bytes/N`` body is ``i % 251``."""

MAX_HEAD = 256 * 1024
ECHO_BODY_LIMIT = 64 * 1024
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP/(\d\.\d)")


def pattern_bytes(size: int, offset: int = 0) -> bytes:
    """``size`` bytes of the download pattern, starting at ``offset``."""
    start = offset % len(PATTERN)
    repeats = (start + size) // len(PATTERN) + 1
    return (PATTERN * repeats)[start : start + size]


@dataclass
class RecordedRequest:
    """One request as the upstream received it."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    chunked: bool = False
    connection: int = 0
    """Sequence number of the TCP connection it arrived on (1, 2, ...)."""
    arrived: float = field(default_factory=time.monotonic)
    """``time.monotonic()`` when its head was read."""

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

    def header_values(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        values = self.header_values(name)
        return values[0] if values else None

    def has_header(self, name: str) -> bool:
        return bool(self.header_values(name))

    def describe(self) -> dict:
        """The JSON-ready description sent back by echo."""
        described = {
            "method": self.method,
            "target": self.target,
            "version": self.version,
            "headers": [list(h) for h in self.headers],
            "trailers": [list(h) for h in self.trailers],
            "chunked": self.chunked,
            "connection": self.connection,
            "body_length": len(self.body),
            "body_sha256": hashlib.sha256(self.body).hexdigest(),
        }
        if len(self.body) <= ECHO_BODY_LIMIT:
            described["body"] = self.body.decode("latin-1")
        return described


class BadRequest(Exception):
    """A request this server refuses to frame."""


class RecordingUpstream(BackgroundServer):
    """An HTTP/1.1 server on a loopback port that records what it receives.

    ``requests`` holds every complete request in arrival order, ``aborted``
    those whose head arrived but whose body never completed, and ``rejected``
    the raw bytes of heads it could not parse. All three are safe to read from
    the test thread; ``wait_for_requests`` waits for a request in flight.
    """

    thread_name = "recording-upstream"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.requests: list[RecordedRequest] = []
        self.aborted: list[RecordedRequest] = []
        self.rejected: list[bytes] = []
        self.connections = 0
        self._receiving = 0
        self._raw_responses: dict[str, bytes] = {}
        self._changed = threading.Condition()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


    def clear(self) -> None:
        """Forget everything recorded so far."""
        with self._changed:
            self.requests.clear()
            self.aborted.clear()
            self.rejected.clear()
            self.connections = 0

    def set_raw_response(self, keyword: str, data: bytes) -> None:
        """Answer any request whose path holds segment ``keyword`` with ``data``, then close."""
        self._raw_responses[keyword] = data

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Wait until ``count`` complete requests were recorded; return them all."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"upstream received {len(self.requests)} requests, expected {count}"
                    )
                self._changed.wait(remaining)
            return list(self.requests)

    def settle(self, timeout: float = 5.0) -> bool:
        """Wait until no request body is half received (so a request being
        aborted lands in ``aborted`` now, not after the next ``clear``)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._receiving:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    # -- serving (runs on the upstream's own loop) --

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._serve_connection, self.host, self.port, limit=MAX_HEAD
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    def _count_receiving(self, change: int) -> None:
        with self._changed:
            self._receiving += change
            self._changed.notify_all()

    def _record(self, records: list, item) -> None:
        with self._changed:
            records.append(item)
            self._changed.notify_all()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with self._changed:
            self.connections += 1
            connection = self.connections
        self._writers.add(writer)
        try:
            while await self._serve_request(reader, writer, connection):
                pass
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve_request(self, reader, writer, connection: int) -> bool:
        """Serve one request; True when the connection stays open for another."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                self._record(self.rejected, exc.partial)
            return False
        except asyncio.LimitOverrunError:
            self._record(self.rejected, await reader.read(MAX_HEAD))
            return False
        try:
            request = parse_head(head)
        except BadRequest as exc:
            self._record(self.rejected, head)
            await self._send(writer, 400, {"error": str(exc)}, close=True)
            return False
        request.connection = connection
        if (request.header("expect") or "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._count_receiving(+1)
        try:
            await read_body(reader, request)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            self._record(self.aborted, request)
            return False
        except BadRequest as exc:
            self._record(self.rejected, head)
            await self._send(writer, 400, {"error": str(exc)}, close=True)
            return False
        finally:
            self._count_receiving(-1)
        self._record(self.requests, request)
        return await self._respond(writer, request)

    async def _respond(self, writer, request: RecordedRequest) -> bool:
        keep_alive = wants_keep_alive(request)
        action, args = self._action(request.path)
        query = parse_qsl(request.query)
        options = dict(query)
        extra = [split_header(value) for key, value in query if key == "header" and ":" in value]
        try:
            if action in self._raw_responses:
                writer.write(self._raw_responses[action])
                await writer.drain()
                return False
            if action == "reset":
                reset(writer)
                return False
            if action == "close":
                return False
            if action == "truncate":
                await self._truncate(writer, int(args[0]))
                return False
            if action == "bytes":
                return await self._send_bytes(writer, request, int(args[0]), options, extra)
            status = 200
            if action == "slow":
                await asyncio.sleep(float(args[0]))
            elif action == "status":
                status = int(args[0])
        except (IndexError, ValueError):
            status = 400
        await self._send(
            writer,
            status,
            request.describe(),
            extra,
            close=not keep_alive,
            head_only=request.method == "HEAD",
        )
        return keep_alive

    def _action(self, path: str) -> tuple[str, list[str]]:
        segments = path.split("/")
        for i, segment in enumerate(segments):
            if segment in ACTIONS or segment in self._raw_responses:
                return segment, segments[i + 1 :]
        return "echo", []

    async def _send(self, writer, status, payload, extra=(), *, close=False, head_only=False):
        body = json.dumps(payload).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        if status in (204, 304) or status < 200:
            body, headers = b"", []
        if head_only:
            body = b""
        writer.write(self._head(status, headers + list(extra), close) + body)
        await writer.drain()

    async def _send_bytes(self, writer, request, size: int, options: dict, extra) -> bool:
        chunked = options.get("chunked") == "1"
        piece = int(options.get("chunk", 64 * 1024))
        delay = float(options.get("delay", 0))
        framing = ("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(size))
        headers = [("Content-Type", "application/octet-stream"), framing, *extra]
        keep_alive = wants_keep_alive(request)
        writer.write(self._head(200, headers, not keep_alive))
        if request.method == "HEAD":
            await writer.drain()
            return keep_alive
        sent = 0
        while sent < size:
            data = pattern_bytes(min(piece, size - sent), sent)
            writer.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            sent += len(data)
            await writer.drain()
            if delay:
                await asyncio.sleep(delay)
        if chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        return keep_alive

    async def _truncate(self, writer, size: int) -> None:
        headers = [("Content-Type", "application/octet-stream"), ("Content-Length", str(2 * size))]
        writer.write(self._head(200, headers, close=False) + pattern_bytes(size))
        await writer.drain()
        await asyncio.sleep(0.2)
        reset(writer)

    def _head(self, status: int, headers, close: bool) -> bytes:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [f"HTTP/1.1 {status} {reason}", f"X-Upstream-Port: {self.port}"]
        lines += [f"{name}: {value}" for name, value in headers]
        if close:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


ACTIONS = {"bytes", "slow", "status", "reset", "truncate", "close"}


def parse_head(head: bytes) -> RecordedRequest:
    """Parse a request head (ending in CRLF CRLF) strictly."""
    if b"\0" in head:
        raise BadRequest("NUL in head")
    lines = head[:-4].split(b"\r\n")
    if any(b"\r" in line or b"\n" in line for line in lines):
        raise BadRequest("bare CR or LF")
    match = REQUEST_LINE.fullmatch(lines[0])
    if not match:
        raise BadRequest("bad request line")
    method, target, version = (part.decode("latin-1") for part in match.groups())
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not TOKEN.fullmatch(name):
            raise BadRequest("bad header line (obs-fold, space before colon or no colon)")
        headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    return RecordedRequest(method, target, version, headers)


async def read_body(reader: asyncio.StreamReader, request: RecordedRequest) -> None:
    """Read the body the head announces, refusing ambiguous framing."""
    lengths = request.header_values("content-length")
    codings = request.header_values("transfer-encoding")
    if codings:
        if lengths:
            raise BadRequest("both Content-Length and Transfer-Encoding")
        if len(codings) > 1 or codings[0].lower() != "chunked" or request.version != "1.1":
            raise BadRequest("unsupported Transfer-Encoding")
        request.chunked = True
        request.body, request.trailers = await read_chunked(reader)
    elif lengths:
        if len(lengths) > 1 or not lengths[0].isdigit():
            raise BadRequest("bad Content-Length")
        request.body = await reader.readexactly(int(lengths[0]))


async def read_chunked(reader: asyncio.StreamReader) -> tuple[bytes, list[tuple[str, str]]]:
    body = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line[:-2].split(b";", 1)[0].strip(b" \t")
        if not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", size_text):
            raise BadRequest("bad chunk size")
        size = int(size_text, 16)
        if size == 0:
            break
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise BadRequest("chunk not followed by CRLF")
    trailers = []
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line[:-2].partition(b":")
        trailers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
    return bytes(body), trailers


def split_header(text: str) -> tuple[str, str]:
    name, _, value = text.partition(":")
    return name.strip(), value.strip()


def wants_keep_alive(request: RecordedRequest) -> bool:
    tokens = {t.strip().lower() for v in request.header_values("connection") for t in v.split(",")}
    if request.version == "1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
