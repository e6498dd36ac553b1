"""Hostile tokens against the token rules of SPEC section 4 (RFC 8725, RFC 7515, RFC 7519).

Every token here is built byte by byte (``forge``) and, unless the rule it
breaks is the signature itself, carries a valid signature over its exact
signing input by a key the gateway trusts. So each rejection is for the rule
under test: a lenient parser or verifier would have let the token through.
``test_the_forged_baseline_is_accepted`` shows that the unbroken token passes.
"""

from __future__ import annotations

import base64
import datetime
import secrets
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fastgw.testing.idp import IdentityProvider, SigningKey

from .door import AUDIENCE, LEEWAY, SCOPE, key_for
from .forge import (
    b64url,
    flip_bit,
    forge,
    json_text,
    members,
    noncanonical,
    padded,
    standard_alphabet,
)


class Tokens:
    """Parts of a good token, to be broken one rule at a time.

    ``claims()`` and ``header()`` are those of a token the gateway accepts
    (RS256, the identity provider's key); keyword changes override members,
    and ``None`` removes one.
    """

    def __init__(self, idp: IdentityProvider, attacker: IdentityProvider) -> None:
        self.idp = idp
        self.attacker = attacker
        self.key = key_for(idp, "RS256")

    def claims(self, **changes) -> dict:
        now = int(time.time())
        claims = {
            "iss": self.idp.issuer,
            "sub": "mallory",
            "aud": AUDIENCE,
            "scope": SCOPE,
            "iat": now,
            "exp": now + 300,
            "jti": secrets.token_hex(8),
        }
        claims.update(changes)
        return {name: value for name, value in claims.items() if value is not None}

    def header(self, **changes) -> dict:
        header = {"alg": "RS256", "typ": "JWT", "kid": self.key.kid}
        header.update(changes)
        return {name: value for name, value in header.items() if value is not None}

    def signed(
        self,
        header=None,
        claims=None,
        *,
        key: SigningKey | None = None,
        alg: str | None = None,
        **encodings,
    ) -> str:
        """``header`` and ``claims`` (default: the good ones) signed by ``key`` (default:
        the trusted RS256 key) under ``alg`` (default: the header's)."""
        key = key or self.key
        header = self.header() if header is None else header
        claims = self.claims() if claims is None else claims
        if alg is None:
            alg = header["alg"] if isinstance(header, dict) else key.alg
        return forge(header, claims, key=key.private_key, alg=alg, **encodings)

    def claims_text(self, remainder: int = 1, **changes) -> bytes:
        """The good claims as UTF-8 JSON, trailing spaces added until the length
        leaves ``remainder`` modulo 3 (so its base64 has padding and unused bits)."""
        text = json_text(self.claims(**changes))
        while len(text) % 3 != remainder:
            text += " "
        return text.encode()


def self_signed_certificate(private_key) -> bytes:
    """A DER certificate for ``private_key``, as an ``x5c`` entry would carry it."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(private_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.DER)


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def attacker():
    """A second identity provider, the one hostile headers point to."""
    with IdentityProvider(audience=AUDIENCE) as provider:
        yield provider


@pytest.fixture
def tokens(idp, attacker):
    return Tokens(idp, attacker)


# -- hostile tokens, one rule each -------------------------------------------------------------

HOSTILE = []


def rejected_as(reason: str | set[str]):
    """Register a builder of a hostile token that must be refused with ``reason``."""

    def register(build):
        HOSTILE.append(pytest.param(build, reason, id=build.__name__))
        return build

    return register


# Shape: compact JWS only, three canonical base64url segments.


@rejected_as("malformed_token")
def two_segments(t: Tokens) -> str:
    return t.signed().rsplit(".", 1)[0]


@rejected_as("malformed_token")
def empty_claims_segment(t: Tokens) -> str:
    header, _, signature = t.signed().split(".")
    return f"{header}..{signature}"


@rejected_as("malformed_token")
def four_segments(t: Tokens) -> str:
    return t.signed() + "." + b64url(b"extra")


@rejected_as("malformed_token")
def jwe_with_five_segments(t: Tokens) -> str:
    header = b64url(json_text({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": t.key.kid}).encode())
    parts = [b64url(secrets.token_bytes(size)) for size in (256, 12, 64, 16)]
    return ".".join([header, *parts])


@rejected_as("malformed_token")
def jwe_header_on_a_signed_token(t: Tokens) -> str:
    return t.signed(t.header(enc="A256GCM"))


@rejected_as("malformed_token")
def nested_jwt(t: Tokens) -> str:
    inner = t.signed()
    return t.signed(t.header(cty="JWT"), json_text(inner))


@rejected_as("malformed_token")
def json_serialisation(t: Tokens) -> str:
    header, claims, signature = t.signed().split(".")
    return json_text({"payload": claims, "protected": header, "signature": signature})


@rejected_as("malformed_token")
def padding_in_the_claims(t: Tokens) -> str:
    return t.signed(claims=t.claims_text(), claims_encoding=padded)


@rejected_as("malformed_token")
def padding_in_the_header(t: Tokens) -> str:
    header = json_text(t.header())
    header += " " * ((1 - len(header)) % 3)
    return t.signed(header, alg="RS256", header_encoding=padded)


@rejected_as("malformed_token")
def padding_in_the_signature(t: Tokens) -> str:
    return t.signed(signature_encoding=padded)  # 256 bytes: two '=' of padding


@rejected_as("malformed_token")
def noncanonical_claims(t: Tokens) -> str:
    return t.signed(claims=t.claims_text(), claims_encoding=noncanonical)


@rejected_as("malformed_token")
def noncanonical_signature(t: Tokens) -> str:
    return t.signed(signature_encoding=noncanonical)


@rejected_as("malformed_token")
def standard_base64_alphabet(t: Tokens) -> str:
    # '?' is 0x3f: six of them encode to "Pz8/" whatever the alignment.
    return t.signed(claims=t.claims(note="??????"), claims_encoding=standard_alphabet)


@rejected_as("malformed_token")
def a_character_outside_base64url(t: Tokens) -> str:
    def with_bang(data: bytes) -> str:
        text = b64url(data)
        return text[:20] + "!" + text[20:]

    return t.signed(claims_encoding=with_bang)


@rejected_as("malformed_token")
def header_not_an_object(t: Tokens) -> str:
    return t.signed(json_text([t.header()]), alg="RS256")


@rejected_as("malformed_token")
def header_not_json(t: Tokens) -> str:
    return t.signed(f"alg=RS256&kid={t.key.kid}", alg="RS256")


@rejected_as("malformed_token")
def claims_an_array(t: Tokens) -> str:
    return t.signed(claims=json_text([t.claims()]))


@rejected_as("malformed_token")
def claims_a_string(t: Tokens) -> str:
    return t.signed(claims=json_text(SCOPE))


@rejected_as("malformed_token")
def claims_with_trailing_text(t: Tokens) -> str:
    return t.signed(claims=json_text(t.claims()) + "x")


@rejected_as("malformed_token")
def claims_in_utf16_with_bom(t: Tokens) -> str:
    return t.signed(claims=json_text(t.claims()).encode("utf-16"))


@rejected_as("malformed_token")
def claims_in_utf16_without_bom(t: Tokens) -> str:
    return t.signed(claims=json_text(t.claims()).encode("utf-16-le"))


@rejected_as("malformed_token")
def claims_in_utf32(t: Tokens) -> str:
    return t.signed(claims=json_text(t.claims()).encode("utf-32"))


@rejected_as("malformed_token")
def claims_with_a_utf8_bom(t: Tokens) -> str:
    return t.signed(claims=b"\xef\xbb\xbf" + json_text(t.claims()).encode())


@rejected_as("malformed_token")
def claims_in_latin1(t: Tokens) -> str:
    return t.signed(claims=json_text(t.claims(sub="José")).encode("latin-1"))


@rejected_as("malformed_token")
def claims_with_a_lone_surrogate(t: Tokens) -> str:
    return t.signed(claims=json_text(t.claims()).replace('"sub":"mallory"', '"sub":"\\ud800"'))


@rejected_as("malformed_token")
def claims_with_nan(t: Tokens) -> str:
    return t.signed(claims=json_text(t.claims()).replace('"exp":', '"nbf":NaN,"exp":'))


@rejected_as("malformed_token")
def duplicate_alg_in_the_header(t: Tokens) -> str:
    header = members(("alg", "none"), ("typ", "JWT"), ("kid", t.key.kid), ("alg", "RS256"))
    return t.signed(header, alg="RS256")


@rejected_as("malformed_token")
def duplicate_kid_in_the_header(t: Tokens) -> str:
    header = members(("alg", "RS256"), ("kid", "no-such-key"), ("kid", t.key.kid))
    return t.signed(header, alg="RS256")


@rejected_as("malformed_token")
def duplicate_sub_in_the_claims(t: Tokens) -> str:
    return t.signed(claims=members(*t.claims(sub="mallory").items(), ("sub", "admin")))


@rejected_as("malformed_token")
def duplicate_scope_in_the_claims(t: Tokens) -> str:
    return t.signed(claims=members(("scope", "openid"), *t.claims().items()))


@rejected_as("malformed_token")
def duplicate_name_in_a_nested_claim(t: Tokens) -> str:
    claims = json_text(t.claims()).replace('"exp":', '"cnf":{"jkt":"a","jkt":"b"},"exp":')
    return t.signed(claims=claims)


@rejected_as("malformed_token")
def crit_with_an_unknown_name(t: Tokens) -> str:
    return t.signed(t.header(crit=["urn:example:policy"], **{"urn:example:policy": "x"}))


@rejected_as("malformed_token")
def crit_empty(t: Tokens) -> str:
    return t.signed(t.header(crit=[]))


@rejected_as("malformed_token")
def crit_not_an_array(t: Tokens) -> str:
    return t.signed(t.header(crit="exp"))


@rejected_as("malformed_token")
def crit_naming_an_absent_parameter(t: Tokens) -> str:
    return t.signed(t.header(crit=["exp"]))


@rejected_as("malformed_token")
def unencoded_payload(t: Tokens) -> str:
    return t.signed(t.header(b64=False, crit=["b64"]))


@rejected_as("malformed_token")
def exp_missing(t: Tokens) -> str:
    return t.signed(claims=t.claims(exp=None))


@rejected_as("malformed_token")
def exp_a_string(t: Tokens) -> str:
    return t.signed(claims=t.claims(exp=str(int(time.time()) + 300)))


@rejected_as("malformed_token")
def exp_a_boolean(t: Tokens) -> str:
    return t.signed(claims=t.claims(exp=True))


@rejected_as("malformed_token")
def nbf_a_string(t: Tokens) -> str:
    return t.signed(claims=t.claims(nbf=str(int(time.time()))))


@rejected_as("malformed_token")
def iat_a_string(t: Tokens) -> str:
    return t.signed(claims=t.claims(iat="yesterday"))


# Algorithms: from the allow-list and the key, never from the token alone.


@pytest.mark.parametrize("none", ["none", "None", "NONE", "nOnE"])
def test_alg_none_never_verifies(door, tokens, none):
    token = forge(tokens.header(alg=none), tokens.claims())
    door.rejected(door.send("/orders/1", token), "alg_not_allowed")


@rejected_as("alg_not_allowed")
def alg_none_with_a_signature(t: Tokens) -> str:
    _, _, signature = t.signed().split(".")
    return forge(t.header(alg="none"), t.claims()) + signature


@rejected_as("alg_not_allowed")
def hs256_keyed_with_the_rsa_public_key(t: Tokens) -> str:
    pem = t.key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return forge(t.header(alg="HS256"), t.claims(), key=pem)


@rejected_as("alg_not_allowed")
def hs256_keyed_with_the_jwk(t: Tokens) -> str:
    return forge(t.header(alg="HS256"), t.claims(), key=json_text(t.key.public_jwk()).encode())


@rejected_as("alg_not_allowed")
def rs384_when_only_rs256_is_allowed(t: Tokens) -> str:
    return t.signed(t.header(alg="RS384"))


@rejected_as("alg_not_allowed")
def alg_in_lower_case(t: Tokens) -> str:
    return t.signed(t.header(alg="rs256"), alg="RS256")


@rejected_as("alg_not_allowed")
def ps256_with_a_key_published_for_rs256(t: Tokens) -> str:
    return t.signed(t.header(alg="PS256"))


@rejected_as("alg_not_allowed")
def es256_naming_the_eddsa_key(t: Tokens) -> str:
    eddsa = key_for(t.idp, "EdDSA")
    return t.signed(t.header(alg="ES256", kid=eddsa.kid), key=key_for(t.idp, "ES256"))


# Keys and signatures.


@rejected_as("unknown_kid")
def unknown_kid(t: Tokens) -> str:
    stranger = SigningKey.generate("RS256", kid=f"stranger-{secrets.token_hex(4)}")
    return t.signed(t.header(kid=stranger.kid), key=stranger)


@rejected_as("bad_signature")
def one_flipped_signature_bit(t: Tokens) -> str:
    header, claims, signature = t.signed().split(".")
    return f"{header}.{claims}.{flip_bit(signature, 1000)}"


@rejected_as("bad_signature")
def claims_swapped_under_a_good_signature(t: Tokens) -> str:
    header, _, signature = t.signed().split(".")
    _, claims, _ = t.signed(claims=t.claims(sub="admin", scope=f"{SCOPE} admin")).split(".")
    return f"{header}.{claims}.{signature}"


@rejected_as("bad_signature")
def signed_by_another_key_under_a_trusted_kid(t: Tokens) -> str:
    return t.signed(key=SigningKey.generate("RS256"))


@rejected_as({"bad_signature", "malformed_token"})
def empty_signature(t: Tokens) -> str:
    return t.signed().rsplit(".", 1)[0] + "."


@rejected_as("bad_signature")
def es256_signature_in_der(t: Tokens) -> str:
    key = key_for(t.idp, "ES256")
    header = b64url(json_text(t.header(alg="ES256", kid=key.kid)).encode())
    claims = b64url(json_text(t.claims()).encode())
    der = key.private_key.sign(f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
    return f"{header}.{claims}.{b64url(der)}"


@rejected_as("bad_signature")
def es256_signature_of_zeros(t: Tokens) -> str:
    kid = key_for(t.idp, "ES256").kid
    return forge(t.header(alg="ES256", kid=kid), t.claims(), signature=bytes(64))


@rejected_as("bad_signature")
def eddsa_signature_by_another_key(t: Tokens) -> str:
    kid = key_for(t.idp, "EdDSA").kid
    return t.signed(t.header(alg="EdDSA", kid=kid), key=SigningKey.generate("EdDSA"))


# Keys named or carried by the token itself are never used.


@rejected_as("bad_signature")
def embedded_jwk_under_a_trusted_kid(t: Tokens) -> str:
    evil = t.attacker.signing_key
    return t.signed(t.header(jwk=evil.public_jwk(kid=t.key.kid)), key=evil)


@rejected_as("unknown_kid")
def embedded_jwk_with_its_own_kid(t: Tokens) -> str:
    evil = t.attacker.signing_key
    return t.signed(t.header(kid=evil.kid, jwk=evil.public_jwk()), key=evil)


@rejected_as("bad_signature")
def x5c_certificate_under_a_trusted_kid(t: Tokens) -> str:
    evil = t.attacker.signing_key
    certificate = self_signed_certificate(evil.private_key)
    x5c = [base64.b64encode(certificate).decode()]
    return t.signed(t.header(x5c=x5c), key=evil)


@rejected_as("unknown_kid")
def jku_pointing_to_the_attackers_jwks(t: Tokens) -> str:
    evil = t.attacker.signing_key
    return t.signed(t.header(kid=evil.kid, jku=t.attacker.jwks_uri), key=evil)


@rejected_as("bad_signature")
def jku_under_a_trusted_kid(t: Tokens) -> str:
    evil = t.attacker.signing_key
    return t.signed(t.header(jku=t.attacker.jwks_uri), key=evil)


@rejected_as("unknown_kid")
def x5u_pointing_to_the_attacker(t: Tokens) -> str:
    evil = t.attacker.signing_key
    return t.signed(t.header(kid=evil.kid, x5u=t.attacker.url + "/cert.pem"), key=evil)


@rejected_as("bad_issuer")
def the_attackers_own_token(t: Tokens) -> str:
    return t.attacker.mint(sub="admin", scope=SCOPE)


# Claims.


@rejected_as("expired")
def expired_a_minute_ago(t: Tokens) -> str:
    now = int(time.time())
    return t.signed(claims=t.claims(iat=now - 360, exp=now - 60))


@rejected_as("expired")
def expired_just_beyond_the_leeway(t: Tokens) -> str:
    now = int(time.time())
    return t.signed(claims=t.claims(iat=now - 360, exp=now - LEEWAY - 3))


@rejected_as("not_yet_valid")
def nbf_in_the_future(t: Tokens) -> str:
    return t.signed(claims=t.claims(nbf=int(time.time()) + 60))


@rejected_as("not_yet_valid")
def iat_in_the_future(t: Tokens) -> str:
    now = int(time.time())
    return t.signed(claims=t.claims(iat=now + 60, exp=now + 600))


@rejected_as("bad_issuer")
def another_issuer(t: Tokens) -> str:
    return t.signed(claims=t.claims(iss="https://idp.evil.example/realms/test"))


@rejected_as("bad_issuer")
def issuer_with_a_trailing_slash(t: Tokens) -> str:
    return t.signed(claims=t.claims(iss=t.idp.issuer + "/"))


@rejected_as("bad_issuer")
def issuer_in_another_case(t: Tokens) -> str:
    return t.signed(claims=t.claims(iss=t.idp.issuer.upper()))


@rejected_as("bad_issuer")
def issuer_missing(t: Tokens) -> str:
    return t.signed(claims=t.claims(iss=None))


@rejected_as("bad_audience")
def another_audience(t: Tokens) -> str:
    return t.signed(claims=t.claims(aud="billing-api"))


@rejected_as("bad_audience")
def another_audience_in_an_array(t: Tokens) -> str:
    return t.signed(claims=t.claims(aud=["billing-api", "users-api"]))


@rejected_as("bad_audience")
def audience_in_another_case(t: Tokens) -> str:
    return t.signed(claims=t.claims(aud=AUDIENCE.upper()))


@rejected_as("bad_audience")
def audience_missing(t: Tokens) -> str:
    return t.signed(claims=t.claims(aud=None))


@pytest.mark.parametrize(("build", "reason"), HOSTILE)
def test_a_hostile_token_is_rejected(door, tokens, build, reason):
    door.rejected(door.send("/orders/1", build(tokens)), reason)


def test_headers_pointing_to_keys_are_never_followed(door, tokens, attacker):
    attacker.reset_counts()
    for build in (
        jku_pointing_to_the_attackers_jwks,
        jku_under_a_trusted_kid,
        x5u_pointing_to_the_attacker,
    ):
        assert door.send("/orders/1", build(tokens)).status == 401
    assert attacker.jwks_fetches == 0
    assert attacker.discovery_fetches == 0


# -- tokens that keep to the rules are accepted ------------------------------------------------

ACCEPTED = []


def accepted(build):
    ACCEPTED.append(pytest.param(build, id=build.__name__))
    return build


@accepted
def the_forged_baseline(t: Tokens) -> str:
    return t.signed()


@accepted
def typ_at_jwt(t: Tokens) -> str:
    return t.signed(t.header(typ="at+jwt"))


@accepted
def no_typ(t: Tokens) -> str:
    return t.signed(t.header(typ=None))


@accepted
def an_unknown_header_parameter_outside_crit(t: Tokens) -> str:
    return t.signed(t.header(**{"x-trace": "abc"}))


@accepted
def expired_within_the_leeway(t: Tokens) -> str:
    now = int(time.time())
    return t.signed(claims=t.claims(iat=now - 300, exp=now - 2))


@accepted
def nbf_and_iat_within_the_leeway(t: Tokens) -> str:
    now = int(time.time())
    return t.signed(claims=t.claims(nbf=now + 2, iat=now + 2))


@accepted
def fractional_times(t: Tokens) -> str:
    now = time.time()
    return t.signed(claims=t.claims(iat=now, nbf=now - 0.5, exp=now + 300.25))


@accepted
def audience_among_others(t: Tokens) -> str:
    return t.signed(claims=t.claims(aud=["billing-api", AUDIENCE]))


@accepted
def non_ascii_subject(t: Tokens) -> str:
    return t.signed(claims=t.claims(sub="José-日本"))


@accepted
def escaped_surrogate_pair(t: Tokens) -> str:
    claims = json_text(t.claims()).replace('"sub":"mallory"', '"sub":"\\ud83d\\ude00"')
    return t.signed(claims=claims)


@pytest.mark.parametrize("build", ACCEPTED)
def test_a_token_within_the_rules_is_accepted(door, tokens, build):
    door.accepted(door.send("/orders/1", build(tokens)))


INJECTING = {
    "crlf_in_sub": {"sub": "alice\r\nX-Injected: 1"},
    "lf_in_sub": {"sub": "alice\nX-Injected: 1"},
    "nul_in_sub": {"sub": "alice\x00X-Injected: 1"},
    "crlf_in_scope": {"scope": "openid\r\nX-Injected: 1"},
    "crlf_in_scp": {"scp": ["openid", "x\r\nX-Injected: 1"]},
}


@pytest.mark.parametrize("claims", INJECTING.values(), ids=INJECTING.keys())
def test_claims_never_inject_header_lines(door, tokens, claims):
    """A signed claim with a line break or NUL is refused, or reaches the upstream as no
    header line of its own."""
    response = door.send("/plain/1", tokens.signed(claims=tokens.claims(**claims)))
    if response.status != 200:
        door.rejected(response, "malformed_token")
        return
    [received] = door.upstream.requests
    assert not received.has_header("x-injected"), received.headers
    for _, value in received.headers:
        assert not {"\r", "\n", "\x00"} & set(value), received.headers
