"""Request size limits and the header timeout (slowloris)."""

from __future__ import annotations

import select
import time

import pytest

from fastgw.testing import pattern_bytes

from .support import assert_error, assert_nothing_reached, curl

MAX_BODY = 1024 * 1024


@pytest.fixture(scope="module")
def gateway_config(shared_upstream, make_config):
    limits = {
        "max_request_line": "1KiB",
        "max_header_bytes": "4KiB",
        "max_headers": 20,
        "max_body": "1MiB",
        "header_timeout": "1s",
        "idle_timeout": "2s",
    }
    return make_config(shared_upstream.url, limits=limits)


def test_request_line_over_the_limit_is_414(gateway, upstream, raw):
    response = raw(gateway.port).exchange("GET", "/echo/" + "a" * 2000)
    assert_error(response, 414)
    assert_nothing_reached(upstream)


def test_request_line_under_the_limit_passes(gateway, upstream, raw):
    target = "/echo/" + "a" * 800
    assert raw(gateway.port).exchange("GET", target).status == 200
    assert upstream.requests[0].target == target


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Big", "b" * 5000)],
        [(f"X-Medium-{i}", "m" * 500) for i in range(10)],
    ],
    ids=["one-big-header", "many-medium-headers"],
)
def test_headers_over_the_byte_limit_are_431(gateway, upstream, raw, headers):
    assert_error(raw(gateway.port).exchange("GET", "/echo/h", headers=headers), 431)
    assert_nothing_reached(upstream)


def test_headers_under_the_byte_limit_pass(gateway, upstream, raw):
    headers = [(f"X-Medium-{i}", "m" * 500) for i in range(5)]
    assert raw(gateway.port).exchange("GET", "/echo/h", headers=headers).status == 200
    assert upstream.requests[0].header("x-medium-4") == "m" * 500


def test_too_many_headers_is_431(gateway, upstream, raw):
    headers = [(f"X-Count-{i}", "v") for i in range(30)]
    assert_error(raw(gateway.port).exchange("GET", "/echo/h", headers=headers), 431)
    assert_nothing_reached(upstream)


def test_header_count_under_the_limit_passes(gateway, upstream, raw):
    headers = [(f"X-Count-{i}", "v") for i in range(15)]
    assert raw(gateway.port).exchange("GET", "/echo/h", headers=headers).status == 200
    assert upstream.requests[0].header("x-count-14") == "v"


def test_body_at_the_limit_passes(gateway, upstream, raw):
    body = pattern_bytes(MAX_BODY)
    response = raw(gateway.port).exchange("POST", "/echo/at-limit", body=body)
    assert response.status == 200, response
    assert upstream.requests[0].body == body


def test_content_length_over_the_limit_is_413_before_the_body_is_sent(gateway, upstream, raw):
    connection = raw(gateway.port)
    connection.send(
        b"POST /echo/big HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: %d\r\n\r\n"
        % (MAX_BODY + 1)
    )
    assert_error(connection.read_response(), 413)
    assert_nothing_reached(upstream)


def test_expect_continue_over_the_limit_gets_413_instead_of_100(gateway, upstream, raw):
    connection = raw(gateway.port)
    connection.send(
        b"POST /echo/big HTTP/1.1\r\nHost: gateway.test\r\nExpect: 100-continue\r\n"
        b"Content-Length: %d\r\n\r\n" % (2 * MAX_BODY)
    )
    assert_error(connection.read_response(), 413)
    assert_nothing_reached(upstream)


def test_curl_upload_over_the_limit_is_413(gateway, upstream, tmp_path):
    upload = tmp_path / "upload.bin"
    upload.write_bytes(pattern_bytes(2 * MAX_BODY))
    result = curl(
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--data-binary",
        f"@{upload}",
        f"{gateway.url}/echo/upload",
    )
    assert result.stdout == b"413", result
    assert_nothing_reached(upstream)


def test_streamed_chunked_body_over_the_limit_is_413(gateway, upstream, raw):
    connection = raw(gateway.port)
    connection.send(
        b"POST /echo/stream HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = pattern_bytes(64 * 1024)
    sent = 0
    while sent < 3 * MAX_BODY and not readable(connection.sock):
        try:
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(chunk)
    assert sent > MAX_BODY
    assert_error(connection.read_response(), 413)
    # Whatever part of the body was forwarded, that upstream connection must be
    # closed, never left waiting for the rest (or reused for another request).
    # The head was most likely forwarded: give the upstream time to notice the
    # cut, so its record lands in this test and not in the next one.
    deadline = time.monotonic() + 3
    while not upstream.aborted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.settle(timeout=10), "upstream connection left mid-body"
    assert upstream.requests == []


def readable(sock, timeout: float = 0.0) -> bool:
    return bool(select.select([sock], [], [], timeout)[0])


def test_slowloris_head_is_408_and_closed(gateway, upstream, raw):
    connection = raw(gateway.port)
    head = b"GET /echo/slowloris HTTP/1.1\r\nHost: gateway.test\r\nX-Padding: " + b"p" * 100
    started = time.monotonic()
    for byte in head:
        if readable(connection.sock, 0.1):
            break
        try:
            connection.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
    assert_error(connection.read_response(timeout=5), 408)
    assert time.monotonic() - started < 10
    assert connection.closed_by_peer()
    assert_nothing_reached(upstream)


def test_incomplete_head_is_408_and_closed(gateway, upstream, raw):
    connection = raw(gateway.port)
    connection.send(b"GET /echo/stalled HTTP/1.1\r\nHost: gateway.test\r\n")
    assert_error(connection.read_response(timeout=5), 408)
    assert connection.closed_by_peer()
    assert_nothing_reached(upstream)


def test_head_sent_in_pieces_within_the_timeout_passes(gateway, upstream, raw):
    connection = raw(gateway.port)
    for piece in (b"GET /echo/pieces HTTP/1.1\r\n", b"Host: gateway.test\r\n", b"\r\n"):
        connection.send(piece)
        time.sleep(0.1)
    assert connection.read_response().status == 200
    assert upstream.requests[0].target == "/echo/pieces"


def test_slow_body_is_not_cut_by_the_header_timeout(gateway, upstream, raw):
    connection = raw(gateway.port)
    connection.send(
        b"POST /echo/slow-body HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 5\r\n\r\n"
    )
    for byte in b"hello":
        time.sleep(0.4)
        connection.send(bytes([byte]))
    response = connection.read_response()
    assert response.status == 200, response
    assert upstream.requests[0].body == b"hello"


def test_idle_keep_alive_connection_is_closed(gateway, upstream, raw):
    connection = raw(gateway.port)
    assert connection.exchange("GET", "/echo/then-idle").status == 200
    assert connection.closed_by_peer(timeout=10)
