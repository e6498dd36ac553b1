"""The compiled request path and its Python twin, driven alike, must do alike.

Both twins of ``fastgw.proxy`` (see ``request_path``) each serve a real
``Gateway`` through in-memory transports; a scenario is the client's bytes,
cut into reads at random places, and the upstream's answers to what the
gateway forwards. Every byte either side wrote to the client and to the
upstream, every close, abort and pause, the metrics counted, the log records
and the state the connections were left in must be the same.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fastgw._core import NO_EXTENSIONS

from .request_path import OK, Answer, Scenario, compiled_built, drive, load_twin

if NO_EXTENSIONS:
    pytest.skip("FASTGW_NO_EXTENSIONS is set: only the Python twin is importable",
                allow_module_level=True)


@pytest.fixture(scope="module")
def twins():
    if not compiled_built():
        pytest.fail("compiled request path missing: pip install . builds it")
    from . import request_path

    return load_twin(), request_path.COMPILED


def run_both(twins, scenario: Scenario):
    python, compiled = twins
    return drive(python, scenario), drive(compiled, scenario)


def assert_same(python, compiled) -> None:
    for i, (p, c) in enumerate(zip(python.events, compiled.events, strict=False)):
        assert p == c, f"event {i} differs (events before it: {python.events[max(0, i - 4):i]})"
    assert len(python.events) == len(compiled.events), (
        python.events[len(compiled.events):], compiled.events[len(python.events):])
    assert python.state == compiled.state
    assert python.metrics == compiled.metrics
    assert python.logs == compiled.logs
    assert python.access == compiled.access
    assert python.audit == compiled.audit


# -- requests ---------------------------------------------------------------------------------

TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
tokens = st.text(TOKEN, min_size=1, max_size=10)
odd_values = st.one_of(
    st.binary(max_size=12).map(lambda b: b.decode("latin-1")),
    st.sampled_from(["", " padded ", "a\tb", "\x7f", "caf\xe9", "x" * 1100]),
)


def one_in(n: int) -> st.SearchStrategy[bool]:
    """True once in N draws (never for 0); False is the simpler, so examples shrink
    towards it."""
    return st.sampled_from([False] * (n - 1) + [True]) if n else st.just(False)


def rarely(draw, usual, odd, n: int):
    """A draw of USUAL, or once in N of ODD (strategies, or values to pick from)."""
    if draw(one_in(n)):
        return draw(odd if isinstance(odd, st.SearchStrategy) else st.sampled_from(odd))
    return draw(usual if isinstance(usual, st.SearchStrategy) else st.sampled_from(usual))


@st.composite
def cased(draw, name: str) -> str:
    """NAME in one of the cases a client may spell it."""
    how = draw(st.integers(0, 4))
    if how == 4:
        flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
        return "".join(c.upper() if f else c.lower() for c, f in zip(name, flips, strict=True))
    return (name, name.lower(), name.upper(), name.title())[how]


METHODS = ("GET", "GET", "GET", "HEAD", "HEAD", "POST", "POST", "PUT", "DELETE", "OPTIONS",
           "PATCH")
ODD_METHODS = ("TRACE", "CONNECT", "FOO", "get", "PROPFIND")
PREFIXES = ("/api/", "/api/", "/api/", "/strip/", "/strip/", "/limited/", "/later/", "/later/",
            "/", "/nowhere/", "/API/", "/apiary")
SEGMENTS = ("a", "b", "orders", "42", "..", ".", "", "%41", "%7e", "a;b=c", "%C3%A9", "~user",
            "a%20b", "*", "@", "%252F")
ODD_SEGMENTS = ("%2F", "%2f", "%2e%2e", "%2E", "%zz", "%00", "%5C", "\\", "..", "../..")
QUERIES = ("", "", "", "?x=1", "?x=1&y=%20z", "?", "?a=b?c", "?%zz", "?x=/../")
ODD_TARGETS = ("*", "api/x", "http://api.example.com/api/x?y=1", "http://api.example.com",
               "//api/x", "/api/x#frag", "/api/" + "x" * 320, "/api/\xe9", "/api/a b")


@st.composite
def targets(draw, odd: bool) -> str:
    if draw(one_in(12 * odd)):
        return draw(st.sampled_from(ODD_TARGETS))
    segments = draw(st.lists(st.builds(
        lambda odd_one, usual, odd: odd if odd_one else usual,
        one_in(10 * odd), st.sampled_from(SEGMENTS), st.sampled_from(ODD_SEGMENTS)),
        max_size=4))
    return draw(st.sampled_from(PREFIXES)) + "/".join(segments) + draw(st.sampled_from(QUERIES))


def chunked(body: bytes, sizes: list[int], ext: bool, trailers: bool) -> bytes:
    out = []
    i = 0
    for size in [*sizes, len(body)]:
        piece = body[i:i + max(size, 1)]
        if not piece:
            break
        out.append(b"%x%s\r\n%s\r\n" % (len(piece), b";n=v" if ext else b"", piece))
        i += len(piece)
    out.append(b"0\r\n" + (b"X-Trailer: t\r\n" if trailers else b"") + b"\r\n")
    return b"".join(out)


@st.composite
def bodies(draw) -> bytes:
    if draw(one_in(10)):  # past the buffering high water, or the limit
        size = draw(st.sampled_from([200_000, 270_000, 300 * 1024, 310_000]))
        seed = draw(st.binary(min_size=1, max_size=4))
        return (seed * (size // len(seed) + 1))[:size]
    return draw(st.binary(max_size=40))


FRAMINGS = ("none",) * 8 + ("length",) * 3 + ("chunked",) * 2
ODD_FRAMINGS = ("wrong length", "odd length", "two lengths", "odd chunked", "bad chunks")


@st.composite
def requests(draw, odd: bool = True) -> bytes:
    """A request; with ODD, now and then with something a gateway must refuse."""

    def rare(usual, unusual, n: int):
        return rarely(draw, usual, unusual, n * odd)

    method = rare(METHODS, ODD_METHODS, 16)
    target = draw(targets(odd))
    version = rare(["1.1"] * 5 + ["1.0"], ["2.0", "0.9", "1.2"], 16)
    fields: list[tuple[str, str]] = []

    def field(name: str, value: str) -> None:
        fields.append((draw(cased(name)), value))

    host = rare(["one"], ["none", "same twice", "two", "empty", "bad", "with port"], 10)
    if host != "none":
        field("Host", {"empty": "", "bad": "a b/c", "with port": "api.example.com:8080"}.get(
            host, "api.example.com"))
    if host in ("same twice", "two"):
        field("Host", "api.example.com" if host == "same twice" else "other.example")

    upgrade = rarely(draw, [None], ["websocket", "websocket", "h2c", "WebSocket"], 6)
    body = b""
    framing = rare(FRAMINGS, ODD_FRAMINGS, 10) if upgrade is None or odd else "none"
    if framing != "none":
        body = draw(bodies())
    if framing == "length":
        field("Content-Length", str(len(body)))
    elif framing == "wrong length":
        field("Content-Length", str(draw(st.integers(0, len(body) + 10))))
    elif framing == "odd length":
        field("Content-Length", draw(st.sampled_from(
            ["+5", " 5", "5 ", "5, 5", "0x10", "-1", "", "1" * 25, "\u0663"])))
    elif framing == "two lengths":
        field("Content-Length", str(len(body)))
        field("Content-Length", str(len(body) + draw(st.integers(0, 1))))
    elif framing in ("chunked", "bad chunks"):
        field("Transfer-Encoding", draw(cased("chunked")))
        sizes = draw(st.lists(st.integers(1, 70_000), max_size=4))
        body = chunked(body, sizes, draw(st.booleans()), draw(st.booleans()))
        if framing == "bad chunks":
            at = draw(st.integers(0, len(body)))
            body = body[:at] + draw(st.sampled_from([b"zz\r\n", b"\r\n", b"1\r\nab\r\n", b"-"]))
    elif framing == "odd chunked":
        te = draw(st.sampled_from(["gzip, chunked", "chunked, chunked", "identity", "chunked;"]))
        field("Transfer-Encoding", te)
        if draw(st.booleans()):
            field(draw(st.sampled_from(["Transfer-Encoding", "Content-Length"])),
                  draw(st.sampled_from(["chunked", "3"])))
        body = chunked(body, [], False, False)

    connection = draw(st.sampled_from(
        [None] * 8 + ["close", "keep-alive", "Keep-Alive", "close, X-Foo", "TE, close",
                      "Upgrade", "x-foo"]))
    if connection is not None:
        field("Connection", connection)
        if "X-Foo" in connection or "x-foo" in connection:
            field("X-Foo", "named in Connection")
    if upgrade is not None:
        if connection != "Upgrade":
            field("Connection", "Upgrade")
        field("Upgrade", upgrade)
        field("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
    expect = rare([None], ["100-continue", "100-Continue", "nothing"], 8)
    if expect is not None:
        field("Expect", expect)
    request_id = rare([None, "client-id-1"], ["a" * 128, "a" * 129, "bad id", "", "id/with/slash"],
                      8)
    if request_id is not None:
        field("X-Request-Id", request_id)
    for name in draw(st.lists(st.sampled_from(
            ["X-Forwarded-For", "Authorization", "X-Drop", "Keep-Alive", "TE", "Forwarded",
             "X-Auth-Subject", "Proxy-Connection", "Trailer", "Accept", "User-Agent"]),
            max_size=3)):
        field(name, draw(st.sampled_from(["1.2.3.4", "Bearer abc", "x", "garbage, 5.6.7.8"])))
    verdict = draw(st.sampled_from([None, "allow", "deny", "fail"]))
    if verdict is not None:
        field("X-Verdict", verdict)
    for _ in range(draw(st.integers(0, 3))):
        fields.append((draw(tokens), rare(tokens, odd_values, 12)))
    if draw(one_in(30 * odd)):  # past max_headers
        fields += [(f"X-Many-{i}", "v") for i in range(30)]
    fields = draw(st.permutations(fields))

    if upgrade is not None and not body and draw(st.booleans()):
        body = b"\x81\x05hello"  # a frame, if the upstream agrees to the upgrade
    head = f"{method} {target} HTTP/{version}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in fields) + "\r\n"
    return head.encode("latin-1", "replace") + body


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """DATA with a few bytes changed, dropped, added or repeated."""
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["set", "drop", "insert", "repeat"]))
        byte = draw(st.sampled_from([b"\x00", b"\r", b"\n", b" ", b":", b"\xff", b"a", b"0"]))
        if how == "set":
            data = data[:at] + byte + data[at + 1:]
        elif how == "drop":
            data = data[:at] + data[at + draw(st.integers(1, 8)):]
        elif how == "insert":
            data = data[:at] + byte + data[at:]
        else:
            data = data[:at] + data[at:at + 16] + data[at:]
    return data


@st.composite
def split(draw, data: bytes) -> tuple[bytes, ...]:
    """DATA cut into reads at random places."""
    if len(data) < 2:
        return (data,) if data else ()
    cuts = sorted(set(draw(st.lists(st.integers(1, len(data) - 1), max_size=8))))
    edges = [0, *cuts, len(data)]
    return tuple(data[a:b] for a, b in itertools.pairwise(edges))


@st.composite
def client_streams(draw) -> bytes:
    if draw(one_in(20)):  # more pipelined heads than the queue takes
        stream = b"GET /api/many HTTP/1.1\r\nHost: api.example.com\r\n\r\n" * 18
    else:
        # half the streams hold only requests a gateway forwards (or finds no route for)
        odd = draw(st.booleans())
        count = draw(st.sampled_from([1, 1, 1, 2, 2, 3, 4]))
        stream = b"".join(draw(st.lists(requests(odd), min_size=count, max_size=count)))
        if odd and draw(one_in(6)):
            stream = draw(mutated(stream))
    return stream


# -- responses --------------------------------------------------------------------------------

STATUSES = (200, 200, 200, 201, 204, 206, 301, 304, 400, 404, 418, 500, 502, 503, 101, 100,
            199, 299, 599, 999)


@st.composite
def answers(draw) -> Answer:
    if draw(one_in(15)):
        return Answer(reset=True)
    status = draw(st.sampled_from(STATUSES))
    interim = draw(st.sampled_from([b""] * 8 + [
        b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"]))
    version = draw(st.sampled_from([b"1.1"] * 6 + [b"1.0", b"2.0"]))
    reason = draw(st.sampled_from([b"OK", b"", b"Whatever It Is", b"\xe9t\xe9"]))
    fields: list[tuple[str, str]] = []

    def field(name: str, value: str) -> None:
        fields.append((draw(cased(name)), value))

    for name in draw(st.lists(st.sampled_from(
            ["Content-Type", "Server", "Set-Cookie", "Set-Cookie", "Cache-Control", "X-Hop",
             "Keep-Alive", "Proxy-Connection", "Upgrade", "Trailer", "TE", "X-Request-Id",
             "Foo"]), max_size=4)):
        field(name, draw(st.sampled_from(["text/plain", "a=b", "timeout=5", "websocket", "1"])))
    connection = draw(st.sampled_from(
        [None] * 4 + ["close", "keep-alive", "X-Hop", "close, X-Hop", "Keep-Alive, Foo",
                      "upgrade"]))
    if connection is not None:
        field("Connection", connection)
    for _ in range(draw(st.integers(0, 2))):
        fields.append((draw(tokens), draw(tokens)))

    body = b"b" * 70_000 if draw(one_in(20)) else draw(st.binary(max_size=30))
    framing = draw(st.sampled_from([
        "length", "length", "length", "chunked", "chunked", "close", "none", "short length",
        "long length", "two lengths", "length and chunked", "odd chunked", "bad length"]))
    close = framing == "close" or draw(one_in(4))
    if framing in ("length", "short length", "long length", "two lengths"):
        length = len(body) + {"short length": 3, "long length": -min(len(body), 2)}.get(
            framing, 0)
        field("Content-Length", str(length))
        if framing == "two lengths":
            field("Content-Length", str(length + draw(st.integers(0, 1))))
    elif framing in ("chunked", "length and chunked", "odd chunked"):
        field("Transfer-Encoding", "gzip, chunked" if framing == "odd chunked" else "chunked")
        if framing == "length and chunked":
            field("Content-Length", str(len(body)))
        body = chunked(body, draw(st.lists(st.integers(1, 20), max_size=3)),
                       draw(st.booleans()), draw(st.booleans()))
    elif framing == "bad length":
        field("Content-Length", draw(st.sampled_from(["abc", "-1", "1" * 25, ""])))
    elif framing == "none":
        body = b""
    fields = draw(st.permutations(fields))
    head = b"HTTP/%s %d %s\r\n" % (version, status, reason) + "".join(
        f"{name}: {value}\r\n" for name, value in fields).encode("latin-1") + b"\r\n"
    extra = draw(st.sampled_from(
        [b""] * 6 + [b"x", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]))
    data = interim + head + body + extra
    return Answer(draw(split(data)), close=close, early=draw(one_in(10)))


PEERS = (("10.0.0.7", 40000), ("10.0.0.7", 40000), ("192.0.2.1", 5),
         ("2001:db8::1", 443, 0, 0), "", None, ())


@st.composite
def scenarios(draw) -> Scenario:
    return Scenario(
        chunks=draw(split(draw(client_streams()))),
        answers=tuple(draw(st.lists(answers(), max_size=4))),
        client_eof=draw(st.booleans()),
        refusals=draw(st.sampled_from([0] * 6 + [1, 2, 3])),
        client_high_water=draw(st.sampled_from([0] * 4 + [1, 64, 100_000])),
        upstream_high_water=draw(st.sampled_from([0] * 4 + [1, 64, 100_000])),
        idle=not draw(one_in(4)),
        switch=draw(st.booleans()),
        peer=draw(st.sampled_from(PEERS)),
    )


@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenario=scenarios())
def test_the_twins_agree(twins, scenario):
    python, compiled = run_both(twins, scenario)
    assert_same(python, compiled)
    for data in responses(python):
        event(f"client got {data[:12].decode('latin-1')!r}")
    event(f"{python.upstream_bytes().count(b' HTTP/1.1' + bytes([13, 10]))} forwarded")
    event("client closed" if python.happened("client", "eof") else "client kept open")


# -- paths pinned --------------------------------------------------------------------------------

GET = b"GET /api/orders HTTP/1.1\r\nHost: api.example.com\r\n\r\n"


def responses(outcome) -> list[bytes]:
    return [e[2] for e in outcome.events if e[0] == "client" and e[1] == "write"]


def test_a_404_then_a_forwarded_request_on_one_read(twins):
    scenario = Scenario((b"GET /nowhere HTTP/1.1\r\nHost: api.example.com\r\n\r\n" + GET,))
    python, compiled = run_both(twins, scenario)
    assert_same(python, compiled)
    first, second = responses(python)
    assert first.startswith(b"HTTP/1.1 404 ") and second.startswith(b"HTTP/1.1 200 OK\r\n")
    assert python.upstream_bytes().startswith(b"GET /api/orders HTTP/1.1\r\n")
    assert python.upstream_bytes().count(b" HTTP/1.1\r\n") == 1


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_body_over_max_body(twins, framing):
    body = b"z" * (300 * 1024 + 1)
    if framing == "length":
        head = b"Content-Length: %d\r\n" % len(body)
    else:
        head = b"Transfer-Encoding: chunked\r\n"
        body = chunked(body, [100_000] * 4, False, False)
    stream = b"POST /api/upload HTTP/1.1\r\nHost: api.example.com\r\n" + head + b"\r\n" + body
    scenario = Scenario(tuple(stream[i:i + 65536] for i in range(0, len(stream), 65536)))
    python, compiled = run_both(twins, scenario)
    assert_same(python, compiled)
    assert responses(python)[-1].startswith(b"HTTP/1.1 413 ")
    assert python.happened("client", "close") or python.happened("client", "abort")


def test_bytes_after_a_response_end_its_connection(twins):
    scenario = Scenario(
        (GET, GET),
        answers=(Answer((b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",)), OK),
    )
    python, compiled = run_both(twins, scenario)
    assert_same(python, compiled)
    assert python.happened("upstream0", "abort") or python.happened("upstream0", "close")
    second = [e for e in python.events if e[0] == "upstream1" and e[1] == "write"]
    assert len(second) == 1 and second[0][2].startswith(b"GET /api/orders HTTP/1.1\r\n")
    assert [r[:15] for r in responses(python)] == [b"HTTP/1.1 200 OK"] * 2


def test_connection_close_from_the_client(twins):
    close = b"GET /api/orders HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n"
    python, compiled = run_both(twins, Scenario((close + GET,)))
    assert_same(python, compiled)
    (only,) = responses(python)
    assert b"\r\nConnection: close\r\n" in only
    assert python.happened("client", "close")
    assert python.upstream_bytes().count(b" HTTP/1.1\r\n") == 1


def test_a_peername_without_an_address(twins):
    """Indexing past the end raises in both twins: the compiled build once read
    past the end of the tuple (bounds checks were off for the request path too)."""
    python, compiled = run_both(twins, Scenario((GET,), peer=()))
    assert_same(python, compiled)
    assert python.events[0] == ("client", "raised", "IndexError", "tuple index out of range")


def test_a_client_that_cannot_keep_up_leaves_the_pool_a_connection_that_reads(twins):
    """The first response fills the client's buffer, which pauses reading from the
    upstream; the connection goes back to the pool, and the second request on it
    is answered."""
    python, compiled = run_both(twins, Scenario((GET, GET), client_high_water=1))
    assert_same(python, compiled)
    assert [r[:15] for r in responses(python)] == [b"HTTP/1.1 200 OK"] * 2
    assert python.state["upstream"][0]["reusable"] == ("bool", False)
    assert python.state["pool"] == (1, 1)
