"""JWT authentication and scopes at the door (SPEC sections 3 and 4), over real sockets.

A local identity provider publishes RS256, PS256, ES256 and EdDSA keys; the
gateway trusts it for the audience ``orders-api`` and routes:

- ``/orders/**``: a token with ``read_orders``, relayed to the upstream;
- ``/legacy/**``: ``RequireScopes=SCOPE_read_orders`` (Spring's prefix);
- ``/plain/**``: any valid token, not relayed;
- ``/public/**``: ``auth: none``.

The helpers at the top (``corp_identity_provider``, ``auth_config``,
``AuditTrail``, ``Door``) are shared by ``test_auth_tokens``,
``test_auth_keys`` and ``test_audit``. A ``Door`` checks each verdict
completely (status, ``WWW-Authenticate``, the audit line, nothing at the
upstream) and, when its test ends, that no credential it sent appears in the
audit log.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

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


# -- shared set-up -----------------------------------------------------------------------------


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


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one series in a Prometheus text page (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    series = f"{name}{{{wanted}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def scrape(gateway: GatewayProcess, raw) -> str:
    response = raw(gateway.admin_port).exchange("GET", "/metrics")
    assert response.status == 200, response
    return response.body.decode()


def concurrently(count: int, work) -> list:
    """Run ``work(i)`` for i in range(count) on threads; the results in order."""
    results: list = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = work(i)
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    if errors:
        raise errors[0]
    return results


# -- fixtures of this module -------------------------------------------------------------------


@pytest.fixture(scope="module")
def idp():
    provider = corp_identity_provider()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def auth_gateway(idp, shared_upstream, make_config, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("auth")
    with GatewayProcess(
        auth_config(make_config, shared_upstream.url, idp, workdir), workdir
    ) as gateway:
        yield gateway


@pytest.fixture
def door(auth_gateway, upstream, raw):
    door = Door(auth_gateway, upstream, raw)
    yield door
    door.assert_audit_is_clean()


# -- accepted tokens ---------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_a_token_of_each_allowed_algorithm_is_accepted(door, idp, alg):
    token = idp.mint(sub=f"user-{alg}", scope=SCOPE, key=key_for(idp, alg))
    received = door.accepted(door.send("/orders/1", token))
    assert received.path == "/orders/1"
    assert received.header_values("x-auth-subject") == [f"user-{alg}"]


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(door, idp, scheme):
    token = idp.mint(scope=SCOPE)
    door.remember(token)
    door.accepted(door.send("/orders/1", headers=[("Authorization", f"{scheme} {token}")]))


def test_a_valid_token_is_accepted_again_on_a_keep_alive_connection(door, idp):
    token = idp.mint(scope=SCOPE)
    connection = door.connect()
    for _ in range(3):
        assert door.send("/orders/1", token, connection=connection).status == 200
    assert len(door.upstream.wait_for_requests(3)) == 3


# -- the credential itself ---------------------------------------------------------------------


def test_no_credential_is_401_with_a_bare_challenge(door):
    door.rejected(door.send("/orders/1"), "missing_token")


def test_no_credential_on_a_route_without_scopes(door):
    line = door.rejected(door.send("/plain/1"), "missing_token")
    assert line["route"] == "plain"


def test_basic_credentials_are_no_bearer_token(door):
    response = door.send("/orders/1", headers=[("Authorization", "Basic YWxpY2U6c2VjcmV0LXB3")])
    door.rejected(response, "missing_token")


def test_two_authorization_headers_are_a_bad_request(door, idp):
    token = idp.mint(scope=SCOPE)
    response = door.send("/orders/1", token, headers=[("Authorization", f"Bearer {token}")])
    door.rejected(response, "malformed_token", status=400)


def test_a_bearer_and_a_basic_header_are_a_bad_request(door, idp):
    token = idp.mint(scope=SCOPE)
    response = door.send("/orders/1", token, headers=[("Authorization", "Basic YWxpY2U6cHc=")])
    door.rejected(response, "malformed_token", status=400)


def test_two_credentials_in_one_header_are_refused(door, idp):
    token = idp.mint(scope=SCOPE)
    door.remember(token)
    both = ("Authorization", f"Bearer {token}, Bearer {token}")
    response = door.send("/orders/1", headers=[both])
    assert response.status in (400, 401), response
    door.rejected(response, "malformed_token", status=response.status)


def test_a_token_in_the_header_and_the_query_is_refused(door, idp):
    token = idp.mint(scope=SCOPE)
    door.remember(token)
    response = door.send(f"/orders/1?access_token={token}", token)
    assert response.status in (400, 401), response
    line = door.rejected(response, "malformed_token", status=response.status)
    assert line["path"] == "/orders/1"


def test_a_token_only_in_the_query_is_not_a_credential(door, idp):
    token = idp.mint(scope=SCOPE)
    door.remember(token)
    line = door.rejected(door.send(f"/orders/1?access_token={token}"), "missing_token")
    assert line["path"] == "/orders/1"


def token_of_length(idp: IdentityProvider, length: int) -> str:
    """A valid token of ``length`` characters, or one more (base64url skips some lengths)."""
    bare = len(idp.mint(scope=SCOPE, filler=""))
    filler = max(0, (length - bare) * 3 // 4 - 2)
    while len(token := idp.mint(scope=SCOPE, filler="x" * filler)) < length:
        filler += 1
    return token


def test_a_token_of_8_kib_is_accepted(door, idp):
    token = token_of_length(idp, 8191)
    assert len(token) <= 8192
    door.accepted(door.send("/orders/1", token))


def test_a_token_over_8_kib_is_malformed(door, idp):
    token = token_of_length(idp, 8193)
    assert len(token) > 8192
    door.rejected(door.send("/orders/1", token), "malformed_token")


# -- scopes ------------------------------------------------------------------------------------

GRANTING = {
    "scope_text": {"scope": f"openid {SCOPE} profile"},
    "scope_alone": {"scope": SCOPE},
    "scp_array": {"scp": ["openid", SCOPE]},
    "scp_text": {"scp": f"{SCOPE} write_orders"},
}

NOT_GRANTING = {
    "no_scope_claim": {},
    "other_scopes": {"scope": "openid write_orders"},
    "prefixed_in_token": {"scope": f"SCOPE_{SCOPE}"},
    "other_case": {"scope": SCOPE.upper()},
    "longer_name": {"scope": f"{SCOPE}_all"},
    "comma_separated": {"scope": f"openid,{SCOPE}"},
    "scp_prefixed": {"scp": [f"SCOPE_{SCOPE}"]},
}


@pytest.mark.parametrize("claims", GRANTING.values(), ids=GRANTING.keys())
def test_scopes_that_grant_the_route(door, idp, claims):
    door.accepted(door.send("/orders/1", idp.mint(sub="alice", **claims)))


@pytest.mark.parametrize("claims", NOT_GRANTING.values(), ids=NOT_GRANTING.keys())
def test_a_missing_scope_is_403(door, idp, claims):
    token = idp.mint(sub="alice", **claims)
    line = door.rejected(
        door.send("/orders/1", token), "insufficient_scope", status=403, event="forbidden"
    )
    assert line["sub"] == "alice"
    assert line["iss"] == idp.issuer


def test_the_scope_prefix_in_the_route_is_the_same_scope(door, idp):
    door.accepted(door.send("/legacy/1", idp.mint(scope=SCOPE)))


def test_the_scope_prefix_in_the_token_grants_nothing_on_a_prefixed_route(door, idp):
    token = idp.mint(scope=f"SCOPE_{SCOPE}")
    door.rejected(
        door.send("/legacy/1", token), "insufficient_scope", status=403, event="forbidden"
    )


def test_a_route_without_scopes_takes_any_valid_token(door, idp):
    door.accepted(door.send("/plain/1", idp.mint(scope=None)))


# -- token relay -------------------------------------------------------------------------------


def test_token_relay_forwards_the_authorization_header_unchanged(door, idp):
    token = idp.mint(scope=SCOPE)
    received = door.accepted(door.send("/orders/1", token))
    assert received.header_values("authorization") == [f"Bearer {token}"]


def test_without_token_relay_the_authorization_header_is_removed(door, idp):
    received = door.accepted(door.send("/plain/1", idp.mint(scope=SCOPE)))
    assert not received.has_header("authorization")


def test_a_public_route_forwards_no_bearer_token(door, idp):
    received = door.accepted(door.send("/public/1", idp.mint(scope=SCOPE)))
    assert not received.has_header("authorization")


def test_a_public_route_forwards_no_basic_credentials(door):
    response = door.send("/public/1", headers=[("Authorization", "Basic YWxpY2U6cHVibGlj")])
    assert not door.accepted(response).has_header("authorization")


def test_a_public_route_does_not_look_at_the_token(door):
    received = door.accepted(door.send("/public/1", "not-a-token"))
    assert not received.has_header("authorization")
    assert not received.has_header("x-auth-subject")


# -- identity headers --------------------------------------------------------------------------

SPOOFED = [
    ("X-Auth-Subject", "admin"),
    ("X-Auth-Scopes", "admin"),
    ("x-auth-subject", "root"),
    ("X-AUTH-SCOPES", "read_orders admin"),
]


def scopes_header(received: RecordedRequest) -> set[str]:
    [value] = received.header_values("x-auth-scopes")
    return set(value.split())


def test_the_upstream_learns_the_subject_and_scopes(door, idp):
    token = idp.mint(sub="alice", scope=f"{SCOPE} write_orders")
    received = door.accepted(door.send("/plain/1", token))
    assert received.header_values("x-auth-subject") == ["alice"]
    assert scopes_header(received) == {SCOPE, "write_orders"}


def test_scopes_from_scp_reach_the_upstream(door, idp):
    received = door.accepted(door.send("/orders/1", idp.mint(sub="bob", scp=[SCOPE, "audit"])))
    assert received.header_values("x-auth-subject") == ["bob"]
    assert scopes_header(received) == {SCOPE, "audit"}


def test_identity_headers_from_the_caller_are_replaced(door, idp):
    token = idp.mint(sub="alice", scope=SCOPE)
    received = door.accepted(door.send("/orders/1", token, headers=SPOOFED))
    assert received.header_values("x-auth-subject") == ["alice"]
    assert scopes_header(received) == {SCOPE}


def test_identity_headers_named_in_connection_are_replaced(door, idp):
    token = idp.mint(sub="alice", scope=SCOPE)
    headers = [("Connection", "keep-alive, X-Auth-Subject, X-Auth-Scopes"), *SPOOFED]
    received = door.accepted(door.send("/orders/1", token, headers=headers))
    assert received.header_values("x-auth-subject") == ["alice"]
    assert scopes_header(received) == {SCOPE}


def test_identity_headers_are_not_invented_for_a_token_without_them(door, idp):
    received = door.accepted(door.send("/plain/1", idp.mint(sub=None, scope=None), headers=SPOOFED))
    assert not received.has_header("x-auth-subject")
    assert not received.has_header("x-auth-scopes")


@pytest.mark.parametrize("connection", [None, "X-Auth-Subject, X-Auth-Scopes"])
def test_identity_headers_from_the_caller_never_reach_a_public_route(door, connection):
    headers = [*SPOOFED, *([("Connection", connection)] if connection else [])]
    received = door.accepted(door.send("/public/1", headers=headers))
    assert not received.has_header("x-auth-subject")
    assert not received.has_header("x-auth-scopes")


def test_identity_headers_from_the_caller_are_removed_on_a_rejection(door):
    door.rejected(door.send("/orders/1", headers=SPOOFED), "missing_token")


# -- an early answer to a request with a body --------------------------------------------------

SMUGGLED = b"GET /public/smuggled HTTP/1.1\r\nHost: gateway.test\r\n\r\n"


def assert_body_never_served(door: Door, connection) -> None:
    """After an early answer, the body (a whole request) got no answer and reached
    nothing; a connection left open serves the next request as itself."""
    closed = connection.closed_by_peer(timeout=1.0)
    assert connection.buffer == b"", connection.buffer
    assert_nothing_reached(door.upstream)
    if not closed:
        received = door.accepted(door.send("/public/next", connection=connection))
        assert received.path == "/public/next"


def test_the_body_of_a_rejected_request_is_never_read_as_a_request(door):
    connection = door.connect()
    response = door.send("/orders/1", method="POST", body=SMUGGLED, connection=connection)
    door.rejected(response, "missing_token")
    assert_body_never_served(door, connection)


def test_the_chunked_body_of_a_rejected_request_is_never_read_as_a_request(door, idp):
    connection = door.connect()
    token = idp.mint(scope="openid")
    door.remember(token)
    connection.send(
        b"POST /orders/1 HTTP/1.1\r\nHost: gateway.test\r\nAuthorization: Bearer "
        + token.encode()
        + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)
    )
    response = connection.read_response("POST")
    door.rejected(response, "insufficient_scope", status=403, event="forbidden")
    assert_body_never_served(door, connection)


def test_a_body_sent_after_the_rejection_closes_the_connection(door):
    connection = door.connect()
    connection.send(
        b"POST /orders/1 HTTP/1.1\r\nHost: gateway.test\r\n"
        b"Content-Length: %d\r\n\r\n" % len(SMUGGLED)
    )
    door.rejected(connection.read_response("POST"), "missing_token")
    connection.send(SMUGGLED)
    assert connection.closed_by_peer(), "the connection stays open with an unread body"
    assert connection.buffer == b"", connection.buffer
    assert_nothing_reached(door.upstream)


def test_a_rejection_without_a_body_keeps_the_connection(door, idp):
    connection = door.connect()
    door.rejected(door.send("/orders/1", connection=connection), "missing_token")
    door.accepted(door.send("/orders/1", idp.mint(scope=SCOPE), connection=connection))


# -- metrics -----------------------------------------------------------------------------------


def test_auth_failures_and_key_refreshes_are_counted(door, idp, raw):
    before = scrape(door.gateway, raw)
    for _ in range(3):
        door.rejected(door.send("/orders/1"), "missing_token")
    door.rejected(door.send("/orders/1", idp.mint(scope=SCOPE, ttl=-60)), "expired")
    door.rejected(
        door.send("/orders/1", idp.mint(scope="openid")),
        "insufficient_scope",
        status=403,
        event="forbidden",
    )
    after = scrape(door.gateway, raw)

    def counted(reason: str) -> float:
        name = "fastgw_auth_failures_total"
        return metric(after, name, reason=reason) - metric(before, name, reason=reason)

    assert counted("missing_token") == 3
    assert counted("expired") == 1
    assert counted("insufficient_scope") == 1
    assert metric(after, "fastgw_jwks_refresh_total", provider="corp", result="ok") >= 1


def test_readyz_is_200_once_the_keys_are_loaded(door):
    assert door.gateway.admin_status("/readyz") == 200
