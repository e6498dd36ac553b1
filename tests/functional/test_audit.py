"""The audit log (SPEC section 5): one complete JSON line per refusal, never a credential."""

from __future__ import annotations

import datetime
import re
import threading
import time

import pytest

from .door import SCOPE, AuditTrail, Door, auth_config, key_for
from .forge import flip_bit
from .support import concurrently

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
FIELDS = {"ts", "event", "reason", "request_id", "client_ip", "method", "path", "route", "status"}
OPTIONAL = {"sub", "iss", "kid", "client_cert_subject", "limit"}


def assert_complete(
    line: dict, response, *, method: str = "GET", path: str = "/orders/1", route: str = "orders"
) -> None:
    """Every field SPEC section 5 lists, with this request's values."""
    assert FIELDS <= set(line) <= FIELDS | OPTIONAL, line
    assert TIMESTAMP.fullmatch(line["ts"]), line
    logged = datetime.datetime.strptime(line["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.UTC
    )
    age = datetime.datetime.now(datetime.UTC) - logged
    assert datetime.timedelta(seconds=-1) < age < datetime.timedelta(seconds=30), line
    assert line["request_id"] == response.header("x-request-id"), (line, response)
    assert line["client_ip"] == "127.0.0.1", line
    assert line["method"] == method, line
    assert line["path"] == path, line
    assert line["route"] == route, line
    assert line["status"] == response.status, line


def test_a_missing_token(door):
    response = door.send("/orders/1", method="DELETE")
    line = door.rejected(response, "missing_token")
    assert_complete(line, response, method="DELETE")
    assert not {"sub", "iss", "kid"} & set(line), line


def test_an_expired_token_names_who_and_which_key(door, idp):
    response = door.send("/orders/1", idp.mint(sub="alice", scope=SCOPE, ttl=-60))
    line = door.rejected(response, "expired")
    assert_complete(line, response)
    assert (line["sub"], line["iss"], line["kid"]) == ("alice", idp.issuer, idp.signing_key.kid)


def test_a_forbidden_request_names_who_and_which_key(door, idp):
    key = key_for(idp, "ES256")
    response = door.send("/orders/1", idp.mint(sub="bob", scope="openid", key=key))
    line = door.rejected(response, "insufficient_scope", status=403, event="forbidden")
    assert_complete(line, response)
    assert (line["sub"], line["iss"], line["kid"]) == ("bob", idp.issuer, key.kid)


def test_a_bad_signature_never_names_the_claimed_subject(door, idp):
    """The claims of a token whose signature fails are the caller's words: the
    issuer and kid it claimed say where to look, a ``sub`` would frame someone."""
    header, claims, signature = idp.mint(sub="victim", scope=SCOPE).split(".")
    response = door.send("/orders/1", f"{header}.{claims}.{flip_bit(signature, 99)}")
    line = door.rejected(response, "bad_signature")
    assert_complete(line, response)
    assert line.get("sub") is None, line
    assert (line["iss"], line["kid"]) == (idp.issuer, idp.signing_key.kid)


def test_the_path_is_the_normalised_path_without_the_query(door):
    response = door.send("/orders//7/./../8?debug=1&password=hunter2-query")
    line = door.rejected(response, "missing_token")
    assert_complete(line, response, path="/orders/8")
    assert "hunter2-query" not in door.audit.text()


def test_the_request_id_of_the_caller_is_kept(door):
    response = door.send("/orders/1", headers=[("X-Request-Id", "trace-4a1f.9")])
    assert response.header("x-request-id") == "trace-4a1f.9"
    line = door.rejected(response, "missing_token")
    assert_complete(line, response)


def test_no_header_value_is_written(door):
    values = {
        "Authorization": "Basic c2VjcmV0LXVzZXI6c2VjcmV0LXBhc3M=",
        "Cookie": "session=cookie-value-7f3a9",
        "X-Api-Key": "api-key-value-51c2e",
        "User-Agent": "agent-value-0d4b1",
        "Referer": "https://referer-value-88e1.example/",
        "X-Forwarded-For": "203.0.113.77",
    }
    response = door.send("/orders/1", headers=list(values.items()))
    line = door.rejected(response, "missing_token")
    assert_complete(line, response)
    text = door.audit.text()
    for value in values.values():
        assert value not in text
    assert "c2VjcmV0LXBhc3M" not in text


@pytest.mark.parametrize("kid", ["k" * 5000, "line\nbreak", 'quote"and\\back', "\u2028sep"])
def test_a_hostile_kid_stays_one_bounded_line(door, idp, kid):
    response = door.send("/orders/1", idp.mint(scope=SCOPE, headers={"kid": kid}))
    line = door.rejected(response, "unknown_kid")
    assert_complete(line, response)
    assert len(line.get("kid", "")) <= 300, len(line["kid"])
    for raw_line in door.audit.text().rstrip("\n").split("\n"):
        assert raw_line.startswith("{") and raw_line.endswith("}"), raw_line


def test_a_line_reaches_the_file_within_a_second(door):
    response = door.send("/orders/1")
    started = time.monotonic()
    door.audit.line_for(response.header("x-request-id"), timeout=1.0)
    assert time.monotonic() - started < 1.0


def test_allowed_requests_are_not_audited(door, idp):
    response = door.send("/orders/1", idp.mint(scope=SCOPE))
    door.accepted(response)
    time.sleep(0.5)
    ids = {line["request_id"] for line in door.audit.lines()}
    assert response.header("x-request-id") not in ids


# -- a burst -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_burst_of_rejections_loses_no_line(
    idp, upstream, make_config, start_gateway, tmp_path, raw
):
    gateway = start_gateway(auth_config(make_config, upstream.url, idp, tmp_path))
    audit = AuditTrail(tmp_path / "audit.log")
    door = Door(gateway, upstream, raw)
    token = idp.mint(sub="steady", scope=SCOPE)
    door.remember(token)
    connections, per_connection = 20, 500
    bursting = threading.Event()
    bursting.set()
    allowed: list[int] = []

    def steady_traffic() -> None:
        connection = door.connect()
        while bursting.is_set():
            allowed.append(door.send("/orders/ok", token, connection=connection).status)
            time.sleep(0.005)

    def burst(worker: int) -> list[str]:
        connection = door.connect()
        ids = []
        for _ in range(per_connection):
            response = door.send("/orders/burst", connection=connection)
            assert response.status == 401, response
            ids.append(response.header("x-request-id"))
        return ids

    steady = threading.Thread(target=steady_traffic)
    steady.start()
    try:
        request_ids = [rid for ids in concurrently(connections, burst) for rid in ids]
    finally:
        bursting.clear()
        steady.join(timeout=30)

    rejections = connections * per_connection
    assert len(set(request_ids)) == rejections
    assert allowed and set(allowed) == {200}, allowed[:20]
    assert len(upstream.requests) == len(allowed)
    assert {r.path for r in upstream.requests} == {"/orders/ok"}
    lines = audit.lines_for(request_ids, timeout=10)
    assert len(lines) == rejections
    assert len(audit.lines()) == rejections
    assert {(line["reason"], line["status"]) for line in lines} == {("missing_token", 401)}
    door.assert_audit_is_clean()
