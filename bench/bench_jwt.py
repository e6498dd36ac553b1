"""Token verification cost: first sight of a token against a cache hit.

For each algorithm a token is verified with the cache off (strict parse, key
lookup, signature, claim checks: what a token costs the first time) and with
the cache on (the claim re-check and key-set identity check of a hit). PyJWT's
``jwt.decode`` on the same token is the baseline. A second table splits the
first-sight cost: parsing (the core's JSON fast path, orjson vouched for by
the core, against the parser of record it falls back to, the stdlib parse with
the duplicate-name hook, and against plain ``json.loads`` and orjson, which
cannot report duplicates), and the claim and scope checks of both core
implementations.

The breakdown follows one first verification under the load where every
request brings a token never seen before, part by part, in µs: the cache is
full (every insert evicts), the limiter's table is full of other subjects'
live buckets (every new subject recycles one), and each part runs over
thousands of distinct tokens. It is printed for RS256 and ES256 with the
compiled core and with its Python twins (a child process with
``FASTGW_NO_EXTENSIONS=1``), with the sum of the parts beside the signature
alone, a whole first verification timed end to end (the door's
``authenticate`` and the route's rate-limit check, as the gateway calls them),
and ``cryptography``'s verify on its own as the floor.

    python bench/bench_jwt.py [--rounds 5] [--tokens 12000] [--no-breakdown]
"""

from __future__ import annotations

import argparse
import array
import base64
import hmac
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from types import SimpleNamespace

import jwt
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from fastgw._core import CORE, active
from fastgw.auth import door as door_module
from fastgw.auth import jws
from fastgw.auth.codes import AuthCode
from fastgw.auth.door import Authenticator
from fastgw.auth.jws import parse
from fastgw.auth.keys import KeySet, key_from_jwk, keyset_from_secret
from fastgw.auth.verifier import ProviderVerifier, Result, TokenVerifier
from fastgw.config.model import Auth, Provider, Rate, RateLimit
from fastgw.http.headers import Headers
from fastgw.http.request import Request
from fastgw.metrics import Metrics
from fastgw.ratelimit import SharedBuckets
from fastgw.ratelimit.policy import RateLimiter

ISS = "https://idp.example.com/realms/corp"
SECRET = "bench-secret-bench-secret-bench-secret"
CLAIMS = {
    "iss": ISS,
    "sub": "3f1c6a52-9b1e-4c1a-8d7e-2f5b9a0c4e11",
    "aud": ["orders-api", "account"],
    "exp": int(time.time()) + 3600,
    "iat": int(time.time()),
    "nbf": int(time.time()),
    "jti": "0b9f0d56-6d8f-4c4b-9a55-1f4a3e5f2c10",
    "scope": "openid profile email read_orders write_orders",
    "azp": "web-frontend",
    "preferred_username": "alice",
    "realm_access": {"roles": ["offline_access", "uma_authorization", "user"]},
}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(value: int) -> str:
    return b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def signer(alg, private):
    if alg == "RS256":
        return lambda m: private.sign(m, padding.PKCS1v15(), hashes.SHA256())
    if alg == "PS256":
        return lambda m: private.sign(
            m, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256()
        )
    if alg == "ES256":

        def sign(m):
            r, s = decode_dss_signature(private.sign(m, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")

        return sign
    return private.sign


def public_jwk(private):
    public = private.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        return {"kty": "RSA", "n": uint(numbers.n), "e": uint(numbers.e)}
    if isinstance(public, ec.EllipticCurvePublicKey):
        numbers = public.public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": b64(numbers.x.to_bytes(32, "big")),
            "y": b64(numbers.y.to_bytes(32, "big")),
        }
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}


def case(alg):
    """(token, keyset, PyJWT key) for ALG."""
    header = {"alg": alg, "typ": "JWT"}
    if alg == "HS256":
        keyset = keyset_from_secret(SECRET)
        pyjwt_key = SECRET

        def sign(message):
            return hmac.digest(SECRET.encode(), message, "sha256")
    else:
        private = {
            "RS256": lambda: rsa.generate_private_key(65537, 2048),
            "PS256": lambda: rsa.generate_private_key(65537, 2048),
            "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
            "EdDSA": ed25519.Ed25519PrivateKey.generate,
        }[alg]()
        key, _ = key_from_jwk({**public_jwk(private), "kid": "k1"})
        keyset = KeySet([key])
        header["kid"] = "k1"
        sign = signer(alg, private)
        pyjwt_key = private.public_key()
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(CLAIMS).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}", keyset, pyjwt_key


def per_call(fn, rounds, budget=0.2):
    """Best per-call time in microseconds over ROUNDS runs of about BUDGET seconds."""
    count = 1
    while True:
        start = time.perf_counter()
        for _ in range(count):
            fn()
        if time.perf_counter() - start > budget / 10:
            break
        count *= 2
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(count * 10):
            fn()
        best = min(best, (time.perf_counter() - start) / (count * 10))
    return best * 1e6


def verifiers(alg, keyset, cache_size):
    provider = Provider(
        name="corp",
        issuer=ISS,
        audiences=("orders-api",),
        algorithms=(alg,),
        jwks_uri=None if alg == "HS256" else "https://idp.example.com/certs",
        secret=SECRET if alg == "HS256" else None,
    )
    return TokenVerifier([ProviderVerifier(provider, lambda: keyset)], cache_size=cache_size)


def measure(alg, rounds):
    token, keyset, pyjwt_key = case(alg)
    cold = verifiers(alg, keyset, 0)
    warm = verifiers(alg, keyset, 1000)
    assert cold.verify(token).code == 0 and warm.verify(token).code == 0
    first = per_call(lambda: cold.verify(token), rounds)
    cached = per_call(lambda: warm.verify(token), rounds)
    baseline = per_call(
        lambda: jwt.decode(token, pyjwt_key, algorithms=[alg], audience="orders-api"), rounds
    )
    return first, cached, baseline


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=12_000,
                        help="distinct tokens per algorithm in the breakdown (more than the cache)")
    parser.add_argument("--no-breakdown", action="store_true")
    parser.add_argument("--breakdown-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.breakdown_child:
        with open(args.breakdown_child) as file:
            cases = json.load(file)
        print(json.dumps({alg: breakdown(case, args.rounds) for alg, case in cases.items()}))
        return
    rounds = args.rounds

    print(f"claims core in use: {active('claims').__name__.rsplit('.', 1)[-1]}")
    print()
    print(f"{'alg':<7} {'first verify':>13} {'cached':>9} {'ratio':>7} {'PyJWT decode':>13}")
    for alg in ("RS256", "PS256", "ES256", "EdDSA", "HS256"):
        first, cached, baseline = measure(alg, rounds)
        print(
            f"{alg:<7} {first:>10.1f} µs {cached:>6.2f} µs {first / cached:>6.0f}x "
            f"{baseline:>10.1f} µs"
        )

    token, _, _ = case("HS256")
    claims_b64 = token.split(".")[1]
    claims_bytes = base64.urlsafe_b64decode(claims_b64 + "==")
    claims = json.loads(claims_bytes)
    now = time.time()
    print()
    print(f"{'step':<44} {'µs':>8}")
    rows = [
        ("jws.parse (strict, whole token)", lambda: parse(token)),
        ("claims: core json_object (orjson, vouched)",
         lambda: active("jws").json_object(claims_bytes, jws.strict_object)),
        ("claims: strict_object, the parser of record", lambda: jws.strict_object(claims_bytes)),
        (
            "claims: json.loads + duplicate-name hook",
            lambda: json.loads(claims_bytes.decode(), object_pairs_hook=_unique),
        ),
        ("claims: json.loads, no duplicate check", lambda: json.loads(claims_bytes.decode())),
        ("claims: orjson.loads, no duplicate check", lambda: orjson.loads(claims_bytes)),
    ]
    for name, impl in sorted(CORE["claims"].items()):
        rows.append(
            (
                f"check_claims ({name})",
                lambda impl=impl: impl.check_claims(claims, now, 30.0, ISS, ("orders-api",)),
            )
        )
        rows.append((f"scopes_of ({name})", lambda impl=impl: impl.scopes_of(claims)))
    for name, fn in rows:
        print(f"{name:<44} {per_call(fn, rounds):>8.2f}")

    if not args.no_breakdown:
        print()
        print_breakdown(args.tokens, rounds)


def _unique(pairs):
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate name")
    return obj


# -- one first verification, part by part -----------------------------------------------

CACHE_SIZE = 10_000  # the gateway's verified-token cache
BATCH = 100  # requests made at a time
PER_SUB = RateLimit("per-sub", Rate(100, 1.0), 100, "jwt.sub")
PARTS = (
    "door: bearer token, cache miss",
    "split + base64url",
    "header JSON + header rules",
    "claims JSON (no duplicate names)",
    "key lookup",
    "signature (cryptography)",
    "claim checks",
    "Result + CachedToken + cache insert",
    "identity fields (X-Auth-*)",
    "limiter: new sub, full table",
)


def fresh_tokens(alg, count):
    """COUNT tokens of one key, each with its own sub and jti, as compact JSON
    the way identity providers write it; and the key's public JWK."""
    private = {
        "RS256": lambda: rsa.generate_private_key(65537, 2048),
        "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
    }[alg]()
    sign = signer(alg, private)
    header = b64(json.dumps({"alg": alg, "typ": "JWT", "kid": "k1"}).encode())
    tokens = []
    for _ in range(count):
        claims = {**CLAIMS, "sub": str(uuid.uuid4()), "jti": str(uuid.uuid4())}
        signing_input = f"{header}.{b64(json.dumps(claims, separators=(',', ':')).encode())}"
        tokens.append(f"{signing_input}.{b64(sign(signing_input.encode()))}")
    return {"alg": alg, "jwk": {**public_jwk(private), "kid": "k1"}, "tokens": tokens}


class Door:
    """An Authenticator and a per-sub local limit as a gateway worker has them,
    with the verified-token cache full and the limiter's table full of other
    subjects' live buckets."""

    def __init__(self, case):
        self.alg = case["alg"]
        key, reason = key_from_jwk(case["jwk"])
        assert reason is None, reason
        self.key = key
        provider = Provider(name="corp", issuer=ISS, audiences=("orders-api",),
                            algorithms=(self.alg,), jwks_uri="https://idp.example.com/certs")
        self.authenticator = Authenticator(Auth(providers=(provider,)), metrics=Metrics(),
                                           audit=None)
        self.authenticator.keys["corp"].keyset = KeySet([key])
        self.verifier = self.authenticator.verifier
        self.cache = self.verifier.cache
        self.tokens = [token.encode() for token in case["tokens"]]
        template = self.verifier.verify(self.tokens[0])
        assert template.code == AuthCode.OK, template
        self.cache.clear()
        provider = self.verifier._by_issuer[ISS]
        self._filler = (template, provider, key, self.alg, provider.keyset_getter())
        self._fillers = 0

        config = SimpleNamespace(rate_limits={PER_SUB.name: PER_SUB}, trusted_proxies=())
        self.buckets = SharedBuckets.create()
        limiter = RateLimiter(config, buckets=self.buckets, redis=None, metrics=Metrics(),
                              audit=None)
        self.rate_limit = limiter.check((PER_SUB.name,))
        table = self.buckets.table
        self._region = memoryview(table.mapping)[: table.capacity * 16]
        slots = array.array("q", random.randbytes(table.capacity * 16))
        live = time.monotonic_ns() + 3600 * 10**9
        for j in range(0, len(slots), 2):
            slots[j] |= 1  # never an empty slot
            slots[j + 1] = live + random.randrange(10**9)
        self._full = slots.tobytes()

    def round(self, batch=BATCH):
        """Fresh requests for every token, none of them cached, the cache and
        the limiter's table full again; made BATCH at a time, just before they
        are used, so that they die young as a gateway's requests do and the
        collector sees the heap a gateway has."""
        cache = self.cache
        for token in self.tokens:
            cache.pop(token)
        while len(cache) < CACHE_SIZE:
            self._fillers += 1
            cache.put(b"filler-%d" % self._fillers, self.verifier._cached_token(*self._filler))
        self._region[:] = self._full
        for start in range(0, len(self.tokens), batch):
            exchanges = []
            for token in self.tokens[start:start + batch]:
                fields = [(b"host", b"Host", b"api"),
                          (b"authorization", b"Authorization", b"Bearer " + token)]
                request = Request("GET", "/orders/1", "", "1.1", Headers.from_raw(fields),
                                  "api", "10.0.0.1", "http", "rid")
                exchanges.append(SimpleNamespace(request=request, extra_headers=()))
            yield exchanges

    def close(self):
        self._region.release()
        self.buckets.close()

    def whole(self, ex):
        assert self.authenticator.authenticate(ex) is None and self.rate_limit(ex) is None

    def staged(self):
        """One first verification, the verifier's and the door's steps in their
        order, with a clock read between parts."""
        verifier, authenticator, rate_limit = self.verifier, self.authenticator, self.rate_limit
        cache, clock, by_issuer = self.cache, verifier.clock, verifier._by_issuer
        check_claims, cached_token = verifier._check_claims, verifier._cached_token
        admit = door_module._admit
        core = active("jws")
        split, json_object, header_ok = core.split, core.json_object, core.header_ok
        strict_object = jws.strict_object
        tick = time.perf_counter_ns

        def run(ex):
            t0 = tick()
            _, token = admit(cache, ex.request, clock())
            cache.get(token)
            t1 = tick()
            header_bytes, claims_bytes, signing_input, signature = split(token)
            t2 = tick()
            header = json_object(header_bytes, strict_object)
            assert header_ok(header)
            alg, kid = header["alg"], header.get("kid")
            t3 = tick()
            claims = json_object(claims_bytes, strict_object)
            t4 = tick()
            iss = claims.get("iss")
            provider = by_issuer[iss]
            assert alg in provider.algorithms
            keyset = provider.keyset_getter()
            key = keyset.find(kid, alg)
            t5 = tick()
            assert jws.verify_signature(alg, key.verifier_key, signing_input, signature)
            t6 = tick()
            sub = claims.get("sub")
            assert not check_claims(claims, clock(), provider.leeway, provider.issuer,
                                    provider.audiences)
            t7 = tick()
            result = tuple.__new__(Result, (AuthCode.OK, claims, provider.name, kid, iss, sub,
                                            False))
            cache.put(token, cached_token(result, provider, key, alg, keyset))
            t8 = tick()
            assert authenticator._verdict(ex, token, result) is None
            t9 = tick()
            assert rate_limit(ex) is None
            t10 = tick()
            return t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6, t8 - t7, \
                t9 - t8, t10 - t9

        return run


def breakdown(case, rounds):
    """{part: µs} for one first verification of CASE's tokens, and the totals."""
    door = Door(case)
    run = door.staged()
    tick = time.perf_counter_ns
    overhead = min(-tick() + tick() for _ in range(10_000))
    best = [float("inf")] * len(PARTS)
    whole = float("inf")
    for _ in range(rounds):
        totals = [0] * len(PARTS)
        for exchanges in door.round():
            for ex in exchanges:
                for i, ns in enumerate(run(ex)):
                    totals[i] += ns
        n = len(door.tokens)
        best = [min(b, (t / n - overhead) / 1000) for b, t in zip(best, totals, strict=True)]
        elapsed = 0
        for exchanges in door.round():
            start = time.perf_counter_ns()
            for ex in exchanges:
                door.whole(ex)
            elapsed += time.perf_counter_ns() - start
        whole = min(whole, elapsed / n / 1000)
    token = door.tokens[0]
    head, _, signature = token.rpartition(b".")
    signature = jws.b64url_decode(signature.decode())
    public = door.key.verifier_key
    if case["alg"] == "RS256":
        pad, digest = padding.PKCS1v15(), hashes.SHA256()

        def bare():
            public.verify(signature, head, pad, digest)
    else:
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                   int.from_bytes(signature[32:], "big"))
        ecdsa = ec.ECDSA(hashes.SHA256())

        def bare():
            public.verify(der, head, ecdsa)
    door.close()
    parts = dict(zip(PARTS, best, strict=True))
    return {**parts, "sum": sum(best), "whole": whole, "bare": per_call(bare, rounds)}


def print_breakdown(count, rounds):
    with tempfile.TemporaryDirectory() as tmp:
        cases = {alg: fresh_tokens(alg, count) for alg in ("RS256", "ES256")}
        path = os.path.join(tmp, "cases.json")
        with open(path, "w") as file:
            json.dump(cases, file)
        child = subprocess.run(
            [sys.executable, __file__, "--rounds", str(rounds), "--breakdown-child", path],
            env={**os.environ, "FASTGW_NO_EXTENSIONS": "1"}, capture_output=True, text=True,
            check=True,
        )
        columns = {}
        for alg, case in cases.items():
            columns[f"{alg} compiled"] = breakdown(case, rounds)
        for alg, parts in json.loads(child.stdout).items():
            columns[f"{alg} python"] = parts
    order = ["RS256 compiled", "RS256 python", "ES256 compiled", "ES256 python"]
    print(f"one first verification, µs per part ({count} distinct tokens, the cache full of "
          f"{CACHE_SIZE} others, the limiter's table full of other subjects)")
    print(f"{'part':<40}" + "".join(f"{name:>16}" for name in order))

    def row(label, values):
        print(f"{label:<40}" + "".join(f"{value:>16.2f}" for value in values))

    for part in PARTS:
        row(part, [columns[name][part] for name in order])
    print("-" * (40 + 16 * len(order)))
    row("sum of the parts", [columns[name]["sum"] for name in order])
    signature = PARTS[5]
    row("  signature alone", [columns[name][signature] for name in order])
    row("  everything else", [columns[name]["sum"] - columns[name][signature] for name in order])
    row("whole first verification, end to end", [columns[name]["whole"] for name in order])
    row("cryptography verify, bare", [columns[name]["bare"] for name in order])


if __name__ == "__main__":
    main()
