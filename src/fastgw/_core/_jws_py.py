"""Compact JWS parsing (RFC 7515) on the token's bytes: split, base64url, JSON.

Pure-Python twin of ``_jws_c``; both answer alike on every input.

``split(token)`` accepts exactly one shape: at most ``MAX_TOKEN`` bytes of
three base64url segments, the first two not empty, with no padding and
canonical trailing bits (with 2 or 3 characters in the last group only the
top 4 or 2 bits of its last character carry data; the rest must be zero, or
two texts would decode alike). It answers ``(header JSON, claims JSON,
signing input, signature)`` as bytes, or None.

``json_object(data, strict)`` is the object DATA holds, or None. ``strict``
is the parser of record (``fastgw.auth.jws``: the standard library's, with
a duplicate-name hook), and it decides every text this module cannot vouch
for. The fast path is orjson, which is as strict as the parser of record
about everything but three things it lets through or reads otherwise:

- duplicate names (orjson keeps the last one). Every name in a JSON text is
  a string closed by a quote that only whitespace separates from a colon,
  and no other quote is followed so outside a string; so the quotes followed
  by a colon, with nothing but bytes outside visible ASCII between (a set
  that holds JSON's whitespace, whatever a parser takes for it), are at
  least as many as the names, and as many when no string holds one. When
  that count equals the number of entries of every object orjson built, no
  object can have lost one to a duplicate;
- integers beyond 64 bits, which orjson reads as floats: any float in the
  value sends DATA to ``strict``, so numbers are always what ``int()`` of
  the text gives;
- deep nesting, which the two parsers cut at different depths: a text with
  more than ``MAX_CONTAINERS`` opening brackets, in strings or not, goes to
  ``strict`` too.

Everything else orjson rejects (lone surrogates, invalid UTF-8, a byte order
mark, NaN, trailing data) goes to ``strict``, which rejects it as well or
reads it (numbers orjson cannot hold). So the answer is always ``strict``'s.

``header_ok(header)`` holds the header rules: ``alg`` a string; no ``enc``
(JWE) or ``b64`` (RFC 7797); ``kid``, when present, a string; ``cty`` a
string other than a nested JWT's; ``crit``, when present, a non-empty array
of names this implementation understands (none) that the header holds.

``parse(token, strict)`` is all of them: ``(alg, kid, header, claims,
signing input, signature)``, or None for a malformed token.

``der_signature(raw)`` re-encodes an ECDSA signature from the JWS form, R
and S at the curve's fixed width (RFC 7518 section 3.4), as the DER that
``cryptography`` verifies.
"""

from __future__ import annotations

import binascii

from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from orjson import loads

MAX_TOKEN = 8 * 1024
MAX_CONTAINERS = 64
#: ``crit`` names this implementation understands (RFC 7515 section 4.1.11).
UNDERSTOOD_CRIT: frozenset[str] = frozenset()

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_LAST_OF_2 = frozenset(b"AQgw")
_LAST_OF_3 = frozenset(b"AEIMQUYcgkosw048")
_INVISIBLE = bytes([*range(0x21), *range(0x7F, 0x100)])
_NESTED = frozenset({"jwt", "application/jwt"})


def _decode(segment: bytes) -> bytes | None:
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
    return binascii.a2b_base64(segment.translate(_TO_STANDARD) + pad)


def b64url(data: bytes) -> bytes | None:
    """Strict base64url of DATA (bytes): no padding, canonical; None if not."""
    if type(data) is not bytes or data.translate(None, _ALPHABET):
        return None
    return _decode(data)


def split(token: bytes) -> tuple[bytes, bytes, bytes, bytes] | None:
    if type(token) is not bytes or len(token) > MAX_TOKEN:
        return None
    if token.translate(None, _ALPHABET) != b"..":  # two dots, nothing else outside the alphabet
        return None
    encoded_header, encoded_claims, encoded_signature = token.split(b".")
    if not encoded_header or not encoded_claims:
        return None
    header = _decode(encoded_header)
    claims = _decode(encoded_claims)
    signature = _decode(encoded_signature)
    if header is None or claims is None or signature is None:
        return None
    return header, claims, token[: len(encoded_header) + 1 + len(encoded_claims)], signature


def _entries(value: dict) -> int:
    """Entries of every object in VALUE; -1 if it holds a float."""
    count = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            count += len(item)
            item = item.values()
        for inner in item:
            kind = type(inner)
            if kind is dict or kind is list:
                stack.append(inner)
            elif kind is float:
                return -1
    return count


def _names_at_most(data: bytes) -> int:
    return data.translate(None, _INVISIBLE).count(b'":')


def json_object(data: bytes, strict) -> dict | None:
    try:
        value = loads(data)
    except ValueError:
        return strict(data)
    if (
        type(value) is dict
        and data.count(b"{") + data.count(b"[") <= MAX_CONTAINERS
        and _entries(value) == _names_at_most(data)
    ):
        return value
    return strict(data)


def header_ok(header: dict) -> bool:
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


def parse(token: bytes, strict) -> tuple | None:
    parts = split(token)
    if parts is None:
        return None
    header = json_object(parts[0], strict)
    if header is None or not header_ok(header):
        return None
    claims = json_object(parts[1], strict)
    if claims is None:
        return None
    return header["alg"], header.get("kid"), header, claims, parts[2], parts[3]


def der_signature(raw: bytes) -> bytes:
    """DER of the ECDSA signature R || S (two halves of RAW, big-endian)."""
    size = len(raw) // 2
    return encode_dss_signature(
        int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big")
    )
