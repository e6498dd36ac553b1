"""The recording upstream of fastgw.testing, checked with curl and raw sockets."""

from __future__ import annotations

import hashlib
import threading

import pytest

from fastgw.testing import RecordingUpstream, pattern_bytes

from .support import curl, fetch


@pytest.fixture
def up():
    with RecordingUpstream() as upstream:
        yield upstream


def test_echo_records_and_describes_the_request(up):
    response = fetch(f"{up.url}/any/path?q=1", "-H", "X-One: 1", "--data-binary", "body")
    assert response.status == 200
    [received] = up.requests
    assert (received.method, received.target, received.body) == ("POST", "/any/path?q=1", b"body")
    assert received.header("x-one") == "1"
    assert received.path == "/any/path" and received.query == "q=1"
    described = response.json()
    assert described["target"] == "/any/path?q=1"
    assert ["X-One", "1"] in described["headers"]
    assert described["body_sha256"] == hashlib.sha256(b"body").hexdigest()


def test_chunked_upload_is_decoded(up, tmp_path):
    upload = tmp_path / "upload.bin"
    upload.write_bytes(pattern_bytes(300_000))
    result = curl(
        "-o",
        "/dev/null",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        f"@{upload}",
        f"{up.url}/upload",
    )
    assert result.returncode == 0, result
    assert up.requests[0].chunked
    assert up.requests[0].body == pattern_bytes(300_000)


@pytest.mark.parametrize("query", ["", "?chunked=1&chunk=1000"])
def test_bytes_streams_the_pattern(up, query):
    result = curl(f"{up.url}/prefix/bytes/100000{query}")
    assert result.stdout == pattern_bytes(100_000)


def test_pattern_bytes_continues_across_offsets():
    assert pattern_bytes(300) == pattern_bytes(100) + pattern_bytes(200, offset=100)
    assert pattern_bytes(3)[0] == 0 and pattern_bytes(1, offset=251) == b"\0"


@pytest.mark.parametrize(
    ("path", "curl_exits"),
    [("/reset", {56}), ("/close", {52}), ("/truncate/10", {18, 56})],
)
def test_failure_routes(up, path, curl_exits):
    assert curl(f"{up.url}{path}").returncode in curl_exits
    assert [r.path for r in up.requests] == [path]


def test_status_and_extra_headers(up):
    response = fetch(f"{up.url}/status/418?header=X-Extra:yes")
    assert response.status == 418
    assert response.header("x-extra") == "yes"


def test_keep_alive_requests_share_a_connection(up, raw):
    connection = raw(up.port)
    for i in range(3):
        assert connection.exchange("GET", f"/k/{i}").status == 200
    assert {r.connection for r in up.requests} == {1}


def test_ambiguous_framing_is_rejected_not_recorded(up, raw):
    connection = raw(up.port)
    connection.send(
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    assert connection.read_response().status == 400
    assert up.requests == []
    assert len(up.rejected) == 1


def test_raw_response(up, raw):
    up.set_raw_response("teapot", b"HTTP/1.1 418 Teapot\r\nContent-Length: 0\r\n\r\n")
    assert raw(up.port).exchange("GET", "/a/teapot").status == 418


def test_wait_for_requests_sees_a_request_in_flight(up):
    answered = threading.Event()

    def slow_request():
        curl(f"{up.url}/slow/3")
        answered.set()

    threading.Thread(target=slow_request, daemon=True).start()
    [received] = up.wait_for_requests(1, timeout=10)
    assert received.path == "/slow/3"
    assert not answered.is_set()
    with pytest.raises(TimeoutError):
        up.wait_for_requests(2, timeout=0.1)
    assert answered.wait(10)
