"""Message heads on the request path: the request's header scan, the upstream
response's, header fields encoded for the wire, request ids.

The request scan takes the fields in the order httptools reported them and,
in one pass, sets aside what the gateway never forwards as the client sent
it (framing and hop-by-hop fields, the identity it asserts itself, what it
sets from the socket), reads what it needs from those, and checks the rules
that need no more than the fields (one Host, a sane Host, one
Transfer-Encoding field). The response scan drops the upstream's hop-by-hop
fields, and those it named in Connection, and checks its framing.

Fields are kept as ``(lower-cased name, name, value)`` bytes triples, the
form ``fastgw.http.headers.Headers`` holds.
"""

from __future__ import annotations

import os
import re

HOP_BY_HOP = (
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
    b"proxy-authorization", b"te", b"trailer", b"transfer-encoding", b"upgrade",
)
# Never forwarded as the client sent them.
REQUEST_SPECIAL = frozenset((
    *HOP_BY_HOP, b"host", b"content-length", b"expect", b"x-request-id",
    b"x-auth-subject", b"x-auth-scopes",
    b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded",
    b"x-forwarded-client-cert", b"client-cert", b"client-cert-chain",
))
RESPONSE_SPECIAL = frozenset((*HOP_BY_HOP, b"content-length"))

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_BAD_HOST = re.compile(rb"[ \t/\\@]")
_PERSISTENCE = frozenset((b"close", b"keep-alive", b""))

# What scan_request found wrong, as the error names clients see.
MISSING_HOST = "missing_host"
DUPLICATE_HOST = "duplicate_host"
BAD_HOST = "bad_host"
BAD_TRANSFER_ENCODING = "bad_transfer_encoding"
AMBIGUOUS_FRAMING = "ambiguous upstream framing"


class RequestHead:
    """What ``scan_request`` found in a request's fields."""

    __slots__ = ("connection", "error", "expect", "fields", "forwarded", "host", "length",
                 "request_id", "te", "upgrade")

    def __init__(self) -> None:
        self.fields: list[tuple[bytes, bytes, bytes]] = []  # what may be forwarded
        self.host: bytes = b""
        self.te: bytes | None = None  # the one Transfer-Encoding value
        self.length: int | None = None  # Content-Length (httptools checked its syntax)
        self.connection: set[bytes] | None = None  # names listed in Connection, lower-cased
        self.expect: bytes | None = None
        self.upgrade: bytes | None = None
        self.request_id: bytes | None = None  # the caller's X-Request-Id, when well-formed
        self.forwarded: list[str] = []  # the caller's X-Forwarded-For values
        self.error: str | None = None


def scan_request(raw: list[tuple[bytes, bytes]]) -> RequestHead:
    head = RequestHead()
    fields = head.fields
    hosts = 0
    for name, value in raw:
        low = name.lower()
        if low not in REQUEST_SPECIAL:
            fields.append((low, name, value))
        elif low == b"host":
            hosts += 1
            head.host = value
        elif low == b"transfer-encoding":
            if head.te is not None:
                head.error = BAD_TRANSFER_ENCODING
                return head
            head.te = value
        elif low == b"content-length":
            head.length = int(value)
        elif low == b"connection":
            head.connection = _listed(value, head.connection)
        elif low == b"x-forwarded-for":
            head.forwarded.append(value.decode("latin-1"))
        elif low == b"expect":
            head.expect = value
        elif low == b"upgrade":
            head.upgrade = value
        elif (low == b"x-request-id" and head.request_id is None
              and _REQUEST_ID.fullmatch(value)):
            head.request_id = value
    if hosts != 1:
        head.error = MISSING_HOST if hosts == 0 else DUPLICATE_HOST
    elif not head.host or _BAD_HOST.search(head.host):
        head.error = BAD_HOST
    elif head.connection:
        listed = head.connection - _PERSISTENCE
        if listed:
            head.fields = [f for f in fields if f[0] not in listed]
    return head


def scan_response(raw: list[tuple[bytes, bytes]], upgrade: bool):
    """``(kept, chunked, length)`` of an upstream response head, or a str saying
    why its framing cannot be trusted. A 101 (UPGRADE) keeps its Upgrade and
    Connection fields: they are its point."""
    chunked = False
    length = None
    listed = None
    kept = []
    for name, value in raw:
        low = name.lower()
        if low not in RESPONSE_SPECIAL:
            kept.append((low, name, value))
        elif low == b"transfer-encoding":
            if chunked or value.strip().lower() != b"chunked":
                return AMBIGUOUS_FRAMING
            chunked = True
        elif low == b"content-length":
            length = int(value)
        elif upgrade:
            kept.append((low, name, value))
        elif low == b"connection":
            listed = _listed(value, listed)
    if chunked and length is not None:
        return AMBIGUOUS_FRAMING
    if listed:
        listed -= _PERSISTENCE
        if listed:
            kept = [f for f in kept if f[0] not in listed]
    return kept, chunked, length


def _listed(value: bytes, into: set[bytes] | None) -> set[bytes]:
    names = {t.strip().lower() for t in value.split(b",")}
    return names if into is None else into | names


def encode_fields(fields: list[tuple[bytes, bytes, bytes]]) -> bytes:
    """Fields as header lines: ``Name: value\\r\\n`` each."""
    return b"".join([b"%s: %s\r\n" % (name, value) for _, name, value in fields])


class RequestIds:
    """Ids unique to this process: a random prefix and a counter, as ASCII bytes."""

    __slots__ = ("_count", "_prefix")

    def __init__(self, prefix: bytes | None = None) -> None:
        self._prefix = prefix if prefix is not None else os.urandom(6).hex().encode()
        self._count = 0

    def next(self) -> bytes:
        self._count += 1
        return b"%s%010x" % (self._prefix, self._count & 0xFFFFFFFFFF)
