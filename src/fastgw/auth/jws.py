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

The splitting, the base64url and the header rules are the compiled core's
(``fastgw._core._jws_*``), on the token's bytes. JSON is read by orjson, but
the parser of record is ``strict_object`` below: the standard library's,
which can report duplicate names (``object_pairs_hook``) where orjson keeps
the last duplicate silently. The core takes orjson's reading only when it can
show that ``strict_object`` would read the text alike (no name lost to a
duplicate, no float, shallow nesting) and hands every other text to
``strict_object``, so what is accepted, and as what, is always its answer. A
token is parsed once: verified tokens are cached by the verifier.

``verify_signature`` checks a signature with ``cryptography`` on the
already-split signing input; nothing re-parses the token. Padding and hash
objects are made once per algorithm, and the key's type is checked against
the types already seen to be of its family before any abstract-class check.
"""

from __future__ import annotations

import base64
import hmac
import json
import math
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

from .._core import active
from .codes import AuthCode

_core = active("jws")
_split_and_parse = _core.parse
_b64url = _core.b64url
_der_signature = _core.der_signature

MAX_TOKEN_LENGTH: int = _core.MAX_TOKEN

#: ``crit`` names this implementation understands (RFC 7515 section 4.1.11).
UNDERSTOOD_CRIT: frozenset[str] = _core.UNDERSTOOD_CRIT

_MALFORMED = AuthCode.MALFORMED_TOKEN
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class JWS:
    """A parsed compact JWS. ``header`` and ``claims`` are unverified until a
    signature check on ``signing_input`` and ``signature`` succeeds."""

    __slots__ = ("alg", "claims", "header", "kid", "signature", "signing_input")

    def __init__(self, alg: str, kid: str | None, header: dict, claims: dict,
                 signing_input: bytes, signature: bytes):
        self.alg = alg
        self.kid = kid
        self.header = header
        self.claims = claims
        self.signing_input = signing_input
        self.signature = signature


def parse(token: str | bytes) -> JWS | AuthCode:
    """Split and decode TOKEN, or return ``AuthCode.MALFORMED_TOKEN``."""
    if type(token) is str:
        if not token.isascii():
            return _MALFORMED
        token = token.encode("ascii")
    parsed = _split_and_parse(token, strict_object)
    if parsed is None:
        return _MALFORMED
    return JWS(*parsed)


def parts(token: bytes) -> tuple | None:
    """``(alg, kid, header, claims, signing_input, signature)`` of TOKEN's bytes,
    or None when it is malformed: ``parse`` without the ``JWS`` around it."""
    return _split_and_parse(token, strict_object)


def b64url_decode(text: str) -> bytes | None:
    """Strict base64url (RFC 7515 section 2): no padding, canonical; None if not."""
    if type(text) is not str or not text.isascii():
        return None
    return _b64url(text.encode("ascii"))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


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


def strict_object(data: bytes) -> dict | None:
    """The JSON object DATA holds, by the standard library's parser with the
    rules above; None when it holds none."""
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


# -- signatures (RFC 7518 section 3, RFC 8037) ---------------------------------------------------


def _of_family(*families: type):
    """A check that a key is an instance of one of FAMILIES (abstract classes):
    its type is looked up among those already seen to be one, and only a type
    not yet seen pays for the abstract-class check. Registrations only ever
    add subclasses, so a type once found stays one."""
    seen: set[type] = set()

    def check(key: object) -> bool:
        kind = type(key)
        if kind in seen:
            return True
        if issubclass(kind, families):
            seen.add(kind)
            return True
        return isinstance(key, families)

    return check


_is_rsa = _of_family(rsa.RSAPublicKey)
_is_ec = _of_family(ec.EllipticCurvePublicKey)
_is_eddsa = _of_family(ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)


def _rsa(hash_algorithm: type[hashes.HashAlgorithm], *, pss: bool):
    digest = hash_algorithm()
    pad = (padding.PSS(mgf=padding.MGF1(hash_algorithm()), salt_length=digest.digest_size)
           if pss else padding.PKCS1v15())

    def verify(key: object, message: bytes, signature: bytes) -> bool:
        if not _is_rsa(key):
            return False
        try:
            key.verify(signature, message, pad, digest)
        except InvalidSignature:
            return False
        return True

    return verify


def _ecdsa(hash_algorithm: type[hashes.HashAlgorithm], curve: type[ec.EllipticCurve]):
    size = (curve.key_size + 7) // 8
    signature_algorithm = ec.ECDSA(hash_algorithm())

    def verify(key: object, message: bytes, signature: bytes) -> bool:
        # JWS carries R || S at the curve's fixed width (RFC 7518 section 3.4).
        if len(signature) != 2 * size or not _is_ec(key) or not isinstance(key.curve, curve):
            return False
        try:
            key.verify(_der_signature(signature), message, signature_algorithm)
        except InvalidSignature:
            return False
        return True

    return verify


def _eddsa(key: object, message: bytes, signature: bytes) -> bool:
    if not _is_eddsa(key):
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
