"""Authentication and authorization at the door: the checks routes run.

``Authenticator`` owns the providers' key sets (kept across reloads) and the
verified-token cache. For a route it builds the checks the pipeline runs in
order: ``authenticate`` (one bearer token, verified) and ``authorize`` (the
route's ``RequireScopes``). A check returns None to let the request on, a
``Rejection`` to answer it, or an awaitable of either (only when a token names
a key the provider may have just published).
"""

from __future__ import annotations

import asyncio
import logging
import re
from urllib.parse import quote

from .._core import active
from ..config.model import Auth
from ..proxy import Rejection
from ..tls import CertificateScopes
from .codes import VERDICTS, AuthCode, www_authenticate
from .jwks import ProviderKeys
from .verifier import ProviderVerifier, Result, TokenVerifier

log = logging.getLogger("fastgw.auth")

_identity = active("claims").identity
_door = active("door")
_admit = _door.admit


# Visible ASCII but '%': what an identity header carries as it is. Anything else
# (controls, line breaks, non-ASCII) is percent-encoded as UTF-8, so a claim can
# never start a header line of its own and the upstream can decode it exactly.
_TOKEN_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if c != 0x25)


_PLAIN = re.compile(r"[\x21-\x24\x26-\x7e]+( [\x21-\x24\x26-\x7e]+)*")


def header_safe(text: str, safe: str = _TOKEN_SAFE + " ") -> str:
    if _PLAIN.fullmatch(text) and (" " in safe or " " not in text):
        return text
    return quote(text, safe=safe)


def identity(result: Result) -> tuple[frozenset[str], tuple]:
    """The scopes a verified token grants, and its X-Auth-Subject and
    X-Auth-Scopes header fields, raw: the claims core's ``identity``, which
    writes the values as ``header_safe`` does."""
    return _identity(result.sub, result.claims)


def _bound(claims: dict, cert) -> bool:
    """RFC 8705: a token confirmed by a certificate is good only over a TLS
    connection whose verified client certificate has that thumbprint. A
    confirmation this gateway cannot check (another method) fails closed."""
    cnf = claims["cnf"]
    thumbprint = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
    return isinstance(thumbprint, str) and cert is not None and cert.thumbprint == thumbprint


class Authenticator:
    def __init__(self, auth: Auth, *, metrics, audit, previous: Authenticator | None = None):
        self.metrics = metrics
        self.audit = audit
        self.cert_scopes = CertificateScopes(auth.client_cert_scopes,
                                             auth.client_cert_subject_from or "san_uri")
        old = previous.keys if previous is not None else {}
        self.keys: dict[str, ProviderKeys] = {
            p.name: ProviderKeys(p, on_refresh=self._refreshed, previous=old.get(p.name))
            for p in auth.providers
        }
        self.verifier = TokenVerifier(
            [ProviderVerifier(p, self._getter(self.keys[p.name])) for p in auth.providers]
        )
        self._tokens = self.verifier.cache
        self._clock = self.verifier.clock

    @staticmethod
    def _getter(keys: ProviderKeys):
        return lambda: keys.keyset

    def _refreshed(self, provider: str, result: str) -> None:
        self.metrics.jwks_refresh.inc((provider, result))

    @property
    def ready(self) -> bool:
        return all(k.ready for k in self.keys.values())

    async def start(self) -> None:
        await asyncio.gather(*(k.start() for k in self.keys.values()))

    async def stop(self) -> None:
        for keys in self.keys.values():
            result = keys.stop()
            if asyncio.iscoroutine(result):
                await result

    # -- the checks ------------------------------------------------------------

    def authenticate(self, ex):
        request = ex.request
        # A token seen before, still fresh: the whole check is one compiled call,
        # which otherwise hands back the bearer token it found (or why none).
        found = _admit(self._tokens, request, self._clock())
        if found is None:
            return None
        code, token = found
        if code:
            return self.reject(ex, AuthCode(code))
        result = self.verifier.verify(token)
        if result.code != AuthCode.OK and result.unknown_kid and result.provider in self.keys:
            return self._after_refresh(ex, token, result)
        return self._verdict(ex, token, result)

    async def _after_refresh(self, ex, token: bytes, result: Result):
        if await self.keys[result.provider].refresh_for_kid(result.kid):
            result = self.verifier.verify(token)
        return self._verdict(ex, token, result)

    def _verdict(self, ex, token: bytes, result: Result):
        if result.code:  # not OK
            return self.reject(ex, result.code, result)
        claims = result.claims
        if "cnf" in claims and not _bound(claims, ex.request.client_cert):
            return self.reject(ex, AuthCode.CERT_BINDING_MISMATCH, result)
        self.accept(ex, token, result)
        return None

    def certificate(self, ex):
        """``auth: mtls``: the connection's verified client certificate is the identity."""
        cert = ex.request.client_cert
        if cert is None or cert.subject is None:
            return self.reject_certificate(ex, cert)
        self.accept_certificate(ex, cert)
        return None

    def token_or_certificate(self, ex):
        """``auth: jwt_or_mtls``: a bearer token when one is sent, else the certificate."""
        request = ex.request
        cert = request.client_cert
        if "authorization" in request.headers or cert is None or cert.subject is None:
            return self.authenticate(ex)
        self.accept_certificate(ex, cert)
        return None

    def accept_certificate(self, ex, cert) -> None:
        request = ex.request
        request.identity = cert
        scopes = self.cert_scopes.scopes(cert.subject) if self.cert_scopes else frozenset()
        # Rate-limit keys and RequireScopes read the same whatever the credential was.
        request.claims = {"sub": cert.subject, "scope": " ".join(sorted(scopes))}
        request.scopes = scopes
        headers = request.headers
        headers.add("X-Auth-Subject", header_safe(cert.subject))
        if scopes:
            headers.add("X-Auth-Scopes", " ".join(sorted(header_safe(s, _TOKEN_SAFE)
                                                         for s in scopes)))

    def reject_certificate(self, ex, cert) -> Rejection:
        reason = "no_client_cert" if cert is None else "bad_client_cert"
        self.metrics.auth_failures.inc((reason,))
        self.audit.record(ex, event="mtls_failure", reason=reason, status=401,
                          client_cert_subject=cert.dn if cert is not None else None)
        return Rejection(401)

    def authorizer(self, scopes: tuple[str, ...]):
        named = tuple(s[6:] if s.startswith("SCOPE_") else s for s in scopes)
        challenge = www_authenticate(AuthCode.INSUFFICIENT_SCOPE, named)
        required = frozenset(named)

        def authorize(ex):
            granted = ex.request.scopes
            if granted is not None and required <= granted:
                return None
            return self.reject(ex, AuthCode.INSUFFICIENT_SCOPE, challenge=challenge)

        return authorize

    # -- verdicts -----------------------------------------------------------------

    def accept(self, ex, token: bytes, result: Result) -> None:
        # What the token grants is worked out once and kept with it in the
        # verified-token cache, where ``_admit`` finds it on the next request.
        # ``peek``: this request put the entry there, it is not a second use.
        entry = self._tokens.peek(token)
        if entry is None or entry.result is not result:
            scopes, fields = identity(result)
        elif entry.fields is None:
            scopes, fields = identity(result)
            entry.scopes, entry.fields = scopes, fields
        else:
            scopes, fields = entry.scopes, entry.fields
        request = ex.request
        request.claims = result.claims
        request.identity = result
        request.scopes = scopes
        request.headers.fields.extend(fields)

    def reject(self, ex, code: AuthCode, result: Result | None = None, *,
               challenge: str | None = None) -> Rejection:
        verdict = VERDICTS[code]
        self.metrics.auth_failures.inc((verdict.metric_label,))
        identity = ex.request.identity
        if result is None and isinstance(identity, Result):
            result = identity  # authorization failed for a verified token
        cert = ex.request.client_cert
        self.audit.record(
            ex,
            event=verdict.audit_event,
            reason=verdict.audit_reason,
            status=verdict.status,
            sub=result.sub if result is not None else None,
            iss=result.iss if result is not None else None,
            kid=result.kid if result is not None else None,
            client_cert_subject=cert.subject if cert is not None else None,
        )
        value = challenge or verdict.www_authenticate
        return Rejection(verdict.status, headers=(("WWW-Authenticate", value),) if value else ())
