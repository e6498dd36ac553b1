import base64
import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x25519

from fastgw.auth.keys import (
    SUPPORTED_ALGORITHMS,
    Key,
    KeySet,
    fits,
    key_from_jwk,
    keyset_from_jwks,
    keyset_from_secret,
)

# RFC 7638 section 3.1
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJEC"
    "PebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Qvz"
    "qY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu"
    "0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(value: int) -> str:
    return b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def rsa_jwk(private, **extra):
    numbers = private.public_key().public_numbers()
    return {"kty": "RSA", "n": uint(numbers.n), "e": uint(numbers.e), **extra}


def ec_jwk(private, crv, size, **extra):
    numbers = private.public_key().public_numbers()
    x, y = numbers.x.to_bytes(size, "big"), numbers.y.to_bytes(size, "big")
    return {"kty": "EC", "crv": crv, "x": b64(x), "y": b64(y), **extra}


def okp_jwk(private, crv, **extra):
    from cryptography.hazmat.primitives import serialization

    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return {"kty": "OKP", "crv": crv, "x": b64(raw), **extra}


@pytest.fixture(scope="module")
def rsa2048():
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="module")
def p256():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def p384():
    return ec.generate_private_key(ec.SECP384R1())


def test_rfc7638_thumbprint():
    key, reason = key_from_jwk({"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "kid": "2011-04-29"})
    assert reason is None
    assert key.thumbprint == RFC7638_THUMBPRINT
    assert key.kid == "2011-04-29"
    assert key.kty == "RSA" and key.alg is None and key.crv is None


def test_thumbprint_ignores_a_leading_zero_in_n():
    padded = b64(b"\x00" + base64.urlsafe_b64decode(RFC7638_N + "=="))
    key, reason = key_from_jwk({"kty": "RSA", "n": padded, "e": "AQAB"})
    assert reason is None and key.thumbprint == RFC7638_THUMBPRINT


def test_rsa_2048_kept(rsa2048):
    key, reason = key_from_jwk(rsa_jwk(rsa2048, kid="r", alg="RS256", use="sig"))
    assert reason is None
    assert (key.kid, key.kty, key.alg) == ("r", "RSA", "RS256")
    assert key.verifier_key.public_numbers() == rsa2048.public_key().public_numbers()


def test_rsa_1024_dropped():
    weak = rsa.generate_private_key(65537, 1024)
    assert key_from_jwk(rsa_jwk(weak)) == (None, "RSA key under 2048 bits")


def test_ec_and_okp_kept(p256, p384):
    cases = [
        (ec_jwk(p256, "P-256", 32), "EC", "P-256"),
        (ec_jwk(p384, "P-384", 48), "EC", "P-384"),
        (okp_jwk(ed25519.Ed25519PrivateKey.generate(), "Ed25519"), "OKP", "Ed25519"),
        (okp_jwk(ed448.Ed448PrivateKey.generate(), "Ed448"), "OKP", "Ed448"),
    ]
    for jwk, kty, crv in cases:
        key, reason = key_from_jwk(jwk)
        assert reason is None, jwk
        assert (key.kty, key.crv) == (kty, crv)


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"use": "enc"}, "use is enc"),
        ({"use": "other"}, "use is not sig"),
        ({"use": None}, "use is not sig"),
        ({"key_ops": ["encrypt"]}, "key_ops lack verify"),
        ({"key_ops": []}, "key_ops lack verify"),
        ({"key_ops": "verify"}, "key_ops lack verify"),
        ({"alg": "ES256"}, "alg does not fit kty"),
        ({"alg": "EdDSA"}, "alg does not fit kty"),
        ({"alg": "HS256"}, "alg does not fit kty"),
        ({"alg": "RSA-OAEP"}, "unsupported alg"),
        ({"alg": "RS1"}, "unsupported alg"),
        ({"alg": "none"}, "unsupported alg"),
        ({"alg": 256}, "unsupported alg"),
        ({"kid": 7}, "kid is not a string"),
        ({"d": "AQAB"}, "private key material present"),
        ({"p": "AQAB"}, "private key material present"),
    ],
)
def test_rsa_jwk_dropped(rsa2048, extra, reason):
    assert key_from_jwk(rsa_jwk(rsa2048, **extra)) == (None, reason)


def test_key_ops_with_verify_kept(rsa2048):
    key, reason = key_from_jwk(rsa_jwk(rsa2048, key_ops=["verify", "sign"], use="sig"))
    assert reason is None and key is not None


@pytest.mark.parametrize(
    ("jwk", "reason"),
    [
        ("not a dict", "not a JSON object"),
        ({"kty": "oct", "k": "c2VjcmV0"}, "symmetric key in a JWKS"),
        ({"kty": "OCT", "k": "c2VjcmV0"}, "unsupported kty"),
        ({"kty": "DSA"}, "unsupported kty"),
        ({}, "unsupported kty"),
        ({"kty": "RSA", "n": RFC7638_N}, "bad key data"),
        ({"kty": "RSA", "n": RFC7638_N, "e": "AQAB="}, "bad key data"),
        ({"kty": "RSA", "n": RFC7638_N, "e": "AQB"}, "bad key data"),  # trailing bits
        ({"kty": "RSA", "n": RFC7638_N, "e": "AQA+"}, "bad key data"),
        ({"kty": "RSA", "n": RFC7638_N, "e": ""}, "bad key data"),
        ({"kty": "RSA", "n": RFC7638_N, "e": "Ag"}, "bad key data"),  # even exponent
        ({"kty": "RSA", "n": RFC7638_N, "e": 65537}, "bad key data"),
    ],
)
def test_jwk_dropped(jwk, reason):
    assert key_from_jwk(jwk) == (None, reason)


def test_ec_dropped(p256, p384):
    good = ec_jwk(p256, "P-256", 32)
    assert key_from_jwk({**good, "alg": "ES384"}) == (None, "alg does not fit kty")
    assert key_from_jwk({**good, "alg": "RS256"}) == (None, "alg does not fit kty")
    assert key_from_jwk({**good, "d": "AAAA"}) == (None, "private key material present")
    assert key_from_jwk({**good, "crv": "P-521"}) == (None, "unsupported crv")
    assert key_from_jwk({**good, "crv": "secp256k1"}) == (None, "unsupported crv")
    assert key_from_jwk({**good, "crv": "P-384"}) == (None, "bad key data")
    assert key_from_jwk({**good, "x": good["y"]}) == (None, "bad key data")  # off the curve
    short = b64(base64.urlsafe_b64decode(good["x"] + "=")[1:])
    assert key_from_jwk({**good, "x": short}) == (None, "bad key data")
    assert key_from_jwk({**ec_jwk(p384, "P-384", 48), "alg": "ES384"})[1] is None


def test_okp_dropped():
    good = okp_jwk(ed25519.Ed25519PrivateKey.generate(), "Ed25519")
    assert key_from_jwk({**good, "alg": "ES256"}) == (None, "alg does not fit kty")
    assert key_from_jwk({**good, "alg": "EdDSA"})[1] is None
    assert key_from_jwk({**good, "crv": "Ed448"}) == (None, "bad key data")
    assert key_from_jwk(okp_jwk(x25519.X25519PrivateKey.generate(), "X25519")) == (
        None,
        "unsupported crv",
    )


def test_key_repr_hides_material():
    keyset = keyset_from_secret("s" * 40)
    assert "ssss" not in repr(keyset.keys[0])
    assert "ssss" not in repr(keyset)


# -- KeySet ------------------------------------------------------------------------------


def make_key(kid, kty="RSA", alg=None, crv=None, material=b"", thumbprint=None):
    return Key(kid, kty, alg, crv, material, thumbprint or f"{kid}-{kty}-{alg}-{crv}")


def test_find_by_kid_and_family():
    keys = [
        make_key("r1"),
        make_key("r2", alg="RS256"),
        make_key("e1", "EC", crv="P-256"),
        make_key("e2", "EC", crv="P-384"),
        make_key("o1", "OKP", crv="Ed25519"),
        make_key("o2", "OKP", crv="Ed448"),
    ]
    keyset = KeySet(keys, version=3)
    assert keyset.version == 3 and len(keyset) == 6
    assert keyset.find("r1", "RS256") is keys[0]
    assert keyset.find("r1", "PS512") is keys[0]
    assert keyset.find("r2", "RS256") is keys[1]
    assert keyset.find("r2", "PS256") is None  # declared alg only
    assert keyset.find("r1", "ES256") is None
    assert keyset.find("e1", "ES256") is keys[2]
    assert keyset.find("e1", "ES384") is None
    assert keyset.find("e2", "ES384") is keys[3]
    assert keyset.find("o1", "EdDSA") is keys[4]
    assert keyset.find("o2", "EdDSA") is keys[5]
    assert keyset.find("o1", "ES256") is None
    assert keyset.find("r1", "HS256") is None
    assert keyset.find("r1", "none") is None
    assert keyset.find("nope", "RS256") is None
    assert keyset.algorithms_for("r2") == {"RS256"}
    assert keyset.algorithms_for("e1") == {"ES256"}
    assert keyset.algorithms_for("o2") == {"EdDSA"}
    assert len(keyset.algorithms_for("r1")) == 6
    assert keyset.algorithms_for("nope") is None
    assert keyset.has_kid("r1") and not keyset.has_kid("nope")


def test_find_without_kid_needs_exactly_one_fit():
    rsa_key, ec_key = make_key("r"), make_key("e", "EC", crv="P-256")
    keyset = KeySet([rsa_key, ec_key])
    assert keyset.find(None, "RS256") is rsa_key
    assert keyset.find(None, "ES256") is ec_key
    assert keyset.find(None, "ES384") is None
    two = KeySet([rsa_key, make_key("r2")])
    assert two.find(None, "RS256") is None
    assert two.find("r2", "RS256") is not None
    restricted = KeySet([make_key("a", alg="RS256"), make_key("b", alg="PS256")])
    assert restricted.find(None, "PS256").kid == "b"


def test_duplicate_kid_is_ambiguous():
    keyset = KeySet([make_key("k", thumbprint="one"), make_key("k", thumbprint="two")])
    assert keyset.find("k", "RS256") is None
    assert "RS256" in keyset.algorithms_for("k")
    mixed = KeySet([make_key("k"), make_key("k", "EC", crv="P-256")])
    assert mixed.find("k", "RS256").kty == "RSA"
    assert mixed.find("k", "ES256").kty == "EC"


def test_keyset_is_immutable():
    keyset = KeySet([make_key("a")])
    with pytest.raises(AttributeError):
        keyset.version = 2
    with pytest.raises(AttributeError):
        keyset.keys = ()
    with pytest.raises(AttributeError):
        del keyset.version
    with pytest.raises(dataclasses.FrozenInstanceError):
        keyset.keys[0].kid = "b"
    with pytest.raises(TypeError):
        KeySet(["not a key"])


def test_key_equality_is_identity_of_the_key():
    a = make_key("a", thumbprint="t")
    assert a == Key("a", "RSA", None, None, object(), "t")
    assert a != make_key("a", thumbprint="u")
    assert a != make_key("a", alg="RS256", thumbprint="t")


def test_secret_keyset():
    keyset = keyset_from_secret("x" * 32, version=4)
    (key,) = keyset.keys
    assert (key.kid, key.kty, key.alg, key.verifier_key) == (None, "oct", None, b"x" * 32)
    assert keyset.version == 4
    assert keyset.find(None, "HS256") is key
    assert keyset.find(None, "HS384") is None  # RFC 7518 3.2: key >= hash size
    assert keyset.find(None, "RS256") is None
    assert keyset_from_secret("x" * 64).find(None, "HS512") is not None
    assert keyset_from_secret("é" * 16).find(None, "HS256") is not None  # 32 bytes of UTF-8
    with pytest.raises(ValueError):
        keyset_from_secret("x" * 31)


def test_fits_matches_the_index():
    keys = [
        make_key("r"),
        make_key("e", "EC", crv="P-256"),
        make_key("s", "oct", material=b"k" * 48),
    ]
    keyset = KeySet(keys)
    for key in keys:
        for alg in SUPPORTED_ALGORITHMS:
            assert (keyset.find(key.kid, alg) is key) == fits(key, alg)


def test_keyset_from_jwks(rsa2048, p256):
    document = {
        "keys": [
            rsa_jwk(rsa2048, kid="sig", use="sig"),
            rsa_jwk(rsa2048, kid="enc", use="enc"),
            ec_jwk(p256, "P-256", 32, kid="ec"),
            {"kty": "oct", "k": "c2VjcmV0"},
            "junk",
        ]
    }
    keyset, dropped = keyset_from_jwks(document, version=9)
    assert [key.kid for key in keyset.keys] == ["sig", "ec"]
    assert keyset.version == 9
    assert dropped == (
        "kid 'enc': use is enc",
        "key #3: symmetric key in a JWKS",
        "key #4: not a JSON object",
    )
    for bad in ({}, [], {"keys": {}}, None):
        with pytest.raises(ValueError):
            keyset_from_jwks(bad)
