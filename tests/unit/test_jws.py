"""Compact JWS parsing, on tokens built byte by byte."""

import base64
import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from fastgw.auth.codes import AuthCode
from fastgw.auth.jws import (
    ALGORITHMS,
    JWS,
    MAX_TOKEN_LENGTH,
    b64url_decode,
    b64url_encode,
    parse,
    verify_signature,
)

MALFORMED = AuthCode.MALFORMED_TOKEN
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
HEADER = b'{"alg":"HS256","typ":"JWT"}'
CLAIMS = b'{"sub":"alice","exp":2000000000}'


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(header: bytes = HEADER, claims: bytes = CLAIMS, signature: bytes = b"sig") -> str:
    return f"{b64(header)}.{b64(claims)}.{b64(signature)}"


def non_canonical(segment: str) -> str:
    """The same segment with a non-zero unused bit in its last character."""
    assert len(segment) % 4 in (2, 3)
    return segment[:-1] + ALPHABET[ALPHABET.index(segment[-1]) | 1]


def test_parses_a_compact_jws():
    parsed = parse(token())
    assert isinstance(parsed, JWS)
    assert parsed.header == {"alg": "HS256", "typ": "JWT"}
    assert parsed.claims == {"sub": "alice", "exp": 2000000000}
    assert parsed.signature == b"sig"
    assert parsed.signing_input == f"{b64(HEADER)}.{b64(CLAIMS)}".encode()
    assert parsed.alg == "HS256" and parsed.kid is None


def test_empty_signature_parses():
    # an unsigned token parses; refusing alg none is the verifier's job
    parsed = parse(token(b'{"alg":"none"}', signature=b""))
    assert isinstance(parsed, JWS) and parsed.signature == b""


@pytest.mark.parametrize(
    "text",
    [
        "",
        ".",
        "..",
        "a",
        "a.b",
        "eyJhbGciOiJIUzI1NiJ9.e30",
        f"{b64(HEADER)}..{b64(b'sig')}",
        f".{b64(CLAIMS)}.{b64(b'sig')}",
        token() + ".",
        token() + ".AAAA",
        token() + ".AAAA.AAAA",  # JWE has five
        f"{b64(HEADER)}.{b64(CLAIMS)}",
        "." + token(),
    ],
)
def test_segment_count(text):
    assert parse(text) is MALFORMED


def test_json_serialisation_rejected():
    flattened = f'{{"payload":"{b64(CLAIMS)}","protected":"{b64(HEADER)}","signature":"c2ln"}}'
    assert parse(flattened) is MALFORMED
    assert parse(base64.urlsafe_b64encode(flattened.encode()).decode()) is MALFORMED


@pytest.mark.parametrize("where", [0, 1, 2])
@pytest.mark.parametrize("char", ["=", "+", "/", " ", "\n", "\t", "%", "é", "\x00", "*", "\\"])
def test_alphabet(where, char):
    parts = token().split(".")
    parts[where] = parts[where][:4] + char + parts[where][4:]
    assert parse(".".join(parts)) is MALFORMED


@pytest.mark.parametrize("where", [0, 1, 2])
def test_padding_rejected(where):
    data = [HEADER + b" ", CLAIMS + b"  ", b"si"]  # lengths not multiples of 3
    parts = [base64.urlsafe_b64encode(part).decode() for part in data]
    assert all(p.endswith("=") for p in parts)
    padded = [b64(part) for part in data]
    padded[where] = parts[where]
    assert parse(".".join(padded)) is MALFORMED
    assert isinstance(parse(".".join(b64(part) for part in data)), JWS)


@pytest.mark.parametrize("where", [0, 1, 2])
@pytest.mark.parametrize("extra", [1, 2])  # a last group of 2 or 3 characters
def test_non_canonical_trailing_bits(where, extra):
    # header/claims grown with spaces (valid JSON) until the segment has the wanted tail
    data = [HEADER, CLAIMS, b"s"]
    while len(data[where]) % 3 != extra:
        data[where] += b" " if where < 2 else b"s"
    parts = [b64(part) for part in data]
    assert isinstance(parse(".".join(parts)), JWS)
    parts[where] = non_canonical(parts[where])
    assert b64url_decode(parts[where]) is None
    assert parse(".".join(parts)) is MALFORMED


@pytest.mark.parametrize("where", [0, 1, 2])
def test_impossible_length(where):
    parts = token().split(".")
    while len(parts[where]) % 4 != 1:
        parts[where] += "A"
    assert parse(".".join(parts)) is MALFORMED


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"])
@pytest.mark.parametrize("where", ["header", "claims"])
def test_utf16_and_utf32_rejected(encoding, where):
    header, claims = HEADER.decode(), CLAIMS.decode()
    if where == "header":
        assert parse(token(header.encode(encoding), CLAIMS)) is MALFORMED
    else:
        assert parse(token(HEADER, claims.encode(encoding))) is MALFORMED


@pytest.mark.parametrize("where", ["header", "claims"])
def test_bom_rejected(where):
    bom = b"\xef\xbb\xbf"
    parts = (bom + HEADER, CLAIMS) if where == "header" else (HEADER, bom + CLAIMS)
    assert parse(token(*parts)) is MALFORMED


@pytest.mark.parametrize(
    "claims",
    [
        b'{"sub":"\xff"}',
        b'{"sub":"\xc0\xaf"}',  # overlong '/'
        b'{"sub":"\xed\xa0\x80"}',  # encoded surrogate
        b'{"sub":"\xe2\x82"}',  # truncated
        b"\xfe\xff",
    ],
)
def test_invalid_utf8_rejected(claims):
    assert parse(token(HEADER, claims)) is MALFORMED


def test_valid_utf8_and_escapes_accepted():
    claims = '{"sub":"Zoë ✓ 😀","n":"\\u00e9\\ud83d\\ude00","exp":1}'.encode()
    parsed = parse(token(HEADER, claims))
    assert parsed.claims["sub"] == "Zoë ✓ 😀"
    assert parsed.claims["n"] == "é😀"


@pytest.mark.parametrize(
    "claims",
    [
        rb'{"sub":"\ud800"}',
        rb'{"sub":"a\uDFFFb"}',
        rb'{"\udc00":1}',
        rb'{"a":[["\ud83d"]]}',
        rb'{"a":"\ude00\ud83d"}',
    ],
)
def test_lone_surrogate_escapes_rejected(claims):
    assert parse(token(HEADER, claims)) is MALFORMED


def test_escaped_backslash_before_u_is_not_a_surrogate():
    parsed = parse(token(HEADER, rb'{"sub":"\\ud800","exp":1}'))
    assert parsed.claims["sub"] == "\\ud800"


@pytest.mark.parametrize(
    ("header", "claims"),
    [
        (b'{"alg":"HS256","alg":"none"}', CLAIMS),
        (b'{"alg":"HS256","kid":"a","kid":"b"}', CLAIMS),
        (HEADER, b'{"sub":"alice","sub":"admin","exp":1}'),
        (HEADER, b'{"exp":1,"a":{"b":1,"b":2}}'),
        (HEADER, b'{"exp":1,"a":[{"x":1},{"b":1,"b":1}]}'),
        (HEADER, b'{"exp":1,"a":{"b":{"c":{"d":1,"d":1}}}}'),
        (b'{"alg":"HS256","x":{"y":1,"y":1}}', CLAIMS),
        (HEADER, b'{"exp":1,"\\u0073ub":"a","sub":"b"}'),  # duplicate after unescaping
    ],
)
def test_duplicate_names_rejected(header, claims):
    assert parse(token(header, claims)) is MALFORMED


def test_same_name_in_different_objects_accepted():
    parsed = parse(token(HEADER, b'{"exp":1,"a":{"exp":2},"b":[{"exp":3},{"exp":4}]}'))
    assert parsed.claims["a"] == {"exp": 2}


@pytest.mark.parametrize(
    "claims",
    [b"[]", b'"text"', b"1", b"null", b"true", b"", b"{", b'{"a":1}x', b"{'a':1}", b'{"a":1,}'],
)
def test_claims_must_be_a_json_object(claims):
    assert parse(token(HEADER, claims)) is MALFORMED


@pytest.mark.parametrize(
    "claims",
    [
        b'{"exp":NaN}',
        b'{"exp":Infinity}',
        b'{"exp":-Infinity}',
        b'{"exp":1e400}',
        b'{"exp":-1e400}',
        b'{"exp":1' + b"0" * 5000 + b"}",
    ],
)
def test_non_finite_and_oversized_numbers_rejected(claims):
    assert parse(token(HEADER, claims)) is MALFORMED


def test_deep_nesting_is_malformed_not_a_crash():
    claims = b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert parse(token(HEADER, claims)) is MALFORMED


def test_whitespace_around_json_accepted():
    parsed = parse(token(b' {\n"alg" : "HS256"\t}\r\n', b'  {"exp": 1} '))
    assert parsed.header == {"alg": "HS256"} and parsed.claims == {"exp": 1}


@pytest.mark.parametrize(
    "header",
    [
        b"{}",
        b'{"typ":"JWT"}',
        b'{"alg":null}',
        b'{"alg":1}',
        b'{"alg":["HS256"]}',
        b'{"alg":{"name":"HS256"}}',
        b'{"alg":true}',
        # JWE
        b'{"alg":"RSA-OAEP","enc":"A256GCM"}',
        b'{"alg":"HS256","enc":"A256GCM"}',
        # nested JWT
        b'{"alg":"HS256","cty":"JWT"}',
        b'{"alg":"HS256","cty":"jwt"}',
        b'{"alg":"HS256","cty":"application/jwt"}',
        b'{"alg":"HS256","cty":"Application/JWT"}',
        b'{"alg":"HS256","cty":1}',
        # unencoded payload (RFC 7797)
        b'{"alg":"HS256","b64":false,"crit":["b64"]}',
        b'{"alg":"HS256","b64":false}',
        b'{"alg":"HS256","b64":true}',
        # crit
        b'{"alg":"HS256","crit":[]}',
        b'{"alg":"HS256","crit":"exp"}',
        b'{"alg":"HS256","crit":["exp"],"exp":1}',
        b'{"alg":"HS256","crit":["x-custom"]}',
        b'{"alg":"HS256","crit":[1]}',
        b'{"alg":"HS256","crit":null}',
        b'{"alg":"HS256","crit":{}}',
        b'{"alg":"HS256","crit":["alg"]}',
        # kid
        b'{"alg":"HS256","kid":1}',
        b'{"alg":"HS256","kid":null}',
        b'{"alg":"HS256","kid":["a"]}',
    ],
)
def test_header_rules(header):
    assert parse(token(header)) is MALFORMED


@pytest.mark.parametrize(
    "header",
    [
        b'{"alg":"RS256","kid":"k1","typ":"at+jwt"}',
        b'{"alg":"RS256","cty":"json"}',
        b'{"alg":"RS256","kid":""}',
        b'{"alg":"RS256","jku":"https://evil.example/jwks","kid":"k1"}',
        b'{"alg":"RS256","x5u":"https://evil.example/cert.pem"}',
        b'{"alg":"RS256","jwk":{"kty":"oct","k":"c2VjcmV0"}}',
        b'{"alg":"RS256","x5c":["MIIB"]}',
        b'{"alg":"none"}',
        b'{"alg":"NONE"}',
        b'{"alg":"HS1024"}',
    ],
)
def test_headers_accepted_here(header):
    # key-carrying headers are ignored, not followed; alg is judged by the verifier
    parsed = parse(token(header))
    assert isinstance(parsed, JWS)
    assert parsed.header["alg"] == parsed.alg


def test_kid_exposed():
    assert parse(token(b'{"alg":"RS256","kid":"k1"}')).kid == "k1"


def test_length_limit_checked_first():
    base = token()
    filler = MAX_TOKEN_LENGTH - len(base)
    at_limit = token(signature=b"s" * (len(b"sig") + filler * 3 // 4))
    while len(at_limit) > MAX_TOKEN_LENGTH:
        at_limit = at_limit[:-4]
    assert isinstance(parse(at_limit), JWS)
    over = token(HEADER, CLAIMS, b"s" * 7000)
    assert len(over) > MAX_TOKEN_LENGTH
    assert parse(over) is MALFORMED
    assert parse("x" * (MAX_TOKEN_LENGTH + 1)) is MALFORMED


# -- base64url --------------------------------------------------------------------------


@given(st.binary(max_size=200))
def test_b64url_round_trip(data):
    text = b64url_encode(data)
    assert "=" not in text
    assert b64url_decode(text) == data


@given(st.text(alphabet=ALPHABET + "=+/ ", max_size=40))
def test_b64url_decode_accepts_only_canonical_text(text):
    data = b64url_decode(text)
    if data is not None:
        assert b64url_encode(data) == text


def test_b64url_decode_rejects():
    assert b64url_decode("QQ") == b"A"
    for bad in ("QR", "QQ==", "Q", "QQ=", "Q+", "Q/", "QQ\n", None, b"QQ", 1):
        assert b64url_decode(bad) is None


# -- signatures -------------------------------------------------------------------------

MESSAGE = b"header.claims"


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(65537, 2048)


def test_rsa_pkcs1_and_pss(rsa_key):
    public = rsa_key.public_key()
    pkcs1 = rsa_key.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256())
    pss = rsa_key.sign(MESSAGE, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    assert verify_signature("RS256", public, MESSAGE, pkcs1)
    assert not verify_signature("RS384", public, MESSAGE, pkcs1)
    assert not verify_signature("PS256", public, MESSAGE, pkcs1)
    assert verify_signature("PS256", public, MESSAGE, pss)
    assert not verify_signature("RS256", public, MESSAGE, pss)
    assert not verify_signature("RS256", public, MESSAGE + b"x", pkcs1)
    assert not verify_signature("RS256", public, MESSAGE, pkcs1[:-1])
    assert not verify_signature("RS256", public, MESSAGE, b"")
    # PSS with a salt other than the hash length is not RFC 7518 PS256
    other_salt = rsa_key.sign(
        MESSAGE, padding.PSS(padding.MGF1(hashes.SHA256()), 20), hashes.SHA256()
    )
    assert not verify_signature("PS256", public, MESSAGE, other_salt)


def test_ecdsa_raw_signature():
    key = ec.generate_private_key(ec.SECP256R1())
    r, s = decode_dss_signature(key.sign(MESSAGE, ec.ECDSA(hashes.SHA256())))
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    public = key.public_key()
    assert verify_signature("ES256", public, MESSAGE, raw)
    assert not verify_signature("ES384", public, MESSAGE, raw)
    assert not verify_signature("ES256", public, MESSAGE, raw[:-1])
    assert not verify_signature("ES256", public, MESSAGE, b"\x00" + raw)
    der = key.sign(MESSAGE, ec.ECDSA(hashes.SHA256()))
    assert not verify_signature("ES256", public, MESSAGE, der)
    assert not verify_signature("ES256", public, MESSAGE, bytes(64))
    other_curve = ec.generate_private_key(ec.SECP384R1()).public_key()
    assert not verify_signature("ES256", other_curve, MESSAGE, raw)


def test_eddsa():
    key = ed25519.Ed25519PrivateKey.generate()
    signature = key.sign(MESSAGE)
    assert verify_signature("EdDSA", key.public_key(), MESSAGE, signature)
    assert not verify_signature("EdDSA", key.public_key(), MESSAGE + b"x", signature)


def test_hmac():
    secret = b"k" * 32
    signature = hmac.digest(secret, MESSAGE, hashlib.sha256)
    assert verify_signature("HS256", secret, MESSAGE, signature)
    assert not verify_signature("HS384", secret, MESSAGE, signature)
    assert not verify_signature("HS256", b"j" * 32, MESSAGE, signature)
    assert not verify_signature("HS256", secret, MESSAGE, signature[:16])


def test_key_of_the_wrong_type_never_verifies(rsa_key):
    public = rsa_key.public_key()
    from cryptography.hazmat.primitives import serialization

    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged = hmac.digest(pem, MESSAGE, hashlib.sha256)
    assert not verify_signature("HS256", public, MESSAGE, forged)
    assert verify_signature("HS256", pem, MESSAGE, forged)  # only when handed bytes
    for alg in ALGORITHMS:
        assert not verify_signature(alg, None, MESSAGE, b"x" * 64)
        assert not verify_signature(alg, "secret", MESSAGE, b"x" * 64)
    assert not verify_signature("EdDSA", public, MESSAGE, b"x" * 64)
    assert not verify_signature("none", public, MESSAGE, b"")
    assert not verify_signature("none", None, MESSAGE, b"")
