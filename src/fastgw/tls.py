"""TLS for the gateway: listener contexts, client-certificate identity, upstream contexts.

Listeners
    ``ListenerTLSContext`` builds a server context per certificate of a
    listener and hands the loop one *base* context whose SNI callback points
    each new handshake at the current certificate's context. A reload that
    only rotates certificates swaps that choice in place, so the base stays
    the same object and connections already open keep the certificate they
    were made with.

    A reload that changes the handshake policy (``min_version``,
    ``ciphers``, ``client_auth`` or the bytes of ``client_ca``) gets a new
    base context, because OpenSSL takes a connection's verify mode and
    protocol versions from the context the connection was created with, and
    encrypts session tickets with that context's keys: a session resumed
    from a ticket of the old base would carry a client identity verified
    under the old trust. Read ``ListenerTLSContext.context`` for each
    accepted connection.

Client identity
    ``client_identity`` reads the verified leaf certificate of a connection
    into a ``ClientIdentity``; ``scopes_for`` maps it to scopes through
    ``auth.client_certs.scopes``; ``xfcc_value`` writes it as Envoy's
    ``X-Forwarded-Client-Cert``; ``handshake_failure_reason`` names why a
    handshake failed, for the ``mtls_failure`` audit record.

Upstreams
    ``upstream_context`` verifies instances (hostname and chain) and presents
    the gateway's client certificate when one is configured. asyncio and
    uvloop never pass ``session=`` when they wrap a connection, so the
    context offers the session of its previous connection to the same server
    name itself; build it once per service and reuse it.
"""

from __future__ import annotations

import base64
import collections
import datetime
import functools
import hashlib
import re
import ssl
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:
    from fastgw.config.model import ListenerTLS, ServiceTLS

__all__ = [
    "ALPN_PROTOCOLS",
    "BAD_CLIENT_CERT",
    "DEFAULT_CIPHERS",
    "NO_CLIENT_CERT",
    "SUBJECT_SOURCES",
    "XFCC_FIELDS",
    "CertificateScopes",
    "ClientIdentity",
    "ListenerTLSContext",
    "TLSConfigError",
    "check_ciphers",
    "check_scope_pattern",
    "client_identity",
    "handshake_failure_reason",
    "identity_from_der",
    "scopes_for",
    "server_uri",
    "upstream_context",
    "xfcc_value",
]

ALPN_PROTOCOLS = ("http/1.1",)

# Forward-secret key exchange and AEAD only; TLS 1.3 suites are OpenSSL's
# (all AEAD) because Python's ssl cannot configure them.
DEFAULT_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
))  # fmt: skip
# Appended to any ``ciphers`` override: what no configuration may turn back on.
CIPHER_FLOOR = "!aNULL:!eNULL:!EXPORT:!DES:!3DES:!RC4:!MD5:!PSK:!SRP:!kRSA:!kDH:!IDEA:!SEED"

SUBJECT_SOURCES = ("san_uri", "san_dns", "cn")
XFCC_FIELDS = ("Hash", "Cert", "Subject", "URI", "DNS")
DEFAULT_XFCC_FIELDS = ("Hash", "Subject", "URI", "DNS")

NO_CLIENT_CERT = "no_client_cert"
BAD_CLIENT_CERT = "bad_client_cert"

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_VERIFY_MODES = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "require": ssl.CERT_REQUIRED}
_OPTIONS = (
    ssl.OP_NO_COMPRESSION
    | ssl.OP_CIPHER_SERVER_PREFERENCE
    | ssl.OP_NO_RENEGOTIATION
    | ssl.OP_SINGLE_ECDH_USE
)
# Every certificate in a configured CA bundle is a trust anchor (an issuing
# intermediate is enough), and malformed certificates are refused, as in
# Python 3.13's defaults.
_VERIFY_FLAGS = ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN


class TLSConfigError(ValueError):
    """A certificate, key or CA file that cannot be used; the message names the file and why."""


# --- listeners -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Policy:
    """What a listener's base context fixes for each connection it creates."""

    min_version: str
    ciphers: str | None
    client_auth: str
    client_ca: bytes | None


class _Selection:
    """The certificate contexts of one configuration, chosen by server name."""

    __slots__ = ("default", "exact", "wildcard")

    def __init__(
        self,
        default: ssl.SSLContext,
        exact: dict[str, ssl.SSLContext],
        wildcard: dict[str, ssl.SSLContext],
    ) -> None:
        self.default = default
        self.exact = exact
        self.wildcard = wildcard

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        if not server_name:
            return self.default
        name = server_name.lower().rstrip(".")
        found = self.exact.get(name)
        if found is None:
            found = self.wildcard.get(name.partition(".")[2], self.default)
        return found


class _Generation:
    """One handshake policy; the SNI callback of the base context built for it."""

    __slots__ = ("policy", "selection")

    def __init__(self, policy: _Policy, selection: _Selection) -> None:
        self.policy = policy
        self.selection = selection

    def select(self, ssl_object: Any, server_name: str | None, _base: ssl.SSLContext) -> None:
        ssl_object.context = self.selection.context_for(server_name)


class ListenerTLSContext:
    """The server side of one TLS listener; reloadable without dropping connections.

    ``context`` goes to ``loop.connect_accepted_socket(..., ssl=context)``.
    It stays the same object across reloads that only change certificates;
    a reload that changes the handshake policy replaces it (see the module
    documentation), so read it for each accepted connection.
    """

    def __init__(self, tls: ListenerTLS) -> None:
        policy = _policy(tls)
        self._generation = _Generation(policy, _selection(tls, policy))
        self._base = _base_context(policy, self._generation)
        self.tls = tls

    @property
    def context(self) -> ssl.SSLContext:
        return self._base

    @property
    def server_names(self) -> tuple[str, ...]:
        """The names with a certificate of their own (others get the default certificate)."""
        selection = self._generation.selection
        return (*selection.exact, *(f"*.{suffix}" for suffix in selection.wildcard))

    def reload(self, tls: ListenerTLS) -> None:
        """Use ``tls`` for new handshakes; on any error raise and keep the current setup."""
        policy = _policy(tls)
        selection = _selection(tls, policy)
        if policy == self._generation.policy:
            self._generation.selection = selection
        else:
            generation = _Generation(policy, selection)
            self._base = _base_context(policy, generation)
            self._generation = generation
        self.tls = tls


def _policy(tls: ListenerTLS) -> _Policy:
    client_ca = None
    if tls.client_auth != "none":
        if tls.client_ca is None:
            raise TLSConfigError(f"client_auth: {tls.client_auth} needs client_ca")
        client_ca = _read(tls.client_ca, "client_ca")
        _pem_certificates(client_ca, tls.client_ca, "client_ca")
    if tls.min_version not in _VERSIONS:
        raise TLSConfigError(f"min_version {tls.min_version!r} is not 1.2 or 1.3")
    if tls.ciphers is not None:
        problem = check_ciphers(tls.ciphers)
        if problem:
            raise TLSConfigError(f"ciphers: {problem}")
    return _Policy(tls.min_version, tls.ciphers, tls.client_auth, client_ca)


class _CertificateContext(ssl.SSLContext):
    """A server context presenting one certificate, which it remembers the URI name of."""

    uri: str | None = None


def _server_context(policy: _Policy, cls: type[ssl.SSLContext] = ssl.SSLContext) -> ssl.SSLContext:
    context = cls(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[policy.min_version]
    context.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    context.options |= _OPTIONS
    context.options &= ~ssl.OP_NO_TICKET
    context.set_ciphers(_cipher_string(policy.ciphers))
    context.set_alpn_protocols(list(ALPN_PROTOCOLS))
    if policy.client_ca is not None:
        # The server side of OpenSSL checks the "SSL client" purpose by
        # itself: a leaf whose extended key usage lacks clientAuth fails.
        context.verify_mode = _VERIFY_MODES[policy.client_auth]
        context.verify_flags |= _VERIFY_FLAGS
        try:
            context.load_verify_locations(cadata=policy.client_ca.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError) as exc:
            raise TLSConfigError(f"client_ca: the CA bundle cannot be used: {exc}") from None
    return context


def _base_context(policy: _Policy, generation: _Generation) -> ssl.SSLContext:
    # No certificate of its own: every handshake goes through the callback,
    # which is also called when the client sends no server name.
    base = _server_context(policy)
    base.sni_callback = generation.select
    return base


def _selection(tls: ListenerTLS, policy: _Policy) -> _Selection:
    default, _ = _certificate_context(policy, tls.cert, tls.key)
    exact: dict[str, ssl.SSLContext] = {}
    wildcard: dict[str, ssl.SSLContext] = {}
    owners: dict[str, str] = {}
    for entry in tls.certificates:
        context, leaf = _certificate_context(policy, entry.cert, entry.key)
        names = entry.server_names or _alt_names(leaf, x509.DNSName)
        if not names:
            raise TLSConfigError(
                f"{entry.cert}: the certificate has no DNS name to be chosen by; "
                "list server_names for it"
            )
        for name in names:
            name = name.lower().rstrip(".")
            if name in owners and owners[name] != entry.cert:
                raise TLSConfigError(
                    f"{entry.cert}: server name {name!r} is also served by {owners[name]}"
                )
            owners[name] = entry.cert
            if name.startswith("*."):
                wildcard[name[2:]] = context
            else:
                exact[name] = context
    return _Selection(default, exact, wildcard)


def _certificate_context(
    policy: _Policy, cert: str, key: str
) -> tuple[ssl.SSLContext, x509.Certificate]:
    leaf = _check_key_pair(cert, key)
    context = _server_context(policy, _CertificateContext)
    _load_key_pair(context, cert, key)
    uris = _alt_names(leaf, x509.UniformResourceIdentifier)
    context.uri = uris[0] if uris else None
    return context, leaf


def _check_key_pair(cert: str, key: str) -> x509.Certificate:
    """The leaf certificate of ``cert``, after checking both files with clear messages."""
    leaf = _pem_certificates(_read(cert, "certificate"), cert, "certificate")[0]
    key_data = _read(key, "key")
    try:
        private_key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise TLSConfigError(
            f"{key}: the private key is encrypted; fastgw needs it unencrypted "
            "(protect the file with its permissions)"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise TLSConfigError(f"{key}: not a PEM private key ({_first_line(exc)})") from None
    if leaf.public_key() != private_key.public_key():
        raise TLSConfigError(
            f"{key}: the private key does not match the certificate in {cert} "
            "(the first certificate of the file)"
        )
    return leaf


def _load_key_pair(context: ssl.SSLContext, cert: str, key: str) -> None:
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except (ssl.SSLError, OSError) as exc:
        raise TLSConfigError(f"{cert}: the certificate and key cannot be used: {exc}") from None


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise TLSConfigError("the private key is encrypted")


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise TLSConfigError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None


def _pem_certificates(data: bytes, path: str, what: str) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise TLSConfigError(f"{path}: the {what} file holds no PEM certificate")
    return certificates


def _alt_names(certificate: x509.Certificate, kind: type[x509.GeneralName]) -> list[str]:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return names.value.get_values_for_type(kind)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _cipher_string(ciphers: str | None) -> str:
    return DEFAULT_CIPHERS if ciphers is None else f"{ciphers}:{CIPHER_FLOOR}"


def check_ciphers(ciphers: str) -> str | None:
    """Why an OpenSSL cipher string cannot be used for TLS 1.2, or None when it can.

    The string is applied with ``CIPHER_FLOOR`` after it, so it cannot turn
    on ciphers without forward secrecy or with broken primitives.
    """
    if not ciphers.strip() or any(c.isspace() or not c.isprintable() for c in ciphers):
        return f"{ciphers!r} is not an OpenSSL cipher string (no spaces; join with ':')"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.set_ciphers(_cipher_string(ciphers))
    except ssl.SSLError:
        return (
            f"{ciphers!r} selects no cipher fastgw allows (ECDHE key exchange; never NULL, "
            "export, DES, RC4 or MD5)"
        )
    if all(c["protocol"] == "TLSv1.3" for c in context.get_ciphers()):
        return f"{ciphers!r} selects no TLS 1.2 cipher fastgw allows"
    return None


# --- client identity -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """A verified client certificate, as the gateway uses it.

    ``subject`` is the identity chosen by ``auth.client_certs.subject_from``
    (``subject_from`` records which; a DNS name is lower-cased), None when
    the certificate has no such name. ``thumbprint`` is RFC 8705's
    ``x5t#S256`` (base64url SHA-256 of ``der``); ``dn`` and ``issuer`` are
    RFC 4514 strings (see ``_dn_string``).
    """

    subject: str | None
    subject_from: str
    thumbprint: str
    der: bytes = field(repr=False)
    san_uris: tuple[str, ...]
    san_dns: tuple[str, ...]
    cn: str | None
    dn: str
    issuer: str
    serial: str
    not_before: datetime.datetime
    not_after: datetime.datetime

    @property
    def sha256(self) -> str:
        """Lowercase hex SHA-256 of the DER certificate (XFCC ``Hash``)."""
        return hashlib.sha256(self.der).hexdigest()

    @property
    def pem(self) -> str:
        body = base64.encodebytes(self.der).decode("ascii").replace("\n", "")
        lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
        return f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n"


def server_uri(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The first URI name of the certificate the gateway presented on this connection.

    It is the ``By`` of ``X-Forwarded-Client-Cert``; None when that
    certificate has no URI name.
    """
    context = getattr(ssl_object, "context", None)
    return getattr(context, "uri", None) if isinstance(context, _CertificateContext) else None


def client_identity(
    ssl_object: ssl.SSLObject | ssl.SSLSocket | None, subject_from: str | None
) -> ClientIdentity | None:
    """The identity of the connection's verified client certificate, or None.

    None when the client sent no certificate, when the context does not
    verify client certificates, or when the certificate lacks the clientAuth
    extended key usage (OpenSSL refuses those at the handshake already).
    ``subject_from`` is ``san_uri`` (the default, also for None),
    ``san_dns`` or ``cn``; the first value of that kind is the subject.
    """
    if ssl_object is None:
        return None
    # getpeercert() gives {} when the context does not verify peers, and None
    # without a certificate: only a filled dict means "verified".
    if not ssl_object.getpeercert():
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    return identity_from_der(der, subject_from or "san_uri")


@functools.lru_cache(maxsize=1024)
def identity_from_der(der: bytes, subject_from: str = "san_uri") -> ClientIdentity | None:
    """A ``ClientIdentity`` from a certificate already verified elsewhere (DER bytes)."""
    if subject_from not in SUBJECT_SOURCES:
        raise ValueError(f"subject_from {subject_from!r} is not one of {SUBJECT_SOURCES}")
    try:
        certificate = x509.load_der_x509_certificate(der)
        extensions = certificate.extensions
        try:
            usages = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usages = None
        if usages is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
            return None
        try:
            names = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = tuple(names.get_values_for_type(x509.UniformResourceIdentifier))
            dns = tuple(names.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            uris = dns = ()
        common_names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = common_names[0].value if common_names else None
        dn = _dn_string(certificate.subject)
        issuer = _dn_string(certificate.issuer)
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        return None
    first_dns = (dns[0].lower(),) if dns else ()
    subject = {"san_uri": uris[:1], "san_dns": first_dns, "cn": (cn,) if cn else ()}[subject_from]
    return ClientIdentity(
        subject=subject[0] if subject else None,
        subject_from=subject_from,
        thumbprint=base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode(),
        der=der,
        san_uris=uris,
        san_dns=dns,
        cn=cn,
        dn=dn,
        issuer=issuer,
        serial=format(certificate.serial_number, "x"),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
    )


def _dn_string(name: x509.Name) -> str:
    """RFC 4514 text that can go into a header and into a quoted XFCC value unchanged.

    ``"`` and ``\\`` in attribute values, control characters and non-ASCII
    are written as ``\\XX`` hex escapes (RFC 4514 allows them for any
    character), so the text holds no ``"``, and every backslash starts an
    escape: no reader of the quoted value can be misled about where it ends.
    """
    text = name.rfc4514_string()
    if text.isascii() and text.isprintable() and '"' not in text and "\\\\" not in text:
        return text
    out = []
    chars = iter(text)
    for c in chars:
        if c == "\\":
            escaped = next(chars, "")
            plain = " " <= escaped <= "~" and escaped not in '"\\'
            out.append(c + escaped if plain else _hex(escaped))
        elif " " <= c <= "~":
            out.append(c)
        else:
            out.append(_hex(c))
    return "".join(out)


def _hex(c: str) -> str:
    return "".join(f"\\{b:02X}" for b in c.encode("utf-8"))


# --- scopes for certificates ---------------------------------------------------------------------

_SEPARATORS = {"san_uri": "/", "san_dns": ".", "cn": None}
_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_DNS_PATTERN_LABEL = re.compile(r"[A-Za-z0-9_*](?:[A-Za-z0-9_*-]*[A-Za-z0-9_*])?")


def check_scope_pattern(pattern: str, subject_from: str) -> None:
    """Raise ValueError when ``pattern`` cannot match a ``subject_from`` subject.

    ``*`` stands for one or more characters within one URI path segment
    (it never crosses ``/``) or one DNS label (never crosses ``.``); in a
    ``cn`` pattern, which may hold spaces, it stands for any characters.
    ``**``, in URI patterns only and as the whole last segment, stands for
    one or more segments.
    """
    spaces = " " if subject_from == "cn" else ""
    if not pattern.strip() or any(
        (c.isspace() and c not in spaces) or not c.isprintable() for c in pattern
    ):
        raise ValueError(f"{pattern!r} is not a subject pattern (no spaces or control characters)")
    if subject_from == "san_uri":
        if not _URI_SCHEME.match(pattern) or "*" in pattern.partition(":")[0]:
            raise ValueError(
                f"{pattern!r} is not a URI (subject_from is san_uri), such as "
                "spiffe://example.org/ns/prod/sa/orders"
            )
        head, _, last = pattern.rpartition("/")
        if "**" in head or ("**" in last and last != "**"):
            raise ValueError(f"{pattern!r}: '**' only as the whole last segment, as in .../sa/**")
    elif subject_from == "san_dns":
        labels = pattern.rstrip(".").split(".")
        if "**" in pattern or not all(_DNS_PATTERN_LABEL.fullmatch(label) for label in labels):
            raise ValueError(
                f"{pattern!r} is not a DNS name pattern (subject_from is san_dns), such as "
                "orders.internal.example.com or *.internal.example.com"
            )
    elif subject_from == "cn":
        if "**" in pattern:
            raise ValueError(f"{pattern!r}: write '*' ('**' is for URI patterns)")
    else:
        raise ValueError(f"subject_from {subject_from!r} is not one of {SUBJECT_SOURCES}")


def _pattern_regex(pattern: str, subject_from: str) -> re.Pattern[str]:
    # A wildcard never matches control characters, nor spaces in names that cannot hold them.
    separator = _SEPARATORS[subject_from]
    one = rf"[^{re.escape(separator)}\x00-\x20\x7f]+" if separator else r"[^\x00-\x1f\x7f]+"
    parts = []
    for token in re.split(r"(\*\*|\*)", pattern):
        if token == "**":
            parts.append(r"[^\x00-\x20\x7f]+")
        elif token == "*":
            parts.append(one)
        else:
            parts.append(re.escape(token))
    return re.compile("".join(parts))


ScopeRules = Mapping[str, Iterable[str]] | Iterable[Any]


class CertificateScopes:
    """``auth.client_certs.scopes`` compiled: subject patterns to the scopes they grant.

    ``rules`` is a mapping of pattern to scopes, or an iterable of objects
    with ``pattern`` and ``scopes`` (the config's ``CertScopes``). A subject
    gets the scopes of every pattern it matches: exact patterns are one
    dictionary look-up, globs one full match each. DNS names compare
    case-insensitively, URIs and common names exactly.
    """

    __slots__ = ("_exact", "_globs", "subject_from")

    def __init__(self, rules: ScopeRules, subject_from: str = "san_uri") -> None:
        self.subject_from = subject_from
        pairs = (
            rules.items()
            if isinstance(rules, Mapping)
            else ((rule.pattern, rule.scopes) for rule in rules)
        )
        exact: dict[str, frozenset[str]] = {}
        globs: list[tuple[re.Pattern[str], frozenset[str]]] = []
        for pattern, scopes in pairs:
            check_scope_pattern(pattern, subject_from)
            granted = frozenset([scopes] if isinstance(scopes, str) else scopes)
            key = pattern.lower().rstrip(".") if subject_from == "san_dns" else pattern
            if "*" in key:
                globs.append((_pattern_regex(key, subject_from), granted))
            else:
                exact[key] = exact.get(key, frozenset()) | granted
        self._exact = exact
        self._globs = tuple(globs)

    def __bool__(self) -> bool:
        return bool(self._exact or self._globs)

    def scopes(self, subject: str | None) -> frozenset[str]:
        if not subject:
            return frozenset()
        if self.subject_from == "san_dns":
            subject = subject.lower().rstrip(".")
        granted = self._exact.get(subject, frozenset())
        for regex, scopes in self._globs:
            if regex.fullmatch(subject):
                granted |= scopes
        return granted


def scopes_for(
    identity: ClientIdentity | None, mapping: CertificateScopes | ScopeRules
) -> frozenset[str]:
    """The scopes granted to ``identity`` by ``mapping`` (empty without a subject).

    Pass a ``CertificateScopes`` built once with the configuration; other
    rules are compiled on every call.
    """
    if identity is None or identity.subject is None:
        return frozenset()
    if not isinstance(mapping, CertificateScopes):
        mapping = CertificateScopes(mapping, identity.subject_from)
    elif mapping.subject_from != identity.subject_from:
        return frozenset()
    return mapping.scopes(identity.subject)


# --- X-Forwarded-Client-Cert ---------------------------------------------------------------------

_XFCC_SPECIAL = frozenset(",;=")


def xfcc_value(
    identity: ClientIdentity,
    by: str | None = None,
    *,
    fields: Iterable[str] = DEFAULT_XFCC_FIELDS,
) -> str:
    """One element of Envoy's ``X-Forwarded-Client-Cert`` for ``identity``.

    ``By`` (the gateway's own URI SAN, when given), then ``fields`` in
    Envoy's order: ``Hash`` (hex SHA-256 of the DER, always present),
    ``Cert`` (URL-encoded PEM, quoted), ``Subject`` (the RFC 4514 ``dn``,
    quoted), one ``URI`` and one ``DNS`` pair per SAN.

    No value ever holds a ``"``, so quoting needs no escapes and every
    reader agrees where a value ends: in URIs and DNS names ``"``, ``\\``,
    spaces, control characters and non-ASCII are percent-encoded, and the
    subject writes them as RFC 4514 hex escapes. A URI or DNS value holding
    ``,``, ``;`` or ``=`` is quoted, as Envoy's documentation asks.
    """
    wanted = set(fields) | {"Hash"}
    unknown = wanted - set(XFCC_FIELDS)
    if unknown:
        raise ValueError(f"unknown XFCC field {sorted(unknown)[0]!r} (known: {XFCC_FIELDS})")
    pairs = []
    if by:
        pairs.append(f"By={_xfcc_text(by)}")
    pairs.append(f"Hash={identity.sha256}")
    if "Cert" in wanted:
        pairs.append(f'Cert="{urllib.parse.quote(identity.pem, safe="")}"')
    if "Subject" in wanted:
        pairs.append(f'Subject="{identity.dn}"')
    if "URI" in wanted:
        pairs.extend(f"URI={_xfcc_text(uri)}" for uri in identity.san_uris)
    if "DNS" in wanted:
        pairs.extend(f"DNS={_xfcc_text(name)}" for name in identity.san_dns)
    return ";".join(pairs)


def _xfcc_text(value: str) -> str:
    value = "".join(
        c if "!" <= c <= "~" and c not in '"\\' else urllib.parse.quote(c, safe="") for c in value
    )
    return f'"{value}"' if _XFCC_SPECIAL.intersection(value) else value


# --- handshake failures --------------------------------------------------------------------------

_NO_CERT_REASONS = frozenset({"PEER_DID_NOT_RETURN_A_CERTIFICATE"})
_BAD_CERT_REASONS = frozenset({
    "CERTIFICATE_VERIFY_FAILED", "BAD_SIGNATURE", "CA_MD_TOO_WEAK", "CA_KEY_TOO_SMALL",
    "EE_KEY_TOO_SMALL", "WRONG_CERTIFICATE_TYPE", "UNKNOWN_CERTIFICATE_TYPE",
})  # fmt: skip
_OTHER_REASONS = {
    "UNSUPPORTED_PROTOCOL": "protocol_version",
    "VERSION_TOO_LOW": "protocol_version",
    "NO_SHARED_CIPHER": "no_shared_cipher",
    "NO_SHARED_GROUPS": "no_shared_cipher",
    "NO_SUITABLE_SIGNATURE_ALGORITHM": "no_shared_cipher",
    "HTTP_REQUEST": "not_tls",
    "WRONG_VERSION_NUMBER": "not_tls",
    "UNEXPECTED_EOF_WHILE_READING": "connection_lost",
}


def handshake_failure_reason(exc: BaseException) -> str:
    """A short reason for a failed server handshake.

    ``no_client_cert`` and ``bad_client_cert`` (the certificate failed
    verification: expired, not yet valid, unknown issuer, wrong extended
    key usage, or its key did not sign the handshake) are the audit log's
    ``mtls_failure`` reasons. Others: ``protocol_version``,
    ``no_shared_cipher``, ``not_tls``, ``client_alert`` (the client gave
    up, often because it does not trust the gateway's certificate),
    ``connection_lost``, ``timeout``, ``handshake_failed``.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        return BAD_CLIENT_CERT
    # asyncio and uvloop end a handshake past ssl_handshake_timeout this way.
    if isinstance(exc, TimeoutError) or (
        isinstance(exc, ConnectionAbortedError) and "handshake is taking longer" in str(exc)
    ):
        return "timeout"
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError)):
        return "connection_lost"
    reason = getattr(exc, "reason", None) if isinstance(exc, ssl.SSLError) else None
    if not reason:
        return "handshake_failed"
    if reason in _NO_CERT_REASONS:
        return NO_CLIENT_CERT
    if reason in _BAD_CERT_REASONS:
        return BAD_CLIENT_CERT
    if reason.startswith(("TLSV1_ALERT_", "SSLV3_ALERT_", "TLSV13_ALERT_")):
        return "client_alert"
    return _OTHER_REASONS.get(reason, "handshake_failed")


# --- upstreams -----------------------------------------------------------------------------------

_SESSIONS_PER_NAME = 2


class _UpstreamContext(ssl.SSLContext):
    """A client context that resumes TLS sessions on its own.

    asyncio and uvloop call ``wrap_bio`` without ``session=``; this one
    offers the session of a recent connection to the same server name. A
    server that no longer knows the session does a full handshake, with
    full verification.
    """

    _recent: dict[str | None, collections.deque]

    def wrap_bio(  # type: ignore[override]
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        if server_side:
            return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        recent = self.__dict__.setdefault("_recent", {}).setdefault(
            server_hostname, collections.deque(maxlen=_SESSIONS_PER_NAME)
        )
        if session is None:
            session = _resumable(recent)
        try:
            ssl_object = super().wrap_bio(incoming, outgoing, False, server_hostname, session)
        except ValueError:
            ssl_object = super().wrap_bio(incoming, outgoing, False, server_hostname)
        recent.append(ssl_object)
        return ssl_object


def _resumable(recent: Iterable[ssl.SSLObject]) -> ssl.SSLSession | None:
    """The newest session with a ticket, else the newest with an id (TLS 1.2 cache)."""
    sessions = [ssl_object.session for ssl_object in reversed(list(recent))]
    with_ticket = [s for s in sessions if s is not None and s.has_ticket]
    with_id = [s for s in sessions if s is not None and s.id]
    return (with_ticket or with_id or [None])[0]


def upstream_context(
    tls: ServiceTLS | None, alpn: tuple[str, ...] = ALPN_PROTOCOLS
) -> ssl.SSLContext:
    """A client context for a service's ``https://`` instances (or, with no
    ``alpn``, for Redis).

    Verifies the peer's chain (``ca``, or the system CAs) and its name
    (pass ``server_hostname=tls.server_name or host``), TLS 1.2 or newer,
    and presents ``cert``/``key`` when set. Build one per service and keep
    it: sessions are resumed within one context.
    """
    context = _UpstreamContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_ciphers(DEFAULT_CIPHERS)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.verify_flags |= _VERIFY_FLAGS
    ca = tls.ca if tls is not None else None
    if ca is not None:
        data = _read(ca, "ca")
        _pem_certificates(data, ca, "ca")
        try:
            context.load_verify_locations(cadata=data.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError) as exc:
            raise TLSConfigError(f"{ca}: the CA bundle cannot be used: {exc}") from None
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if tls is not None and tls.cert is not None:
        if tls.key is None:
            raise TLSConfigError(f"{tls.cert}: a client certificate needs its key")
        _check_key_pair(tls.cert, tls.key)
        _load_key_pair(context, tls.cert, tls.key)
    return context
