"""The auth gateway the JWT tests stand at, and ``Door``, the client that checks its verdicts.

``corp_identity_provider()`` publishes one key per algorithm of ``ALGORITHMS``
for the audience ``orders-api``; ``auth_config(...)`` is a gateway config
trusting it, with the routes ``/orders/**`` (``RequireScopes`` and
``TokenRelay``), ``/legacy/**`` (the ``SCOPE_`` prefix), ``/plain/**`` (any
valid token) and ``/public/**`` (``auth: none``). A ``Door`` checks each
verdict completely (status, ``WWW-Authenticate``, the audit line, nothing at
the upstream) and, when asked, that no credential it sent appears in the
audit log.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from fastgw.testing import GatewayProcess, RecordedRequest, RecordingUpstream
from fastgw.testing.idp import IdentityProvider, SigningKey

from .support import assert_error, assert_nothing_reached

AUDIENCE = "orders-api"
ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
SCOPE = "read_orders"
LEEWAY = 5

CHALLENGE_MISSING = "Bearer"
CHALLENGE_INVALID = 'Bearer error="invalid_token"'
CHALLENGE_BAD_REQUEST = 'Bearer error="invalid_request"'
CHALLENGE_SCOPE = f'Bearer error="insufficient_scope", scope="{SCOPE}"'

AUDIT_WAIT = 3.0
"""Seconds to wait for an audit line (the contract is one second; slack for busy hosts)."""

SECRET_FRAGMENT = 16
"""Token segments at least this long are searched for in the audit log; shorter
ones (``e30`` is ``{}``) could match an unrelated field by chance."""


def corp_identity_provider() -> IdentityProvider:
    """An identity provider for ``orders-api`` with one key per allowed algorithm, started."""
    idp = IdentityProvider(audience=AUDIENCE)
    for alg in ALGORITHMS[1:]:
        idp.add_key(SigningKey.generate(alg))
    return idp.start()


def key_for(idp: IdentityProvider, alg: str) -> SigningKey:
    return next(key for key in idp.keys if key.alg == alg)


def provider_config(idp: IdentityProvider, **changes) -> dict:
    provider = {
        "name": "corp",
        "issuer": idp.issuer,
        "jwks_uri": idp.jwks_uri,
        "audiences": [AUDIENCE],
        "algorithms": list(ALGORITHMS),
        "leeway": f"{LEEWAY}s",
        "refresh_interval": "5m",
    }
    provider.update(changes)
    return {key: value for key, value in provider.items() if value is not None}


def auth_routes() -> list[dict]:
    echo = {"uri": "lb://echo"}
    return [
        {
            **echo,
            "id": "orders",
            "predicates": ["Path=/orders/**"],
            "filters": [f"RequireScopes={SCOPE}", "TokenRelay="],
        },
        {
            **echo,
            "id": "legacy",
            "predicates": ["Path=/legacy/**"],
            "filters": [f"RequireScopes=SCOPE_{SCOPE}"],
        },
        {**echo, "id": "plain", "predicates": ["Path=/plain/**"]},
        {**echo, "id": "public", "predicates": ["Path=/public/**"], "auth": "none"},
    ]


def auth_config(
    make_config, upstream_url: str, idp: IdentityProvider, workdir: Path, **provider_changes
) -> dict:
    """The gateway config of these tests; the audit log goes to ``workdir/audit.log``."""
    return make_config(
        upstream_url,
        auth={"jwt": {"providers": [provider_config(idp, **provider_changes)]}},
        audit={"path": str(workdir / "audit.log")},
        routes=auth_routes(),
    )


class AuditTrail:
    """The audit log a gateway writes: parsed lines, and waits for lines to arrive."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def text(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    def lines(self) -> list[dict]:
        """Every complete line, each of which must be one JSON object."""
        text = self.text()
        complete = text[: text.rfind("\n")]  # a line is ended by LF only (not by U+2028)
        records = [json.loads(line) for line in complete.split("\n") if line]
        assert all(isinstance(record, dict) for record in records), records
        return records

    def lines_for(self, request_ids, timeout: float = AUDIT_WAIT) -> list[dict]:
        """The lines of ``request_ids``, once there is one for each (waits for them)."""
        wanted = set(request_ids)
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.lines() if line.get("request_id") in wanted]
            if {line["request_id"] for line in found} >= wanted:
                return found
            if time.monotonic() > deadline:
                seen = {line.get("request_id") for line in found}
                raise AssertionError(f"no audit line for {sorted(wanted - seen)[:5]} ...")
            time.sleep(0.02)

    def line_for(self, request_id: str, timeout: float = AUDIT_WAIT) -> dict:
        """The one line of ``request_id``."""
        found = self.lines_for([request_id], timeout)
        assert len(found) == 1, found
        return found[0]


def secret_fragments(credential: str) -> list[str]:
    """What of a credential must never be logged: all of it, and each long segment."""
    fragments = [credential]
    fragments += [part for part in credential.split(".") if len(part) >= SECRET_FRAGMENT]
    return fragments


class Door:
    """Requests through an auth gateway, with complete checks of each verdict."""

    def __init__(self, gateway: GatewayProcess, upstream: RecordingUpstream, raw) -> None:
        self.gateway = gateway
        self.upstream = upstream
        self.audit = AuditTrail(gateway.config["audit"]["path"])
        self._raw = raw
        self.credentials: list[str] = []

    def remember(self, credential: str) -> None:
        """``credential`` must never reach the audit log."""
        self.credentials.append(credential)

    def connect(self):
        return self._raw(self.gateway.port)

    def send(
        self,
        path: str = "/orders/1",
        token: str | None = None,
        *,
        method: str = "GET",
        headers=(),
        body: bytes | None = None,
        connection=None,
    ):
        """One request, on a new connection unless one is given; ``token`` as a bearer."""
        headers = list(headers)
        if token is not None:
            headers.insert(0, ("Authorization", f"Bearer {token}"))
        for name, value in headers:
            if name.lower() == "authorization":
                self.remember(value.partition(" ")[2] or value)
        connection = connection or self.connect()
        return connection.exchange(method, path, headers=headers, body=body)

    def accepted(self, response) -> RecordedRequest:
        """The request went through: 200, and the one request the upstream received."""
        assert response.status == 200, response
        [received] = self.upstream.wait_for_requests(1)
        return received

    def rejected(
        self,
        response,
        reason: str | set[str],
        *,
        status: int = 401,
        event: str = "auth_failure",
        challenge: str | None = None,
    ) -> dict:
        """The request was refused at the door; its audit line (checked) is returned."""
        if challenge is None:
            challenge = {400: CHALLENGE_BAD_REQUEST, 403: CHALLENGE_SCOPE}.get(
                status, CHALLENGE_MISSING if reason == "missing_token" else CHALLENGE_INVALID
            )
        body = assert_error(response, status)
        assert response.header_values("www-authenticate") == [challenge], response
        assert_nothing_reached(self.upstream)
        line = self.audit.line_for(body["request_id"])
        reasons = {reason} if isinstance(reason, str) else reason
        assert line["event"] == event, line
        assert line["reason"] in reasons, line
        assert line["status"] == status, line
        return line

    def assert_audit_is_clean(self) -> None:
        """No credential sent through this door appears in the audit log."""
        text = self.audit.text()
        for credential in self.credentials:
            for fragment in secret_fragments(credential):
                assert fragment not in text, f"audit log holds credential material {fragment!r}"
