"""Malformed and smuggling-shaped requests (RFC 9112): 400, closed, nothing upstream."""

from __future__ import annotations

import pytest

from .support import assert_error, assert_nothing_reached, assert_still_serves

HOST = b"Host: gateway.test\r\n"


def post(headers: bytes, body: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"POST /echo/s HTTP/" + version + b"\r\n" + HOST + headers + b"\r\n" + body


def get(headers: bytes) -> bytes:
    return b"GET /echo/s HTTP/1.1\r\n" + HOST + headers + b"\r\n"


CHUNKED_EMPTY = b"0\r\n\r\n"

# Heads that are wrong before any body byte matters: the gateway must refuse
# them without opening anything towards the upstream.
MALFORMED_HEADS = {
    "content-length-and-chunked": post(
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", CHUNKED_EMPTY
    ),
    "chunked-and-content-length": post(
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", CHUNKED_EMPTY
    ),
    "duplicate-content-length-same": post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
    "duplicate-content-length-different": post(
        b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"
    ),
    "content-length-list": post(b"Content-Length: 5, 5\r\n", b"hello"),
    "content-length-negative": post(b"Content-Length: -1\r\n"),
    "content-length-plus-sign": post(b"Content-Length: +5\r\n", b"hello"),
    "content-length-not-a-number": post(b"Content-Length: 5a\r\n", b"hello"),
    "chunked-twice-in-one-header": post(b"Transfer-Encoding: chunked, chunked\r\n", CHUNKED_EMPTY),
    "chunked-in-two-headers": post(
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", CHUNKED_EMPTY
    ),
    "gzip-then-chunked": post(b"Transfer-Encoding: gzip, chunked\r\n", CHUNKED_EMPTY),
    "chunked-then-identity": post(b"Transfer-Encoding: chunked, identity\r\n", CHUNKED_EMPTY),
    "identity": post(b"Transfer-Encoding: identity\r\n"),
    "xchunked": post(b"Transfer-Encoding: xchunked\r\n", CHUNKED_EMPTY),
    "chunked-with-vertical-tab": post(b"Transfer-Encoding:\x0bchunked\r\n", CHUNKED_EMPTY),
    "transfer-encoding-on-http-1.0": post(
        b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n", version=b"1.0"
    ),
    "space-before-colon": post(b"Transfer-Encoding : chunked\r\n", CHUNKED_EMPTY),
    "obs-fold-space": get(b"X-Folded: a\r\n b\r\n"),
    "obs-fold-tab": get(b"X-Folded: a\r\n\tb\r\n"),
    "whitespace-before-first-header": b"GET /echo/s HTTP/1.1\r\n " + HOST + b"\r\n",
    "bare-lf-in-headers": get(b"X-A: a\nX-B: b\r\n"),
    "bare-lf-everywhere": b"GET /echo/s HTTP/1.1\nHost: gateway.test\nX-A: a\n\n",
    "bare-cr-in-headers": get(b"X-A: a\rX-B: b\r\n"),
    "nul-in-header-value": get(b"X-A: a\x00b\r\n"),
    "nul-in-header-name": get(b"X-\x00A: b\r\n"),
    "space-in-header-name": get(b"X A: b\r\n"),
    "header-without-colon": get(b"X-No-Colon\r\n"),
    "missing-host": b"GET /echo/s HTTP/1.1\r\nX-A: a\r\n\r\n",
    "two-hosts-different": get(b"Host: other.test\r\n"),
    "two-hosts-same": get(HOST),
    "request-line-extra-token": b"GET /echo/s HTTP/1.1 extra\r\n" + HOST + b"\r\n",
    "request-line-bad-version": b"GET /echo/s HTTP/1.x\r\n" + HOST + b"\r\n",
    "control-character-in-target": b"GET /echo/\x01s HTTP/1.1\r\n" + HOST + b"\r\n",
    "tls-hello-on-plain-port": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(40),
}

# Heads that are fine, followed by a chunked body that is not.
MALFORMED_CHUNKED_BODIES = {
    "chunk-size-not-hex": b"zz\r\nhello\r\n0\r\n\r\n",
    "chunk-size-negative": b"-5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-overlong": b"10000000000000000005\r\nhello\r\n0\r\n\r\n",
    "chunk-size-0x-prefix": b"0x5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-empty": b"\r\nhello\r\n0\r\n\r\n",
    "chunk-data-without-crlf": b"5\r\nhelloXX0\r\n\r\n",
    "chunk-size-bare-lf": b"5\nhello\r\n0\r\n\r\n",
}


def expect_400_and_close(connection) -> None:
    response = connection.read_response()
    assert_error(response, 400)
    assert connection.closed_by_peer(), "connection left open after a 400"
    assert connection.buffer == b"", "more bytes after the 400"


@pytest.mark.parametrize("request_bytes", MALFORMED_HEADS.values(), ids=MALFORMED_HEADS.keys())
def test_malformed_head_is_400_closed_and_nothing_reaches_upstream(
    gateway, upstream, raw, request_bytes
):
    connection = raw(gateway.port)
    connection.send(request_bytes)
    expect_400_and_close(connection)
    assert_nothing_reached(upstream)
    assert_still_serves(raw, gateway.port, upstream)


@pytest.mark.parametrize(
    "body", MALFORMED_CHUNKED_BODIES.values(), ids=MALFORMED_CHUNKED_BODIES.keys()
)
def test_bad_chunked_body_is_400_closed_and_never_served_upstream(gateway, upstream, raw, body):
    connection = raw(gateway.port)
    connection.send(
        b"POST /echo/chunks HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n" + body
    )
    expect_400_and_close(connection)
    # A streaming gateway may have begun forwarding the head; the upstream must
    # never get a complete request out of it.
    assert upstream.requests == []
    upstream.clear()
    assert_still_serves(raw, gateway.port, upstream)


@pytest.mark.parametrize(
    "request_line", [b"GET /echo/s", b"GET /echo/s HTTP/2.0", b"GET /echo/s HTTP/0.9"]
)
def test_unsupported_http_version_is_505_and_closed(gateway, upstream, raw, request_line):
    connection = raw(gateway.port)
    connection.send(request_line + b"\r\n" + HOST + b"\r\n")
    assert_error(connection.read_response(), 505)
    assert connection.closed_by_peer()
    assert_nothing_reached(upstream)


def test_smuggled_request_in_a_rejected_body_is_never_served(gateway, upstream, raw):
    smuggled = b"GET /echo/smuggled HTTP/1.1\r\n" + HOST + b"\r\n"
    connection = raw(gateway.port)
    framing = b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % (5 + len(smuggled))
    connection.send(post(framing, CHUNKED_EMPTY + smuggled))
    expect_400_and_close(connection)
    assert_nothing_reached(upstream)
    assert_still_serves(raw, gateway.port, upstream)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_body_of_a_404_is_not_read_as_a_next_request(gateway, upstream, raw, framing):
    smuggled = b"GET /echo/smuggled HTTP/1.1\r\n" + HOST + b"\r\n"
    if framing == "chunked":
        head = b"Transfer-Encoding: chunked\r\n\r\n"
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(smuggled), smuggled)
    else:
        head = b"Content-Length: %d\r\n\r\n" % len(smuggled)
        body = smuggled
    connection = raw(gateway.port)
    connection.send(b"POST /nowhere HTTP/1.1\r\n" + HOST + head + body)
    assert_error(connection.read_response(), 404)
    try:
        connection.request("GET", "/echo/legit")
        follow_up = connection.read_response()
    except (ConnectionError, BrokenPipeError):
        follow_up = None  # closing after the 404 is a sound choice too
    if follow_up is not None:
        assert follow_up.json()["target"] == "/echo/legit"
    assert all(r.path != "/echo/smuggled" for r in upstream.requests)
    assert upstream.rejected == []


def test_h2c_upgrade_is_ignored_and_not_passed_upstream(gateway, upstream, raw):
    connection = raw(gateway.port)
    response = connection.exchange(
        "GET",
        "/echo/h2c",
        headers=[
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ],
    )
    assert response.status == 200, response
    [received] = upstream.requests
    assert not received.has_header("upgrade")
    assert not received.has_header("http2-settings")
    connection_tokens = ",".join(received.header_values("connection")).lower()
    assert "upgrade" not in connection_tokens
    assert "http2-settings" not in connection_tokens
    following = connection.exchange("GET", "/echo/still-http1")
    assert following.status == 200, following
    assert following.json()["target"] == "/echo/still-http1"


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("chunked", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        ("CHUNKED", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        ("Chunked", b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        ("chunked", b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"),
        ("chunked", b"000005\r\nhello\r\n6\r\n world\r\n0000\r\n\r\n"),
    ],
    ids=["plain", "upper-case-coding", "chunk-extension", "trailer", "leading-zeros"],
)
def test_valid_chunked_bodies_are_reframed_and_keep_alive_works(
    gateway, upstream, raw, coding, body
):
    connection = raw(gateway.port)
    connection.send(post(b"Transfer-Encoding: %s\r\n" % coding.encode(), body))
    response = connection.read_response()
    assert response.status == 200, response
    [received] = upstream.requests
    assert received.body == b"hello world"
    if received.chunked:
        assert received.header_values("transfer-encoding") == ["chunked"]
    else:
        assert received.header_values("content-length") == ["11"]
    assert connection.exchange("GET", "/echo/next").status == 200


@pytest.mark.parametrize(
    "framing",
    [b"Content-Length: 0\r\n\r\n", b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"],
    ids=["content-length-0", "empty-chunked"],
)
def test_empty_bodies(gateway, upstream, raw, framing):
    connection = raw(gateway.port)
    connection.send(b"POST /echo/empty HTTP/1.1\r\n" + HOST + framing)
    assert connection.read_response().status == 200
    assert upstream.requests[0].body == b""
    assert connection.exchange("GET", "/echo/next").status == 200


def test_head_split_at_every_byte_is_parsed(gateway, upstream, raw):
    connection = raw(gateway.port)
    request = b"POST /echo/split HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\n\r\nhello"
    for i in range(len(request)):
        connection.send(request[i : i + 1])
    response = connection.read_response()
    assert response.status == 200, response
    assert upstream.requests[0].body == b"hello"


JWT_PROVIDER = {
    "name": "test",
    "issuer": "https://issuer.test",
    "audiences": ["api"],
    "algorithms": ["HS256"],
    "secret": "a-test-secret-of-at-least-32-bytes!!",
}


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_body_of_a_401_is_not_read_as_a_next_request(
    start_gateway, make_config, upstream, raw, framing
):
    config = make_config(upstream.url, auth={"jwt": {"providers": [JWT_PROVIDER]}})
    config["routes"].insert(
        0, {"id": "protected", "uri": "lb://echo", "predicates": ["Path=/protected/**"]}
    )
    gw = start_gateway(config)
    smuggled = b"GET /echo/smuggled HTTP/1.1\r\n" + HOST + b"\r\n"
    if framing == "chunked":
        head = b"Transfer-Encoding: chunked\r\n\r\n"
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(smuggled), smuggled)
    else:
        head = b"Content-Length: %d\r\n\r\n" % len(smuggled)
        body = smuggled
    connection = raw(gw.port)
    connection.send(b"POST /protected/x HTTP/1.1\r\n" + HOST + head + body)
    response = connection.read_response()
    assert_error(response, 401)
    challenge = response.header("www-authenticate") or ""
    assert challenge.startswith("Bearer"), response
    assert "error=" not in challenge, response
    try:
        connection.request("GET", "/echo/legit")
        follow_up = connection.read_response()
    except (ConnectionError, BrokenPipeError):
        follow_up = None
    if follow_up is not None:
        assert follow_up.json()["target"] == "/echo/legit"
    assert all(r.path != "/echo/smuggled" for r in upstream.requests)
    assert all(not r.path.startswith("/protected") for r in upstream.requests)
