"""Client certificates at the door (SPEC sections 3-5; docs/configuration.md), over real sockets.

Two gateways share one test CA and the recording upstream:

- the module's ``gateway``: a listener with ``client_auth: optional``, a JWT
  provider, identities from the SAN URI with ``auth.client_certs.scopes``,
  and routes for each way a certificate is used (``auth: mtls``,
  ``jwt_or_mtls``, ``RequireScopes``, ``ForwardClientCert``, a rate limit
  keyed by ``mtls.subject``, certificate-bound tokens);
- ``strict``: ``client_auth: require``, where every bad certificate fails
  the handshake and leaves an ``mtls_failure`` audit line.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import signal
import ssl
import time
import urllib.parse
from dataclasses import dataclass

import pytest

from fastgw.testing import GatewayProcess
from fastgw.testing.certs import IssuedCert, TestPKI
from fastgw.testing.idp import IdentityProvider

from .door import AuditTrail
from .support import assert_error, assert_nothing_reached, fetch, wait_until
from .tls_client import TLSConnection, client_context, get, refusal, tls_listener

AUDIENCE = "orders-api"
SPIFFE = "spiffe://example.org/ns/prod/sa"
ORDERS_URI = f"{SPIFFE}/orders"
BILLING_URI = f"{SPIFFE}/billing"
RATE = 3
CHALLENGE_INVALID = 'Bearer error="invalid_token"'

SPOOFED = [
    ("X-Forwarded-Client-Cert", "Hash=0000;URI=spiffe://example.org/ns/prod/sa/admin"),
    ("x-forwarded-client-cert", 'By=spiffe://evil;Subject="CN=admin"'),
    ("Client-Cert", ":MIIBspoofed:"),
    ("Client-Cert-Chain", ":MIIBspoofed:, :MIIBalso:"),
]
"""Certificate headers a caller forges (Envoy's, and RFC 9440's): none may reach an upstream."""


@dataclass(frozen=True)
class Certificates:
    server: IssuedCert
    orders: IssuedCert  # scopes read_orders and read_catalog
    billing: IssuedCert  # scope read_catalog only
    nameless: IssuedCert  # no SAN URI: no subject under san_uri
    limited_a: IssuedCert
    limited_b: IssuedCert
    expired: IssuedCert
    not_yet_valid: IssuedCert
    other_ca: IssuedCert  # subject and names of ``orders``, issued by another CA
    server_auth_only: IssuedCert


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> TestPKI:
    return TestPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def certs(pki) -> Certificates:
    orders = pki.client(
        "orders", uri=ORDERS_URI, dns="orders.internal.example.test", cn="Orders Service"
    )
    return Certificates(
        server=pki.server("gateway.test"),
        orders=orders,
        billing=pki.client("billing", uri=BILLING_URI, dns="billing.internal.example.test"),
        nameless=pki.client("nameless", dns="nameless.internal.example.test"),
        limited_a=pki.client("limited-a", uri="spiffe://example.org/ns/test/sa/limited-a"),
        limited_b=pki.client("limited-b", uri="spiffe://example.org/ns/test/sa/limited-b"),
        expired=pki.expired_client(uri=f"{SPIFFE}/expired"),
        not_yet_valid=pki.not_yet_valid_client(uri=f"{SPIFFE}/future"),
        other_ca=pki.impostor(orders),
        server_auth_only=pki.server_auth_only_client(uri=f"{SPIFFE}/server-auth-only"),
    )


@pytest.fixture(scope="module")
def idp():
    with IdentityProvider(audience=AUDIENCE) as provider:
        yield provider


def provider(idp: IdentityProvider) -> dict:
    return {
        "name": "corp",
        "issuer": idp.issuer,
        "jwks_uri": idp.jwks_uri,
        "audiences": [AUDIENCE],
        "algorithms": ["RS256"],
    }


def echo_route(route_id: str, auth: str, *filters: str) -> dict:
    return {
        "id": route_id,
        "uri": "lb://echo",
        "predicates": [f"Path=/{route_id}/**"],
        "auth": auth,
        "filters": list(filters),
    }


@pytest.fixture(scope="module")
def gateway_config(make_config, shared_upstream, pki, certs, idp, tmp_path_factory):
    listener = tls_listener(certs.server, client_auth="optional", client_ca=str(pki.ca_file))
    return make_config(
        shared_upstream.url,
        listeners=[listener],
        audit={"path": str(tmp_path_factory.mktemp("audit") / "audit.log")},
        auth={
            "jwt": {"providers": [provider(idp)]},
            "client_certs": {
                "subject_from": "san_uri",
                "scopes": {ORDERS_URI: ["read_orders"], f"{SPIFFE}/*": "read_catalog"},
            },
        },
        rate_limits={"per-cert": {"rate": f"{RATE}/min", "key": "mtls.subject"}},
        routes=[
            echo_route("mtls", "mtls"),
            echo_route("orders", "mtls", "RequireScopes=read_orders"),
            echo_route("catalog", "mtls", "RequireScopes=SCOPE_read_catalog"),
            echo_route("either", "jwt_or_mtls", "RequireScopes=read_orders"),
            echo_route("xfcc", "mtls", "ForwardClientCert="),
            echo_route("xfcc-cert", "mtls", "ForwardClientCert=Cert, URI"),
            echo_route("open-xfcc", "none", "ForwardClientCert="),
            echo_route("open", "none"),
            echo_route("limited", "mtls", "RateLimit=per-cert"),
            echo_route("bound", "jwt"),
        ],
    )


@pytest.fixture
def audit(gateway) -> AuditTrail:
    return AuditTrail(gateway.config["audit"]["path"])


def request(gateway, pki: TestPKI, cert: IssuedCert | None, path: str, headers=()):
    """One GET on a new connection, presenting ``cert`` (None: no certificate)."""
    with TLSConnection(gateway.port, client_context(pki.ca_file, cert)) as connection:
        return get(connection, path, headers)


def thumbprint(cert: IssuedCert) -> str:
    """RFC 8705 ``x5t#S256``: base64url SHA-256 of the DER certificate, unpadded."""
    digest = hashlib.sha256(cert.der).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def refused_at_door(response, upstream, audit, *, status, event, reason) -> dict:
    """The request got ``status`` and nothing else happened; its audit line (checked)."""
    body = assert_error(response, status)
    assert_nothing_reached(upstream)
    line = audit.line_for(body["request_id"])
    assert (line["event"], line["reason"], line["status"]) == (event, reason, status), line
    return line


# -- client_auth: require -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict(make_config, shared_upstream, pki, certs, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("strict")
    listener = tls_listener(certs.server, client_auth="require", client_ca=str(pki.ca_file))
    config = make_config(
        shared_upstream.url,
        listeners=[listener],
        audit={"path": str(workdir / "audit.log")},
        routes=[echo_route("echo", "mtls")],
    )
    with GatewayProcess(config, workdir) as gateway:
        yield gateway


def new_audit_lines(trail: AuditTrail, before: int, timeout: float = 3.0) -> list[dict]:
    """The lines written after the first ``before``, once there is one (and a moment more)."""
    assert wait_until(lambda: len(trail.lines()) > before, timeout), "no audit line came"
    time.sleep(0.2)  # a second line for the same failure would be a bug too
    return trail.lines()[before:]


VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("presented", "reason"),
    [
        (None, "no_client_cert"),
        ("expired", "bad_client_cert"),
        ("not_yet_valid", "bad_client_cert"),
        ("other_ca", "bad_client_cert"),
        ("server_auth_only", "bad_client_cert"),
    ],
)
def test_require_refuses_the_handshake_and_audits_it(
    strict, upstream, pki, certs, presented, reason, version
):
    trail = AuditTrail(strict.config["audit"]["path"])
    before = len(trail.lines())
    cert = getattr(certs, presented) if presented else None
    context = client_context(pki.ca_file, cert, maximum=VERSIONS[version])

    refusal(strict.port, context)

    assert_nothing_reached(upstream)
    [line] = new_audit_lines(trail, before)
    assert line["event"] == "mtls_failure", line
    assert line["reason"] == reason, line
    assert line["client_ip"] == "127.0.0.1", line
    assert "T" in line["ts"] and line["ts"].endswith("Z"), line


@pytest.mark.parametrize("version", VERSIONS)
def test_require_accepts_a_good_certificate(strict, upstream, pki, certs, version):
    context = client_context(pki.ca_file, certs.orders, maximum=VERSIONS[version])
    with TLSConnection(strict.port, context) as connection:
        first = get(connection, "/echo/one")
        second = get(connection, "/echo/two")
    assert (first.status, second.status) == (200, 200), (first, second)
    received = upstream.wait_for_requests(2)
    assert [r.header_values("x-auth-subject") for r in received] == [[ORDERS_URI]] * 2


def test_require_with_curl(strict, upstream, pki, certs):
    url = f"https://127.0.0.1:{strict.port}/echo/curl"
    ca = ("--cacert", str(pki.ca_file))
    good = fetch(url, *ca, "--cert", str(certs.orders.chain), "--key", str(certs.orders.key))
    assert good.status == 200, good
    assert upstream.wait_for_requests(1)[0].header("x-auth-subject") == ORDERS_URI
    upstream.clear()
    for cert in (None, certs.expired, certs.other_ca):
        options = ("--cert", str(cert.chain), "--key", str(cert.key)) if cert else ()
        refused = fetch(url, *ca, *options)
        # 35: the handshake failed; 52 and 56: with TLS 1.3 curl's handshake is over
        # before the gateway refuses the certificate, and the connection ends instead.
        assert refused.exit_code in (35, 52, 56), refused
        assert refused.status == 0, refused
    assert_nothing_reached(upstream)


# -- identity from the certificate --------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject_from", "expected"),
    [
        ("san_uri", f"{SPIFFE}/mapped"),
        ("san_dns", "mapped.internal.example.test"),  # lower-cased
        ("cn", "Mapped Service"),
    ],
)
def test_subject_comes_from_the_configured_name(
    start_gateway, make_config, upstream, pki, certs, subject_from, expected
):
    mapped = pki.client(
        f"mapped-{subject_from}",
        uri=[f"{SPIFFE}/mapped", f"{SPIFFE}/second"],
        dns=["Mapped.Internal.Example.Test", "second.internal.example.test"],
        cn="Mapped Service",
    )
    listener = tls_listener(certs.server, client_auth="optional", client_ca=str(pki.ca_file))
    gateway = start_gateway(
        make_config(
            upstream.url,
            listeners=[listener],
            auth={"client_certs": {"subject_from": subject_from}},
            routes=[echo_route("mtls", "mtls")],
        )
    )
    spoofed = [("X-Auth-Subject", "admin"), ("X-Auth-Scopes", "everything")]
    response = request(gateway, pki, mapped, "/mtls/who", spoofed)
    assert response.status == 200, response
    [received] = upstream.wait_for_requests(1)
    assert received.header_values("x-auth-subject") == [expected]
    assert received.header_values("x-auth-scopes") == []


def test_mtls_route_accepts_a_verified_certificate(gateway, upstream, pki, certs):
    response = request(gateway, pki, certs.orders, "/mtls/x")
    assert response.status == 200, response
    [received] = upstream.wait_for_requests(1)
    assert received.header_values("x-auth-subject") == [ORDERS_URI]
    assert received.header_values("x-forwarded-proto") == ["https"]
    assert not received.has_header("authorization")


def test_mtls_route_without_a_certificate_is_401(gateway, upstream, audit, pki):
    response = request(gateway, pki, None, "/mtls/x")
    line = refused_at_door(
        response, upstream, audit, status=401, event="mtls_failure", reason="no_client_cert"
    )
    assert line["route"] == "mtls", line
    assert line["path"] == "/mtls/x", line


def test_mtls_route_ignores_a_bearer_token(gateway, upstream, audit, pki, idp):
    token = idp.mint(sub="alice", scope="read_orders")
    response = request(gateway, pki, None, "/mtls/x", [("Authorization", f"Bearer {token}")])
    refused_at_door(
        response, upstream, audit, status=401, event="mtls_failure", reason="no_client_cert"
    )
    assert token not in audit.text()


def test_certificate_without_the_configured_name_has_no_subject(
    gateway, upstream, audit, pki, certs
):
    response = request(gateway, pki, certs.nameless, "/mtls/x")
    line = refused_at_door(
        response, upstream, audit, status=401, event="mtls_failure", reason="bad_client_cert"
    )
    assert "nameless" in line.get("client_cert_subject", ""), line


@pytest.mark.parametrize("presented", ["expired", "other_ca", "server_auth_only"])
def test_optional_still_refuses_a_bad_certificate(gateway, upstream, audit, pki, certs, presented):
    before = len(audit.lines())
    refusal(gateway.port, client_context(pki.ca_file, getattr(certs, presented)), "/open/x")
    assert_nothing_reached(upstream)
    [line] = new_audit_lines(audit, before)
    assert (line["event"], line["reason"]) == ("mtls_failure", "bad_client_cert"), line


def test_optional_serves_auth_none_routes_without_a_certificate(gateway, upstream, pki):
    response = request(gateway, pki, None, "/open/x")
    assert response.status == 200, response
    [received] = upstream.wait_for_requests(1)
    assert not received.has_header("x-auth-subject")


# -- scopes for certificates --------------------------------------------------------------------


def test_require_scopes_is_met_by_the_certificate_scopes(gateway, upstream, pki, certs):
    response = request(gateway, pki, certs.orders, "/orders/1")
    assert response.status == 200, response
    [received] = upstream.wait_for_requests(1)
    assert received.header("x-auth-scopes") == "read_catalog read_orders"


def test_require_scopes_refuses_a_certificate_without_the_scope(
    gateway, upstream, audit, pki, certs
):
    response = request(gateway, pki, certs.billing, "/orders/1")
    line = refused_at_door(
        response, upstream, audit, status=403, event="forbidden", reason="insufficient_scope"
    )
    assert line["client_cert_subject"] == BILLING_URI, line


def test_scope_pattern_and_scope_prefix(gateway, upstream, pki, certs):
    # SPIFFE/* grants read_catalog to billing; RequireScopes says SCOPE_read_catalog.
    response = request(gateway, pki, certs.billing, "/catalog/1")
    assert response.status == 200, response
    assert upstream.wait_for_requests(1)[0].header("x-auth-scopes") == "read_catalog"


# -- jwt_or_mtls ----------------------------------------------------------------------------------


def test_jwt_or_mtls_takes_a_token_without_a_certificate(gateway, upstream, pki, idp):
    token = idp.mint(sub="alice", scope="read_orders")
    response = request(gateway, pki, None, "/either/1", [("Authorization", f"Bearer {token}")])
    assert response.status == 200, response
    assert upstream.wait_for_requests(1)[0].header_values("x-auth-subject") == ["alice"]


def test_jwt_or_mtls_takes_a_certificate_without_a_token(gateway, upstream, pki, certs):
    response = request(gateway, pki, certs.orders, "/either/1")
    assert response.status == 200, response
    assert upstream.wait_for_requests(1)[0].header_values("x-auth-subject") == [ORDERS_URI]


def test_jwt_or_mtls_without_either_is_401(gateway, upstream, audit, pki):
    response = request(gateway, pki, None, "/either/1")
    assert response.header_values("www-authenticate") == ["Bearer"], response
    refused_at_door(
        response, upstream, audit, status=401, event="auth_failure", reason="missing_token"
    )


def test_jwt_or_mtls_scopes_follow_the_credential(gateway, upstream, audit, pki, certs, idp):
    # A token without the scope is judged on its own, also next to a good certificate.
    token = idp.mint(sub="alice", scope="read_catalog")
    headers = [("Authorization", f"Bearer {token}")]
    response = request(gateway, pki, certs.orders, "/either/1", headers)
    refused_at_door(
        response, upstream, audit, status=403, event="forbidden", reason="insufficient_scope"
    )


# -- certificate headers from callers, and ForwardClientCert ------------------------------------


def xfcc_pairs(value: str) -> list[tuple[str, str]]:
    """Envoy's XFCC element as (key, value) pairs; the values here hold no ';'."""
    return [tuple(pair.split("=", 1)) for pair in value.split(";")]


@pytest.mark.parametrize("path", ["/open/x", "/open-xfcc/x", "/mtls/x", "/xfcc/x"])
@pytest.mark.parametrize("with_cert", [True, False], ids=["with-cert", "without-cert"])
def test_caller_certificate_headers_never_reach_the_upstream(
    gateway, upstream, pki, certs, path, with_cert
):
    cert = certs.orders if with_cert else None
    response = request(gateway, pki, cert, path, SPOOFED)
    if not with_cert and path.startswith(("/mtls", "/xfcc")):
        assert response.status == 401, response
        assert_nothing_reached(upstream)
        return
    assert response.status == 200, response
    [received] = upstream.wait_for_requests(1)
    assert not received.has_header("client-cert"), received.headers
    assert not received.has_header("client-cert-chain"), received.headers
    forwarded = received.header_values("x-forwarded-client-cert")
    if with_cert and "xfcc" in path:
        [value] = forwarded  # the gateway's own, alone
        assert dict(xfcc_pairs(value))["Hash"] == hashlib.sha256(certs.orders.der).hexdigest()
    else:
        assert forwarded == [], received.headers
    for _, spoofed in SPOOFED:
        assert all(spoofed not in value for _, value in received.headers), received.headers


def test_forward_client_cert_describes_the_verified_certificate(gateway, upstream, pki, certs):
    response = request(gateway, pki, certs.orders, "/xfcc/x")
    assert response.status == 200, response
    [received] = upstream.wait_for_requests(1)
    [value] = received.header_values("x-forwarded-client-cert")
    subject = certs.orders.certificate.subject.rfc4514_string()
    assert xfcc_pairs(value) == [
        ("Hash", hashlib.sha256(certs.orders.der).hexdigest()),
        ("Subject", f'"{subject}"'),
        ("URI", ORDERS_URI),
        ("DNS", "orders.internal.example.test"),
    ]


def test_forward_client_cert_with_the_certificate_itself(gateway, upstream, pki, certs):
    response = request(gateway, pki, certs.billing, "/xfcc-cert/x")
    assert response.status == 200, response
    [received] = upstream.wait_for_requests(1)
    [value] = received.header_values("x-forwarded-client-cert")
    pairs = xfcc_pairs(value)
    assert [key for key, _ in pairs] == ["Hash", "Cert", "URI"], value
    fields = dict(pairs)
    assert fields["Hash"] == hashlib.sha256(certs.billing.der).hexdigest()
    assert fields["URI"] == BILLING_URI
    quoted = fields["Cert"]
    assert quoted.startswith('"') and quoted.endswith('"'), quoted
    pem = urllib.parse.unquote(quoted[1:-1]).encode()
    assert pem == certs.billing.pem


# -- rate limit keyed by the certificate's subject ----------------------------------------------


def test_each_certificate_subject_has_its_own_quota(gateway, upstream, audit, pki, certs):
    context_a = client_context(pki.ca_file, certs.limited_a)
    with TLSConnection(gateway.port, context_a) as connection:
        statuses = [get(connection, "/limited/a").status for _ in range(RATE - 1)]
    with TLSConnection(gateway.port, context_a) as connection:  # the key is not the connection
        statuses.append(get(connection, "/limited/a").status)
        limited = get(connection, "/limited/a")
    assert statuses == [200] * RATE
    assert limited.status == 429, limited
    assert limited.header("ratelimit-limit") == str(RATE), limited
    assert int(limited.header("retry-after")) >= 1, limited
    body = assert_error(limited, 429)
    line = audit.line_for(body["request_id"])
    assert (line["event"], line["reason"], line["limit"]) == (
        "rate_limited",
        "rate_limited",
        "per-cert",
    ), line

    response = request(gateway, pki, certs.limited_b, "/limited/b")
    assert response.status == 200, response
    assert response.header("ratelimit-remaining") == str(RATE - 1), response
    received = upstream.wait_for_requests(RATE + 1)
    assert [r.target for r in received] == ["/limited/a"] * RATE + ["/limited/b"]


# -- certificate-bound tokens (RFC 8705) --------------------------------------------------------


@pytest.fixture(scope="module")
def bound_token(idp, certs) -> str:
    return idp.mint(sub="alice", scope="read_orders", cnf={"x5t#S256": thumbprint(certs.orders)})


def test_bound_token_with_its_certificate_is_accepted(gateway, upstream, pki, certs, bound_token):
    headers = [("Authorization", f"Bearer {bound_token}")]
    for path in ("/bound/1", "/either/1"):
        response = request(gateway, pki, certs.orders, path, headers)
        assert response.status == 200, (path, response)
    received = upstream.wait_for_requests(2)
    assert [r.header_values("x-auth-subject") for r in received] == [["alice"]] * 2


@pytest.mark.parametrize("path", ["/bound/1", "/either/1"])
@pytest.mark.parametrize("presented", ["billing", None], ids=["other-cert", "no-cert"])
def test_bound_token_without_its_certificate_is_refused(
    gateway, upstream, audit, pki, certs, bound_token, presented, path
):
    cert = getattr(certs, presented) if presented else None
    response = request(gateway, pki, cert, path, [("Authorization", f"Bearer {bound_token}")])
    assert response.header_values("www-authenticate") == [CHALLENGE_INVALID], response
    line = refused_at_door(
        response, upstream, audit, status=401, event="auth_failure", reason="cert_binding_mismatch"
    )
    assert line["sub"] == "alice", line
    assert bound_token not in audit.text()


def test_token_bound_another_way_fails_closed(gateway, upstream, audit, pki, certs, idp):
    token = idp.mint(sub="alice", cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"})
    response = request(
        gateway, pki, certs.orders, "/bound/1", [("Authorization", f"Bearer {token}")]
    )
    refused_at_door(
        response, upstream, audit, status=401, event="auth_failure", reason="cert_binding_mismatch"
    )


# -- sessions across a reload of the client CA --------------------------------------------------


def test_a_session_is_not_resumed_after_the_client_ca_changes(
    start_gateway, make_config, upstream, pki, certs, tmp_path
):
    # A resumed session carries the client identity verified at its first
    # handshake: once the trust changes, only a full handshake may admit anyone.
    client_ca = tmp_path / "clients-ca.pem"
    shutil.copyfile(pki.ca_file, client_ca)
    listener = tls_listener(certs.server, client_auth="require", client_ca=str(client_ca))
    gateway = start_gateway(
        make_config(upstream.url, listeners=[listener], routes=[echo_route("mtls", "mtls")])
    )
    context = client_context(pki.ca_file, certs.orders)

    def connect(session=None) -> TLSConnection:
        return TLSConnection(gateway.port, context, session=session)

    with connect() as first:
        assert get(first, "/mtls/first").status == 200
        session = first.sock.session  # TLS 1.3 tickets come after the handshake
    with connect(session) as resumed:
        assert resumed.sock.session_reused, "sessions are not resumed at all"
        assert get(resumed, "/mtls/resumed").status == 200
    subjects = [r.header("x-auth-subject") for r in upstream.wait_for_requests(2)]
    assert subjects == [ORDERS_URI, ORDERS_URI]  # a resumed session keeps its identity

    shutil.copyfile(pki.other_ca().ca_file, client_ca)
    gateway.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "reloaded" in gateway.stderr_text()), gateway.stderr_text()

    upstream.clear()
    try:
        with connect(session) as after:
            assert not after.sock.session_reused, "a session from the old trust was resumed"
            response = get(after, "/mtls/after")
    except (ssl.SSLError, ConnectionError):
        pass  # refused: the certificate no longer chains to client_ca
    else:
        raise AssertionError(f"a certificate of the old CA was admitted: {response}")
    assert_nothing_reached(upstream)
