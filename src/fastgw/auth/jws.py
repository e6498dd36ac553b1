"""Compact JWS (RFC 7515) parsing and signature checks, strict by construction.

``parse`` accepts exactly one shape: three base64url segments with no padding
and canonical trailing bits, a header and a payload that are UTF-8 JSON
objects without a byte order mark, without duplicate names at any depth,
without NaN/Infinity or numbers that overflow a double, and without lone
surrogates. JWE (five segments, or ``enc``), nested JWTs (``cty: JWT``), the
JSON serialisation, unencoded payloads (``b64``) and any ``crit`` entry are
rejected. ``jku``, ``x5u``, ``jwk`` and ``x5c`` are ignored: nothing here or in
the verifier ever reads them, so a key embedded in a token is never used.
Whether ``alg`` is acceptable is the verifier's call (provider allow-list and
key), so ``none`` parses and is then refused there.

The standard library's JSON parser is used because it can report duplicate
names (``object_pairs_hook``); orjson keeps the last duplicate silently. A
token is parsed once: verified tokens are cached by the verifier.

``verify_signature`` checks a signature with ``cryptography`` on the
already-split signing input; nothing re-parses the token.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .codes import AuthCode

MAX_TOKEN_LENGTH = 8192

#: ``crit`` names this implementation understands (RFC 7515 section 4.1.11).
UNDERSTOOD_CRIT: frozenset[str] = frozenset()

_MALFORMED = AuthCode.MALFORMED_TOKEN
_SEGMENT = "[A-Za-z0-9_-]"
_COMPACT = re.compile(f"{_SEGMENT}+\\.{_SEGMENT}+\\.{_SEGMENT}*")
_BASE64URL = re.compile(f"{_SEGMENT}*")
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
# With 2 (3) characters in the last group only the top 4 (2) bits of the last
# character carry data; the rest must be zero or two texts decode alike.
_LAST_OF_2 = frozenset("AQgw")
_LAST_OF_3 = frozenset("AEIMQUYcgkosw048")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_NESTED = frozenset({"jwt", "application/jwt"})


class JWS:
    """A parsed compact JWS. ``header`` and ``claims`` are unverified until a
    signature check on ``signing_input`` and ``signature`` succeeds."""

    __slots__ = ("alg", "claims", "header", "kid", "signature", "signing_input")

    def __init__(self, header: dict, claims: dict, signing_input: bytes, signature: bytes):
        self.header = header
        self.claims = claims
        self.signing_input = signing_input
        self.signature = signature
        self.alg: str = header["alg"]
        self.kid: str | None = header.get("kid")


def parse(token: str) -> JWS | AuthCode:
    """Split and decode TOKEN, or return ``AuthCode.MALFORMED_TOKEN``."""
    if len(token) > MAX_TOKEN_LENGTH or _COMPACT.fullmatch(token) is None:
        return _MALFORMED
    encoded_header, encoded_claims, encoded_signature = token.split(".")
    header = _json_object(_decode(encoded_header))
    if header is None or not _header_ok(header):
        return _MALFORMED
    claims = _json_object(_decode(encoded_claims))
    signature = _decode(encoded_signature)
    if claims is None or signature is None:
        return _MALFORMED
    signing_input = token[: len(encoded_header) + 1 + len(encoded_claims)].encode("ascii")
    return JWS(header, claims, signing_input, signature)


def b64url_decode(text: str) -> bytes | None:
    """Strict base64url (RFC 7515 section 2): no padding, canonical; None if not."""
    if type(text) is not str or _BASE64URL.fullmatch(text) is None:
        return None
    return _decode(text)


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(segment: str) -> bytes | None:
    # The alphabet has been checked by the caller.
    tail = len(segment) & 3
    if tail == 2:
        if segment[-1] not in _LAST_OF_2:
            return None
        pad = b"=="
    elif tail == 3:
        if segment[-1] not in _LAST_OF_3:
            return None
        pad = b"="
    elif tail == 0:
        pad = b""
    else:
        return None
    return binascii.a2b_base64(segment.encode("ascii").translate(_TO_STANDARD) + pad)


class _Rejected(ValueError):
    pass


def _unique_names(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Rejected("duplicate name")
    return obj


def _no_constant(name: str) -> float:
    raise _Rejected(name)


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Rejected("number out of range")
    return value


_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_names, parse_constant=_no_constant, parse_float=_finite
)


def _json_object(data: bytes | None) -> dict | None:
    if data is None:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text.startswith("\ufeff"):
        return None
    try:
        value = _DECODER.decode(text)
    except (ValueError, RecursionError):
        return None
    if type(value) is not dict:
        return None
    if _SURROGATE_ESCAPE.search(text) is not None and not _all_utf8(value):
        return None
    return value


def _all_utf8(value: object) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            stack.extend(item)
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
        elif type(item) is str:
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


def _header_ok(header: dict) -> bool:
    if type(header.get("alg")) is not str or "enc" in header or "b64" in header:
        return False
    if "kid" in header and type(header["kid"]) is not str:
        return False
    if "cty" in header:
        cty = header["cty"]
        if type(cty) is not str or cty.lower() in _NESTED:
            return False
    if "crit" in header:
        crit = header["crit"]
        if type(crit) is not list or not crit:
            return False
        for name in crit:
            if type(name) is not str or name not in UNDERSTOOD_CRIT or name not in header:
                return False
    return True


# -- signatures (RFC 7518 section 3, RFC 8037) ---------------------------------------------------


def _rsa(hash_algorithm: type[hashes.HashAlgorithm], *, pss: bool):
    pad = (padding.PSS(mgf=padding.MGF1(hash_algorithm()), salt_length=hash_algorithm.digest_size)
           if pss else padding.PKCS1v15())

    def verify(key: object, message: bytes, signature: bytes) -> bool:
        if not isinstance(key, rsa.RSAPublicKey):
            return False
        try:
            key.verify(signature, message, pad, hash_algorithm())
        except InvalidSignature:
            return False
        return True

    return verify


def _ecdsa(hash_algorithm: type[hashes.HashAlgorithm], curve: type[ec.EllipticCurve]):
    size = (curve.key_size + 7) // 8
    signature_algorithm = ec.ECDSA(hash_algorithm())

    def verify(key: object, message: bytes, signature: bytes) -> bool:
        # JWS carries R || S at the curve's fixed width (RFC 7518 section 3.4).
        if (
            not isinstance(key, ec.EllipticCurvePublicKey)
            or not isinstance(key.curve, curve)
            or len(signature) != 2 * size
        ):
            return False
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        try:
            key.verify(encode_dss_signature(r, s), message, signature_algorithm)
        except InvalidSignature:
            return False
        return True

    return verify


def _eddsa(key: object, message: bytes, signature: bytes) -> bool:
    if not isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return False
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _hmac(digest: str):
    def verify(key: object, message: bytes, signature: bytes) -> bool:
        if type(key) is not bytes:
            return False
        return hmac.compare_digest(hmac.digest(key, message, digest), signature)

    return verify


_SIGNATURE_CHECKS = {
    "RS256": _rsa(hashes.SHA256, pss=False),
    "RS384": _rsa(hashes.SHA384, pss=False),
    "RS512": _rsa(hashes.SHA512, pss=False),
    "PS256": _rsa(hashes.SHA256, pss=True),
    "PS384": _rsa(hashes.SHA384, pss=True),
    "PS512": _rsa(hashes.SHA512, pss=True),
    "ES256": _ecdsa(hashes.SHA256, ec.SECP256R1),
    "ES384": _ecdsa(hashes.SHA384, ec.SECP384R1),
    "EdDSA": _eddsa,
    "HS256": _hmac("sha256"),
    "HS384": _hmac("sha384"),
    "HS512": _hmac("sha512"),
}

#: Every algorithm a signature can be checked with.
ALGORITHMS: tuple[str, ...] = tuple(_SIGNATURE_CHECKS)


def verify_signature(alg: str, key: object, signing_input: bytes, signature: bytes) -> bool:
    """True when SIGNATURE over SIGNING_INPUT checks out with KEY under ALG.

    KEY is a ``cryptography`` public key, or bytes for HMAC; a key of the wrong
    type for ALG, or an unknown ALG, never verifies."""
    check = _SIGNATURE_CHECKS.get(alg)
    return check is not None and check(key, signing_input, signature)
