"""The compact-JWS core on both implementations: splitting and base64url, the
JSON fast path against the parser of record, the header rules, the ECDSA
re-encoding; and that the implementations agree."""

import base64
import json
import math

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgw._core import CORE
from fastgw.auth.codes import AuthCode
from fastgw.auth.jws import parse, strict_object

IMPLEMENTATIONS = CORE["jws"]
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
HEADER = b'{"alg":"RS256","typ":"JWT","kid":"k1"}'
CLAIMS = (
    b'{"iss":"https://idp.example.com/realms/corp","sub":"3f1c6a52-9b1e-4c1a-8d7e-2f5b9a0c4e11",'
    b'"aud":["orders-api","account"],"exp":1700003600,"iat":1700000000,"nbf":1700000000,'
    b'"jti":"0b9f0d56","scope":"openid profile read_orders","azp":"web",'
    b'"realm_access":{"roles":["offline_access","user"]}}'
)

needs_compiled = pytest.mark.skipif("compiled" not in IMPLEMENTATIONS,
                                    reason="compiled core not built")


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def core(request):
    return IMPLEMENTATIONS[request.param]


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def token(header: bytes = HEADER, claims: bytes = CLAIMS, signature: bytes = b"sig") -> bytes:
    return b64(header) + b"." + b64(claims) + b"." + b64(signature)


def typed(value) -> str:
    """VALUE written out with every number's type and every name's order kept,
    for comparisons where 1 != 1.0 and True != 1."""
    return json.dumps(value)


def never(data):
    raise AssertionError(f"the parser of record was asked for {data!r}")


# -- split and base64url ------------------------------------------------------------------


def test_split(core):
    header, claims, signing_input, signature = core.split(token())
    assert (header, claims, signature) == (HEADER, CLAIMS, b"sig")
    assert signing_input == token().rsplit(b".", 1)[0]
    assert core.split(b64(HEADER) + b"." + b64(CLAIMS) + b".") [3] == b""
    assert core.MAX_TOKEN == 8192


@pytest.mark.parametrize(
    "text",
    [b"", b".", b"..", b"a.b", b"..a", b"a..b", b".a.b", b"a.b.c.d", b"a.b.c.", "a.b.c",
     b"QQ.QQ.Q", b"Q.QQ.QQ", b"QR.QQ.QQ", b"QQ.QR.QQ", b"QQ.QQ.QR", b"QQ=.QQ.QQ",
     b"QQ.QQ.QQ\n", b" QQ.QQ.QQ", b"QQ.Q+.QQ", b"QQ.Q/.QQ", b"Q\xc3\xa9.QQ.QQ", None, 7],
)
def test_split_rejects(core, text):
    assert core.split(text) is None
    assert core.parse(text, never) is None


def test_split_length_limit(core):
    head = b64(HEADER) + b"." + b64(b"{}") + b"."
    at_limit = head + b"A" * (core.MAX_TOKEN - len(head))
    while len(at_limit) % 4 == 1 or len(at_limit.rsplit(b".", 1)[1]) % 4 == 1:
        at_limit = at_limit[:-1]
    assert core.split(at_limit) is not None
    assert core.split(at_limit + b"AAAA") is None


@pytest.mark.parametrize("tail", [2, 3])
def test_non_canonical_trailing_bits(core, tail):
    data = b"x" * (3 + tail - 1)
    good = b64(data)
    assert len(good) % 4 == tail and core.b64url(good) == data
    for char in ALPHABET.encode():
        text = good[:-1] + bytes([char])
        decoded = core.b64url(text)
        assert decoded is None or b64(decoded) == text


@given(st.binary(max_size=300))
def test_b64url_round_trip(data):
    for core in IMPLEMENTATIONS.values():
        assert core.b64url(b64(data)) == data


@needs_compiled
@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.text(alphabet=ALPHABET + "=+/ .", max_size=30).map(str.encode),
                 st.binary(max_size=20)))
def test_b64url_and_split_agree(text):
    python, compiled = IMPLEMENTATIONS["python"], IMPLEMENTATIONS["compiled"]
    assert python.b64url(text) == compiled.b64url(text)
    assert python.split(text) == compiled.split(text)
    dotted = text.replace(b" ", b".")
    assert python.split(dotted) == compiled.split(dotted)


# -- JSON: the fast path answers what the parser of record answers ----------------------------


def test_ordinary_objects_take_the_fast_path(core):
    assert core.json_object(CLAIMS, never) == json.loads(CLAIMS)
    assert core.json_object(HEADER, never) == json.loads(HEADER)
    assert core.json_object(b'{ "a" : [1, {"b" : "c:d"}, []] ,\n"e":null }', never) is not None
    assert core.json_object(b"{}", never) == {}


@pytest.mark.parametrize(
    "data",
    [
        # duplicate names at every depth, also after unescaping and around whitespace
        b'{"sub":"alice","sub":"admin"}',
        b'{"a":1,"a" :2}',
        b'{"a":1,"a"\n\t:2}',
        b'{"a":1,"\\u0061":2}',
        b'{"x":{"b":1,"b":2}}',
        b'{"x":[{"a":1},{"b":1,"b":1}]}',
        b'{"x":{"y":{"z":{"d":1,"d":1}}}}',
        b'{"x":[[[[{"d":1,"d":1}]]]]}',
        b'{"s":"a\\":b","a":1,"a":2}',
        b'{"a":{},"a":{}}',
        # what the parser of record refuses
        b'{"exp":NaN}',
        b'{"exp":Infinity}',
        b'{"exp":-Infinity}',
        b'{"exp":1e400}',
        b'{"exp":-1e400}',
        b'{"exp":1' + b"0" * 5000 + b"}",
        b'{"sub":"\\ud800"}',
        b'{"sub":"\\udc00\\ud800"}',
        b'{"sub":"\xed\xa0\x80"}',
        b'{"sub":"\xc0\xaf"}',
        b'{"sub":"\xff"}',
        b'\xef\xbb\xbf{"a":1}',
        b'{"a":1}x',
        b'{"a":1,}',
        b"[]",
        b"1",
        b'"text"',
        b"",
        b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
)
def test_refused(core, data):
    assert strict_object(data) is None
    assert core.json_object(data, strict_object) is None


@pytest.mark.parametrize(
    "data",
    [
        b'{"n":18446744073709551616}',  # beyond 64 bits: an int, as int() reads it
        b'{"n":-9223372036854775809}',
        b'{"n":123456789012345678901234567890}',
        b'{"n":18446744073709551615}',
        b'{"n":1.5,"m":-0.0,"o":1e2,"p":1E-2,"q":-0}',
        b'{"n":1e-400}',
        b'{"s":"a\\":b"}',  # a quote and a colon inside a string
        b'{"s":"\\u003a","t":"\\"\\u0020:"}',
        b'{"s":"\\ud83d\\ude00","\\u00e9":"\\/"}',
        b'{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}',
        b'{"a":' + b"[" * 64 + b"]" * 64 + b"}",  # past the fast path's depth
        b'{"a":' + b"[" * 500 + b"]" * 500 + b"}",
        b'{"s":"' + b"[" * 100 + b'"}',  # brackets in a string count, to be safe
    ],
)
def test_accepted_as_the_parser_of_record_reads_it(core, data):
    expected = strict_object(data)
    assert expected is not None
    assert typed(core.json_object(data, strict_object)) == typed(expected)


def test_integers_beyond_64_bits_stay_exact(core):
    value = core.json_object(b'{"n":18446744073709551617}', strict_object)
    assert value == {"n": 18446744073709551617} and type(value["n"]) is int


# JSON texts near the edges of what either parser accepts: names that repeat (also
# escaped), whitespace, numbers of every shape, escapes, broken UTF-8, deep nesting.
_names = st.sampled_from([b'"a"', b'"b"', b'"\\u0061"', b'"sub"', b'"s\\u0075b"', b'""',
                          b'"a:"', b'"\\""'])
_space = st.sampled_from([b"", b"", b"", b" ", b"\n", b"\t", b"\r\n ", b"\x0c", b"\xc2\xa0"])
_numbers = st.one_of(
    st.integers(-(2**70), 2**70).map(lambda n: str(n).encode()),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f).encode()),
    st.sampled_from([b"1e400", b"-1e400", b"1e-400", b"-0", b"0e0", b"1E2", b"1.0", b"01",
                     b"1.", b".5", b"+1", b"-", b"1e", b"NaN", b"Infinity", b"-Infinity",
                     b"18446744073709551616", b"9223372036854775807", b"1" * 30,
                     b"0." + b"0" * 30 + b"1", b"1e99999999999999999999", b"4.9e-324"]),
)
_strings = st.one_of(
    st.text(max_size=8).map(lambda s: json.dumps(s).encode()),
    st.text(max_size=8).map(lambda s: json.dumps(s, ensure_ascii=False).encode("utf-8",
                                                                              "surrogatepass")),
    st.sampled_from([b'"\\ud800"', b'"\\udc00"', b'"\\ud83d\\ude00"', b'"\\ud83d"', b'"a\\":b"',
                     b'"\\u003a"', b'"\\\\"', b'"\xff"', b'"\xed\xa0\x80"', b'"\x01"', b'"\\x"',
                     b'"\xf0\x9f\x98\x80"', b'"\xc0\xaf"', b'"\\/"', b'"\\u0000"']),
)
_scalars = st.one_of(_numbers, _strings, st.sampled_from([b"true", b"false", b"null", b"tru"]))


def _container(children):
    pair = st.builds(lambda n, s1, s2, v: n + s1 + b":" + s2 + v, _names, _space, _space, children)
    objects = st.builds(lambda s, items: b"{" + s + b",".join(items) + b"}", _space,
                        st.lists(pair, max_size=4))
    arrays = st.builds(lambda s, items: b"[" + s + b",".join(items) + s + b"]", _space,
                       st.lists(children, max_size=4))
    return st.one_of(objects, arrays)


_values = st.recursive(_scalars, _container, max_leaves=12)
_objects = st.builds(
    lambda s1, items, s2: s1 + b"{" + b",".join(items) + b"}" + s2,
    _space,
    st.lists(st.builds(lambda n, s, v: n + s + b":" + v, _names, _space, _values), max_size=6),
    _space,
)
_texts = st.one_of(
    _objects,
    st.builds(lambda text, at, junk: text[:at] + junk + text[at:], _objects,
              st.integers(0, 60), st.sampled_from([b",", b'"', b":", b"{", b"}", b"\\", b"\x00",
                                                   b" ", b"]", b"\xff", b"1"])),
    st.builds(lambda depth, inner: b'{"a":' + b"[" * depth + inner + b"]" * depth + b"}",
              st.integers(55, 75), st.sampled_from([b"", b'{"a":1,"a":2}', b"1.5", b'"x"'])),
    st.binary(max_size=40),
)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_texts)
def test_fast_path_agrees_with_the_parser_of_record(data):
    expected = typed(strict_object(data))
    for core in IMPLEMENTATIONS.values():
        assert typed(core.json_object(data, strict_object)) == expected


# no quote or colon in any string: no string can pass for a name's end
_plain_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=':"'),
                      max_size=5)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_plain_text, st.recursive(
    st.one_of(st.integers(-(2**63), 2**64 - 1), _plain_text, st.booleans(), st.none()),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(_plain_text, children, max_size=3)),
    max_leaves=10), max_size=6))
def test_what_orjson_writes_takes_the_fast_path(value):
    import orjson

    data = orjson.dumps(value)
    if data.count(b"{") + data.count(b"[") > IMPLEMENTATIONS["python"].MAX_CONTAINERS:
        return
    for core in IMPLEMENTATIONS.values():
        assert core.json_object(data, never) == value


# -- header rules -------------------------------------------------------------------------

_header_values = st.one_of(
    st.sampled_from(["RS256", "none", "JWT", "jwt", "application/jwt", "Application/JWT", "json",
                     "at+jwt", "exp", "x-custom", "alg", ""]),
    st.integers(0, 2), st.none(), st.booleans(),
    st.lists(st.sampled_from(["alg", "exp", "b64", "x-custom", 1]), max_size=3),
    st.dictionaries(st.sampled_from(["name"]), st.just("RS256"), max_size=1),
)
_headers = st.dictionaries(st.sampled_from(["alg", "enc", "b64", "kid", "cty", "crit", "typ",
                                            "exp"]), _header_values, max_size=6)


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ({"alg": "RS256"}, True),
        ({"alg": "RS256", "kid": "", "typ": "at+jwt", "cty": "json"}, True),
        ({"alg": "none"}, True),
        ({}, False),
        ({"alg": 1}, False),
        ({"alg": "RS256", "enc": "A256GCM"}, False),
        ({"alg": "RS256", "b64": True}, False),
        ({"alg": "RS256", "kid": None}, False),
        ({"alg": "RS256", "cty": "JWT"}, False),
        ({"alg": "RS256", "cty": "Application/Jwt"}, False),
        ({"alg": "RS256", "cty": 1}, False),
        ({"alg": "RS256", "crit": []}, False),
        ({"alg": "RS256", "crit": ["exp"], "exp": 1}, False),
        ({"alg": "RS256", "crit": "exp"}, False),
    ],
)
def test_header_rules(core, header, ok):
    assert core.header_ok(header) is ok


@needs_compiled
@settings(max_examples=1000, deadline=None)
@given(_headers)
def test_header_rules_agree(header):
    assert IMPLEMENTATIONS["python"].header_ok(header) is IMPLEMENTATIONS["compiled"].header_ok(
        header)


# -- whole tokens ------------------------------------------------------------------------------


def test_parse(core):
    alg, kid, header, claims, signing_input, signature = core.parse(token(), never)
    assert (alg, kid, signature) == ("RS256", "k1", b"sig")
    assert header == json.loads(HEADER) and claims == json.loads(CLAIMS)
    assert signing_input == b64(HEADER) + b"." + b64(CLAIMS)
    assert core.parse(token(b'{"alg":"none"}'), never)[1] is None


@pytest.mark.parametrize(
    ("header", "claims"),
    [
        (b'{"alg":"RS256","alg":"none"}', CLAIMS),
        (b'{"alg":"RS256","kid":"a","kid" : "b"}', CLAIMS),
        (b'{"alg":"RS256","x":{"y":1,"y":1}}', CLAIMS),
        (b'{"alg":"RS256","x":[[{"y":1,"\\u0079":1}]]}', CLAIMS),
        (HEADER, CLAIMS[:-1] + b',"sub":"admin"}'),
        (HEADER, CLAIMS[:-2] + b',"roles":[]}}'),
        (HEADER, b'{"exp":1,"a":[{"b":[{"c":{"d":1,"d":2}}]}]}'),
        (HEADER, b'{"exp":1' + b"0" * 5000 + b"}"),  # past int()'s digit limit
        (HEADER, b'{"exp":1e999}'),
        (HEADER, b'{"exp":1,"a":' + b"[" * 3000 + b"]" * 3000 + b"}"),
        (b'{"alg":"RS256","cty":"JWT"}', CLAIMS),
    ],
)
def test_hostile_tokens_are_malformed(core, header, claims):
    assert core.parse(token(header, claims), strict_object) is None
    assert parse(token(header, claims)) is AuthCode.MALFORMED_TOKEN


@needs_compiled
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=st.one_of(st.just(HEADER), _objects), claims=st.one_of(st.just(CLAIMS), _texts),
       signature=st.binary(max_size=8))
def test_parse_agrees(header, claims, signature):
    text = token(header, claims, signature)
    python = IMPLEMENTATIONS["python"].parse(text, strict_object)
    compiled = IMPLEMENTATIONS["compiled"].parse(text, strict_object)
    assert (python is None) is (compiled is None)
    if python is not None:
        assert python[:2] == compiled[:2] and python[4:] == compiled[4:]
        assert typed(python[2]) == typed(compiled[2]) and typed(python[3]) == typed(compiled[3])


# -- ECDSA signatures as DER ---------------------------------------------------------------------


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.binary(max_size=140),
                 st.builds(lambda a, b: a + b, st.sampled_from([b"", b"\x00" * 20, b"\x80"]),
                           st.binary(min_size=64, max_size=96))))
def test_der_signature_is_the_librarys(raw):
    size = len(raw) // 2
    expected = encode_dss_signature(int.from_bytes(raw[:size], "big"),
                                    int.from_bytes(raw[size:], "big"))
    for core in IMPLEMENTATIONS.values():
        assert core.der_signature(raw) == expected


def test_float_reading_never_differs():
    # floats are always read by the parser of record: no rounding to agree on
    for text in (b"0.1", b"1.7976931348623157e308", b"2.2250738585072011e-308", b"5e-324"):
        data = b'{"f":' + text + b"}"
        for core in IMPLEMENTATIONS.values():
            assert core.json_object(data, strict_object)["f"] == float(text)
            with pytest.raises(AssertionError):
                core.json_object(data, never)
    assert math.isfinite(strict_object(b'{"f":1e308}')["f"])


@needs_compiled
def test_compiled_claims_are_left_out_of_the_cyclic_collector():
    import gc

    compiled = IMPLEMENTATIONS["compiled"]
    value = compiled.json_object(b'{"a":[1,{"b":[]}],"c":{}}', never)
    assert not any(gc.is_tracked(v) for v in (value, value["a"], value["a"][1], value["c"]))
    gc.collect()
    assert value == {"a": [1, {"b": []}], "c": {}}
    value["d"] = [value]  # a container put in a dict makes it tracked again
    assert gc.is_tracked(value)
    # what the parser of record builds is left as it is
    assert gc.is_tracked(compiled.json_object(b'{"a":[],"f":1.5}', strict_object))
