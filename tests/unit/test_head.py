"""Message heads on both implementations: the request and response scans, field
encoding, request ids; and that the implementations agree on every attribute."""

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgw._core import CORE, NO_EXTENSIONS

ATTRIBUTES = ("fields", "host", "te", "length", "connection", "expect", "upgrade",
              "request_id", "forwarded", "error")  # fmt: skip


def implementation(name):
    module = CORE["head"].get(name)
    if module is None:
        if NO_EXTENSIONS:
            pytest.skip("FASTGW_NO_EXTENSIONS is set")
        pytest.fail("compiled head missing: pip install . builds it")
    return module


@pytest.fixture(params=["python", "compiled"])
def head(request):
    return implementation(request.param)


def raw(*pairs) -> list:
    return [(_b(n), _b(v)) for n, v in pairs]


def _b(text) -> bytes:
    return text if isinstance(text, bytes) else text.encode("latin-1")


def scan(head, *pairs, host=("Host", "api.example.com")):
    return head.scan_request(raw(*((host,) if host else ()), *pairs))


def names(fields) -> list:
    return [low for low, _, _ in fields]


# -- the request scan ---------------------------------------------------------------------


def test_a_plain_request(head):
    got = scan(head, ("User-Agent", "curl/8"), ("Accept", "*/*"), ("X-Custom", "1"))
    assert got.error is None and got.host == b"api.example.com"
    assert got.fields == [
        (b"user-agent", b"User-Agent", b"curl/8"),
        (b"accept", b"Accept", b"*/*"),
        (b"x-custom", b"X-Custom", b"1"),
    ]
    assert (got.te, got.length, got.connection, got.expect, got.upgrade, got.request_id) == (
        None, None, None, None, None, None,
    )  # fmt: skip
    assert got.forwarded == []


def test_request_head_defaults(head):
    empty = head.RequestHead()
    assert [getattr(empty, name) for name in ATTRIBUTES] == [
        [], b"", None, None, None, None, None, None, [], None,
    ]  # fmt: skip
    assert empty.fields is not head.RequestHead().fields


def test_host(head):
    assert scan(head, host=None).error == head.MISSING_HOST == "missing_host"
    got = scan(head, ("Host", "api.example.com"))
    assert got.error == head.DUPLICATE_HOST == "duplicate_host"  # the same value twice too
    assert scan(head, ("HOST", "b")).error == "duplicate_host"
    for good in ("a", "api.example.com:8443", "[::1]:80", "xn--bcher-kva.example", "a_b", "é"):
        got = scan(head, host=("hOsT", good))
        assert got.error is None and got.host == _b(good)
        assert got.fields == []


@pytest.mark.parametrize("value", [b"", b"a b", b"a\tb", b"a/b", b"a\\b", b"user@a", b" a"])
def test_bad_host(head, value):
    assert scan(head, host=("Host", value)).error == head.BAD_HOST == "bad_host"


def test_host_errors_in_order(head):
    # a missing or doubled Host is told before a bad one, and before Connection is applied
    assert scan(head, ("Host", "a b"), host=None).error == "bad_host"
    assert scan(head, ("Host", "a b")).error == "duplicate_host"
    got = scan(head, ("Connection", "x-a"), ("X-A", "1"), host=None)
    assert got.error == "missing_host" and names(got.fields) == [b"x-a"]


def test_transfer_encoding(head):
    got = scan(head, ("Transfer-Encoding", " Chunked "))
    assert got.error is None and got.te == b" Chunked " and got.fields == []
    got = scan(head, ("Accept", "*/*"), ("Transfer-Encoding", "chunked"),
               ("transfer-encoding", "chunked"), ("X-After", "1"))  # fmt: skip
    assert got.error == head.BAD_TRANSFER_ENCODING == "bad_transfer_encoding"
    # the scan stops there
    assert got.te == b"chunked" and names(got.fields) == [b"accept"]
    assert scan(head, ("TE", "trailers"), ("Trailer", "x")).error is None  # other fields


def test_two_te_fields_before_a_missing_host(head):
    got = scan(head, ("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "gzip"), host=None)
    assert got.error == "bad_transfer_encoding"


@pytest.mark.parametrize(
    ("value", "length"),
    [(b"0", 0), (b"12", 12), (b"007", 7), (b"999999999999999999", 999999999999999999),
     (b"1" * 40, int("1" * 40)), (b" 12 ", 12), (b"+3", 3), (b"1_000", 1000)],
)  # fmt: skip
def test_content_length(head, value, length):
    got = scan(head, ("Content-Length", value))
    assert got.length == length and type(got.length) is int and got.fields == []


@pytest.mark.parametrize("value", [b"", b"abc", b"1.5", b"0x10", b"\xff", b"1 2"])
def test_content_length_int_refuses(head, value):
    with pytest.raises(ValueError, match=re.escape(repr(value))):
        scan(head, ("Content-Length", value))


def test_connection_names_over_several_fields(head):
    got = scan(
        head,
        ("Connection", "X-A, x-b"),
        ("X-A", "1"),
        ("x-b", "2"),
        ("X-Keep", "3"),
        ("connection", " X-C ,\tkeep-alive"),
        ("X-C", "4"),
        ("x-a", "5"),
    )
    assert got.error is None
    assert got.connection == {b"x-a", b"x-b", b"x-c", b"keep-alive"}
    assert got.fields == [(b"x-keep", b"X-Keep", b"3")]


def test_close_and_keep_alive_are_not_names(head):
    got = scan(head, ("Connection", "close"), ("Close", "1"), ("Connection", "Keep-Alive"))
    assert got.connection == {b"close", b"keep-alive"}
    assert got.fields == [(b"close", b"Close", b"1")]
    got = scan(head, ("Connection", ""), ("X-A", "1"))
    assert got.connection == {b""} and names(got.fields) == [b"x-a"]
    got = scan(head, ("Connection", "a,,b"), ("A", "1"), ("C", "2"))
    assert got.connection == {b"a", b"", b"b"} and names(got.fields) == [b"c"]


def test_connection_may_name_the_usual_fields(head):
    got = scan(head, ("Connection", "Accept, USER-AGENT, cookie"), ("Accept", "*/*"),
               ("User-Agent", "x"), ("Cookie", "a=1"), ("Cache-Control", "no-cache"))  # fmt: skip
    assert names(got.fields) == [b"cache-control"]


@pytest.mark.parametrize(
    ("value", "kept"),
    [(b"abc-123", True), (b"A.b_c:d-9", True), (b"x" * 128, True), (b"x" * 129, False),
     (b"", False), (b"a b", False), (b"a/b", False), (b"a\tb", False), (b"caf\xc3\xa9", False),
     (b"a+b", False), (b"a,b", False), (b"{a}", False), (b"a\x00", False)],
)  # fmt: skip
def test_request_id(head, value, kept):
    got = scan(head, ("X-Request-Id", value))
    assert got.request_id == (value if kept else None) and got.fields == []


def test_the_first_well_formed_request_id(head):
    got = scan(head, ("X-Request-Id", "bad id"), ("x-request-id", "one"), ("X-REQUEST-ID", "two"))
    assert got.request_id == b"one"


def test_forwarded_for_in_order(head):
    got = scan(head, ("X-Forwarded-For", "1.1.1.1, 2.2.2.2"), ("Accept", "*/*"),
               ("x-forwarded-for", b"3.3.3.3\xe9"), ("X-FORWARDED-FOR", ""))  # fmt: skip
    assert got.forwarded == ["1.1.1.1, 2.2.2.2", "3.3.3.3é", ""]
    assert names(got.fields) == [b"accept"]


@pytest.mark.parametrize(
    "name",
    ["X-Auth-Subject", "x-auth-scopes", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded",
     "X-Forwarded-Client-Cert", "Client-Cert", "CLIENT-CERT-CHAIN", "Keep-Alive",
     "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer"],
)  # fmt: skip
def test_never_forwarded(head, name):
    got = scan(head, ("Accept", "*/*"), (name, "alice"), (name.lower(), "bob"))
    assert got.error is None and names(got.fields) == [b"accept"]


def test_expect_and_upgrade(head):
    got = scan(head, ("Expect", "100-continue"), ("Upgrade", "websocket"), ("upgrade", "h2c"))
    assert got.expect == b"100-continue" and got.upgrade == b"h2c" and got.fields == []
    got = scan(head, ("Expect", ""), ("Upgrade", ""))
    assert got.expect == b"" and got.upgrade == b""


def test_mixed_case_names(head):
    got = scan(head, ("uSeR-aGeNt", "x"), ("ACCEPT-ENCODING", "gzip"), ("X-MiXeD", "y"),
               ("x-lower", "z"), host=("hoST", "a"))  # fmt: skip
    assert got.host == b"a"
    assert got.fields == [
        (b"user-agent", b"uSeR-aGeNt", b"x"),
        (b"accept-encoding", b"ACCEPT-ENCODING", b"gzip"),
        (b"x-mixed", b"X-MiXeD", b"y"),
        (b"x-lower", b"x-lower", b"z"),
    ]


def test_non_ascii_names_and_values(head):
    got = scan(
        head,
        (b"X-\xc9T\xe9", b"\xff\xfe"),
        (b"Host\xff", b"x"),  # not Host
        (b"X\rForwarded\rFor", b"y"),  # '\r' | 0x20 is '-': not a letter, not a match
        (b"Content\x0dLength", b"z"),
        (b"\xc1ccept", b"w"),  # 0xc1 is no 'A'
        (b"Accept", "ü".encode()),
    )
    assert got.error is None and got.forwarded == [] and got.length is None
    assert got.fields == [
        (b"x-\xc9t\xe9", b"X-\xc9T\xe9", b"\xff\xfe"),
        (b"host\xff", b"Host\xff", b"x"),
        (b"x\rforwarded\rfor", b"X\rForwarded\rFor", b"y"),
        (b"content\rlength", b"Content\rLength", b"z"),
        (b"\xc1ccept", b"\xc1ccept", b"w"),
        (b"accept", b"Accept", "ü".encode()),
    ]


def test_empty_values_and_names(head):
    got = scan(head, ("Accept", ""), ("", "x"), ("X-Request-Id", ""))
    assert got.fields == [(b"accept", b"Accept", b""), (b"", b"", b"x")]
    assert got.request_id is None


def test_odd_inputs_behave_as_in_python(head):
    python = implementation("python")
    cases = [
        ((b"Host", b"a"), (b"Accept", b"x")),  # a tuple, not a list
        [(b"Host", b"a"), [b"Accept", b"x"]],
        [(b"Host", b"a"), ("Accept", "x")],
        [(b"Host", b"a"), (b"Accept", "x")],
        [(b"Host", b"a"), (b"Accept", b"x", b"y")],
        [(b"Host", b"a"), (b"Accept",)],
        [(b"Host", b"a"), (bytearray(b"Accept"), b"x")],
        [(b"Host", b"a"), (b"Content-Length", b"12"), ("Host", "b")],
        [(b"Host", b"a"), (b"Content-Length", b"x"), ("Host", "b")],
        [(b"Host", b"a"), (b"Transfer-Encoding", b"x")] * 2 + [None],
        [(b"Host", b"a"), None],
        [(b"Host", "a b")],
    ]
    for case in cases:
        assert outcome(head.scan_request, case) == outcome(python.scan_request, case), case
    assert type(head.scan_request(iter(cases[0]))) is head.RequestHead


# -- the response scan --------------------------------------------------------------------


def test_response_kept(head):
    got = head.scan_response(raw(("Server", "nginx"), ("Date", "x"), ("Content-Length", "5"),
                                 ("Keep-Alive", "timeout=5"), ("Connection", "keep-alive"),
                                 ("X-Thing", "1"), ("Host", "h"), ("X-Request-Id", "r"),
                                 ("Expect", "e"), ("X-Forwarded-For", "f")), False)  # fmt: skip
    assert got == (
        [(b"server", b"Server", b"nginx"), (b"date", b"Date", b"x"), (b"x-thing", b"X-Thing", b"1"),
         (b"host", b"Host", b"h"), (b"x-request-id", b"X-Request-Id", b"r"),
         (b"expect", b"Expect", b"e"), (b"x-forwarded-for", b"X-Forwarded-For", b"f")],
        False,
        5,
    )  # fmt: skip


def test_response_chunked(head):
    for value in ("chunked", " Chunked\t", "CHUNKED"):
        assert head.scan_response(raw(("Transfer-Encoding", value)), False) == ([], True, None)


@pytest.mark.parametrize(
    "fields",
    [[("Transfer-Encoding", "gzip, chunked")], [("Transfer-Encoding", "chunked, chunked")],
     [("Transfer-Encoding", "")], [("Transfer-Encoding", "chunkedx")],
     [("Transfer-Encoding", "chunked"), ("transfer-encoding", "chunked")],
     [("Transfer-Encoding", "chunked"), ("Content-Length", "3")],
     [("Content-Length", "3"), ("Transfer-Encoding", "chunked")]],
)  # fmt: skip
def test_response_framing_refused(head, fields):
    got = head.scan_response(raw(*fields), False)
    assert got == head.AMBIGUOUS_FRAMING == "ambiguous upstream framing"


def test_response_content_length(head):
    assert head.scan_response(raw(("Content-Length", "0")), False) == ([], False, 0)
    with pytest.raises(ValueError):
        head.scan_response(raw(("Content-Length", "x")), False)


def test_response_connection_names(head):
    got = head.scan_response(raw(("Connection", "X-A, close"), ("X-A", "1"), ("X-B", "2"),
                                 ("connection", "x-b, Keep-Alive"), ("Close", "3"),
                                 ("Server", "s")), False)  # fmt: skip
    assert got == ([(b"close", b"Close", b"3"), (b"server", b"Server", b"s")], False, None)


def test_a_101_keeps_its_upgrade(head):
    fields = raw(("Upgrade", "websocket"), ("Connection", "Upgrade, X-A"), ("X-A", "1"),
                 ("Sec-WebSocket-Accept", "k"), ("Content-Length", "0"))  # fmt: skip
    got = head.scan_response(fields, True)
    assert got == (
        [(b"upgrade", b"Upgrade", b"websocket"), (b"connection", b"Connection", b"Upgrade, X-A"),
         (b"x-a", b"X-A", b"1"), (b"sec-websocket-accept", b"Sec-WebSocket-Accept", b"k")],
        False,
        0,
    )  # fmt: skip
    assert head.scan_response(fields, False) == (
        [(b"sec-websocket-accept", b"Sec-WebSocket-Accept", b"k")], False, 0,
    )  # fmt: skip
    assert head.scan_response(raw(("Transfer-Encoding", "gzip")), True) == head.AMBIGUOUS_FRAMING


def test_response_odd_inputs_behave_as_in_python(head):
    python = implementation("python")
    fields = raw(("Upgrade", "websocket"), ("X-A", "1"))
    cases = [
        (fields, 1), (fields, 0), (fields, None), (fields, "yes"), (tuple(fields), True),
        ([*fields, ("X-B", "2")], False), ([*fields, (b"X-B",)], False),
        ([*raw(("Transfer-Encoding", "gzip")), None], False),
        ([None, *raw(("Transfer-Encoding", "gzip"))], False),
    ]  # fmt: skip
    for case in cases:
        assert outcome(head.scan_response, *case) == outcome(python.scan_response, *case), case


# -- encoding -----------------------------------------------------------------------------


def test_encode_fields(head):
    assert head.encode_fields([]) == b""
    fields = [(b"accept", b"Accept", b"*/*"), (b"x", b"X", b""), (b"\xc9", b"\xc9", b"\xff")]
    assert head.encode_fields(fields) == b"Accept: */*\r\nX: \r\n\xc9: \xff\r\n"
    assert type(head.encode_fields(fields)) is bytes


def test_encode_fields_odd_inputs(head):
    python = implementation("python")
    cases = [
        ((b"a", b"A", b"1"),),
        [(b"a", b"A", b"1"), [b"b", b"B", b"2"]],
        [(b"a", b"A", bytearray(b"1"))],
        [(b"a", b"A", memoryview(b"1"))],
        [(b"a", b"A", "1")],
        [(b"a", b"A")],
        [(None, b"A", b"1")],
        [None],
        "abc",
    ]
    for case in cases:
        assert outcome(head.encode_fields, case) == outcome(python.encode_fields, case), case


# -- request ids --------------------------------------------------------------------------


def test_request_ids_format(head):
    ids = head.RequestIds()
    first, second = ids.next(), ids.next()
    assert re.fullmatch(rb"[0-9a-f]{22}", first) and type(first) is bytes
    assert first[:12] == second[:12] == ids._prefix
    assert int(second[12:], 16) == int(first[12:], 16) + 1 == 2
    assert head.RequestIds()._prefix != ids._prefix  # random


def test_request_ids_monotonic(head):
    ids = head.RequestIds(b"0123456789ab")
    got = [ids.next() for _ in range(5000)]
    assert got == [b"0123456789ab%010x" % n for n in range(1, 5001)]
    assert ids._count == 5000


def test_request_ids_wrap_at_40_bits(head):
    ids = head.RequestIds(b"p" * 12)
    ids._count = 2**40 - 2
    assert [ids.next() for _ in range(3)] == [b"p" * 12 + h for h in
                                              (b"ffffffffff", b"0000000000", b"0000000001")]
    assert ids._count == 2**40 + 1
    ids._count = 0xABCDEF0FFF
    assert ids.next() == b"p" * 12 + b"abcdef1000"
    ids._count = -1
    assert ids.next() == b"p" * 12 + b"0000000000"
    ids._count = 7 * 2**40 + 9
    assert ids.next() == b"p" * 12 + b"000000000a" and ids._count == 7 * 2**40 + 10


def test_request_ids_other_prefixes(head):
    assert head.RequestIds(b"").next() == b"0000000001"
    assert head.RequestIds(b"x" * 100).next() == b"x" * 100 + b"0000000001"
    ids = head.RequestIds(b"ab")
    ids.next()
    ids._prefix = b"cd"
    assert ids.next() == b"cd0000000002" and ids._count == 2
    python = implementation("python")
    for prefix in (bytearray(b"ab"), memoryview(b"ab"), "ab", 5):
        assert outcome(lambda p=prefix: head.RequestIds(p).next()) == outcome(
            lambda p=prefix: python.RequestIds(p).next()
        )
    for count in (1.5, "1", True, None):
        a, b = head.RequestIds(b"ab"), python.RequestIds(b"ab")
        a._count = b._count = count
        assert outcome(a.next) == outcome(b.next), count
        assert a._count == b._count


# -- the twins agree ----------------------------------------------------------------------


def outcome(call, *args):
    try:
        result = call(*args)
    except Exception as exc:  # the exception is the outcome
        return ("raised", type(exc), str(exc))
    return ("returned", shape(result))


def shape(value):
    """VALUE with every type spelled out, so equal values of other types differ."""
    if hasattr(value, "error") and hasattr(value, "fields"):
        return ("head", *(shape(getattr(value, name)) for name in ATTRIBUTES))
    if isinstance(value, list | tuple):
        return (type(value).__name__, *(shape(v) for v in value))
    if isinstance(value, set | frozenset):
        return (type(value).__name__, sorted(shape(v) for v in value))
    return (type(value).__name__, value)


SPECIAL = sorted(
    {
        *CORE["head"]["python"].REQUEST_SPECIAL, *CORE["head"]["python"].RESPONSE_SPECIAL,
        b"user-agent", b"accept", b"accept-encoding", b"cookie", b"content-type",
        b"authorization", b"close", b"x-custom", b"sec-ch-ua", b"via",
    }
)  # fmt: skip


def _near(name: bytes, draw) -> bytes:
    """NAME in random case, or nearly NAME."""
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    out = bytes(c ^ 32 if flip and chr(c).isalpha() else c
                for c, flip in zip(name, flips, strict=True))
    how = draw(st.sampled_from(["same", "same", "same", "cut", "grow", "cr", "high"]))
    if how == "cut":
        return out[:-1]
    if how == "grow":
        return out + draw(st.sampled_from([b"s", b"-", b"\xff"]))
    if how == "cr":
        return out.replace(b"-", b"\r")
    if how == "high":
        return out.replace(b"a", b"\xc1").replace(b"e", b"\xe5")
    return out


TOKEN_BYTES = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
tokens = st.binary(min_size=1, max_size=40).map(
    lambda b: bytes(TOKEN_BYTES[c % len(TOKEN_BYTES)] for c in b)
)
any_values = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")
                                        .replace(b"\x00", b""))  # fmt: skip


KEY = [b"transfer-encoding", b"content-length", b"connection", b"x-forwarded-for",
       b"x-request-id", b"expect", b"upgrade", b"keep-alive", b"te"]


@st.composite
def names_(draw):
    kind = draw(st.sampled_from(["key", "key", "special", "token", "raw"]))
    if kind in ("key", "special"):
        return _near(draw(st.sampled_from(KEY if kind == "key" else SPECIAL)), draw)
    if kind == "token":
        return draw(tokens)
    return draw(st.binary(max_size=12))


@st.composite
def values_(draw, names, name):
    """Mostly what NAME's field holds, sometimes anything."""
    kinds = ["listed", "framing", "id", "number", "any"]
    usual = {b"connection": "listed", b"transfer-encoding": "framing", b"x-request-id": "id",
             b"content-length": "number"}.get(name.lower())  # fmt: skip
    kind = draw(st.sampled_from([usual] * 4 + kinds if usual else kinds))
    if kind == "listed":
        parts = draw(st.lists(st.one_of(st.sampled_from(names or [b"x"]),
                                        st.sampled_from([b"close", b"keep-alive", b"", b"Upgrade"]),
                                        tokens), max_size=4))  # fmt: skip
        pads = draw(st.lists(st.sampled_from([b"", b" ", b"\t", b" \x0b", b"\x0c"]),
                             min_size=2 * len(parts), max_size=2 * len(parts)))  # fmt: skip
        return b",".join(pads[2 * i] + p + pads[2 * i + 1] for i, p in enumerate(parts))
    if kind == "framing":
        return draw(st.sampled_from([b"chunked", b" Chunked ", b"CHUNKED\t", b"gzip, chunked",
                                     b"chunked\x0b", b"chunked\xa0", b"chunke", b""]))
    if kind == "id":
        return draw(st.one_of(st.binary(min_size=126, max_size=130).map(
            lambda b: bytes(b"aZ9._:-"[c % 7] for c in b)), tokens))
    if kind == "number":
        return draw(st.one_of(st.integers(0, 10**30).map(lambda n: b"%d" % n),
                              st.sampled_from([b"", b"007", b" 5", b"1_0", b"-1", b"x"])))
    return draw(any_values)


@st.composite
def header_lists(draw, host=True):
    names = draw(st.lists(names_(), max_size=14))
    pairs = [(name, draw(values_(names, name))) for name in names]
    hosts = draw(st.sampled_from([1, 1, 1, 1, 0, 2])) if host else 0
    for _ in range(hosts):  # mostly one Host, sometimes none or two
        at = draw(st.integers(0, len(pairs)))
        value = draw(st.sampled_from([b"api.example.com", b"a:80", b"[::1]"] * 3
                                     + [b"a b", b"", b"@", b"a\\b"]))
        pairs.insert(at, (draw(st.sampled_from([b"Host", b"host", b"HOST"])), value))
    return pairs


RUNS = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@RUNS
@given(pairs=header_lists())
def test_request_scans_agree(pairs):
    python, compiled = implementation("python"), implementation("compiled")
    got = outcome(compiled.scan_request, pairs)
    assert got == outcome(python.scan_request, pairs), pairs
    if got[0] == "returned":
        assert type(compiled.scan_request(pairs)) is compiled.RequestHead


@RUNS
@given(pairs=header_lists(host=False), upgrade=st.booleans())
def test_response_scans_agree(pairs, upgrade):
    python, compiled = implementation("python"), implementation("compiled")
    assert outcome(compiled.scan_response, pairs, upgrade) == outcome(
        python.scan_response, pairs, upgrade
    ), pairs


@RUNS
@given(triples=st.lists(st.tuples(any_values, any_values, any_values), max_size=12))
def test_encodings_agree(triples):
    python, compiled = implementation("python"), implementation("compiled")
    assert compiled.encode_fields(triples) == python.encode_fields(triples)


@RUNS
@given(
    prefix=st.one_of(st.none(), st.binary(max_size=60)),
    count=st.one_of(st.integers(-(2**45), 2**45), st.integers(2**40 - 40, 2**40 + 40),
                    st.integers(-(2**80), 2**80)),
    steps=st.integers(0, 40),
)  # fmt: skip
def test_request_ids_agree(prefix, count, steps):
    python = implementation("python").RequestIds(prefix if prefix is not None else b"pp")
    compiled = implementation("compiled").RequestIds(prefix if prefix is not None else b"pp")
    python._count = compiled._count = count
    assert [compiled.next() for _ in range(steps)] == [python.next() for _ in range(steps)]
    assert compiled._count == python._count
