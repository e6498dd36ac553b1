"""Rate limiting at the door: which bucket a request spends from, and the answer.

A route's ``RateLimit=a, b`` becomes one check that runs after authentication
and authorization, so a key taken from a token (``jwt.sub``,
``jwt.claim.NAME``) is only ever taken from a verified one; a request without
one is keyed by its client address. Limits of one store decide together,
all-or-nothing; a route mixing stores asks the local table first, then Redis.
"""

from __future__ import annotations

import ipaddress

from ..proxy import Rejection
from . import limit_from_config

#: what a request is keyed by when the configured identity is missing
_IP = "ip"


def client_address(request, trusted_proxies) -> str:
    """The caller's address: the socket peer, or behind trusted proxies the
    right-most X-Forwarded-For entry that is not one of them (the entries to
    its left are the caller's own words)."""
    ip = request.client_ip
    if not trusted_proxies or not _trusted(ip, trusted_proxies):
        return ip
    chain = [a.strip() for v in request.forwarded_for for a in v.split(",") if a.strip()]
    for address in reversed(chain):
        if not _trusted(address, trusted_proxies):
            return address
    return chain[0] if chain else ip


def _trusted(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def key_function(kind: str, trusted_proxies):
    """``request -> (kind used, key)`` for a configured key kind."""

    def by_ip(request):
        return _IP, client_address(request, trusted_proxies)

    if kind == "ip":
        return by_ip
    if kind == "jwt.sub":

        def by_sub(request):
            identity = request.identity
            sub = getattr(identity, "sub", None) if identity is not None else None
            return ("jwt.sub", sub) if isinstance(sub, str) else by_ip(request)

        return by_sub
    if kind.startswith("jwt.claim."):
        name = kind[len("jwt.claim."):]

        def by_claim(request):
            claims = request.claims
            value = claims.get(name) if claims is not None else None
            if isinstance(value, str | int) and not isinstance(value, bool):
                return kind, str(value)
            return by_ip(request)

        return by_claim
    if kind.startswith("header."):
        name = kind[len("header."):]

        def by_header(request):
            value = request.headers.get(name)
            return (kind, value) if value else by_ip(request)

        return by_header
    if kind == "mtls.subject":

        def by_certificate(request):
            cert = request.client_cert
            subject = cert.subject if cert is not None else None
            return (kind, subject) if subject is not None else by_ip(request)

        return by_certificate
    raise ValueError(f"unknown rate-limit key {kind!r}")


def rate_lines(decision) -> bytes:
    """The RateLimit-* fields of an allowed response, as header lines."""
    return b"RateLimit-Limit: %d\r\nRateLimit-Remaining: %d\r\nRateLimit-Reset: %d\r\n" % (
        decision.limit.count, decision.remaining, decision.reset)


def rate_headers(decision) -> tuple[tuple[str, str], ...]:
    """The RateLimit-* fields of a 429, as (name, value) pairs."""
    return (
        ("RateLimit-Limit", str(decision.limit.count)),
        ("RateLimit-Remaining", str(decision.remaining)),
        ("RateLimit-Reset", str(decision.reset)),
    )


class RateLimiter:
    def __init__(self, config, *, buckets, redis, metrics, audit) -> None:
        self.config = config
        self.buckets = buckets
        self.redis = redis
        self.metrics = metrics
        self.audit = audit
        self.limits = {name: limit_from_config(rl) for name, rl in config.rate_limits.items()}

    def check(self, names: tuple[str, ...]):
        """The check for a route's ``RateLimit=`` names."""
        trusted = self.config.trusted_proxies
        local, shared = [], []
        for name in dict.fromkeys(names):  # a limit named twice counts once
            rl = self.config.rate_limits[name]
            entry = (self.limits[name], key_function(rl.key, trusted))
            (shared if rl.store == "redis" else local).append(entry)
        buckets, redis = self.buckets, self.redis
        if redis is None:
            # Only `fastgw check`/`explain` build routes without a Redis client;
            # a serving gateway always has one when any limit is store: redis.
            shared = []

        local, shared = tuple(local), tuple(shared)
        decide = buckets.decide if local and buckets is not None else None

        def keyed(entries, request):
            checks, kinds = [], []
            for limit, key_of in entries:
                kind, key = key_of(request)
                checks.append((limit, f"{kind}={key}"))
                kinds.append(kind)
            return checks, kinds

        def kinds_of(entries, kinds) -> dict[str, str]:
            return {limit.name: kind for (limit, _), kind in zip(entries, kinds, strict=True)}

        if len(local) == 1 and not shared:
            # The usual route: one local limit, one bucket, no lists.
            ((limit, key_of),) = local

            def rate_limit_one(ex):
                kind, key = key_of(ex.request)
                decision = decide(((limit, f"{kind}={key}"),))
                if not decision.allowed:
                    return self.reject(ex, decision, {limit.name: kind})
                ex.extra_headers += rate_lines(decision)
                return None

            return rate_limit_one

        def rate_limit(ex):
            request = ex.request
            decision = None
            if local:
                checks, kinds = keyed(local, request)
                decision = decide(checks)
                if not decision.allowed:
                    return self.reject(ex, decision, kinds_of(local, kinds))
            if shared:
                return after_redis(ex, decision)
            ex.extra_headers += rate_lines(decision)
            return None

        async def after_redis(ex, local_decision):
            checks, kinds = keyed(shared, ex.request)
            decision = await redis.decide(checks)
            if not decision.allowed:
                return self.reject(ex, decision, kinds_of(shared, kinds))
            if local_decision is not None and local_decision.remaining < decision.remaining:
                decision = local_decision
            ex.extra_headers += rate_lines(decision)
            return None

        return rate_limit

    def reject(self, ex, decision, kinds: dict[str, str]) -> Rejection:
        name = decision.limit.name
        self.metrics.rate_limited.inc((name,))
        identity = ex.request.identity
        self.audit.record(
            ex,
            event="rate_limited",
            reason="rate_limited",
            status=429,
            limit=name,
            key=kinds.get(name),
            sub=getattr(identity, "sub", None),
        )
        headers = (("Retry-After", str(max(1, decision.retry_after))), *rate_headers(decision))
        return Rejection(429, headers=headers)
