"""Compact JWS tokens built byte by byte, including ones no JWT library would emit.

Every part is under the caller's control: a header or claims part may be a
dict (written as compact UTF-8 JSON), a str (JSON text as given, so duplicate
names or odd escapes survive) or bytes (sent as they are, e.g. UTF-16). Each
part is turned into a segment by an encoder (canonical base64url by default,
or ``padded``, ``noncanonical``, ``standard_alphabet``), and the signature is
made with ``cryptography`` over the exact signing input that goes on the wire,
so a token is rejected for the rule it breaks and never for a bad signature
by accident::

    token = forge({"alg": "RS256", "kid": key.kid}, claims, key=key.private_key)
    token = forge(members(("alg", "none"), ("alg", "RS256")), claims, key=rsa_key,
                  alg="RS256", claims_encoding=padded)
"""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

__all__ = [
    "ALPHABET",
    "b64url",
    "b64url_decode",
    "flip_bit",
    "forge",
    "json_text",
    "members",
    "noncanonical",
    "padded",
    "sign",
    "standard_alphabet",
]

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_EC_WIDTH = {"ES256": 32, "ES384": 48, "ES512": 66}

Part = dict | str | bytes
Encoder = Callable[[bytes], str]


# -- segments ----------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    """Canonical base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    """The bytes of a canonical base64url segment."""
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def padded(data: bytes) -> str:
    """base64url that keeps its ``=`` padding; ``data`` must not be a multiple of 3 long."""
    if len(data) % 3 == 0:
        raise ValueError("a multiple of 3 bytes has no padding; lengthen the data")
    return base64.urlsafe_b64encode(data).decode("ascii")


def noncanonical(data: bytes) -> str:
    """base64url whose last character has an unused low bit set: lenient decoders
    read the same bytes, a strict one refuses. ``data`` must not be a multiple of 3."""
    if len(data) % 3 == 0:
        raise ValueError("a multiple of 3 bytes has no unused bits; lengthen the data")
    text = b64url(data)
    last = ALPHABET.index(text[-1])
    return text[:-1] + ALPHABET[last | 1]


def standard_alphabet(data: bytes) -> str:
    """Plain base64 (``+`` and ``/``) without padding; ``data`` must produce one of them."""
    text = base64.b64encode(data).rstrip(b"=").decode("ascii")
    if "+" not in text and "/" not in text:
        raise ValueError("the encoding holds no '+' or '/'; choose other data")
    return text


def flip_bit(segment: str, bit: int = 0) -> str:
    """``segment`` (canonical base64url) with one bit of its decoded bytes flipped."""
    data = bytearray(b64url_decode(segment))
    data[bit // 8] ^= 0x80 >> (bit % 8)
    return b64url(bytes(data))


# -- JSON text ---------------------------------------------------------------------------------


def json_text(value: Any) -> str:
    """Compact JSON, non-ASCII kept as UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def members(*pairs: tuple[str, Any]) -> str:
    """A JSON object written from name/value pairs in order, duplicates kept."""
    return "{" + ",".join(f"{json_text(name)}:{json_text(value)}" for name, value in pairs) + "}"


def _part_bytes(part: Part) -> bytes:
    if isinstance(part, bytes):
        return part
    if isinstance(part, str):
        return part.encode("utf-8")
    return json_text(part).encode("utf-8")


# -- signatures --------------------------------------------------------------------------------


def sign(alg: str, key: Any, signing_input: bytes) -> bytes:
    """The JWS signature (RFC 7518) of ``signing_input`` under ``alg``.

    ``key`` is a ``cryptography`` private key, or bytes for the HS algorithms.
    ECDSA signatures are R || S at the curve's width, as JWS carries them.
    """
    family, size = alg[:2], alg[2:]
    if family == "HS":
        return hmac.digest(key, signing_input, f"sha{size}")
    if family == "RS":
        return key.sign(signing_input, padding.PKCS1v15(), _HASHES[size]())
    if family == "PS":
        pss = padding.PSS(mgf=padding.MGF1(_HASHES[size]()), salt_length=int(size) // 8)
        return key.sign(signing_input, pss, _HASHES[size]())
    if family == "ES":
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(_HASHES[size]())))
        width = _EC_WIDTH[alg]
        return r.to_bytes(width, "big") + s.to_bytes(width, "big")
    if alg == "EdDSA":
        return key.sign(signing_input)
    raise ValueError(f"cannot sign with {alg}")


def forge(
    header: Part,
    claims: Part,
    *,
    key: Any = None,
    alg: str | None = None,
    signature: bytes | None = None,
    header_encoding: Encoder = b64url,
    claims_encoding: Encoder = b64url,
    signature_encoding: Encoder = b64url,
) -> str:
    """A compact JWS of ``header`` and ``claims`` exactly as given.

    With ``key`` it is signed under ``alg`` (default: the header's ``alg``)
    over the signing input as encoded; ``signature`` gives the signature bytes
    instead; with neither the signature segment is empty.
    """
    signing_input = (
        header_encoding(_part_bytes(header)) + "." + claims_encoding(_part_bytes(claims))
    )
    if key is not None:
        if alg is None:
            if not isinstance(header, dict):
                raise ValueError("name the alg to sign with when the header is not a dict")
            alg = header["alg"]
        signature = sign(alg, key, signing_input.encode("ascii"))
    return signing_input + "." + (signature_encoding(signature) if signature else "")
