"""The gateway's key sets against a live identity provider: rotation, made-up kids,
outages, readiness, cached verdicts that expire (SPEC sections 3, 4 "Token rules" and 6).

Each test gets its own identity provider and gateway, so fetch counts and the
30-second limit on kid-triggered fetches start from a known state.
"""

from __future__ import annotations

import secrets
import time

import pytest

from fastgw.testing import GatewayProcess
from fastgw.testing.idp import SigningKey

from .door import AUDIENCE, SCOPE, Door, auth_config, corp_identity_provider
from .forge import forge
from .support import assert_nothing_reached, concurrently, metric, scrape


@pytest.fixture
def idp():
    provider = corp_identity_provider()
    yield provider
    provider.stop()


@pytest.fixture
def gateway_for(idp, upstream, make_config, start_gateway, tmp_path):
    """Start a gateway trusting ``idp`` (provider settings as keywords)."""

    def start(**provider_changes) -> GatewayProcess:
        config = auth_config(make_config, upstream.url, idp, tmp_path, **provider_changes)
        return start_gateway(config)

    return start


@pytest.fixture
def door_for(gateway_for, upstream, raw):
    doors = []

    def open_door(**provider_changes) -> Door:
        door = Door(gateway_for(**provider_changes), upstream, raw)
        doors.append(door)
        return door

    yield open_door
    for door in doors:
        door.assert_audit_is_clean()


def wait_until(condition, timeout: float = 15.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def refreshes(door: Door, raw, result: str) -> float:
    """``fastgw_jwks_refresh_total`` of provider corp with ``result``."""
    page = scrape(door.gateway, raw)
    return metric(page, "fastgw_jwks_refresh_total", provider="corp", result=result)


# -- sources of keys ---------------------------------------------------------------------------


def test_keys_are_loaded_from_the_jwks_uri_at_start(door_for, idp):
    door = door_for()
    assert idp.jwks_fetches == 1
    door.accepted(door.send("/orders/1", idp.mint(scope=SCOPE)))
    assert idp.jwks_fetches == 1


def test_keys_are_found_through_discovery(door_for, idp):
    door = door_for(jwks_uri=None, discovery=True)
    assert idp.discovery_fetches >= 1
    door.accepted(door.send("/orders/1", idp.mint(scope=SCOPE)))


def test_keys_are_read_from_a_jwks_file(door_for, idp, tmp_path):
    path = tmp_path / "jwks.json"
    idp.write_jwks(path)
    door = door_for(jwks_uri=None, jwks_file=str(path))
    door.accepted(door.send("/orders/1", idp.mint(scope=SCOPE)))
    assert idp.jwks_fetches == 0


def test_unusable_keys_in_the_jwks_are_ignored(door_for, idp):
    weak = SigningKey.generate("RS256", kid="weak", rsa_bits=1024)
    encryption = SigningKey.generate("RS256", kid="for-encryption")
    no_verify = SigningKey.generate("RS256", kid="sign-only")
    idp.publish(weak.public_jwk())
    idp.publish(encryption.public_jwk(use="enc"))
    sign_only = no_verify.public_jwk(key_ops=["sign"])
    del sign_only["use"]
    idp.publish(sign_only)
    door = door_for()
    claims = {"iss": idp.issuer, "aud": AUDIENCE, "scope": SCOPE, "exp": int(time.time()) + 300}
    for key in (weak, encryption, no_verify):
        token = forge({"alg": "RS256", "kid": key.kid}, claims, key=key.private_key)
        door.rejected(door.send("/orders/1", token), {"unknown_kid", "alg_not_allowed"})
    door.accepted(door.send("/orders/1", idp.mint(scope=SCOPE)))


# -- rotation and made-up kids -----------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_a_rotated_key_is_picked_up_with_one_fetch(door_for, idp, alg):
    door = door_for()
    old_token = idp.mint(sub="before", scope=SCOPE)
    door.accepted(door.send("/orders/1", old_token))
    fetches = idp.jwks_fetches
    idp.rotate(alg)
    door.upstream.clear()
    door.accepted(door.send("/orders/1", idp.mint(sub="after", scope=SCOPE)))
    assert idp.jwks_fetches == fetches + 1
    door.upstream.clear()
    door.accepted(door.send("/orders/1", old_token))
    assert idp.jwks_fetches == fetches + 1


def test_a_retired_key_stops_working_after_a_refresh(door_for, idp):
    door = door_for(refresh_interval="1s")
    old = idp.signing_key
    old_token = idp.mint(scope=SCOPE)
    door.accepted(door.send("/orders/1", old_token))
    idp.rotate(retire_old=True)
    fetches = idp.jwks_fetches
    idp.wait_for_fetches(fetches + 1)
    time.sleep(0.3)  # the fetched set replaces the old one
    door.upstream.clear()
    door.rejected(door.send("/orders/1", old_token), "unknown_kid")  # its cached verdict is void
    fresh = idp.mint(scope=SCOPE, key=old)  # never verified before: no cached verdict
    door.rejected(door.send("/orders/1", fresh), "unknown_kid")


def test_a_cached_token_is_refused_once_it_expires(door_for, idp):
    door = door_for(leeway="0s")
    exp = int(time.time()) + 2
    token = idp.mint(scope=SCOPE, exp=exp)
    for _ in range(3):  # after the first, from the verified-token cache
        door.upstream.clear()
        door.accepted(door.send("/orders/1", token))
    wait_until(lambda: time.time() > exp + 0.05, timeout=5)
    door.upstream.clear()
    door.rejected(door.send("/orders/1", token), "expired")


def test_a_flood_of_unknown_kids_costs_at_most_two_fetches(door_for, idp):
    door = door_for()
    fetches = idp.jwks_fetches
    hostile = [
        idp.mint(scope=SCOPE, headers={"kid": secrets.token_urlsafe(12)}) for _ in range(500)
    ]
    for token in hostile:
        door.remember(token)

    def send_share(worker: int) -> list:
        connection = door.connect()
        return [
            door.send("/orders/1", token, connection=connection) for token in hostile[worker::5]
        ]

    responses = [r for share in concurrently(5, send_share) for r in share]
    assert len(responses) == 500
    assert {r.status for r in responses} == {401}
    assert {r.header("www-authenticate") for r in responses} == {'Bearer error="invalid_token"'}
    assert idp.jwks_fetches - fetches <= 2
    assert_nothing_reached(door.upstream)
    lines = door.audit.lines_for(r.header("x-request-id") for r in responses)
    assert len(lines) == 500
    assert {(line["event"], line["reason"]) for line in lines} == {("auth_failure", "unknown_kid")}
    door.accepted(door.send("/orders/1", idp.mint(scope=SCOPE)))


# -- outages -----------------------------------------------------------------------------------


def test_a_jwks_outage_keeps_the_last_good_keys(door_for, idp, raw):
    door = door_for(refresh_interval="1s")
    idp.down()
    wait_until(lambda: refreshes(door, raw, "error") >= 1)
    # A token never seen before, so no verdict is cached: the kept key verifies it.
    door.accepted(door.send("/orders/1", idp.mint(sub="during-outage", scope=SCOPE)))
    # A made-up kid during the outage changes nothing either.
    door.upstream.clear()
    unknown = idp.mint(scope=SCOPE, headers={"kid": "not-published"})
    door.rejected(door.send("/orders/1", unknown), "unknown_kid")
    door.accepted(door.send("/orders/1", idp.mint(sub="still", scope=SCOPE)))


@pytest.mark.parametrize("mode", ["status", "garbage", "empty"])
def test_a_misbehaving_jwks_keeps_the_last_good_keys(door_for, idp, mode):
    door = door_for(refresh_interval="1s")
    fetches = idp.jwks_fetches
    idp.fail(mode)
    idp.wait_for_fetches(fetches + 1)
    time.sleep(0.3)
    door.accepted(door.send("/orders/1", idp.mint(sub=f"during-{mode}", scope=SCOPE)))


class UnreadyGateway(GatewayProcess):
    """A gateway process that is waited on only until its admin listener answers."""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while self.admin_status("/healthz") != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the gateway did not start:\n{self.stderr_text()}")
            time.sleep(0.05)


def test_readyz_waits_for_the_keys_of_every_provider(idp, upstream, make_config, tmp_path, raw):
    idp.down()
    config = auth_config(make_config, upstream.url, idp, tmp_path)
    with UnreadyGateway(config, tmp_path / "gateway") as gateway:
        door = Door(gateway, upstream, raw)
        for _ in range(10):
            assert gateway.admin_status("/readyz") == 503
            time.sleep(0.1)
        token = idp.mint(scope=SCOPE)
        door.remember(token)
        response = door.send("/orders/1", token)
        assert response.status in (401, 503), response
        assert_nothing_reached(upstream)

        idp.up()
        wait_until(lambda: gateway.admin_status("/readyz") == 200, timeout=20)
        door.accepted(door.send("/orders/1", idp.mint(scope=SCOPE)))
        door.assert_audit_is_clean()
        assert refreshes(door, raw, "error") >= 1
        assert refreshes(door, raw, "ok") >= 1


def test_the_jwks_document_is_never_logged(door_for, idp):
    door = door_for()
    door.accepted(door.send("/orders/1", idp.mint(scope=SCOPE)))
    modulus = idp.signing_key.public_jwk()["n"]
    assert modulus not in door.gateway.stderr_text()
    assert modulus not in door.audit.text()
