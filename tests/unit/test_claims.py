"""Claim checks and scopes, on both implementations, and a test that they agree."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw._core import CORE
from fastgw.auth.codes import AuthCode

IMPLEMENTATIONS = CORE["claims"]
NOW = 1_700_000_000.0
ISS = "https://idp.example.com/realms/corp"
AUD = ("orders-api", "billing-api")


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def claims_module(request):
    return IMPLEMENTATIONS[request.param]


def valid(**changes):
    claims = {"iss": ISS, "sub": "alice", "aud": "orders-api", "exp": NOW + 300, "iat": NOW}
    for name, value in changes.items():
        if value is ...:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def check(module, claims, now=NOW, leeway=30.0, issuer=ISS, audiences=AUD):
    return AuthCode(module.check_claims(claims, now, leeway, issuer, audiences))


def test_codes_match_authcode(claims_module):
    for name in ("OK", "MALFORMED_TOKEN", "EXPIRED", "NOT_YET_VALID", "BAD_ISSUER", "BAD_AUDIENCE"):
        value = getattr(claims_module, name)
        assert type(value) is int and value == AuthCode[name].value


def test_valid(claims_module):
    assert check(claims_module, valid()) is AuthCode.OK
    assert check(claims_module, valid(nbf=NOW, iat=...)) is AuthCode.OK
    assert check(claims_module, valid(exp=int(NOW) + 300)) is AuthCode.OK


@pytest.mark.parametrize(
    "exp",
    [
        ...,
        None,
        "2000000000",
        str(NOW + 300),
        True,
        False,
        [NOW + 300],
        {"v": 1},
        math.nan,
        math.inf,
        -math.inf,
        10**400,
    ],
)
def test_exp_missing_or_not_a_number_is_malformed(claims_module, exp):
    assert check(claims_module, valid(exp=exp)) is AuthCode.MALFORMED_TOKEN


@pytest.mark.parametrize("name", ["nbf", "iat"])
@pytest.mark.parametrize("value", [None, "0", True, [], math.nan, math.inf, -(10**400)])
def test_nbf_iat_present_must_be_numbers(claims_module, name, value):
    assert check(claims_module, valid(**{name: value})) is AuthCode.MALFORMED_TOKEN


def test_exp_edges(claims_module):
    exp = NOW + 100
    # RFC 7519 4.1.4: now must be before exp (plus leeway)
    assert check(claims_module, valid(exp=exp), now=exp + 29.999) is AuthCode.OK
    assert check(claims_module, valid(exp=exp), now=exp + 30) is AuthCode.EXPIRED
    assert check(claims_module, valid(exp=exp), now=exp + 31) is AuthCode.EXPIRED
    assert check(claims_module, valid(exp=exp), now=exp - 0.001, leeway=0) is AuthCode.OK
    assert check(claims_module, valid(exp=exp), now=exp, leeway=0) is AuthCode.EXPIRED
    assert check(claims_module, valid(exp=int(exp)), now=exp, leeway=0) is AuthCode.EXPIRED
    assert check(claims_module, valid(exp=0), now=NOW) is AuthCode.EXPIRED
    assert check(claims_module, valid(exp=-1e300), now=NOW) is AuthCode.EXPIRED


@pytest.mark.parametrize("name", ["nbf", "iat"])
def test_future_nbf_iat_edges(claims_module, name):
    assert check(claims_module, valid(**{name: NOW + 30})) is AuthCode.OK
    assert check(claims_module, valid(**{name: NOW + 30.001})) is AuthCode.NOT_YET_VALID
    assert check(claims_module, valid(**{name: NOW + 3600})) is AuthCode.NOT_YET_VALID
    assert check(claims_module, valid(**{name: NOW + 1}), leeway=0) is AuthCode.NOT_YET_VALID
    assert check(claims_module, valid(**{name: NOW}), leeway=0) is AuthCode.OK
    assert check(claims_module, valid(**{name: 0})) is AuthCode.OK


@pytest.mark.parametrize("iss", [..., None, "", ISS + "/", ISS.upper(), " " + ISS, [ISS], 1])
def test_issuer_exact(claims_module, iss):
    assert check(claims_module, valid(iss=iss)) is AuthCode.BAD_ISSUER


def test_audience(claims_module):
    assert check(claims_module, valid(aud="billing-api")) is AuthCode.OK
    assert check(claims_module, valid(aud=["other", "orders-api"])) is AuthCode.OK
    assert check(claims_module, valid(aud="other")) is AuthCode.BAD_AUDIENCE
    assert check(claims_module, valid(aud="Orders-API")) is AuthCode.BAD_AUDIENCE
    assert check(claims_module, valid(aud="orders-api ")) is AuthCode.BAD_AUDIENCE
    assert check(claims_module, valid(aud=["other", "more"])) is AuthCode.BAD_AUDIENCE
    assert check(claims_module, valid(aud=[])) is AuthCode.BAD_AUDIENCE
    assert check(claims_module, valid(aud=...)) is AuthCode.BAD_AUDIENCE
    assert check(claims_module, valid(aud="orders-api billing-api")) is AuthCode.BAD_AUDIENCE


@pytest.mark.parametrize("aud", [None, 1, True, {"orders-api": 1}, ["orders-api", 1], [None]])
def test_audience_of_the_wrong_type_is_malformed(claims_module, aud):
    assert check(claims_module, valid(aud=aud)) is AuthCode.MALFORMED_TOKEN
    assert check(claims_module, valid(aud=aud), audiences=()) is AuthCode.MALFORMED_TOKEN


def test_no_configured_audiences_skips_the_audience_check(claims_module):
    assert check(claims_module, valid(aud="anything"), audiences=()) is AuthCode.OK
    assert check(claims_module, valid(aud=...), audiences=()) is AuthCode.OK
    assert check(claims_module, valid(aud=[]), audiences=()) is AuthCode.OK


def test_order_of_checks(claims_module):
    everything_wrong = {"exp": NOW - 100, "nbf": NOW + 100, "iss": "x", "aud": "y"}
    assert check(claims_module, everything_wrong) is AuthCode.EXPIRED
    assert check(claims_module, {**everything_wrong, "iat": "x"}) is AuthCode.MALFORMED_TOKEN
    assert check(claims_module, {**everything_wrong, "exp": NOW + 100}) is AuthCode.NOT_YET_VALID
    assert check(claims_module, {"exp": NOW + 100, "iss": "x", "aud": "y"}) is AuthCode.BAD_ISSUER
    assert check(claims_module, {"exp": NOW + 100, "iss": ISS, "aud": "y"}) is AuthCode.BAD_AUDIENCE


def test_wrong_argument_types_raise(claims_module):
    with pytest.raises((TypeError, AttributeError)):
        claims_module.check_claims(None, NOW, 30.0, ISS, AUD)


# -- scopes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "scopes"),
    [
        ({}, set()),
        ({"scope": "read_orders write_orders"}, {"read_orders", "write_orders"}),
        ({"scope": "  a   b "}, {"a", "b"}),
        ({"scope": ""}, set()),
        ({"scope": "a\tb"}, {"a\tb"}),  # only spaces separate
        ({"scp": ["a", "b c"]}, {"a", "b c"}),
        ({"scp": "a b"}, {"a", "b"}),
        ({"scp": ["a", 1, None, ["b"]]}, {"a"}),
        ({"scp": {"a": 1}}, set()),
        ({"scope": ["a", "b"]}, set()),  # scope is text only
        ({"scope": "a", "scp": ["b"]}, {"a"}),  # scope, when present, wins
        ({"scope": None, "scp": ["b"]}, set()),
        ({"scope": 1}, set()),
    ],
)
def test_scopes_of(claims_module, claims, scopes):
    result = claims_module.scopes_of(claims)
    assert type(result) is frozenset and result == scopes


@pytest.mark.parametrize(
    ("scope", "name", "granted"),
    [
        ("ab a", "a", True),
        ("ab", "a", False),
        ("ab", "b", False),
        ("ba", "a", False),
        ("x  a", "a", True),
        (" a ", "a", True),
        ("a b", "a b", False),
        ("a", "", False),
        ("", "", False),
        ("a_b", "a", False),
        ("SCOPE_a", "a", False),
    ],
)
def test_scope_words(claims_module, scope, name, granted):
    for claims in ({"scope": scope}, {"scp": scope}):
        assert (name in claims_module.scopes_of(claims)) is granted


# -- the two implementations agree --------------------------------------------------------

names = st.sampled_from(["exp", "nbf", "iat", "iss", "aud", "scope", "scp", "sub"])
text = st.sampled_from(
    [ISS, "orders-api", "billing-api", "a", "b", "a b", " a  b ", "ab a", "SCOPE_a", "", " "]
)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([NOW, NOW + 30, NOW - 30, NOW + 29.5, 10**400, -(10**400)]),
)
values = st.one_of(
    numbers,
    text,
    st.booleans(),
    st.none(),
    st.lists(st.one_of(text, st.integers(), st.none()), max_size=4),
    st.dictionaries(text, st.integers(), max_size=2),
)
claim_sets = st.dictionaries(names, values, max_size=8)


@pytest.mark.skipif("compiled" not in IMPLEMENTATIONS, reason="compiled core not built")
@settings(max_examples=600, deadline=None)
@given(
    claims=claim_sets,
    now=st.one_of(st.just(NOW), st.floats(min_value=-1e12, max_value=1e12)),
    leeway=st.sampled_from([0.0, 0.5, 30.0, 1e9]),
    audiences=st.sampled_from([(), ("orders-api",), ("orders-api", "b"), ("a b",)]),
)
def test_implementations_agree(claims, now, leeway, audiences):
    python, compiled = IMPLEMENTATIONS["python"], IMPLEMENTATIONS["compiled"]
    assert python.check_claims(claims, now, leeway, ISS, audiences) == compiled.check_claims(
        claims, now, leeway, ISS, audiences
    )
    assert python.scopes_of(claims) == compiled.scopes_of(claims)


# -- identity header fields ------------------------------------------------------------------

SUBJECT = (b"x-auth-subject", b"X-Auth-Subject")
SCOPES = (b"x-auth-scopes", b"X-Auth-Scopes")


def test_identity(claims_module):
    scopes, fields = claims_module.identity("alice", {"scope": "write read  read"})
    assert scopes == {"read", "write"}
    assert fields == ((*SUBJECT, b"alice"), (*SCOPES, b"read write"))
    identity = claims_module.identity
    assert identity(None, {"scp": ["b", "a", 1]}) == ({"a", "b"}, ((*SCOPES, b"a b"),))
    assert identity("bob", {"scp": "x"}) == ({"x"}, ((*SUBJECT, b"bob"), (*SCOPES, b"x")))
    assert claims_module.identity("bob", {}) == (frozenset(), ((*SUBJECT, b"bob"),))
    assert claims_module.identity(None, {"scope": ["a"], "scp": ["b"]}) == (frozenset(), ())
    assert claims_module.identity("", {"scope": ""}) == (frozenset(), ((*SUBJECT, b""),))


@pytest.mark.parametrize(
    ("text", "subject", "scope"),
    [
        ("alice", b"alice", b"alice"),
        ("a b", b"a b", b"a%20b"),
        (" a  b ", b" a  b ", b"%20a%20%20b%20"),
        ("50%", b"50%25", b"50%25"),
        ("x\r\nX-Admin: 1", b"x%0D%0AX-Admin: 1", b"x%0D%0AX-Admin:%201"),
        ("Zoë ✓", b"Zo%C3%AB %E2%9C%93", b"Zo%C3%AB%20%E2%9C%93"),
        ("\x00\x7f~!", b"%00%7F~!", b"%00%7F~!"),
        ("", b"", b""),
    ],
)
def test_header_values(claims_module, text, subject, scope):
    assert claims_module.header_value(text, True) == subject
    assert claims_module.header_value(text, False) == scope


def test_scope_texts_are_kept_and_bounded(claims_module):
    first = claims_module.identity("a", {"scope": "kept once"})[0]
    assert claims_module.identity("b", {"scope": "kept once"})[0] is first
    for i in range(claims_module.SCOPE_TEXTS_KEPT * 2 + 1):
        scopes, fields = claims_module.identity("a", {"scope": f"s{i} t"})
        assert scopes == {f"s{i}", "t"} and fields[1] == (*SCOPES, b"s%d t" % i)


def _reference_identity(sub, claims):
    """The identity fields as written before the core wrote them: urllib's quote."""
    from urllib.parse import quote

    token_safe = "".join(chr(c) for c in range(0x21, 0x7F) if c != 0x25)
    python = IMPLEMENTATIONS["python"]
    fields = []
    if sub is not None:
        fields.append((*SUBJECT, quote(sub, safe=token_safe + " ").encode("ascii")))
    scopes = python.scopes_of(claims)
    if scopes:
        value = " ".join(sorted(quote(s, safe=token_safe) for s in scopes))
        fields.append((*SCOPES, value.encode("ascii")))
    return scopes, tuple(fields)


no_surrogates = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
scope_values = st.one_of(
    no_surrogates,
    st.lists(st.one_of(no_surrogates, st.integers()), max_size=4),
    st.integers(),
    st.none(),
)


@settings(max_examples=800, deadline=None)
@given(
    sub=st.one_of(st.none(), no_surrogates),
    claims=st.dictionaries(st.sampled_from(["scope", "scp", "sub"]), scope_values, max_size=3),
)
def test_identity_agrees_with_the_reference(sub, claims):
    expected = _reference_identity(sub, claims)
    for claims_module in IMPLEMENTATIONS.values():
        assert claims_module.identity(sub, claims) == expected


@pytest.mark.parametrize("space", [True, False])
def test_header_value_refuses_lone_surrogates(claims_module, space):
    with pytest.raises(UnicodeEncodeError):
        claims_module.header_value("a\udc80", space)
