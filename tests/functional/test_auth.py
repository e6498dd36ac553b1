"""JWT authentication and scopes at the door (SPEC sections 3 and 4), over real sockets.

A local identity provider publishes RS256, PS256, ES256 and EdDSA keys; the
gateway trusts it for the audience ``orders-api`` and routes:

- ``/orders/**``: a token with ``read_orders``, relayed to the upstream;
- ``/legacy/**``: ``RequireScopes=SCOPE_read_orders`` (Spring's prefix);
- ``/plain/**``: any valid token, not relayed;
- ``/public/**``: ``auth: none``.

The gateway and the ``Door`` client come from ``door``, the fixtures from ``conftest``.
"""

from __future__ import annotations

import pytest

from fastgw.testing import RecordedRequest
from fastgw.testing.idp import IdentityProvider

from .door import ALGORITHMS, SCOPE, Door, key_for
from .support import assert_nothing_reached, metric, scrape

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
