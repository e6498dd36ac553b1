"""The door's hot path: a request's bearer token and the verified-token cache.

Pure-Python twin of ``_door_c``. Codes are ``fastgw.auth.codes.AuthCode``
values as plain ints, so this layer imports nothing from above it.

``bearer(fields, query)`` finds the one bearer credential of a request
(RFC 6750 section 2.1) in its raw header fields, ``(lower-cased name, name,
value)`` bytes triples:

- no ``Authorization`` field: MISSING_TOKEN;
- two of them, or one beside an ``access_token`` query parameter:
  TWO_CREDENTIALS;
- a scheme other than ``Bearer`` (any case, then a space): MISSING_TOKEN;
- after the scheme, spaces and tabs are trimmed from both ends; nothing left,
  more than ``MAX_TOKEN`` bytes, or a byte outside ASCII: MALFORMED_TOKEN.
  The strict JWS parser judges the rest.

A ``CachedToken`` is what the verifier keeps for a token whose signature and
claims it has checked: the verdict, the key and key set it was checked with,
and the time window in which the claim checks still pass (the same sums as
``check_claims``, so ``fresh`` agrees with it exactly). The door adds what it
derives from the token once: the granted scopes and the identity header
fields.

``TokenCache`` bounds the entries with the CLOCK algorithm: a hit only sets
the entry's ``used`` mark; when the cache is full the oldest entry goes,
unless it was used since it was last looked at, in which case it loses the
mark and moves to the back. That is least-recently-used order to within one
pass, without moving anything on a hit. Only a hit marks an entry (``get``);
the request that verified a token reads its new entry with ``peek``, or
under a load of tokens each seen once every entry would look used, and
every eviction would first move the whole cache to the back.

``admit(cache, request, now)`` is the whole cached path in one call: the
bearer token, its entry, the provider's key set still the entry's, the time
window, then the request takes the entry's claims, identity, scopes and
identity fields, and answers None. Whenever anything is not plainly so (no
token, no entry yet, a new key set, a window closed, a token bound to a
certificate) it answers what ``bearer`` found instead, and the caller takes
the full path from there, which gives the precise verdict.
"""

from __future__ import annotations

from collections import OrderedDict

OK = 0
MISSING_TOKEN = 1
MALFORMED_TOKEN = 2
TWO_CREDENTIALS = 12

MAX_TOKEN = 8 * 1024

_INF = float("inf")


def _has_access_token(query: str) -> bool:
    return "access_token" in query and any(
        part.split("=", 1)[0] == "access_token" for part in query.split("&")
    )


def bearer(fields: list, query: str) -> tuple[int, bytes | None]:
    value = None
    count = 0
    for low, _, raw in fields:
        if low == b"authorization":
            count += 1
            value = raw
    if not count:
        return MISSING_TOKEN, None
    if count > 1 or (query and _has_access_token(query)):
        return TWO_CREDENTIALS, None
    if value[:7].lower() != b"bearer ":
        return MISSING_TOKEN, None
    token = value[7:].strip(b" \t")
    if not token or len(token) > MAX_TOKEN or not token.isascii():
        return MALFORMED_TOKEN, None
    return OK, token


class CachedToken:
    __slots__ = ("alg", "bound", "claims", "expires", "fields", "key", "keyset", "leeway",
                 "provider", "result", "scopes", "starts", "used")

    def __init__(self, result, provider, key, alg: str, keyset) -> None:
        claims = result.claims
        leeway = float(provider.leeway)
        self.result = result
        self.claims = claims
        self.provider = provider
        self.key = key
        self.alg = alg
        self.keyset = keyset
        self.leeway = leeway
        self.expires = float(claims["exp"]) + leeway
        starts = -_INF
        for name in ("nbf", "iat"):
            if name in claims:
                starts = max(starts, float(claims[name]))
        self.starts = starts
        self.bound = "cnf" in claims  # RFC 8705: the connection must be checked too
        self.scopes: frozenset | None = None
        self.fields: tuple | None = None
        self.used = False

    def fresh(self, now: float) -> bool:
        """Whether the claim checks still pass at NOW (they did when it was cached)."""
        now = float(now)
        return not (now >= self.expires) and not (self.starts > now + self.leeway)


class TokenCache:
    __slots__ = ("entries", "size")

    def __init__(self, size: int) -> None:
        self.entries: OrderedDict[bytes, CachedToken] = OrderedDict()
        self.size = max(0, size)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, token: bytes) -> CachedToken | None:
        entry = self.entries.get(token)
        if entry is not None:
            entry.used = True
        return entry

    def peek(self, token: bytes) -> CachedToken | None:
        """The entry of TOKEN without marking it used: for the request that
        has just put it there, which is not a second use."""
        return self.entries.get(token)

    def put(self, token: bytes, entry: CachedToken) -> None:
        if not self.size:
            return
        entries = self.entries
        entries.pop(token, None)
        while len(entries) >= self.size:
            oldest, old = entries.popitem(last=False)
            if old.used:  # a second chance, at the back
                old.used = False
                entries[oldest] = old
        entries[token] = entry

    def pop(self, token: bytes) -> None:
        self.entries.pop(token, None)

    def clear(self) -> None:
        self.entries.clear()


def admit(cache: TokenCache, request, now: float) -> tuple[int, bytes | None] | None:
    fields = request.headers.fields
    found = bearer(fields, request.query)
    if found[0]:
        return found
    entry = cache.entries.get(found[1])
    if entry is None or entry.fields is None or entry.bound or not entry.fresh(now):
        return found
    if entry.provider.keyset_getter() is not entry.keyset:
        return found
    entry.used = True
    request.claims = entry.claims
    request.identity = entry.result
    request.scopes = entry.scopes
    fields.extend(entry.fields)
    return None
