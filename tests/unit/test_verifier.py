"""Token verification end to end: providers, keys, signatures, claims, the cache,
and the verdict table. Tokens are assembled and signed by hand."""

import base64
import hmac
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

import fastgw.auth.verifier as verifier_module
from fastgw._core import CORE
from fastgw.auth.codes import VERDICTS, AuthCode, Verdict, www_authenticate
from fastgw.auth.keys import KeySet, key_from_jwk, keyset_from_secret
from fastgw.auth.verifier import ProviderVerifier, Result, TokenVerifier
from fastgw.config.model import Provider

NOW = 1_700_000_000.0
ISS = "https://idp.example.com/realms/corp"
SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret!"  # 35 bytes


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(value: int) -> str:
    return b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


def sign(alg: str, key, message: bytes) -> bytes:
    family, bits = alg[:2], alg[2:]
    if family == "RS":
        return key.sign(message, padding.PKCS1v15(), _HASHES[bits]())
    if family == "PS":
        digest = _HASHES[bits]()
        return key.sign(message, padding.PSS(padding.MGF1(digest), digest.digest_size), digest)
    if family == "ES":
        size = (key.curve.key_size + 7) // 8
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(_HASHES[bits]())))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg == "EdDSA":
        return key.sign(message)
    if family == "HS":
        return hmac.digest(key, message, f"sha{bits}")
    raise ValueError(alg)


def assemble(header: bytes, claims: bytes, alg: str | None, key) -> str:
    signing_input = f"{b64(header)}.{b64(claims)}"
    signature = sign(alg, key, signing_input.encode()) if alg else b""
    return f"{signing_input}.{b64(signature)}"


def mint(alg, key, claims=None, *, kid="k1", header=None, **changes):
    head = {"alg": alg, "typ": "JWT", **({"kid": kid} if kid else {}), **(header or {})}
    body = {"iss": ISS, "sub": "alice", "aud": "orders-api", "exp": NOW + 300, "iat": NOW}
    body.update(claims or {})
    for name, value in changes.items():
        if value is ...:
            body.pop(name, None)
        else:
            body[name] = value
    return assemble(json.dumps(head).encode(), json.dumps(body).encode(), alg, key)


def public_jwk(private, **extra) -> dict:
    public = private.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        return {"kty": "RSA", "n": uint(numbers.n), "e": uint(numbers.e), **extra}
    if isinstance(public, ec.EllipticCurvePublicKey):
        numbers = public.public_numbers()
        size = (public.curve.key_size + 7) // 8
        crv = {"secp256r1": "P-256", "secp384r1": "P-384"}[public.curve.name]
        return {
            "kty": "EC",
            "crv": crv,
            "x": b64(numbers.x.to_bytes(size, "big")),
            "y": b64(numbers.y.to_bytes(size, "big")),
            **extra,
        }
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    crv = "Ed25519" if isinstance(public, ed25519.Ed25519PublicKey) else "Ed448"
    return {"kty": "OKP", "crv": crv, "x": b64(raw), **extra}


def jwk_key(private, **extra):
    key, reason = key_from_jwk(public_jwk(private, **extra))
    assert reason is None, reason
    return key


class KeySource:
    """Stands in for the JWKS lifecycle: holds the provider's current key set."""

    def __init__(self, keyset: KeySet | None):
        self.keyset = keyset

    def __call__(self) -> KeySet | None:
        return self.keyset


class Clock:
    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def keys():
    return {
        "rsa": rsa.generate_private_key(65537, 2048),
        "rsa2": rsa.generate_private_key(65537, 2048),
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
        "ed448": ed448.Ed448PrivateKey.generate(),
    }


@pytest.fixture(params=sorted(CORE["claims"]))
def claims_impl(request, monkeypatch):
    """Run each verifier test with each implementation of the claim checks and
    the verified-token cache."""
    monkeypatch.setattr(verifier_module, "active", lambda name: CORE[name][request.param])
    return CORE["claims"][request.param]


@pytest.fixture
def signature_checks(monkeypatch):
    calls = []
    real = verifier_module.verify_signature

    def counting(alg, key, signing_input, signature):
        calls.append(alg)
        return real(alg, key, signing_input, signature)

    monkeypatch.setattr(verifier_module, "verify_signature", counting)
    return calls


def provider(algorithms=("RS256",), audiences=("orders-api",), **options):
    return Provider(
        name="corp",
        issuer=ISS,
        algorithms=tuple(algorithms),
        audiences=audiences,
        **{"jwks_uri": "https://idp.example.com/certs", "leeway": 30.0, **options},
    )


def build(keyset, clock=None, cache_size=100, **options):
    source = KeySource(keyset)
    verifier = TokenVerifier(
        [ProviderVerifier(provider(**options), source)],
        cache_size=cache_size,
        clock=clock or Clock(),
    )
    return verifier, source


@pytest.fixture
def rsa_verifier(keys, claims_impl):
    verifier, _ = build(KeySet([jwk_key(keys["rsa"], kid="k1")]))
    return verifier


# -- happy paths --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alg", "name"),
    [
        ("RS256", "rsa"), ("RS384", "rsa"), ("RS512", "rsa"),
        ("PS256", "rsa"), ("PS384", "rsa"), ("PS512", "rsa"),
        ("ES256", "p256"), ("ES384", "p384"),
        ("EdDSA", "ed25519"), ("EdDSA", "ed448"),
    ],
)  # fmt: skip
def test_asymmetric_happy_paths(keys, claims_impl, alg, name):
    verifier, _ = build(KeySet([jwk_key(keys[name], kid="k1")]), algorithms=(alg,))
    result = verifier.verify(mint(alg, keys[name]))
    assert result.code is AuthCode.OK
    assert result == Result(AuthCode.OK, result.claims, "corp", "k1", ISS, "alice", False)
    assert result.claims["aud"] == "orders-api"


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_happy_path(claims_impl, alg):
    secret = SECRET * 2
    verifier, _ = build(keyset_from_secret(secret), algorithms=(alg,), jwks_uri=None, secret=secret)
    result = verifier.verify(mint(alg, secret.encode(), kid=None))
    assert result.code is AuthCode.OK and result.kid is None and result.sub == "alice"


def test_key_without_kid_matches_a_token_without_kid(keys, claims_impl):
    verifier, _ = build(KeySet([jwk_key(keys["rsa"])]))
    assert verifier.verify(mint("RS256", keys["rsa"], kid=None)).code is AuthCode.OK
    assert verifier.verify(mint("RS256", keys["rsa"], kid="k9")).code is AuthCode.UNKNOWN_KID


# -- algorithm and key selection ----------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_never_verifies(rsa_verifier, alg):
    header = json.dumps({"alg": alg, "kid": "k1"}).encode()
    claims = json.dumps({"iss": ISS, "aud": "orders-api", "exp": NOW + 300}).encode()
    for signature in ("", b64(b"x")):
        text = f"{b64(header)}.{b64(claims)}.{signature}"
        assert rsa_verifier.verify(text).code is AuthCode.ALG_NOT_ALLOWED


def test_alg_not_in_the_allow_list(keys, rsa_verifier):
    for alg in ("PS256", "RS512"):
        result = rsa_verifier.verify(mint(alg, keys["rsa"]))
        assert result.code is AuthCode.ALG_NOT_ALLOWED
        assert (result.provider, result.iss, result.kid, result.sub) == ("corp", ISS, "k1", None)
    lower = mint("RS256", keys["rsa"], header={"alg": "rs256"})
    assert rsa_verifier.verify(lower).code is AuthCode.ALG_NOT_ALLOWED


def test_hs256_signed_with_the_rsa_public_key_fails(keys, claims_impl, signature_checks):
    pem = (
        keys["rsa"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    der = (
        keys["rsa"]
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    jwk_text = json.dumps(public_jwk(keys["rsa"])).encode()
    rsa_set = KeySet([jwk_key(keys["rsa"], kid="k1")])
    only_rs, _ = build(rsa_set)
    both, _ = build(rsa_set, algorithms=("RS256", "HS256"))
    for secret in (pem, der, jwk_text):
        for kid in ("k1", None):
            forged = mint("HS256", secret, kid=kid)
            assert only_rs.verify(forged).code is AuthCode.ALG_NOT_ALLOWED
            assert both.verify(forged).code in (AuthCode.ALG_NOT_ALLOWED, AuthCode.UNKNOWN_KID)
    assert signature_checks == []


def test_declared_key_alg_is_binding(keys, claims_impl):
    keyset = KeySet([jwk_key(keys["rsa"], kid="k1", alg="RS256")])
    verifier, _ = build(keyset, algorithms=("RS256", "PS256"))
    assert verifier.verify(mint("RS256", keys["rsa"])).code is AuthCode.OK
    assert verifier.verify(mint("PS256", keys["rsa"])).code is AuthCode.ALG_NOT_ALLOWED


def test_kid_of_another_key_type(keys, claims_impl):
    keyset = KeySet([jwk_key(keys["p256"], kid="k1")])
    verifier, _ = build(keyset, algorithms=("RS256", "ES256"))
    result = verifier.verify(mint("RS256", keys["rsa"]))
    assert result.code is AuthCode.ALG_NOT_ALLOWED and not result.unknown_kid
    ec384 = KeySet([jwk_key(keys["p384"], kid="k1")])
    verifier, _ = build(ec384, algorithms=("ES256", "ES384"))
    assert verifier.verify(mint("ES256", keys["p256"])).code is AuthCode.ALG_NOT_ALLOWED


def test_unknown_kid_asks_for_a_refresh(keys, claims_impl):
    verifier, source = build(KeySet([jwk_key(keys["rsa"], kid="k1")], version=1))
    token = mint("RS256", keys["rsa2"], kid="k2")
    result = verifier.verify(token)
    assert result.code is AuthCode.UNKNOWN_KID and result.unknown_kid
    assert (result.kid, result.provider) == ("k2", "corp")
    source.keyset = KeySet([jwk_key(keys["rsa"], kid="k1"), jwk_key(keys["rsa2"], kid="k2")], 2)
    assert verifier.verify(token).code is AuthCode.OK


def test_no_key_set_loaded_yet(keys, claims_impl):
    verifier, _ = build(None)
    result = verifier.verify(mint("RS256", keys["rsa"]))
    assert result.code is AuthCode.UNKNOWN_KID and result.unknown_kid


def test_duplicate_kid_is_unknown(keys, claims_impl):
    twins = KeySet([jwk_key(keys["rsa"], kid="k1"), jwk_key(keys["rsa2"], kid="k1")])
    verifier, _ = build(twins)
    result = verifier.verify(mint("RS256", keys["rsa"]))
    assert result.code is AuthCode.UNKNOWN_KID and result.unknown_kid


def test_no_kid_and_several_keys(keys, claims_impl):
    keyset = KeySet([jwk_key(keys["rsa"], kid="k1"), jwk_key(keys["rsa2"], kid="k2")])
    verifier, _ = build(keyset)
    assert verifier.verify(mint("RS256", keys["rsa"], kid=None)).code is AuthCode.UNKNOWN_KID
    assert verifier.verify(mint("RS256", keys["rsa"], kid="k1")).code is AuthCode.OK


def test_key_marked_enc_is_never_used(keys, claims_impl):
    key, reason = key_from_jwk(public_jwk(keys["rsa"], kid="k1", use="enc"))
    assert key is None and reason == "use is enc"
    verifier, _ = build(KeySet([]))
    assert verifier.verify(mint("RS256", keys["rsa"])).code is AuthCode.UNKNOWN_KID


@pytest.mark.parametrize("member", ["jwk", "jku", "x5u", "x5c"])
def test_keys_named_in_the_header_are_not_used(keys, rsa_verifier, signature_checks, member):
    attacker = keys["rsa2"]
    embedded = {
        "jwk": public_jwk(attacker),
        "jku": "http://127.0.0.1:1/jwks.json",
        "x5u": "http://127.0.0.1:1/cert.pem",
        "x5c": [b64(b"not a certificate")],
    }[member]
    for kid in ("k1", None):
        forged = mint("RS256", attacker, kid=kid, header={member: embedded})
        assert rsa_verifier.verify(forged).code is AuthCode.BAD_SIGNATURE
    genuine = mint("RS256", keys["rsa"], header={member: embedded})
    assert rsa_verifier.verify(genuine).code is AuthCode.OK


def test_bad_signature(keys, rsa_verifier):
    token = mint("RS256", keys["rsa"])
    head, body, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[10] ^= 1
    assert rsa_verifier.verify(f"{head}.{body}.{b64(bytes(raw))}").code is AuthCode.BAD_SIGNATURE
    other = mint("RS256", keys["rsa"], sub="mallory")
    swapped = f"{head}.{other.split('.')[1]}.{signature}"
    result = rsa_verifier.verify(swapped)
    assert result.code is AuthCode.BAD_SIGNATURE
    assert result.sub is None and result.claims is None  # unverified claims never surface
    assert rsa_verifier.verify(f"{head}.{body}.").code is AuthCode.BAD_SIGNATURE
    assert rsa_verifier.verify(mint("RS256", keys["rsa2"])).code is AuthCode.BAD_SIGNATURE


# -- issuer and provider selection --------------------------------------------------------


def test_issuer_selects_the_provider(keys, claims_impl):
    corp = ProviderVerifier(provider(), KeySource(KeySet([jwk_key(keys["rsa"], kid="k1")])))
    partner = ProviderVerifier(
        Provider(
            name="partner",
            issuer="https://partner.example",
            algorithms=("ES256",),
            jwks_uri="https://partner.example/certs",
        ),
        KeySource(KeySet([jwk_key(keys["p256"], kid="k1")])),
    )
    verifier = TokenVerifier([corp, partner], clock=Clock())
    assert verifier.verify(mint("RS256", keys["rsa"])).provider == "corp"
    theirs = mint("ES256", keys["p256"], iss="https://partner.example", aud="x")
    assert verifier.verify(theirs)[:3] == (AuthCode.OK, verifier.verify(theirs).claims, "partner")
    # a partner token cannot borrow the corp issuer's keys, nor the other way round
    assert verifier.verify(mint("ES256", keys["p256"])).code is AuthCode.ALG_NOT_ALLOWED
    crossed = mint("RS256", keys["rsa"], iss="https://partner.example")
    assert verifier.verify(crossed).code is AuthCode.ALG_NOT_ALLOWED


@pytest.mark.parametrize("iss", [..., None, "https://evil.example", ISS + "/", ISS.upper(), [ISS]])
def test_unknown_issuer(keys, rsa_verifier, iss):
    result = rsa_verifier.verify(mint("RS256", keys["rsa"], iss=iss))
    assert result.code is AuthCode.BAD_ISSUER
    assert result.provider is None and result.claims is None


def test_provider_rules():
    with pytest.raises(ValueError, match="share the issuer"):
        TokenVerifier([ProviderVerifier(provider(), KeySource(None)) for _ in range(2)])
    with pytest.raises(ValueError, match="unsupported"):
        ProviderVerifier(provider(algorithms=("RS256", "none")), KeySource(None))
    with pytest.raises(ValueError, match="too short for HS384"):
        ProviderVerifier(provider(algorithms=("HS256", "HS384"), secret="x" * 40), KeySource(None))
    ProviderVerifier(provider(algorithms=("HS512",), secret="x" * 64), KeySource(None))


# -- claims through the verifier (the PyJWT gaps among them) ------------------------------


def signed(keys, claims: bytes, header: bytes = b'{"alg":"RS256","kid":"k1"}') -> str:
    return assemble(header, claims, "RS256", keys["rsa"])


def test_duplicate_claim_names_rejected_even_when_signed(keys, rsa_verifier):
    body = f'{{"iss":"{ISS}","aud":"orders-api","exp":{NOW + 300},"sub":"alice","sub":"admin"}}'
    assert rsa_verifier.verify(signed(keys, body.encode())).code is AuthCode.MALFORMED_TOKEN
    header = b'{"alg":"RS256","kid":"k1","kid":"k2"}'
    ok_body = f'{{"iss":"{ISS}","aud":"orders-api","exp":{NOW + 300}}}'.encode()
    assert rsa_verifier.verify(signed(keys, ok_body, header)).code is AuthCode.MALFORMED_TOKEN
    assert rsa_verifier.verify(signed(keys, ok_body)).code is AuthCode.OK


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_utf16_claims_rejected_even_when_signed(keys, rsa_verifier, encoding):
    body = json.dumps({"iss": ISS, "aud": "orders-api", "exp": NOW + 300}).encode(encoding)
    assert rsa_verifier.verify(signed(keys, body)).code is AuthCode.MALFORMED_TOKEN


@pytest.mark.parametrize("exp", [..., str(int(NOW + 300)), True, None, [NOW + 300]])
def test_exp_must_be_a_number(keys, rsa_verifier, exp):
    result = rsa_verifier.verify(mint("RS256", keys["rsa"], exp=exp))
    assert result.code is AuthCode.MALFORMED_TOKEN
    assert result.sub == "alice" and result.claims is None


def test_time_claims(keys, claims_impl):
    clock = Clock()
    verifier, _ = build(KeySet([jwk_key(keys["rsa"], kid="k1")]), clock=clock, cache_size=0)
    assert verifier.verify(mint("RS256", keys["rsa"], exp=NOW - 31)).code is AuthCode.EXPIRED
    assert verifier.verify(mint("RS256", keys["rsa"], exp=NOW - 30)).code is AuthCode.EXPIRED
    assert verifier.verify(mint("RS256", keys["rsa"], exp=NOW - 29)).code is AuthCode.OK
    assert verifier.verify(mint("RS256", keys["rsa"], nbf=NOW + 31)).code is AuthCode.NOT_YET_VALID
    assert verifier.verify(mint("RS256", keys["rsa"], nbf=NOW + 30)).code is AuthCode.OK
    assert verifier.verify(mint("RS256", keys["rsa"], iat=NOW + 31)).code is AuthCode.NOT_YET_VALID
    assert verifier.verify(mint("RS256", keys["rsa"], iat=NOW + 30)).code is AuthCode.OK
    assert verifier.verify(mint("RS256", keys["rsa"], nbf="0")).code is AuthCode.MALFORMED_TOKEN


@pytest.mark.parametrize(
    ("aud", "code"),
    [
        ("other", AuthCode.BAD_AUDIENCE),
        (["a", "b"], AuthCode.BAD_AUDIENCE),
        (..., AuthCode.BAD_AUDIENCE),
        (["a", "orders-api"], AuthCode.OK),
        ("orders-api", AuthCode.OK),
    ],
)
def test_audience(keys, rsa_verifier, aud, code):
    assert rsa_verifier.verify(mint("RS256", keys["rsa"], aud=aud)).code is code


@pytest.mark.parametrize(
    "text",
    ["", "Bearer", "a.b.c", "a.b", "x" * 9000, "eyJhbGciOiJSUzI1NiJ9.e30.e30.e30.e30"],
)
def test_malformed(rsa_verifier, text):
    assert rsa_verifier.verify(text) == Result(AuthCode.MALFORMED_TOKEN)


def test_token_over_8kib_is_malformed_without_a_signature_check(
    keys, rsa_verifier, signature_checks
):
    big = mint("RS256", keys["rsa"], pad="x" * 8192)
    assert rsa_verifier.verify(big).code is AuthCode.MALFORMED_TOKEN
    assert signature_checks == []


# -- the verified-token cache -------------------------------------------------------------


def test_second_verification_skips_the_signature(keys, claims_impl, signature_checks):
    verifier, _ = build(KeySet([jwk_key(keys["rsa"], kid="k1")]))
    token = mint("RS256", keys["rsa"])
    first = verifier.verify(token)
    second = verifier.verify(token)
    assert first.code is AuthCode.OK and second is first
    assert signature_checks == ["RS256"]
    assert len(verifier) == 1
    assert verifier.verify(mint("RS256", keys["rsa"], sub="bob")).sub == "bob"
    assert signature_checks == ["RS256", "RS256"]


def test_failures_are_not_cached(keys, claims_impl, signature_checks):
    verifier, _ = build(KeySet([jwk_key(keys["rsa"], kid="k1")]))
    forged = mint("RS256", keys["rsa2"])
    expired = mint("RS256", keys["rsa"], exp=NOW - 100)
    for _ in range(2):
        assert verifier.verify(forged).code is AuthCode.BAD_SIGNATURE
        assert verifier.verify(expired).code is AuthCode.EXPIRED
    assert len(signature_checks) == 4 and len(verifier) == 0


def test_cached_token_expires(keys, claims_impl, signature_checks):
    clock = Clock()
    verifier, _ = build(KeySet([jwk_key(keys["rsa"], kid="k1")]), clock=clock)
    token = mint("RS256", keys["rsa"], exp=NOW + 60)
    assert verifier.verify(token).code is AuthCode.OK
    clock.now = NOW + 60 + 29.9
    assert verifier.verify(token).code is AuthCode.OK
    clock.now = NOW + 60 + 30
    result = verifier.verify(token)
    assert result.code is AuthCode.EXPIRED
    assert (result.claims, result.sub, result.kid) == (None, "alice", "k1")
    assert len(verifier) == 0
    assert signature_checks == ["RS256"]
    assert verifier.verify(token).code is AuthCode.EXPIRED


def test_removed_key_invalidates_cached_tokens(keys, claims_impl, signature_checks):
    k1, k2 = jwk_key(keys["rsa"], kid="k1"), jwk_key(keys["rsa2"], kid="k2")
    verifier, source = build(KeySet([k1, k2], version=1))
    one, two = mint("RS256", keys["rsa"]), mint("RS256", keys["rsa2"], kid="k2")
    assert verifier.verify(one).code is AuthCode.OK
    assert verifier.verify(two).code is AuthCode.OK
    assert len(signature_checks) == 2
    source.keyset = KeySet([k2], version=2)
    result = verifier.verify(one)
    assert result.code is AuthCode.UNKNOWN_KID and result.unknown_kid
    assert verifier.verify(two).code is AuthCode.OK  # still there: no new check
    assert len(signature_checks) == 2
    assert len(verifier) == 1


def test_new_key_set_with_the_same_key_keeps_the_entry(keys, claims_impl, signature_checks):
    key = jwk_key(keys["rsa"], kid="k1")
    verifier, source = build(KeySet([key], version=1))
    token = mint("RS256", keys["rsa"])
    assert verifier.verify(token).code is AuthCode.OK
    source.keyset = KeySet([jwk_key(keys["rsa"], kid="k1"), jwk_key(keys["p256"], kid="e")], 2)
    assert verifier.verify(token).code is AuthCode.OK
    assert verifier.verify(token).code is AuthCode.OK
    assert signature_checks == ["RS256"]


def test_replaced_key_material_under_the_same_kid(keys, claims_impl, signature_checks):
    verifier, source = build(KeySet([jwk_key(keys["rsa"], kid="k1")], version=1))
    token = mint("RS256", keys["rsa"])
    assert verifier.verify(token).code is AuthCode.OK
    source.keyset = KeySet([jwk_key(keys["rsa2"], kid="k1")], version=2)
    assert verifier.verify(token).code is AuthCode.BAD_SIGNATURE
    assert len(signature_checks) == 2


def test_key_restricted_to_another_alg_invalidates(keys, claims_impl):
    verifier, source = build(KeySet([jwk_key(keys["rsa"], kid="k1")]), algorithms=("RS256",))
    token = mint("RS256", keys["rsa"])
    assert verifier.verify(token).code is AuthCode.OK
    source.keyset = KeySet([jwk_key(keys["rsa"], kid="k1", alg="PS256")], version=2)
    assert verifier.verify(token).code is AuthCode.ALG_NOT_ALLOWED


def test_key_set_gone_invalidates(keys, claims_impl):
    verifier, source = build(KeySet([jwk_key(keys["rsa"], kid="k1")]))
    token = mint("RS256", keys["rsa"])
    assert verifier.verify(token).code is AuthCode.OK
    source.keyset = None
    assert verifier.verify(token).code is AuthCode.UNKNOWN_KID


def test_cache_is_bounded_lru(keys, claims_impl, signature_checks):
    verifier, _ = build(KeySet([jwk_key(keys["rsa"], kid="k1")]), cache_size=2)
    a, b, c = (mint("RS256", keys["rsa"], sub=name) for name in "abc")
    verifier.verify(a)
    verifier.verify(b)
    verifier.verify(a)  # a is now the most recent
    verifier.verify(c)  # evicts b
    assert len(verifier) == 2 and len(signature_checks) == 3
    verifier.verify(a)
    assert len(signature_checks) == 3
    verifier.verify(b)
    assert len(signature_checks) == 4


def test_cache_disabled(keys, claims_impl, signature_checks):
    verifier, _ = build(KeySet([jwk_key(keys["rsa"], kid="k1")]), cache_size=0)
    token = mint("RS256", keys["rsa"])
    verifier.verify(token)
    verifier.verify(token)
    assert len(signature_checks) == 2 and len(verifier) == 0


def test_cache_key_is_the_exact_text(keys, claims_impl, signature_checks):
    verifier, _ = build(KeySet([jwk_key(keys["rsa"], kid="k1")]))
    token = mint("RS256", keys["rsa"])
    assert verifier.verify(token).code is AuthCode.OK
    assert verifier.verify(token + "A").code is not AuthCode.OK
    assert verifier.verify(" " + token).code is AuthCode.MALFORMED_TOKEN
    assert verifier.verify(token + "\udcff").code is AuthCode.MALFORMED_TOKEN
    assert len(signature_checks) == 2


# -- verdicts -----------------------------------------------------------------------------

SPEC_REASONS = {
    "missing_token", "malformed_token", "alg_not_allowed", "unknown_kid", "bad_signature",
    "expired", "not_yet_valid", "bad_issuer", "bad_audience", "insufficient_scope",
    "rate_limited", "no_client_cert", "bad_client_cert", "cert_binding_mismatch",
}  # fmt: skip


def test_every_failure_has_a_verdict():
    assert set(VERDICTS) == set(AuthCode) - {AuthCode.OK}
    for code, verdict in VERDICTS.items():
        assert isinstance(verdict, Verdict)
        assert verdict.audit_reason in SPEC_REASONS
        assert verdict.audit_event in ("auth_failure", "forbidden")
        if code not in (AuthCode.TWO_CREDENTIALS, AuthCode.INSUFFICIENT_SCOPE):
            assert verdict.audit_reason == code.name.lower() == verdict.metric_label


def test_verdicts_follow_rfc6750():
    assert VERDICTS[AuthCode.MISSING_TOKEN].status == 401
    assert VERDICTS[AuthCode.MISSING_TOKEN].www_authenticate == "Bearer"
    for code in set(AuthCode) - {
        AuthCode.OK,
        AuthCode.MISSING_TOKEN,
        AuthCode.INSUFFICIENT_SCOPE,
        AuthCode.TWO_CREDENTIALS,
    }:
        assert VERDICTS[code].status == 401
        assert VERDICTS[code].www_authenticate == 'Bearer error="invalid_token"'
        assert VERDICTS[code].audit_event == "auth_failure"
    forbidden = VERDICTS[AuthCode.INSUFFICIENT_SCOPE]
    assert (forbidden.status, forbidden.audit_event) == (403, "forbidden")
    assert VERDICTS[AuthCode.TWO_CREDENTIALS].status == 400


def test_www_authenticate():
    assert www_authenticate(AuthCode.EXPIRED) == 'Bearer error="invalid_token"'
    assert www_authenticate(AuthCode.MISSING_TOKEN, ("x",)) == "Bearer"
    assert www_authenticate(AuthCode.INSUFFICIENT_SCOPE, ("read_orders", "write")) == (
        'Bearer error="insufficient_scope", scope="read_orders write"'
    )
    assert www_authenticate(10, ("a",)) == 'Bearer error="insufficient_scope", scope="a"'
    for bad in ('a"b', "a b", "a\\b", "a\r\nX-Evil: 1", "", "é"):
        with pytest.raises(ValueError):
            www_authenticate(AuthCode.INSUFFICIENT_SCOPE, (bad,))
