"""Large bodies both ways: byte-exact, flow-controlled, in bounded memory."""

from __future__ import annotations

import hashlib
import socket
import threading
import time

import pytest

from fastgw.testing import pattern_bytes

from .support import curl, fetch, pattern_sha256

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def gateway_config(shared_upstream, make_config):
    return make_config(
        shared_upstream.url,
        limits={"max_body": "16MiB"},
        services={"echo": {"instances": [shared_upstream.url], "response_timeout": "30s"}},
    )


def test_chunked_upload_of_5_mib_arrives_byte_exact(gateway, upstream, tmp_path):
    upload = tmp_path / "upload.bin"
    upload.write_bytes(pattern_bytes(5 * MiB))
    result = curl(
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        f"@{upload}",
        f"{gateway.url}/echo/upload",
    )
    assert result.stdout == b"200", result
    [received] = upstream.requests
    assert len(received.body) == 5 * MiB
    assert hashlib.sha256(received.body).hexdigest() == pattern_sha256(5 * MiB)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_download_of_20_mib_arrives_byte_exact(gateway, upstream, tmp_path, chunked):
    download = tmp_path / "download.bin"
    query = "?chunked=1" if chunked else ""
    result = curl(
        "-o", str(download), "-w", "%{http_code}", f"{gateway.url}/echo/bytes/{20 * MiB}{query}"
    )
    assert result.stdout == b"200", result
    assert download.stat().st_size == 20 * MiB
    assert hashlib.sha256(download.read_bytes()).hexdigest() == pattern_sha256(20 * MiB)


def test_expect_100_continue_with_curl(gateway, upstream, tmp_path):
    upload = tmp_path / "upload.bin"
    upload.write_bytes(pattern_bytes(256 * 1024))
    response = fetch(
        f"{gateway.url}/echo/expect",
        "-H",
        "Expect: 100-continue",
        "--expect100-timeout",
        "30",
        "--data-binary",
        f"@{upload}",
    )
    assert response.status == 200, response
    assert upstream.requests[0].body == pattern_bytes(256 * 1024)


def test_expect_100_continue_gets_the_interim_response_before_the_body(gateway, upstream, raw):
    connection = raw(gateway.port)
    connection.send(
        b"POST /echo/expect HTTP/1.1\r\nHost: gateway.test\r\nExpect: 100-continue\r\n"
        b"Content-Length: 5\r\n\r\n"
    )
    interim = connection.read_response(timeout=5)
    assert interim.status == 100, interim
    connection.send(b"hello")
    final = connection.read_response()
    assert final.status == 200, final
    assert upstream.requests[0].body == b"hello"


@pytest.mark.slow
def test_slow_reader_download_keeps_gateway_memory_bounded(gateway, upstream):
    size = 20 * MiB
    assert fetch(f"{gateway.url}/echo/bytes/{MiB}").status == 200  # warm up buffers
    baseline = gateway.rss_bytes()
    peak = baseline
    done = threading.Event()

    def watch_memory():
        nonlocal peak
        while not done.wait(0.05):
            peak = max(peak, gateway.rss_bytes())

    watcher = threading.Thread(target=watch_memory)
    watcher.start()
    try:
        digest, received = slow_download(gateway.port, f"/echo/bytes/{size}")
    finally:
        done.set()
        watcher.join()
    assert received == size
    assert digest == pattern_sha256(size)
    assert peak - baseline < 15 * MiB, f"gateway RSS grew by {(peak - baseline) / MiB:.1f} MiB"


def slow_download(port: int, target: str) -> tuple[str, int]:
    """GET ``target`` reading 16 KiB at a time with pauses; sha256 and size of the body."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    data = bytearray()
    with sock:
        request = f"GET {target} HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode())
        while piece := sock.recv(16 * 1024):
            data += piece
            time.sleep(0.002)
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return hashlib.sha256(body).hexdigest(), len(body)


def dechunk(data: bytes) -> bytes:
    body = bytearray()
    position = 0
    while True:
        line_end = data.index(b"\r\n", position)
        size = int(data[position:line_end].split(b";")[0], 16)
        if size == 0:
            return bytes(body)
        body += data[line_end + 2 : line_end + 2 + size]
        position = line_end + 2 + size + 2
