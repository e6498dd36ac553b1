"""``fastgw token``: mint a signed test token from a PEM key (a development aid)."""

from __future__ import annotations

import json
import sys
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .config.units import parse_duration
from .testing.idp import SigningKey, jwks


def algorithms_for(private_key) -> tuple[str, ...]:
    """The algorithms KEY can sign with, the default first; none for other keys."""
    if isinstance(private_key, rsa.RSAPrivateKey):
        return ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return {"secp256r1": ("ES256",), "secp384r1": ("ES384",)}.get(private_key.curve.name, ())
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return ("EdDSA",)
    return ()


def claim_value(text: str):
    """A --claim value: JSON; other text is taken as a string, but text that
    opens an object, array or string must be JSON (a typo is not a value)."""
    try:
        return json.loads(text)
    except ValueError:
        if text.lstrip()[:1] in ("{", "[", '"'):
            raise
        return text


def mint_from_file(args) -> int:
    try:
        with open(args.key, "rb") as f:
            pem = f.read()
        private_key = serialization.load_pem_private_key(pem, password=None)
    except (OSError, ValueError, TypeError) as exc:
        print(f"fastgw token: cannot read a private key from {args.key}: {exc}", file=sys.stderr)
        return 2
    algorithms = algorithms_for(private_key)
    if not algorithms:
        print("fastgw token: unsupported key type (use RSA, EC P-256/P-384 or Ed25519)",
              file=sys.stderr)
        return 2
    alg = args.alg or algorithms[0]
    if alg not in algorithms:
        print(f"fastgw token: --alg {alg} does not fit this key (it signs with "
              f"{', '.join(algorithms)})", file=sys.stderr)
        return 2
    key = SigningKey.from_pem(pem, alg, args.kid)
    if args.jwks:
        print(json.dumps(jwks(key), indent=2))
        return 0
    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        print(f"fastgw token: --ttl: {exc}", file=sys.stderr)
        return 2
    if ttl < 1:
        print(f"fastgw token: --ttl: {args.ttl} is less than the 1s a token must live",
              file=sys.stderr)
        return 2
    now = int(time.time())
    claims: dict = {"iss": args.iss, "sub": args.sub, "iat": now, "nbf": now,
                    "exp": now + int(ttl)}
    if args.scope:
        claims["scope"] = args.scope
    if args.aud:
        claims["aud"] = args.aud[0] if len(args.aud) == 1 else args.aud
    for item in args.claim:
        name, sep, value = item.partition("=")
        if not sep:
            print(f"fastgw token: --claim {item!r}: use NAME=JSON", file=sys.stderr)
            return 2
        try:
            claims[name] = claim_value(value)
        except ValueError as exc:
            print(f"fastgw token: --claim {item!r}: not valid JSON ({exc})", file=sys.stderr)
            return 2
    print(key.sign(claims))
    return 0
