"""``fastgw explain``: one request through a config, check by check (SPEC section 2).

The config's upstream is a live recording upstream, so the tests also show
that explaining a request sends nothing to it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fastgw.testing.idp import SigningKey, jwks, mint_token
from fastgw.testing.process import SOURCE_ROOT

from .support import assert_nothing_reached

ISS = "https://idp.explain.test"
AUDIENCE = "orders-api"


@pytest.fixture(scope="module")
def key():
    return SigningKey.generate("ES256")


@pytest.fixture
def config(tmp_path, key, upstream):
    (tmp_path / "jwks.json").write_text(json.dumps(jwks(key)))
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps({
        "listeners": [{"address": "127.0.0.1:0"}],
        "auth": {"jwt": {"providers": [{
            "name": "corp", "issuer": ISS, "jwks_file": str(tmp_path / "jwks.json"),
            "audiences": [AUDIENCE], "algorithms": ["ES256"]}]}},
        "services": {"orders": {"instances": [upstream.url]}},
        "routes": [
            {"id": "orders", "uri": "lb://orders", "predicates": ["Path=/orders/**"],
             "filters": ["RequireScopes=SCOPE_read_orders"]},
            {"id": "public", "uri": "lb://orders", "predicates": ["Path=/public/**"],
             "auth": "none", "filters": ["StripPrefix=1"]},
        ],
    }, indent=1))
    yield path
    assert_nothing_reached(upstream)


def explain(config, *args: str | bytes) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastgw", "explain", "-c", str(config), *args],
        capture_output=True, text=True, timeout=60, cwd=SOURCE_ROOT,
    )


def lines(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 0, result
    return [" ".join(line.split()) for line in result.stdout.splitlines()]


def token(key, **options) -> str:
    options.setdefault("scope", "read_orders")
    return mint_token(key, iss=ISS, aud=AUDIENCE, sub="alice", **options)


def test_a_good_token_passes_every_check(config, key):
    out = lines(explain(config, "--token", token(key), "GET", "/orders/42"))
    assert out[0] == "request GET /orders/42 Host: localhost"
    assert out[1].startswith(f"route orders ({config}:") and out[1].endswith("-> lb://orders")
    assert "auth jwt" in out and "provider corp: key set loaded" in out
    assert f"check authenticate passed: token valid (sub 'alice', iss '{ISS}')" in out
    assert "check authorize passed: has SCOPE_read_orders" in out
    assert "GET /orders/42 (Authorization removed)" in out
    assert out[-1] == "result forwarded (the status is the upstream's)"


def test_a_token_in_a_header_counts_as_one(config, key):
    out = lines(explain(config, "-H", f"Authorization: Bearer {token(key)}", "GET", "/orders/1"))
    assert out[-1].startswith("result forwarded")
    # --token takes the place of a header's token, not a second credential beside it
    out = lines(explain(config, "-H", "Authorization: Bearer junk", "--token", token(key),
                        "GET", "/orders/1"))
    assert out[-1].startswith("result forwarded")


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"ttl": -120}, "expired"),
        ({"aud": "billing-api"}, "bad_audience"),
        ({"iss": "https://elsewhere.test"}, "bad_issuer"),
    ],
)
def test_why_a_token_is_refused(config, key, options, reason):
    claims = {"ttl": options.get("ttl", 300), "scope": "read_orders", "sub": "alice"}
    bad = mint_token(key, iss=options.get("iss", ISS), aud=options.get("aud", AUDIENCE), **claims)
    out = lines(explain(config, "--token", bad, "GET", "/orders/1"))
    assert f"check authenticate FAILED: {reason}" in out
    if reason != "bad_issuer":
        assert "sub: alice" in out and f"kid: {key.kid}" in out
    assert out[-1] == 'result 401 WWW-Authenticate: Bearer error="invalid_token"'


def test_a_missing_token(config):
    out = lines(explain(config, "GET", "/orders/1"))
    assert "check authenticate FAILED: missing_token" in out
    assert out[-1] == "result 401 WWW-Authenticate: Bearer"


def test_a_token_from_an_unknown_key(config):
    stranger = SigningKey.generate("ES256")
    out = lines(explain(config, "--token", token(stranger), "GET", "/orders/1"))
    assert "check authenticate FAILED: unknown_kid" in out
    assert out[-1].startswith("result 401")


def test_a_tampered_token(config, key):
    header, claims, signature = token(key).split(".")
    tampered = f"{header}.{claims}.{signature[:-4]}AAAA"
    out = lines(explain(config, "--token", tampered, "GET", "/orders/1"))
    assert "check authenticate FAILED: bad_signature" in out


def test_a_missing_scope(config, key):
    out = lines(explain(config, "--token", token(key, scope="profile"), "GET", "/orders/1"))
    assert "check authenticate passed: token valid (sub 'alice', iss " + repr(ISS) + ")" in out
    assert "check authorize FAILED: insufficient_scope" in out
    assert out[-1] == ('result 403 WWW-Authenticate: Bearer error="insufficient_scope", '
                       'scope="read_orders"')


@pytest.mark.parametrize("junk", [b"ab\xffcd", "été".encode(), b"a b", b""])
def test_a_token_that_is_not_a_token(config, junk):
    out = lines(explain(config, "--token", junk, "GET", "/orders/1"))
    assert "check authenticate FAILED: malformed_token" in out
    assert out[-1] == 'result 401 WWW-Authenticate: Bearer error="invalid_token"'


def test_a_route_without_auth_and_its_filters(config):
    out = lines(explain(config, "GET", "/public/hello?x=1"))
    assert "auth none" in out
    assert "filter StripPrefix: /public/hello?x=1 -> /hello?x=1" in out
    assert out[-1].startswith("result forwarded")


def test_no_route(config):
    out = lines(explain(config, "GET", "/nowhere"))
    assert out[-2:] == ["route no route matches", "result 404 no_route"]


def test_a_path_is_shown_normalised(config, key):
    out = lines(explain(config, "--token", token(key), "GET", "/orders/a/../42"))
    assert out[0] == "request GET /orders/a/../42 (normalised to /orders/42) Host: localhost"


def test_a_bad_header_argument(config):
    result = explain(config, "-H", "no colon here", "GET", "/orders/1")
    assert result.returncode == 2 and result.stdout == ""
    assert "bad header 'no colon here' (use 'Name: value')" in result.stderr


def test_a_bad_config(tmp_path, upstream):
    path = tmp_path / "gateway.yaml"
    path.write_text("listeners: [{address: 127.0.0.1:0}]\nroutes: [{id: x}]\n")
    result = explain(path, "GET", "/")
    assert result.returncode == 2 and result.stdout == ""
    assert f"{path}:2:" in result.stderr
