"""The benchmark's issuer: one RS256 key, the tokens that probe a contender, many fresh ones.

The probe tokens decide whether a contender checks what it claims to: a good
token, none, a bad signature, an expired one, a wrong audience, a wrong
issuer, an unsigned one, a missing scope. The fresh tokens (each with its
own ``sub``) are what a load with a different valid token on every request
cycles through; there are tens of thousands, so they are signed in
parallel, from a signing input built here, by ``cryptography`` directly.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from fastgw.testing.idp import SigningKey, jwks, mint_token

ISSUER = "https://idp.bench"
AUDIENCE = "bench-api"
SCOPE = "read_orders"
TTL = 6 * 3600  # longer than any run


@dataclass(frozen=True)
class Probe:
    """A request a contender must answer with ``status``: ``token`` None sends no header."""

    name: str
    token: str | None
    status: int


def good_token(key: SigningKey) -> str:
    return mint_token(key, iss=ISSUER, sub="bench-user", aud=AUDIENCE, scope=SCOPE, ttl=TTL)


def probes(key: SigningKey) -> list[Probe]:
    """The good token first, then what must be refused."""
    # Another key under the same kid: the signature does not verify against the published key.
    impostor = SigningKey.generate("RS256", kid=key.kid)
    return [
        Probe("a good token", good_token(key), 200),
        Probe("no token", None, 401),
        Probe("a bad signature",
              mint_token(impostor, iss=ISSUER, aud=AUDIENCE, scope=SCOPE, ttl=TTL), 401),
        Probe("an expired token",
              mint_token(key, iss=ISSUER, aud=AUDIENCE, scope=SCOPE, ttl=-3600), 401),
        Probe("a wrong aud",
              mint_token(key, iss=ISSUER, aud="another-api", scope=SCOPE, ttl=TTL), 401),
        Probe("a wrong iss",
              mint_token(key, iss="https://idp.elsewhere", aud=AUDIENCE, scope=SCOPE, ttl=TTL),
              401),
        Probe("an unsigned token (alg none)", unsigned(good_token(key)), 401),
        Probe("a token without the scope",
              mint_token(key, iss=ISSUER, aud=AUDIENCE, scope="write_orders", ttl=TTL), 403),
    ]  # fmt: skip


def unsigned(token: str) -> str:
    """``token`` with its header saying ``alg: none`` and no signature."""
    header = _b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{token.split('.')[1]}."


def write_key_files(key: SigningKey, directory: Path) -> tuple[Path, Path]:
    """The JWKS (for fastgw) and the PEM public key (for HAProxy) of ``key``."""
    jwks_path = directory / "jwks.json"
    jwks_path.write_text(json.dumps(jwks(key)))
    pem_path = directory / "public.pem"
    pem_path.write_bytes(key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return jwks_path, pem_path


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_worker_key = None


def _load_key(pem: bytes) -> None:
    global _worker_key
    _worker_key = serialization.load_pem_private_key(pem, password=None)


def _sign_range(header: str, start: int, stop: int, now: int) -> list[str]:
    tokens = []
    for index in range(start, stop):
        claims = {"iss": ISSUER, "sub": f"bench-user-{index:06d}", "aud": AUDIENCE,
                  "scope": SCOPE, "iat": now, "exp": now + TTL}
        signing_input = f"{header}.{_b64url(json.dumps(claims, separators=(',', ':')).encode())}"
        signature = _worker_key.sign(signing_input.encode("ascii"), padding.PKCS1v15(),
                                     hashes.SHA256())
        tokens.append(f"{signing_input}.{_b64url(signature)}")
    return tokens


def fresh_tokens(key: SigningKey, count: int, processes: int | None = None) -> list[str]:
    """``count`` distinct valid tokens, each with its own ``sub``, signed on every core."""
    if count <= 0:
        return []
    header = _b64url(json.dumps({"alg": "RS256", "kid": key.kid, "typ": "JWT"},
                                separators=(",", ":")).encode())
    now = int(time.time())
    chunk = 500
    ranges = [(start, min(start + chunk, count)) for start in range(0, count, chunk)]
    with ProcessPoolExecutor(max_workers=processes or os.cpu_count() or 1,
                             mp_context=multiprocessing.get_context("fork"),
                             initializer=_load_key, initargs=(key.private_pem(),)) as pool:
        parts = pool.map(_sign_range, *zip(*[(header, a, b, now) for a, b in ranges],
                                           strict=True))
        return [token for part in parts for token in part]
