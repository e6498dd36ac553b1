"""A local OpenID Connect identity provider: signing keys, a JWKS, a token minter.

``SigningKey`` is a private key with its public JWK; ``mint_token`` signs a
token with one. ``IdentityProvider`` serves, from a background thread over
real sockets, an issuer's discovery document and its JWKS, so it works from
plain (sync) pytest tests and from a gateway in another process::

    with IdentityProvider() as idp:
        # provider config: issuer: idp.issuer, discovery: true  (or jwks_uri: idp.jwks_uri)
        token = idp.mint(sub="alice", scope="read_orders", aud="orders-api")
        idp.rotate()                  # a new signing key, published beside the old ones
        idp.fail("status")            # the JWKS answers 500 until idp.recover()
        idp.down(); idp.up()          # connections refused, then served again on the same port
        assert idp.jwks_fetches == 3

Misbehaviour for ``fail(mode)``, applied to the JWKS (and to discovery with
``discovery=True``):

=============  ===========================================================
``status``     answers ``status`` (500 unless given) with a JSON error
``garbage``    200 with a body that is not JSON
``not_jwks``   200 with a JSON object that has no ``keys`` array
``empty``      200 with ``{"keys": []}``
``huge``       200 with a chunked body of ``huge_size`` bytes (4 MiB)
``slow``       waits ``delay`` seconds, then answers normally
``close``      reads the request and closes without answering
=============  ===========================================================

With ``tls=True`` it serves https from a certificate signed by a CA of its
own; ``client_ssl_context()`` trusts that CA (and nothing else).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import ipaddress
import json
import os
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from ._background import BackgroundServer

__all__ = ["IdentityProvider", "SigningKey", "jwks", "mint_token"]

_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}
_RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_THUMBPRINT_MEMBERS = {
    "RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"),
}
_NO_AUDIENCE = object()
FAILURE_MODES = ("status", "garbage", "not_jwks", "empty", "huge", "slow", "close")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SigningKey:
    """A private signing key, its ``kid`` and the one algorithm it signs with."""

    kid: str
    alg: str
    private_key: Any

    @classmethod
    def generate(cls, alg: str = "RS256", kid: str | None = None, *, rsa_bits: int = 2048):
        """A fresh key for ``alg``; ``kid`` defaults to the RFC 7638 thumbprint."""
        if alg in _RSA_ALGORITHMS:
            private_key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
        elif alg in _CURVES:
            private_key = ec.generate_private_key(_CURVES[alg]())
        elif alg == "EdDSA":
            private_key = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(f"{alg} is not an asymmetric JWS algorithm")
        key = cls("", alg, private_key)
        return cls(kid if kid is not None else key.thumbprint(), alg, private_key)

    @classmethod
    def from_pem(cls, pem: bytes, alg: str, kid: str | None = None) -> SigningKey:
        private_key = serialization.load_pem_private_key(pem, password=None)
        key = cls("", alg, private_key)
        return cls(kid if kid is not None else key.thumbprint(), alg, private_key)

    def _bare_jwk(self) -> dict:
        public_key = self.private_key.public_key()
        if isinstance(public_key, rsa.RSAPublicKey):
            return RSAAlgorithm.to_jwk(public_key, as_dict=True)
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            return ECAlgorithm.to_jwk(public_key, as_dict=True)
        return OKPAlgorithm.to_jwk(public_key, as_dict=True)

    def thumbprint(self) -> str:
        """The RFC 7638 SHA-256 thumbprint of the public key."""
        bare = self._bare_jwk()
        members = {name: bare[name] for name in _THUMBPRINT_MEMBERS[bare["kty"]]}
        canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
        return _b64url(hashlib.sha256(canonical).digest())

    def public_jwk(self, **members: Any) -> dict:
        """The public JWK with ``kid``, ``alg`` and ``use: sig``; ``members`` override."""
        jwk_dict = {**self._bare_jwk(), "kid": self.kid, "alg": self.alg, "use": "sig"}
        jwk_dict.update(members)
        return jwk_dict

    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def sign(self, claims: dict, headers: dict | None = None) -> str:
        """A compact JWS of ``claims`` with ``kid`` in its header (``headers`` add or override)."""
        return jwt.encode(claims, self.private_key, algorithm=self.alg,
                          headers={"kid": self.kid, **(headers or {})})


def jwks(*keys: SigningKey) -> dict:
    """The JWK set publishing ``keys``."""
    return {"keys": [key.public_jwk() for key in keys]}


def mint_token(
    key: SigningKey,
    *,
    iss: str,
    sub: str | None = "user",
    aud: str | list[str] | None = None,
    scope: str | None = None,
    ttl: float = 300.0,
    now: float | None = None,
    headers: dict | None = None,
    **claims: Any,
) -> str:
    """A signed access token: ``iat`` now, ``exp`` after ``ttl``; ``claims`` add or override."""
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {"iss": iss, "iat": issued, "exp": int(issued + ttl)}
    if sub is not None:
        payload["sub"] = sub
    if aud is not None:
        payload["aud"] = aud
    if scope is not None:
        payload["scope"] = scope
    payload.update(claims)
    return key.sign(payload, headers)


class IdentityProvider(BackgroundServer):
    """An issuer with a discovery document and a JWKS on a loopback port.

    ``jwks_fetches`` and ``discovery_fetches`` count the requests that reached
    each document (misbehaving answers included); ``wait_for_fetches`` waits
    for more to arrive.
    """

    thread_name = "identity-provider"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        issuer_path: str = "/realms/test",
        jwks_path: str = "/realms/test/protocol/openid-connect/certs",
        algorithm: str = "RS256",
        audience: str | None = "fastgw-test",
        tls: bool = False,
        tls_names: tuple[str, ...] = ("localhost", "127.0.0.1"),
    ) -> None:
        self.host = host
        self.port = port
        self.issuer_path = issuer_path.rstrip("/")
        self.jwks_path = jwks_path
        self.audience = audience
        self.tls = tls
        self.keys: list[SigningKey] = [SigningKey.generate(algorithm)]
        self.signing_key = self.keys[0]
        self.extra_jwks: list[dict] = []
        """Raw JWK entries published after the keys (weak, ``use: enc``, broken, ...)."""
        self.discovery_overrides: dict[str, Any] = {}
        """Members replacing those of the discovery document (``issuer``, ``jwks_uri``)."""
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self.huge_size = 4 * 1024 * 1024
        self._failure: tuple[str, float, int, bool] | None = None
        self._lock = threading.Lock()
        self._fetched = threading.Condition(self._lock)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._server_context: ssl.SSLContext | None = None
        self.ca_pem = b""
        if tls:
            self.ca_pem, self._server_context = _tls_material(tls_names)

    # -- addresses ----------------------------------------------------------

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def issuer(self) -> str:
        return self.url + self.issuer_path

    @property
    def jwks_uri(self) -> str:
        return self.url + self.jwks_path

    @property
    def discovery_url(self) -> str:
        return self.issuer + "/.well-known/openid-configuration"

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this provider's CA only."""
        if not self.tls:
            raise RuntimeError("this identity provider serves plain http")
        return ssl.create_default_context(cadata=self.ca_pem.decode("ascii"))

    # -- keys and tokens ----------------------------------------------------

    def rotate(self, alg: str | None = None, *, kid: str | None = None,
               retire_old: bool = False) -> SigningKey:
        """Sign with a new key from now on; the old keys stay published unless ``retire_old``."""
        key = SigningKey.generate(alg or self.signing_key.alg, kid)
        with self._lock:
            self.keys = [key] if retire_old else [*self.keys, key]
            self.signing_key = key
        return key

    def add_key(self, key: SigningKey) -> SigningKey:
        """Publish ``key`` too (it does not become the signing key)."""
        with self._lock:
            self.keys = [*self.keys, key]
        return key

    def remove_key(self, kid: str) -> None:
        with self._lock:
            self.keys = [key for key in self.keys if key.kid != kid]

    def publish(self, jwk_dict: dict) -> None:
        """Publish a raw JWK entry as it is."""
        with self._lock:
            self.extra_jwks = [*self.extra_jwks, jwk_dict]

    def jwks(self) -> dict:
        """The JWK set as served right now."""
        with self._lock:
            return {"keys": [key.public_jwk() for key in self.keys] + list(self.extra_jwks)}

    def write_jwks(self, path: str | os.PathLike) -> None:
        """Write the current JWK set to ``path`` (for ``jwks_file`` providers)."""
        with open(path, "w", encoding="utf-8") as file:
            json.dump(self.jwks(), file)

    def mint(self, sub: str | None = "user", *, key: SigningKey | None = None,
             aud: Any = _NO_AUDIENCE, **options: Any) -> str:
        """A token from this issuer, signed by ``key`` (default: the signing key).

        ``aud`` defaults to ``audience``; other keywords go to ``mint_token``.
        """
        audience = self.audience if aud is _NO_AUDIENCE else aud
        options.setdefault("iss", self.issuer)
        return mint_token(key or self.signing_key, sub=sub, aud=audience, **options)

    # -- misbehaviour -------------------------------------------------------

    def fail(self, mode: str, *, status: int = 500, delay: float = 5.0,
             discovery: bool = False) -> None:
        """Misbehave (see the module docs) until ``recover()``."""
        if mode not in FAILURE_MODES:
            raise ValueError(f"unknown failure mode {mode!r}; one of {FAILURE_MODES}")
        self._failure = (mode, delay, status, discovery)

    def recover(self) -> None:
        self._failure = None

    def move_jwks(self, path: str) -> None:
        """Serve the JWKS at ``path`` from now on; the old path answers 404."""
        self.jwks_path = path

    def down(self) -> None:
        """Stop listening and drop open connections: connections are refused until ``up()``."""
        if self._loop is not None and self._server is not None:
            self.call(self._shutdown())

    def up(self) -> None:
        """Listen again, on the same port."""
        if self._loop is not None and self._server is None:
            self.call(self._listen())

    def wait_for_fetches(self, count: int, timeout: float = 10.0) -> int:
        """Wait until at least ``count`` JWKS fetches arrived; return the count."""
        deadline = time.monotonic() + timeout
        with self._fetched:
            while self.jwks_fetches < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.jwks_fetches} JWKS fetches, expected {count}")
                self._fetched.wait(remaining)
            return self.jwks_fetches

    def reset_counts(self) -> None:
        with self._lock:
            self.jwks_fetches = 0
            self.discovery_fetches = 0

    # -- lifecycle ------------------------------------------------------------


    # -- serving (on the provider's own loop) ---------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, ssl=self._server_context, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, _, rest = head.partition(b" ")
            path = urlsplit(rest.partition(b" ")[0].decode("latin-1")).path
            await self._answer(writer, method, path)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _answer(self, writer: asyncio.StreamWriter, method: bytes, path: str) -> None:
        if path == self.jwks_path:
            document = "jwks"
        elif path == self.issuer_path + "/.well-known/openid-configuration":
            document = "discovery"
        else:
            await self._send(writer, 404, b'{"error": "not_found"}')
            return
        if method != b"GET":
            await self._send(writer, 405, b'{"error": "method_not_allowed"}')
            return
        with self._fetched:
            if document == "jwks":
                self.jwks_fetches += 1
            else:
                self.discovery_fetches += 1
            self._fetched.notify_all()
        failure = self._failure
        if failure is not None and (document == "jwks" or failure[3]):
            mode, delay, status, _ = failure
            if mode == "slow":
                await asyncio.sleep(delay)
            elif mode == "close":
                return
            elif mode == "status":
                await self._send(writer, status, b'{"error": "server_error"}')
                return
            elif mode == "garbage":
                await self._send(writer, 200, b"<html>temporarily unavailable</html>")
                return
            elif mode == "not_jwks":
                await self._send(writer, 200, b'{"error": "no keys here"}')
                return
            elif mode == "empty":
                await self._send(writer, 200, b'{"keys": []}')
                return
            elif mode == "huge":
                await self._send_huge(writer)
                return
        if document == "jwks":
            body = json.dumps(self.jwks()).encode()
        else:
            body = json.dumps({
                "issuer": self.issuer,
                "jwks_uri": self.jwks_uri,
                "id_token_signing_alg_values_supported": sorted({k.alg for k in self.keys}),
                **self.discovery_overrides,
            }).encode()
        await self._send(writer, 200, body)

    async def _send(self, writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
        head = (
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode("ascii") + body)
        await writer.drain()

    async def _send_huge(self, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        piece = b'{"kty": "RSA", "n": "' + b"A" * 65000 + b'"},'
        sent = 0
        with contextlib.suppress(ConnectionError):
            while sent < self.huge_size:
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()


def _tls_material(names: tuple[str, ...]) -> tuple[bytes, ssl.SSLContext]:
    """A throwaway CA and a server certificate for ``names``; the CA's PEM and a server context."""
    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fastgw test identity CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0]).not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0]).not_valid_after(validity[1])
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as directory:
        cert_path = os.path.join(directory, "server.pem")
        key_path = os.path.join(directory, "server.key")
        with open(cert_path, "wb") as file:
            file.write(server_cert.public_bytes(serialization.Encoding.PEM))
        with open(key_path, "wb") as file:
            file.write(server_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
        context.load_cert_chain(cert_path, key_path)
    return ca_cert.public_bytes(serialization.Encoding.PEM), context
