"""The door's hot path on both implementations: the bearer token, the verified-
token cache, the one-call cached path; and that the implementations agree."""

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw._core import CORE
from fastgw.auth.codes import AuthCode
from fastgw.auth.door import Authenticator
from fastgw.auth.verifier import Result
from fastgw.config.model import Auth
from fastgw.explain import _CapturedAudit
from fastgw.http.headers import Headers
from fastgw.http.request import Request
from fastgw.metrics import Metrics

IMPLEMENTATIONS = CORE["door"]
NOW = 1_700_000_000.0
ISS = "https://idp.example.com"
TOKEN = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def door(request):
    return IMPLEMENTATIONS[request.param]


def fields(*pairs: tuple[str, bytes | str]) -> list:
    out = []
    for name, value in pairs:
        raw = name.encode()
        out.append((raw.lower(), raw, value if isinstance(value, bytes) else value.encode()))
    return out


def bearer(door, *values, query=""):
    return door.bearer(fields(*(("Authorization", v) for v in values)), query)


# -- the bearer token ---------------------------------------------------------------------


def test_codes_match_authcode(door):
    for name in ("OK", "MISSING_TOKEN", "MALFORMED_TOKEN", "TWO_CREDENTIALS"):
        value = getattr(door, name)
        assert type(value) is int and value == AuthCode[name].value
    assert door.MAX_TOKEN == 8192


def test_the_one_bearer_token(door):
    other = fields(("Accept", "*/*"), ("X-Authorization", b"Bearer nope"))
    assert door.bearer(other, "") == (AuthCode.MISSING_TOKEN, None)
    assert door.bearer(other + fields(("AUTHORIZATION", b"Bearer " + TOKEN)), "") == (0, TOKEN)
    for scheme in (b"Bearer ", b"bearer ", b"BEARER ", b"bEaReR "):
        assert bearer(door, scheme + TOKEN) == (AuthCode.OK, TOKEN)


@pytest.mark.parametrize(
    ("value", "code", "token"),
    [
        (b"Bearer  " + TOKEN, AuthCode.OK, TOKEN),
        (b"Bearer \t " + TOKEN + b" \t", AuthCode.OK, TOKEN),
        (b"Bearer x", AuthCode.OK, b"x"),
        (b"Bearer " + b"a" * 8192, AuthCode.OK, b"a" * 8192),
        (b"Bearer " + b"a" * 8193, AuthCode.MALFORMED_TOKEN, None),
        (b"Bearer ", AuthCode.MALFORMED_TOKEN, None),
        (b"Bearer  \t ", AuthCode.MALFORMED_TOKEN, None),
        (b"Bearer " + TOKEN + "é".encode(), AuthCode.MALFORMED_TOKEN, None),
        (b"Bearer \xff", AuthCode.MALFORMED_TOKEN, None),
        (b"Bearer a b", AuthCode.OK, b"a b"),  # the JWS parser refuses it
        (b"Bearer", AuthCode.MISSING_TOKEN, None),
        (b"Bearer\t" + TOKEN, AuthCode.MISSING_TOKEN, None),
        (b"Bearer:" + TOKEN, AuthCode.MISSING_TOKEN, None),
        (b"Basic YWxpY2U6cHc=", AuthCode.MISSING_TOKEN, None),
        (b"Bearex " + TOKEN, AuthCode.MISSING_TOKEN, None),
        (b"Bearer" + TOKEN, AuthCode.MISSING_TOKEN, None),
        (TOKEN, AuthCode.MISSING_TOKEN, None),
        (b"", AuthCode.MISSING_TOKEN, None),
    ],
)  # fmt: skip
def test_bearer_values(door, value, code, token):
    assert bearer(door, value) == (code, token)


def test_two_credentials(door):
    token = b"Bearer " + TOKEN
    assert bearer(door, token, token) == (AuthCode.TWO_CREDENTIALS, None)
    assert bearer(door, token, b"Basic x") == (AuthCode.TWO_CREDENTIALS, None)
    for query in ("access_token=x", "a=1&access_token=", "access_token", "b&access_token=y&c"):
        assert bearer(door, token, query=query) == (AuthCode.TWO_CREDENTIALS, None)
    for query in ("access_tokens=x", "x=access_token", "my_access_token=1", "a=1&b=2", ""):
        assert bearer(door, token, query=query) == (AuthCode.OK, TOKEN)
    # a token in the query alone is not a credential here
    assert door.bearer([], "access_token=x") == (AuthCode.MISSING_TOKEN, None)


# -- the cache ----------------------------------------------------------------------------


def provider(keyset="keyset", leeway=30.0):
    return SimpleNamespace(leeway=leeway, keyset_getter=lambda: keyset)


def entry(door, keyset="keyset", leeway=30.0, **claims):
    claims = {"iss": ISS, "sub": "alice", "exp": NOW + 300, **claims}
    result = Result(AuthCode.OK, claims, "corp", "k1", ISS, "alice")
    return door.CachedToken(result, provider(keyset, leeway), "key", "RS256", keyset)


def test_cached_token(door):
    cached = entry(door, nbf=NOW - 10, iat=NOW - 5)
    assert (cached.expires, cached.starts, cached.leeway) == (NOW + 330, NOW - 5, 30.0)
    assert cached.claims is cached.result.claims and not cached.bound and not cached.used
    assert cached.scopes is None and cached.fields is None
    assert entry(door).starts == float("-inf")
    assert entry(door, cnf={"x5t#S256": "abc"}).bound
    assert entry(door, exp=2**60).expires == float(2**60) + 30


def test_fresh_is_the_time_window(door):
    cached = entry(door, nbf=NOW + 100)
    assert not cached.fresh(NOW + 69.9)
    assert cached.fresh(NOW + 70)
    assert cached.fresh(NOW + 329.9)
    assert not cached.fresh(NOW + 330)
    assert not entry(door, iat=NOW + 31).fresh(NOW)
    assert entry(door, iat=NOW + 30).fresh(NOW)


def test_cache_get_put_pop(door):
    cache = door.TokenCache(10)
    one = entry(door)
    assert cache.get(b"a") is None and len(cache) == 0
    cache.put(b"a", one)
    assert cache.get(b"a") is one and one.used and len(cache) == 1
    two = entry(door)
    cache.put(b"a", two)
    assert cache.get(b"a") is two and len(cache) == 1
    cache.pop(b"a")
    cache.pop(b"a")
    assert cache.get(b"a") is None and len(cache) == 0
    cache.put(b"b", one)
    cache.clear()
    assert len(cache) == 0


def test_cache_size_zero_keeps_nothing(door):
    cache = door.TokenCache(0)
    cache.put(b"a", entry(door))
    assert len(cache) == 0 and cache.get(b"a") is None
    assert door.TokenCache(-5).size == 0


def test_eviction_gives_used_entries_a_second_chance(door):
    cache = door.TokenCache(3)
    entries = {name: entry(door) for name in (b"a", b"b", b"c", b"d", b"e")}
    for name in (b"a", b"b", b"c"):
        cache.put(name, entries[name])
    cache.get(b"a")
    cache.put(b"d", entries[b"d"])  # b goes: a was used since it was last looked at
    assert [name for name in entries if cache.get(name) is not None] == [b"a", b"c", b"d"]
    # looking them up marked all three used: one pass clears the marks, then the oldest goes
    cache.put(b"e", entries[b"e"])
    assert len(cache) == 3 and cache.get(b"e") is entries[b"e"]
    assert cache.get(b"c") is None


def test_cache_stays_bounded_under_churn(door):
    cache = door.TokenCache(50)
    hot = entry(door)
    cache.put(b"hot", hot)
    for i in range(2000):
        cache.put(b"%d" % i, entry(door))
        assert cache.get(b"hot") is hot  # a token in use stays
        assert len(cache) <= 50


# -- the cached path in one call ----------------------------------------------------------


def request(*pairs, query=""):
    headers = Headers.from_raw(fields(("Host", "api"), *pairs))
    return Request("GET", "/orders/1", query, "1.1", headers, "api", "10.0.0.1", "http", "rid")


def admitted(door, cache, req, now=NOW):
    """Whether ``admit`` took the request; if not, it must hand back what
    ``bearer`` finds and leave the request as it was."""
    before = list(req.headers.fields)
    found = door.admit(cache, req, now)
    if found is not None:
        assert found == door.bearer(before, req.query)
        assert req.headers.fields == before and req.claims is None and req.identity is None
    return found is None


@pytest.fixture
def cached(door):
    cache = door.TokenCache(10)
    one = entry(door, scope="read", iat=NOW)
    one.scopes = frozenset({"read"})
    one.fields = ((b"x-auth-subject", b"X-Auth-Subject", b"alice"),)
    cache.put(TOKEN, one)
    return cache, one


def test_admit_takes_the_cached_verdict(door, cached):
    cache, one = cached
    one.used = False
    req = request(("Authorization", b"Bearer " + TOKEN))
    assert admitted(door, cache, req)
    assert req.claims is one.claims and req.identity is one.result
    assert req.scopes == {"read"} and one.used
    assert req.headers.fields[-1] == (b"x-auth-subject", b"X-Auth-Subject", b"alice")
    assert req.headers.get("Authorization") == "Bearer " + TOKEN.decode()


def test_admit_leaves_everything_else_to_the_full_path(door, cached):
    cache, one = cached
    good = ("Authorization", b"Bearer " + TOKEN)
    assert not admitted(door, cache, request())
    assert not admitted(door, cache, request(("Authorization", b"Bearer " + TOKEN + b"x")))
    assert not admitted(door, cache, request(good, good))
    assert not admitted(door, cache, request(good, query="access_token=1"))
    assert not admitted(door, cache, request(good), now=NOW + 330)  # expired
    assert not admitted(door, cache, request(good), now=NOW - 31)  # before iat
    one.fields = None  # the door has not derived its fields yet
    assert not admitted(door, cache, request(good))


def test_admit_checks_the_key_set_and_binding(door):
    cache = door.TokenCache(10)
    moved = entry(door, keyset="old")
    moved.fields = ()
    moved.provider.keyset_getter = lambda: "new"
    cache.put(TOKEN, moved)
    assert not admitted(door, cache, request(("Authorization", b"Bearer " + TOKEN)))
    bound = entry(door, cnf={"x5t#S256": "abc"})
    bound.fields = ()
    cache.put(TOKEN, bound)
    assert not admitted(door, cache, request(("Authorization", b"Bearer " + TOKEN)))


# -- authorization --------------------------------------------------------------------------


@pytest.fixture
def authorizer():
    authenticator = Authenticator(Auth(), metrics=Metrics(), audit=_CapturedAudit())

    def allowed(granted, *required):
        check = authenticator.authorizer(required)
        ex = SimpleNamespace(request=request())
        ex.request.scopes = granted
        return check(ex) is None

    return allowed


def test_required_scopes(authorizer):
    granted = frozenset({"read_orders", "SCOPE_write_orders", "Admin"})
    assert authorizer(granted, "read_orders")
    assert authorizer(granted, "SCOPE_read_orders")
    assert not authorizer(granted, "write_orders")  # SCOPE_x in a token does not grant x
    assert not authorizer(granted, "SCOPE_write_orders")
    assert authorizer(granted, "SCOPE_SCOPE_write_orders")  # one prefix stripped
    assert not authorizer(granted, "admin")  # case-sensitive
    assert not authorizer(granted, "read")
    assert not authorizer(granted, "read_orders", "b")
    assert authorizer(granted, "read_orders", "Admin")
    assert not authorizer(frozenset(), "x")
    assert not authorizer(None, "x")  # no verified credential


# -- the two implementations agree ----------------------------------------------------------

header_values = st.one_of(
    st.sampled_from([b"Bearer " + TOKEN, b"bearer x", b"Basic x", b"Bearer ", b"Bearer \t",
                     b"BEARER  a.b.c \t", b"Bearer \xc3\xa9", b"Bearer"]),
    st.binary(max_size=20),
    st.builds(lambda head, tail: head + tail,
              st.sampled_from([b"Bearer ", b"bEARER ", b"Bearer\t"]),
              st.binary(max_size=12)),
)
header_fields = st.lists(
    st.tuples(st.sampled_from(["Authorization", "authorization", "Accept", "Authorizatio"]),
              header_values),
    max_size=4,
)
queries = st.one_of(
    st.just(""),
    st.lists(st.sampled_from(["access_token", "access_token=1", "a=access_token", "x", "",
                              "access_tokenx=1", "=access_token"]), max_size=3).map("&".join),
)


@pytest.mark.skipif("compiled" not in IMPLEMENTATIONS, reason="compiled core not built")
@settings(max_examples=800, deadline=None)
@given(pairs=header_fields, query=queries)
def test_bearer_agrees(pairs, query):
    python, compiled = IMPLEMENTATIONS["python"], IMPLEMENTATIONS["compiled"]
    raw = fields(*pairs)
    assert python.bearer(raw, query) == compiled.bearer(raw, query)


times = st.one_of(
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(min_value=-1e15, max_value=1e15),
    st.sampled_from([NOW, NOW + 30, NOW - 30, NOW + 29.5, NOW + 0.1]),
)


@settings(max_examples=800, deadline=None)
@given(
    exp=times,
    nbf=st.one_of(st.none(), times),
    iat=st.one_of(st.none(), times),
    leeway=st.sampled_from([0.0, 0.5, 30.0, 1e9]),
    now=st.one_of(st.just(NOW), st.floats(min_value=-1e15, max_value=1e15), times),
)
def test_fresh_agrees_with_the_claim_checks(exp, nbf, iat, leeway, now):
    claims = {"iss": ISS, "exp": exp}
    for name, value in (("nbf", nbf), ("iat", iat)):
        if value is not None:
            claims[name] = value
    expected = {}
    for name, claims_module in CORE["claims"].items():
        expected[name] = claims_module.check_claims(claims, now, leeway, ISS, ()) == 0
    for name, door in IMPLEMENTATIONS.items():
        cached = entry(door, leeway=leeway, **claims)
        assert cached.fresh(now) is expected.get(name, expected["python"])


def test_peek_does_not_mark(door):
    cache = door.TokenCache(2)
    one, two, three = entry(door), entry(door), entry(door)
    cache.put(b"a", one)
    cache.put(b"b", two)
    assert cache.peek(b"a") is one and not one.used
    assert cache.peek(b"x") is None
    cache.put(b"c", three)  # a is the oldest and unused: it goes
    assert cache.peek(b"a") is None and cache.peek(b"b") is two


def test_tokens_seen_once_are_evicted_in_order(door):
    # the request that verified a token reads its entry with peek: under a load of
    # tokens each seen once, every eviction takes the oldest at once
    cache = door.TokenCache(100)
    for i in range(1000):
        name = b"%d" % i
        cache.put(name, entry(door))
        assert cache.peek(name) is not None
        assert next(iter(cache.entries)) == b"%d" % max(0, i - 99)


def _hs256(claims: dict) -> bytes:
    import base64
    import hmac
    import json

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(claims).encode())
    return signing_input + b"." + b64(hmac.digest(SECRET.encode(), signing_input, "sha256"))


SECRET = "door-secret-door-secret-door-secret!"


def test_a_new_token_is_admitted_and_cached_unused():
    import time

    from fastgw.config.model import Provider

    provider = Provider(name="corp", issuer=ISS, algorithms=("HS256",), secret=SECRET)
    authenticator = Authenticator(Auth(providers=(provider,)), metrics=Metrics(),
                                  audit=_CapturedAudit())
    token = _hs256({"iss": ISS, "sub": "Zoë\r\n", "exp": time.time() + 300,
                    "scope": "write read"})
    req = request(("Authorization", b"Bearer " + token))
    ex = SimpleNamespace(request=req)
    assert authenticator.authenticate(ex) is None
    assert req.identity.sub == "Zoë\r\n" and req.claims["scope"] == "write read"
    assert req.scopes == {"read", "write"}
    assert req.headers.fields[-2:] == [
        (b"x-auth-subject", b"X-Auth-Subject", b"Zo%C3%AB%0D%0A"),
        (b"x-auth-scopes", b"X-Auth-Scopes", b"read write"),
    ]
    cached = authenticator.verifier.cache.peek(token)
    assert cached is not None and not cached.used
    assert cached.scopes is req.scopes and cached.fields == tuple(req.headers.fields[-2:])
    again = request(("Authorization", b"Bearer " + token))
    assert authenticator.authenticate(SimpleNamespace(request=again)) is None
    assert cached.used and again.identity is req.identity
    assert again.headers.fields[-2:] == req.headers.fields[-2:]


@pytest.mark.skipif("compiled" not in IMPLEMENTATIONS, reason="compiled core not built")
def test_compiled_entry_leaves_its_verdict_out_of_the_cyclic_collector():
    import gc

    compiled = IMPLEMENTATIONS["compiled"]
    cached = entry(compiled)
    assert not gc.is_tracked(cached.result) and gc.is_tracked(cached)
    gc.collect()
    assert cached.result.claims["sub"] == "alice"
    # anything but a plain named tuple is left as it is
    verdict = SimpleNamespace(claims={"exp": NOW})
    compiled.CachedToken(verdict, provider(), "key", "RS256", "keyset")
    assert gc.is_tracked(verdict)
