"""Token verification per provider, with a cache of verified tokens.

``TokenVerifier.verify`` runs, in order: strict parsing (``jws.parse``, the core's); the
provider whose ``issuer`` equals the token's ``iss``; the provider's algorithm
allow-list; the key from the provider's current key set that the ``kid`` names
and that fits the algorithm; the signature; then the claim checks of the
compiled core. Each stage that fails returns its own code. A ``kid`` the key
set holds, but only for other algorithms, is ALG_NOT_ALLOWED (a refresh would
not change that); a ``kid`` it lacks, no key set yet, a ``kid`` or an absent
``kid`` that does not single out one fitting key, is UNKNOWN_KID with ``unknown_kid`` set, so the
caller may refresh the key set (single flight) and verify once more.

Verified tokens are cached by their exact bytes (``TokenCache`` of the
compiled core, bounded, least recently used out first), so RSA/ECDSA work is
paid once per token. A cache hit is re-checked for what can change: the
claims' time window against the clock (so an entry is never used past
``exp``; the other claims are fixed for the provider), and the
key, whenever the provider's getter returns another key set than the one the
token was verified with (the key the token names must still be the one found
for its algorithm: same kid, kty, alg, curve and thumbprint). Key sets are
immutable, so identity is enough and no version numbering is trusted. A hit
therefore answers what a fresh verification would. Only successes are
cached: a cache of failures would be filled by whoever sends the most junk.

Claims dicts are shared between the requests that present the same token;
callers treat them as read-only (the compiled core leaves JSON trees and
cached verdicts out of the cyclic collector, since they hold no cycles). On
a failure, ``iss`` and ``kid`` are what the token claimed (for the audit
record); ``sub`` and ``claims`` are set only once the signature has
verified.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from fastgw._core import active
from fastgw.config.model import Provider

from .codes import AuthCode
from .jws import strict_object, verify_signature
from .keys import HMAC_MIN_BYTES, SUPPORTED_ALGORITHMS, KeySet

_CODES = tuple(AuthCode)
_OK = AuthCode.OK
_new = tuple.__new__


class Result(NamedTuple):
    code: AuthCode
    claims: dict | None = None
    provider: str | None = None
    kid: str | None = None
    iss: str | None = None
    sub: str | None = None
    unknown_kid: bool = False  # the provider's key set should be re-fetched


_MALFORMED = Result(AuthCode.MALFORMED_TOKEN)


class ProviderVerifier:
    """One configured provider: its issuer, audiences, allow-list, leeway and
    a getter for its current key set (None until one has loaded)."""

    __slots__ = ("algorithms", "audiences", "issuer", "keyset_getter", "leeway", "name")

    def __init__(self, provider: Provider, keyset_getter: Callable[[], KeySet | None]) -> None:
        unknown = [alg for alg in provider.algorithms if alg not in SUPPORTED_ALGORITHMS]
        if unknown:
            raise ValueError(f"provider {provider.name!r}: unsupported algorithms {unknown}")
        if provider.secret is not None:
            size = len(provider.secret.encode("utf-8"))
            short = [alg for alg in provider.algorithms if HMAC_MIN_BYTES.get(alg, 0) > size]
            if short:
                raise ValueError(
                    f"provider {provider.name!r}: a {size}-byte secret is too short for "
                    f"{', '.join(short)} (at least {HMAC_MIN_BYTES[short[-1]]} bytes)"
                )
        self.name = provider.name
        self.issuer = provider.issuer
        self.audiences = tuple(provider.audiences)
        self.algorithms = frozenset(provider.algorithms)
        self.leeway = float(provider.leeway)
        self.keyset_getter = keyset_getter


def _same_key(entry, keyset: KeySet | None) -> bool:
    """Whether the provider's new KEYSET still gives the entry's key for its
    token; if so the entry moves to that set."""
    if keyset is None or keyset.find(entry.result.kid, entry.alg) != entry.key:
        return False
    entry.keyset = keyset
    return True


class TokenVerifier:
    def __init__(
        self,
        providers: Sequence[ProviderVerifier],
        *,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        by_issuer: dict[str, ProviderVerifier] = {}
        for provider in providers:
            other = by_issuer.setdefault(provider.issuer, provider)
            if other is not provider:
                raise ValueError(
                    f"providers {other.name!r} and {provider.name!r} share the issuer "
                    f"{provider.issuer!r}; a token's iss must name one provider"
                )
        self._by_issuer = by_issuer
        door = active("door")
        self.cache = door.TokenCache(cache_size)
        self._cached_token = door.CachedToken
        self.clock = clock
        self._check_claims = active("claims").check_claims
        self._parse = active("jws").parse

    def verify(self, token: bytes | str) -> Result:
        if type(token) is str:
            token = token.encode("utf-8", "surrogatepass")  # not ASCII: malformed, not a crash
        cache = self.cache
        entry = cache.get(token)
        if entry is None:
            return self._verify(token)
        keyset = entry.provider.keyset_getter()
        if keyset is not entry.keyset and not _same_key(entry, keyset):
            cache.pop(token)
            return self._verify(token)
        now = self.clock()
        if entry.fresh(now):
            return entry.result
        # Only the clock can have turned a cached verdict: the precise code is
        # the claim checks' own.
        cache.pop(token)
        provider = entry.provider
        code = self._check_claims(
            entry.claims, now, provider.leeway, provider.issuer, provider.audiences
        )
        return entry.result._replace(code=_CODES[code], claims=None)

    def clear(self) -> None:
        self.cache.clear()

    def __len__(self) -> int:
        return len(self.cache)

    def _verify(self, token: bytes) -> Result:
        parsed = self._parse(token, strict_object)
        if parsed is None:
            return _MALFORMED
        alg, kid, _, claims, signing_input, signature = parsed
        iss = claims.get("iss")
        if type(iss) is not str:
            return Result(AuthCode.BAD_ISSUER, kid=kid)
        provider = self._by_issuer.get(iss)
        if provider is None:
            return Result(AuthCode.BAD_ISSUER, kid=kid, iss=iss)
        if alg not in provider.algorithms:
            return Result(AuthCode.ALG_NOT_ALLOWED, provider=provider.name, kid=kid, iss=iss)
        keyset = provider.keyset_getter()
        key = keyset.find(kid, alg) if keyset is not None else None
        if key is None or keyset is None:
            fitting = keyset.algorithms_for(kid) if keyset is not None and kid is not None else None
            if fitting is not None and alg not in fitting:
                return Result(AuthCode.ALG_NOT_ALLOWED, provider=provider.name, kid=kid, iss=iss)
            return Result(
                AuthCode.UNKNOWN_KID, provider=provider.name, kid=kid, iss=iss, unknown_kid=True
            )
        if not verify_signature(alg, key.verifier_key, signing_input, signature):
            return Result(AuthCode.BAD_SIGNATURE, provider=provider.name, kid=kid, iss=iss)
        sub = claims.get("sub")
        if type(sub) is not str:
            sub = None
        code = self._check_claims(
            claims, self.clock(), provider.leeway, provider.issuer, provider.audiences
        )
        if code:
            return Result(_CODES[code], provider=provider.name, kid=kid, iss=iss, sub=sub)
        # Result(OK, claims, ...) without the keyword handling of a NamedTuple's __new__
        result = _new(Result, (_OK, claims, provider.name, kid, iss, sub, False))
        self.cache.put(token, self._cached_token(result, provider, key, alg, keyset))
        return result
