"""Token verification cost: first sight of a token against a cache hit.

For each algorithm a token is verified with the cache off (strict parse, key
lookup, signature, claim checks: what a token costs the first time) and with
the cache on (the claim re-check and key-set identity check of a hit). PyJWT's
``jwt.decode`` on the same token is the baseline. A second table splits the
first-sight cost: parsing (the strict stdlib JSON parse with the duplicate-name
hook against plain ``json.loads`` and orjson, which cannot report duplicates),
and the claim and scope checks of both core implementations.

    python bench/bench_jwt.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import time

import jwt
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from fastgw._core import CORE, active
from fastgw.auth.jws import parse
from fastgw.auth.keys import KeySet, key_from_jwk, keyset_from_secret
from fastgw.auth.verifier import ProviderVerifier, TokenVerifier
from fastgw.config.model import Provider

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
    rounds = parser.parse_args().rounds

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


def _unique(pairs):
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate name")
    return obj


if __name__ == "__main__":
    main()
