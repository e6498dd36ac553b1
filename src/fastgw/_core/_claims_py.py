"""JWT claim checks (RFC 7519 section 4.1, RFC 8725) and scopes.

Pure-Python twin of ``_claims_c``. Results are ``fastgw.auth.codes.AuthCode``
values as plain ints, so this layer imports nothing from above it.

``check_claims`` looks at the claims in a fixed order, so a token with several
faults always gets the same code:

1. ``exp`` missing, or any of ``exp``/``nbf``/``iat`` not a finite JSON number
   (int or float; never bool or text), or ``aud`` neither a string nor an
   array of strings: MALFORMED_TOKEN. A token without ``exp`` never expires,
   which no profile here accepts, so it is malformed rather than expired;
2. ``now >= exp + leeway``: EXPIRED (RFC 7519: now must be *before* exp);
3. ``nbf > now + leeway`` or ``iat > now + leeway``: NOT_YET_VALID;
4. ``iss`` not a string equal to ``issuer``: BAD_ISSUER;
5. with ``audiences`` configured, ``aud`` missing or holding none of them:
   BAD_AUDIENCE. With no ``audiences`` the audience is not checked.

Numbers are compared as doubles: an integer too large for one is malformed.

Scopes come from ``scope`` (space-separated text) when the claim is present,
else from ``scp`` (array of strings, or space-separated text); other types
grant nothing. Names are compared exactly: a token scope ``SCOPE_x`` is
``SCOPE_x`` (the prefix is Spring's way of writing a *required* scope, which
``RequireScopes`` strips).

``identity(sub, claims)`` is what a verified token puts on the request: its
scopes, and its ``X-Auth-Subject`` and ``X-Auth-Scopes`` header fields, raw
``(lower-cased name, name, value)`` bytes triples. A value carries visible
ASCII but ``%`` as it is, and the subject also its spaces; anything else
(controls, line breaks, non-ASCII, ``%``) is percent-encoded as UTF-8, so a
claim can never start a header line of its own and the upstream can decode
it exactly; the scopes are sorted as written. What a ``scope`` text grants
and writes is kept by text, since tokens of one client carry the same one:
at most ``SCOPE_TEXTS_KEPT`` texts, forgotten all at once when full.
"""

from __future__ import annotations

import re
from urllib.parse import quote

OK = 0
MALFORMED_TOKEN = 2
EXPIRED = 6
NOT_YET_VALID = 7
BAD_ISSUER = 8
BAD_AUDIENCE = 9

_INF = float("inf")
_ABSENT = object()


def _number(value: object) -> float | None:
    if type(value) is float:
        number = value
    elif type(value) is int:
        try:
            number = float(value)
        except OverflowError:
            return None
    else:
        return None
    return number if -_INF < number < _INF else None


def check_claims(
    claims: dict, now: float, leeway: float, issuer: str, audiences: tuple[str, ...]
) -> int:
    now = float(now)
    leeway = float(leeway)
    exp = _number(claims.get("exp"))
    if exp is None:
        return MALFORMED_TOKEN
    nbf = claims.get("nbf", _ABSENT)
    if nbf is not _ABSENT:
        nbf = _number(nbf)
        if nbf is None:
            return MALFORMED_TOKEN
    iat = claims.get("iat", _ABSENT)
    if iat is not _ABSENT:
        iat = _number(iat)
        if iat is None:
            return MALFORMED_TOKEN
    aud = claims.get("aud", _ABSENT)
    if aud is not _ABSENT and type(aud) is not str:
        if type(aud) is not list:
            return MALFORMED_TOKEN
        for item in aud:
            if type(item) is not str:
                return MALFORMED_TOKEN
    if now >= exp + leeway:
        return EXPIRED
    later = now + leeway
    if (nbf is not _ABSENT and nbf > later) or (iat is not _ABSENT and iat > later):
        return NOT_YET_VALID
    iss = claims.get("iss")
    if type(iss) is not str or iss != issuer:
        return BAD_ISSUER
    if audiences:
        if aud is _ABSENT:
            return BAD_AUDIENCE
        if type(aud) is str:
            if aud not in audiences:
                return BAD_AUDIENCE
        else:
            for item in aud:
                if item in audiences:
                    return OK
            return BAD_AUDIENCE
    return OK


def _words(text: str) -> list[str]:
    return [word for word in text.split(" ") if word]


def scopes_of(claims: dict) -> frozenset[str]:
    scope = claims.get("scope", _ABSENT)
    if scope is _ABSENT:
        scope = claims.get("scp", _ABSENT)
        if type(scope) is list:
            return frozenset([item for item in scope if type(item) is str])
    if type(scope) is str:
        return frozenset(_words(scope))
    return frozenset()


# -- identity header fields -------------------------------------------------------------------

SCOPE_TEXTS_KEPT = 1024

_TOKEN_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if c != 0x25)
_PLAIN = re.compile(r"[\x21-\x24\x26-\x7e]+( [\x21-\x24\x26-\x7e]+)*")
_SUBJECT = (b"x-auth-subject", b"X-Auth-Subject")
_SCOPES = (b"x-auth-scopes", b"X-Auth-Scopes")
_NO_SCOPES: frozenset[str] = frozenset()
_scope_texts: dict[str, tuple[frozenset[str], tuple | None]] = {}


def header_value(text: str, space: bool) -> bytes:
    """TEXT as a header value: visible ASCII but '%' (and spaces when SPACE)
    as it is, every other character percent-encoded as UTF-8."""
    if _PLAIN.fullmatch(text) and (space or " " not in text):
        return text.encode("ascii")
    return quote(text, safe=_TOKEN_SAFE + " " if space else _TOKEN_SAFE).encode("ascii")


def _granted(scopes: frozenset[str]) -> tuple[frozenset[str], tuple | None]:
    if not scopes:
        return scopes, None
    value = b" ".join(sorted(header_value(scope, False) for scope in scopes))
    return scopes, (*_SCOPES, value)


def identity(sub: str | None, claims: dict) -> tuple[frozenset[str], tuple]:
    scope = claims.get("scope", _ABSENT)
    if scope is _ABSENT:
        scope = claims.get("scp", _ABSENT)
        if type(scope) is list:
            scopes, field = _granted(frozenset([item for item in scope if type(item) is str]))
        elif type(scope) is str:
            scopes, field = _granted_text(scope)
        else:
            scopes, field = _NO_SCOPES, None
    elif type(scope) is str:
        scopes, field = _granted_text(scope)
    else:
        scopes, field = _NO_SCOPES, None
    if sub is None:
        return scopes, (field,) if field is not None else ()
    subject = (*_SUBJECT, header_value(sub, True))
    return scopes, (subject, field) if field is not None else (subject,)


def _granted_text(text: str) -> tuple[frozenset[str], tuple | None]:
    known = _scope_texts.get(text)
    if known is None:
        if len(_scope_texts) >= SCOPE_TEXTS_KEPT:
            _scope_texts.clear()
        known = _scope_texts[text] = _granted(frozenset(_words(text)))
    return known
