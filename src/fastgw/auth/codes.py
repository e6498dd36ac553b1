"""Authentication outcomes and the one place that maps them to HTTP.

Checks return an ``AuthCode``; the compiled claim checks return the same
values as plain ints. ``VERDICTS`` turns a code into the status, the
``WWW-Authenticate`` value (RFC 6750 section 3), the audit record's event and
reason, and the ``fastgw_auth_failures_total`` label. The precise reason
never goes to the client: every unusable credential is the same 401.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class AuthCode(IntEnum):
    OK = 0
    MISSING_TOKEN = 1
    MALFORMED_TOKEN = 2
    ALG_NOT_ALLOWED = 3
    UNKNOWN_KID = 4
    BAD_SIGNATURE = 5
    EXPIRED = 6
    NOT_YET_VALID = 7
    BAD_ISSUER = 8
    BAD_AUDIENCE = 9
    INSUFFICIENT_SCOPE = 10
    CERT_BINDING_MISMATCH = 11
    TWO_CREDENTIALS = 12


@dataclass(frozen=True, slots=True)
class Verdict:
    status: int
    www_authenticate: str | None
    audit_event: str  # auth_failure | forbidden
    audit_reason: str
    metric_label: str


_INVALID = 'Bearer error="invalid_token"'


def _unusable(reason: str) -> Verdict:
    return Verdict(401, _INVALID, "auth_failure", reason, reason)


VERDICTS: dict[AuthCode, Verdict] = {
    AuthCode.MISSING_TOKEN: Verdict(
        401, "Bearer", "auth_failure", "missing_token", "missing_token"
    ),
    AuthCode.MALFORMED_TOKEN: _unusable("malformed_token"),
    AuthCode.ALG_NOT_ALLOWED: _unusable("alg_not_allowed"),
    AuthCode.UNKNOWN_KID: _unusable("unknown_kid"),
    AuthCode.BAD_SIGNATURE: _unusable("bad_signature"),
    AuthCode.EXPIRED: _unusable("expired"),
    AuthCode.NOT_YET_VALID: _unusable("not_yet_valid"),
    AuthCode.BAD_ISSUER: _unusable("bad_issuer"),
    AuthCode.BAD_AUDIENCE: _unusable("bad_audience"),
    AuthCode.INSUFFICIENT_SCOPE: Verdict(
        403,
        'Bearer error="insufficient_scope"',
        "forbidden",
        "insufficient_scope",
        "insufficient_scope",
    ),
    AuthCode.CERT_BINDING_MISMATCH: _unusable("cert_binding_mismatch"),
    # Two credentials are a bad request (RFC 6750 section 3.1), not a bad token;
    # the audit record files it under the nearest reason it has.
    AuthCode.TWO_CREDENTIALS: Verdict(
        400,
        'Bearer error="invalid_request"',
        "auth_failure",
        "malformed_token",
        "two_credentials",
    ),
}

# RFC 6749 appendix A.4: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F) if c not in (0x22, 0x5C))


def www_authenticate(code: AuthCode, scopes: tuple[str, ...] = ()) -> str | None:
    """The ``WWW-Authenticate`` value for CODE; for a 403, SCOPES are the route's
    required scopes. Raises ValueError for a scope that is not a scope-token, so
    a header can never carry a quote, a backslash or a line break."""
    value = VERDICTS[code].www_authenticate
    if code != AuthCode.INSUFFICIENT_SCOPE or not scopes:
        return value
    for scope in scopes:
        if not scope or not _SCOPE_CHARS.issuperset(scope):
            raise ValueError(f"{scope!r} is not a scope token")
    return f'{value}, scope="{" ".join(scopes)}"'
