"""Verification keys and key sets, and the rules for which JWKs may become one.

A key is used only for the algorithm family of its ``kty`` (and curve) and,
when it declares an ``alg``, only for that algorithm (RFC 8725 section 3.1).

``key_from_jwk`` drops, with a reason:

- keys whose ``use`` is not ``sig`` or whose ``key_ops`` lack ``verify``;
- symmetric (``oct``) keys: HMAC secrets come only from the config;
- keys that carry private material (``d``, ``p``, ...): a private key that
  was published is compromised, so the whole key is refused rather than
  stripped to its public half;
- RSA keys under 2048 bits, curves other than P-256/P-384/Ed25519/Ed448,
  unsupported ``kty`` or ``alg``, an ``alg`` that does not fit the key;
- key data that is not strict base64url or not a valid public key.

Members that do not define the key (``x5c``, ``x5t``, ``x5u``) are ignored; the
key is always built from its own parameters. The thumbprint (RFC 7638) is
computed from the decoded key, so two encodings of one key share it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from .jws import b64url_decode, b64url_encode

MIN_RSA_BITS = 2048
MIN_SECRET_BYTES = 32

# alg -> (kty, curves or None)
_FAMILIES: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", ("P-256",)),
    "ES384": ("EC", ("P-384",)),
    "EdDSA": ("OKP", ("Ed25519", "Ed448")),
    "HS256": ("oct", None),
    "HS384": ("oct", None),
    "HS512": ("oct", None),
}
# RFC 7518 section 3.2: an HMAC key at least as long as the hash output.
HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}

SUPPORTED_ALGORITHMS: tuple[str, ...] = tuple(_FAMILIES)


@dataclass(frozen=True, slots=True)
class Key:
    kid: str | None
    kty: str  # RSA | EC | OKP | oct
    alg: str | None
    crv: str | None
    verifier_key: object = field(compare=False, repr=False)
    thumbprint: str


def fits(key: Key, alg: str) -> bool:
    """True when KEY may verify a signature made with ALG."""
    family = _FAMILIES.get(alg)
    if family is None or key.kty != family[0] or (key.alg is not None and key.alg != alg):
        return False
    if family[1] is not None and key.crv not in family[1]:
        return False
    if key.kty != "oct":
        return True
    secret = key.verifier_key
    return type(secret) is bytes and len(secret) >= HMAC_MIN_BYTES[alg]


class KeySet:
    """An immutable set of keys, indexed for ``find`` when built.

    ``version`` numbers the successive sets of one source (for logs and
    metrics). A set never changes, so holders compare sets by identity."""

    __slots__ = ("_index", "_kid_algorithms", "keys", "version")

    keys: tuple[Key, ...]
    version: int

    def __init__(self, keys: Iterable[Key] = (), version: int = 1) -> None:
        keys = tuple(keys)
        for key in keys:
            if not isinstance(key, Key):
                raise TypeError(f"not a Key: {type(key).__name__}")
        index: dict[tuple[str | None, str], Key] = {}
        kid_algorithms: dict[str, set[str]] = {
            key.kid: set() for key in keys if key.kid is not None
        }
        for alg in SUPPORTED_ALGORITHMS:
            fitting = [key for key in keys if fits(key, alg)]
            if len(fitting) == 1:
                index[None, alg] = fitting[0]
            by_kid: dict[str, list[Key]] = {}
            for key in fitting:
                if key.kid is not None:
                    by_kid.setdefault(key.kid, []).append(key)
                    kid_algorithms[key.kid].add(alg)
            for kid, same in by_kid.items():
                if len(same) == 1:
                    index[kid, alg] = same[0]
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "_index", index)
        object.__setattr__(
            self, "_kid_algorithms", {kid: frozenset(a) for kid, a in kid_algorithms.items()}
        )

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("KeySet is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("KeySet is immutable")

    def find(self, kid: str | None, alg: str) -> Key | None:
        """The one key with KID that fits ALG; with no KID, the one key of the set
        that fits ALG. None when there is no such key or more than one."""
        return self._index.get((kid, alg))

    def has_kid(self, kid: str) -> bool:
        return kid in self._kid_algorithms

    def algorithms_for(self, kid: str) -> frozenset[str] | None:
        """The algorithms some key with KID fits; None when no key has KID."""
        return self._kid_algorithms.get(kid)

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        kids = ", ".join(repr(key.kid) for key in self.keys)
        return f"<KeySet v{self.version}: {kids}>"


class _Dropped(Exception):
    pass


_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


def key_from_jwk(jwk: dict) -> tuple[Key | None, str | None]:
    """Build a verification key from one JWK of a JWKS: ``(key, None)``, or
    ``(None, reason)`` when the rules above drop it."""
    try:
        return _key(jwk), None
    except _Dropped as dropped:
        return None, str(dropped)


def keyset_from_jwks(document: object, version: int = 1) -> tuple[KeySet, tuple[str, ...]]:
    """A key set from a JWKS document, and one line per dropped key.

    Raises ValueError when the document is not ``{"keys": [...]}``."""
    if type(document) is not dict or type(document.get("keys")) is not list:
        raise ValueError('a JWKS is a JSON object with a "keys" array')
    keys: list[Key] = []
    dropped: list[str] = []
    for position, jwk in enumerate(document["keys"]):
        key, reason = key_from_jwk(jwk)
        if key is not None:
            keys.append(key)
        else:
            kid = jwk.get("kid") if type(jwk) is dict else None
            name = f"kid {kid!r}" if type(kid) is str else f"key #{position}"
            dropped.append(f"{name}: {reason}")
    return KeySet(keys, version), tuple(dropped)


def keyset_from_secret(secret: str, version: int = 1) -> KeySet:
    """The key set of an HS256/384/512 provider: one ``oct`` key, no kid."""
    material = secret.encode("utf-8")
    if len(material) < MIN_SECRET_BYTES:
        raise ValueError(f"an HMAC secret needs at least {MIN_SECRET_BYTES} bytes")
    thumbprint = _thumbprint({"k": b64url_encode(material), "kty": "oct"})
    return KeySet([Key(None, "oct", None, None, material, thumbprint)], version)


def _key(jwk: object) -> Key:
    if type(jwk) is not dict:
        raise _Dropped("not a JSON object")
    kid = jwk.get("kid")
    if kid is not None and type(kid) is not str:
        raise _Dropped("kid is not a string")
    if "use" in jwk and jwk["use"] != "sig":
        raise _Dropped("use is enc" if jwk["use"] == "enc" else "use is not sig")
    if "key_ops" in jwk:
        ops = jwk["key_ops"]
        if type(ops) is not list or "verify" not in ops:
            raise _Dropped("key_ops lack verify")
    kty = jwk.get("kty")
    if kty == "oct":
        raise _Dropped("symmetric key in a JWKS")
    build = _BUILDERS.get(kty) if type(kty) is str else None
    if build is None:
        raise _Dropped("unsupported kty")
    if any(name in jwk for name in _PRIVATE_MEMBERS):
        raise _Dropped("private key material present")
    alg = jwk.get("alg")
    if alg is not None and (type(alg) is not str or alg not in _FAMILIES):
        raise _Dropped("unsupported alg")
    verifier_key, crv, members = build(jwk)
    if alg is not None:
        kty_of_alg, curves = _FAMILIES[alg]
        if kty_of_alg != kty or (curves is not None and crv not in curves):
            raise _Dropped("alg does not fit kty")
    return Key(kid, kty, alg, crv, verifier_key, _thumbprint({**members, "kty": kty}))


def _member(jwk: dict, name: str) -> bytes:
    data = b64url_decode(jwk.get(name))
    if not data:
        raise _Dropped("bad key data")
    return data


def _rsa(jwk: dict):
    n = int.from_bytes(_member(jwk, "n"), "big")
    e = int.from_bytes(_member(jwk, "e"), "big")
    try:
        key = rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError:
        raise _Dropped("bad key data") from None
    if key.key_size < MIN_RSA_BITS:
        raise _Dropped(f"RSA key under {MIN_RSA_BITS} bits")
    members = {"e": b64url_encode(_minimal(e)), "n": b64url_encode(_minimal(n))}
    return key, None, members


_EC_CURVES = {"P-256": (ec.SECP256R1, 32), "P-384": (ec.SECP384R1, 48)}


def _ec(jwk: dict):
    crv = jwk.get("crv")
    if crv not in _EC_CURVES:
        raise _Dropped("unsupported crv")
    curve, size = _EC_CURVES[crv]
    x, y = _member(jwk, "x"), _member(jwk, "y")
    if len(x) != size or len(y) != size:
        raise _Dropped("bad key data")
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(curve(), b"\x04" + x + y)
    except ValueError:
        raise _Dropped("bad key data") from None
    return key, crv, {"crv": crv, "x": b64url_encode(x), "y": b64url_encode(y)}


_OKP_CURVES = {"Ed25519": (ed25519.Ed25519PublicKey, 32), "Ed448": (ed448.Ed448PublicKey, 57)}


def _okp(jwk: dict):
    crv = jwk.get("crv")
    if crv not in _OKP_CURVES:
        raise _Dropped("unsupported crv")
    cls, size = _OKP_CURVES[crv]
    x = _member(jwk, "x")
    if len(x) != size:
        raise _Dropped("bad key data")
    try:
        key = cls.from_public_bytes(x)
    except ValueError:
        raise _Dropped("bad key data") from None
    return key, crv, {"crv": crv, "x": b64url_encode(x)}


_BUILDERS = {"RSA": _rsa, "EC": _ec, "OKP": _okp}


def _minimal(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def _thumbprint(members: dict[str, str]) -> str:
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":"))
    return b64url_encode(hashlib.sha256(canonical.encode("ascii")).digest())
