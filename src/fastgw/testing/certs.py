"""A throwaway certificate authority for testing TLS listeners and mTLS routes.

``TestPKI`` makes a CA in a directory and issues server and client
certificates from it, each written as PEM files whose paths go straight into
a gateway config or an ``ssl.SSLContext``::

    pki = TestPKI(tmp_path)
    server = pki.server("gateway.test")       # DNS localhost, IP 127.0.0.1 and ::1, gateway.test
    orders = pki.client("orders", uri="spiffe://example.org/ns/prod/sa/orders")

    config = {"listeners": [{"address": "127.0.0.1:0", "tls": {
        "cert": str(server.chain), "key": str(server.key),
        "client_auth": "require", "client_ca": str(pki.ca_file)}}]}

    client = ssl.create_default_context(cafile=pki.ca_file)
    client.load_cert_chain(orders.chain, orders.key)

Certificates a well-behaved gateway must refuse come ready-made:
``expired_client``, ``not_yet_valid_client``, ``server_auth_only_client``
(no clientAuth extended key usage) and ``impostor`` (same subject and names
as a good certificate, issued by another CA that has the same name as this
one). An upstream's certificate is ``pki.server("orders.internal",
name="orders-upstream")``, a gateway's client certificate for the upstream
``pki.client("gateway", dns=["gateway.internal"])``.

Keys are ECDSA P-256 unless ``key_type="rsa"`` (2048 bits). Certificates
carry the extensions strict verifiers ask for (key identifiers, key usage,
basic constraints), so they pass ``ssl.VERIFY_X509_STRICT``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["IssuedCert", "TestPKI"]

KEY_TYPES = ("ec", "rsa")
USAGES = {"client": ExtendedKeyUsageOID.CLIENT_AUTH, "server": ExtendedKeyUsageOID.SERVER_AUTH}
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SKEW = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class IssuedCert:
    """One certificate and its key, as objects and as PEM files.

    ``cert`` holds the certificate alone, ``key`` its private key (PKCS#8,
    unencrypted, readable by the owner only), ``chain`` the certificate
    followed by the intermediate CA when there is one: what a server or a
    client presents (``load_cert_chain(chain, key)``).
    """

    name: str
    cert: Path
    key: Path
    chain: Path
    certificate: x509.Certificate
    private_key: Any

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


class TestPKI:
    """A CA, optionally with an intermediate, issuing certificates into ``directory``.

    ``ca_file`` is the bundle a verifier trusts (the root certificate only).
    With ``intermediate=True`` leaves are issued by an intermediate CA, and
    their ``chain`` files carry it, as most real deployments do.
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        name: str = "fastgw Test CA",
        key_type: str = "ec",
        intermediate: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.key_type = _key_type(key_type)
        root_key = _new_key(self.key_type)
        root_name = _name(name)
        now = _now()
        root = _issue(
            _ca_builder(root_name, root_key, path_length=1 if intermediate else 0)
            .not_valid_before(now - _SKEW)
            .not_valid_after(now + datetime.timedelta(days=3650))
            .issuer_name(root_name)
            .add_extension(_authority_key_id(root_key), critical=False),
            root_key,
        )
        self.ca = self._write("ca", root, root_key, ())
        self.ca_file = self.ca.cert
        self._issuer = self.ca
        self._other: TestPKI | None = None
        self._chain: tuple[x509.Certificate, ...] = ()
        if intermediate:
            issuing_key = _new_key(self.key_type)
            issuing_name = _name(f"{name} Intermediate")
            issuing = _issue(
                _ca_builder(issuing_name, issuing_key, path_length=0)
                .not_valid_before(now - _SKEW)
                .not_valid_after(now + datetime.timedelta(days=1825))
                .issuer_name(root_name)
                .add_extension(_authority_key_id(root_key), critical=False),
                root_key,
            )
            self._issuer = self._write("intermediate-ca", issuing, issuing_key, ())
            self._chain = (issuing,)

    # --- certificates ----------------------------------------------------------------------

    def server(
        self,
        *names: str,
        name: str = "server",
        loopback: bool = True,
        key_type: str | None = None,
        valid_from: datetime.datetime | None = None,
        valid_until: datetime.datetime | None = None,
    ) -> IssuedCert:
        """A server certificate for DNS ``localhost``, IP ``127.0.0.1`` and ``::1``, and ``names``.

        Each of ``names`` is an IP address or a DNS name (``*.example.com``
        too); ``loopback=False`` leaves the three loopback names out. The
        extended key usage is serverAuth only.
        """
        alt_names: list[x509.GeneralName] = []
        if loopback:
            alt_names += [
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1")),
            ]
        for entry in names:
            general = _host_name(entry)
            if general not in alt_names:
                alt_names.append(general)
        if not alt_names:
            raise ValueError("a server certificate needs a name")
        return self.issue(
            name,
            common_name=names[0] if names else "localhost",
            alt_names=alt_names,
            usages=("server",),
            key_type=key_type,
            valid_from=valid_from,
            valid_until=valid_until,
        )

    def client(
        self,
        name: str,
        *,
        uri: str | Sequence[str] = (),
        dns: str | Sequence[str] = (),
        cn: str | None = None,
        usages: Iterable[str] = ("client",),
        key_type: str | None = None,
        valid_from: datetime.datetime | None = None,
        valid_until: datetime.datetime | None = None,
    ) -> IssuedCert:
        """A client certificate: subject ``CN=cn`` (default ``name``), SAN URIs and DNS names.

        ``usages`` lists the extended key usages, ``client`` and/or
        ``server``; empty leaves the extension out (any purpose, per RFC 5280).
        """
        alt_names: list[x509.GeneralName] = [
            *(x509.UniformResourceIdentifier(value) for value in _several(uri)),
            *(x509.DNSName(value) for value in _several(dns)),
        ]
        return self.issue(
            name,
            common_name=name if cn is None else cn,
            alt_names=alt_names,
            usages=usages,
            key_type=key_type,
            valid_from=valid_from,
            valid_until=valid_until,
        )

    def expired_client(self, name: str = "expired-client", **options: Any) -> IssuedCert:
        """A client certificate that expired a day ago (valid for the day before)."""
        now = _now()
        return self.client(
            name,
            valid_from=now - datetime.timedelta(days=2),
            valid_until=now - datetime.timedelta(days=1),
            **options,
        )

    def not_yet_valid_client(self, name: str = "future-client", **options: Any) -> IssuedCert:
        """A client certificate that becomes valid tomorrow."""
        now = _now()
        return self.client(
            name,
            valid_from=now + datetime.timedelta(days=1),
            valid_until=now + datetime.timedelta(days=2),
            **options,
        )

    def server_auth_only_client(self, name: str = "server-auth-only", **options: Any) -> IssuedCert:
        """A certificate whose extended key usage is serverAuth alone: not for clients."""
        return self.client(name, usages=("server",), **options)

    def other_ca(self) -> TestPKI:
        """Another CA, with the very same subject name as this one (made on first use)."""
        if self._other is None:
            self._other = TestPKI(
                self.directory / "other-ca", name=self.name, key_type=self.key_type
            )
        return self._other

    def impostor(self, of: IssuedCert, *, name: str | None = None) -> IssuedCert:
        """A certificate with the subject and names of ``of``, issued by ``other_ca()``.

        It differs from ``of`` only in its keys and its signature: a verifier
        that compares names instead of checking signatures accepts it.
        """
        other = self.other_ca()
        extensions = of.certificate.extensions
        try:
            alt_names = list(extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            alt_names = []
        try:
            granted = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            usages = [usage for usage, oid in USAGES.items() if oid in granted]
        except x509.ExtensionNotFound:
            usages = []
        return other.issue(
            name or f"{of.name}-impostor",
            subject=of.certificate.subject,
            alt_names=alt_names,
            usages=usages,
        )

    def issue(
        self,
        name: str,
        *,
        common_name: str | None = None,
        subject: x509.Name | None = None,
        alt_names: Sequence[x509.GeneralName] = (),
        usages: Iterable[str] = (),
        key_type: str | None = None,
        valid_from: datetime.datetime | None = None,
        valid_until: datetime.datetime | None = None,
    ) -> IssuedCert:
        """The general form behind ``server`` and ``client``: any names, any usages, any dates.

        ``name`` names the files (``NAME.crt``, ``NAME.key``,
        ``NAME-chain.pem``) and must be new in this PKI.
        """
        usages = tuple(usages)
        unknown = [usage for usage in usages if usage not in USAGES]
        if unknown:
            raise ValueError(f"unknown usage {unknown[0]!r} (use {', '.join(USAGES)})")
        if subject is None:
            subject = _name(name if common_name is None else common_name)
        key = _new_key(_key_type(key_type or self.key_type))
        now = _now()
        issuer = self._issuer
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid_from or now - _SKEW)
            .not_valid_after(valid_until or now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_leaf_key_usage(key), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(_authority_key_id(issuer.private_key), critical=False)
        )
        if usages:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([USAGES[usage] for usage in usages]), critical=False
            )
        if alt_names:
            # RFC 5280 4.2.1.6: critical when the subject is empty.
            builder = builder.add_extension(
                x509.SubjectAlternativeName(list(alt_names)), critical=not list(subject)
            )
        return self._write(name, _issue(builder, issuer.private_key), key, self._chain)

    # --- files -----------------------------------------------------------------------------

    def _write(
        self,
        name: str,
        certificate: x509.Certificate,
        key: Any,
        chain: tuple[x509.Certificate, ...],
    ) -> IssuedCert:
        if not _FILE_NAME.fullmatch(name):
            raise ValueError(f"{name!r} cannot name a file (letters, digits, . _ -)")
        cert_path = self.directory / f"{name}.crt"
        key_path = self.directory / f"{name}.key"
        chain_path = self.directory / f"{name}-chain.pem"
        if cert_path.exists():
            raise ValueError(f"{name!r} is already issued in {self.directory}")
        pem = certificate.public_bytes(serialization.Encoding.PEM)
        cert_path.write_bytes(pem)
        chain_path.write_bytes(
            pem + b"".join(ca.public_bytes(serialization.Encoding.PEM) for ca in chain)
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(key_pem)
        return IssuedCert(name, cert_path, key_path, chain_path, certificate, key)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _key_type(key_type: str) -> str:
    if key_type not in KEY_TYPES:
        raise ValueError(f"unknown key type {key_type!r} (use {' or '.join(KEY_TYPES)})")
    return key_type


def _new_key(key_type: str) -> Any:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fastgw tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _several(value: str | Sequence[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _host_name(text: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        return x509.DNSName(text)


def _authority_key_id(issuer_key: Any) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())


def _ca_builder(subject: x509.Name, key: Any, *, path_length: int) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
    )  # fmt: skip


def _leaf_key_usage(key: Any) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False,
        key_encipherment=isinstance(key, rsa.RSAPrivateKey), data_encipherment=False,
        key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _issue(builder: x509.CertificateBuilder, issuer_key: Any) -> x509.Certificate:
    return builder.sign(issuer_key, hashes.SHA256())
