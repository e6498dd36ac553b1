"""Key sets from a real identity provider over sockets: load, rotate, outages, recovery."""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets

import jwt
import pytest
import uvloop

from fastgw.auth.fetch import fetch_json
from fastgw.auth.jwks import ProviderKeys
from fastgw.config.model import Provider
from fastgw.testing.idp import IdentityProvider, SigningKey


def run(coro):
    return uvloop.run(coro)


@pytest.fixture
def idp():
    with IdentityProvider() as provider:
        yield provider


def provider_for(idp: IdentityProvider, source: str = "jwks_uri", **changes) -> Provider:
    options = {
        "name": "corp",
        "issuer": idp.issuer,
        "audiences": ("fastgw-test",),
        "algorithms": ("RS256", "ES256"),
    }
    if source == "jwks_uri":
        options["jwks_uri"] = idp.jwks_uri
    elif source == "discovery":
        options["discovery"] = True
    options.update(changes)
    return Provider(**options)


class Results(list):
    def __call__(self, name: str, result: str) -> None:
        self.append(result)


async def poll(condition, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def verify(keys: ProviderKeys, token: str) -> dict:
    header = jwt.get_unverified_header(token)
    key = keys.keyset.find(header.get("kid"), header["alg"])
    assert key is not None, f"no key for {header}"
    return jwt.decode(
        token,
        key.verifier_key,
        algorithms=[header["alg"]],
        audience="fastgw-test",
        issuer=keys.provider.issuer,
    )


# -- initial load ----------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["jwks_uri", "discovery"])
def test_initial_load(idp, source):
    async def main():
        results = Results()
        keys = ProviderKeys(provider_for(idp, source), on_refresh=results)
        assert not keys.ready
        await keys.start()
        assert keys.ready
        assert verify(keys, idp.mint(sub="alice"))["sub"] == "alice"
        assert results == ["ok"]
        await keys.stop()

    run(main())
    assert idp.jwks_fetches == 1
    assert idp.discovery_fetches == (1 if source == "discovery" else 0)


def test_initial_load_from_a_jwks_file(idp, tmp_path):
    path = tmp_path / "jwks.json"
    idp.write_jwks(path)

    async def main():
        keys = ProviderKeys(provider_for(idp, "file", jwks_file=str(path)))
        await keys.start()
        assert verify(keys, idp.mint())["iss"] == idp.issuer
        await keys.stop()

    run(main())
    assert idp.jwks_fetches == 0


def test_not_ready_until_the_identity_provider_answers(idp):
    idp.down()

    async def main():
        results = Results()
        keys = ProviderKeys(
            provider_for(idp, "discovery", refresh_interval=0.2),
            on_refresh=results,
            retry_initial=0.05,
        )
        await keys.start()
        assert not keys.ready
        assert results == ["error"]
        await asyncio.sleep(0.3)
        assert not keys.ready
        await asyncio.to_thread(idp.up)
        assert await keys.wait_ready(15)
        assert verify(keys, idp.mint())
        assert results[-1] == "ok" and set(results[:-1]) == {"error"}
        await keys.stop()

    run(main())


# -- rotation and unknown kids ------------------------------------------------------------------


def test_rotation_is_picked_up_on_an_unknown_kid(idp):
    async def main():
        keys = ProviderKeys(provider_for(idp))
        await keys.start()
        new = idp.rotate("ES256")
        token = idp.mint(sub="bob")
        assert keys.keyset.find(new.kid, "ES256") is None
        assert await keys.refresh_for_kid(new.kid)
        assert verify(keys, token)["sub"] == "bob"
        assert keys.keyset.version == 2
        await keys.stop()

    run(main())
    assert idp.jwks_fetches == 2


def test_concurrent_unknown_kid_lookups_share_one_fetch(idp):
    async def main():
        keys = ProviderKeys(provider_for(idp))
        await keys.start()
        new = idp.rotate()
        idp.fail("slow", delay=0.3)  # keeps the fetch in flight while the others arrive
        answers = await asyncio.gather(*(keys.refresh_for_kid(new.kid) for _ in range(100)))
        assert all(answers)
        await keys.stop()

    run(main())
    assert idp.jwks_fetches == 2


def test_five_hundred_random_kids_cause_at_most_two_fetches(idp):
    async def main():
        keys = ProviderKeys(provider_for(idp))
        await keys.start()

        async def forged_token():
            await asyncio.sleep(secrets.randbelow(2000) / 1000)
            return await keys.refresh_for_kid(secrets.token_urlsafe(16))

        answers = await asyncio.gather(*(forged_token() for _ in range(500)))
        assert not any(answers)
        await keys.stop()

    run(main())
    assert idp.jwks_fetches <= 2


# -- outages ------------------------------------------------------------------------------------


OUTAGES = {
    "refused": lambda idp: idp.down(),
    "500": lambda idp: idp.fail("status"),
    "garbage": lambda idp: idp.fail("garbage"),
    "no keys array": lambda idp: idp.fail("not_jwks"),
    "empty set": lambda idp: idp.fail("empty"),
    "huge body": lambda idp: idp.fail("huge"),
    "slow beyond the timeout": lambda idp: idp.fail("slow", delay=3),
    "closed without answer": lambda idp: idp.fail("close"),
}


@pytest.mark.parametrize("outage", OUTAGES.values(), ids=OUTAGES.keys())
@pytest.mark.parametrize("source", ["jwks_uri", "discovery"])
def test_an_outage_keeps_the_last_good_key_set_and_recovery_follows(idp, outage, source, caplog):
    caplog.set_level(logging.INFO, "fastgw.auth.jwks")

    async def main():
        results = Results()
        keys = ProviderKeys(
            provider_for(idp, source, refresh_interval=0.2),
            fetch=functools.partial(fetch_json, timeout=0.5),
            on_refresh=results,
            retry_initial=0.1,
        )
        await keys.start()
        good = keys.keyset
        token = idp.mint()
        await asyncio.to_thread(outage, idp)
        await poll(lambda: results.count("error") >= 3)
        assert keys.keyset is good
        assert keys.ready
        assert verify(keys, token)

        new = idp.rotate()
        await asyncio.to_thread(idp.up)
        idp.recover()
        await poll(lambda: keys.keyset.has_kid(new.kid))
        assert results[-1] == "ok"
        assert verify(keys, idp.mint(sub="after"))["sub"] == "after"
        await keys.stop()

    run(main())
    failures = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert "keeping key set version 1" in failures[0].getMessage()
    assert any("works again" in r.getMessage() for r in caplog.records)


def test_the_kid_interval_holds_during_an_outage(idp):
    async def main():
        results = Results()
        keys = ProviderKeys(provider_for(idp), on_refresh=results)
        await keys.start()
        idp.fail("status")
        answers = await asyncio.gather(
            *(keys.refresh_for_kid(secrets.token_urlsafe(8)) for _ in range(200))
        )
        assert not any(answers)
        assert not await keys.refresh_for_kid("another")
        assert results == ["ok", "error"]
        await keys.stop()

    run(main())
    assert idp.jwks_fetches == 2


def test_a_moved_jwks_is_found_again_through_discovery(idp):
    async def main():
        keys = ProviderKeys(provider_for(idp, "discovery", refresh_interval=0.2), retry_initial=0.1)
        await keys.start()
        idp.move_jwks("/realms/test/keys/v2")
        new = idp.rotate()
        await poll(lambda: keys.keyset.has_kid(new.kid))
        await keys.stop()

    run(main())
    assert idp.discovery_fetches >= 2


# -- what is refused -----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:The RSA key is 1024 bits long")
def test_weak_enc_and_mismatched_keys_are_dropped_with_a_log_line(idp, caplog):
    caplog.set_level(logging.INFO, "fastgw.auth.jwks")
    weak = SigningKey.generate("RS256", "weak-rsa", rsa_bits=1024)
    ec_key = SigningKey.generate("ES256")
    idp.publish(weak.public_jwk())
    idp.publish(ec_key.public_jwk(kid="enc-key", use="enc"))
    idp.publish(ec_key.public_jwk(kid="ec-says-rs256", alg="RS256"))
    idp.publish(ec_key.public_jwk(kid="encrypt-only", key_ops=["encrypt"]))

    async def main():
        keys = ProviderKeys(provider_for(idp, refresh_interval=0.1))
        await keys.start()
        assert [key.kid for key in keys.keyset.keys] == [idp.signing_key.kid]
        await poll(lambda: idp.jwks_fetches >= 3)  # unchanged refreshes log nothing new
        await keys.stop()
        forged = weak.sign({"iss": idp.issuer, "sub": "mallory", "exp": 9999999999})
        assert keys.keyset.find("weak-rsa", "RS256") is None
        assert not await keys.refresh_for_kid(jwt.get_unverified_header(forged)["kid"])

    run(main())
    dropped = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(dropped) == 4, dropped
    for kid in ("weak-rsa", "enc-key", "ec-says-rs256", "encrypt-only"):
        assert sum(kid in line for line in dropped) == 1


def test_a_discovery_document_for_another_issuer_is_refused(idp, caplog):
    idp.discovery_overrides = {"issuer": "http://127.0.0.1:1/realms/evil"}

    async def main():
        results = Results()
        keys = ProviderKeys(provider_for(idp, "discovery"), on_refresh=results)
        await keys.start()
        assert not keys.ready
        assert results == ["error"]
        await keys.stop()

    run(main())
    assert idp.jwks_fetches == 0
    assert any("realms/evil" in r.getMessage() for r in caplog.records)


# -- https ---------------------------------------------------------------------------------------


def test_https_is_verified_against_the_trusted_cas():
    with IdentityProvider(tls=True) as idp:

        async def main():
            system_cas = ProviderKeys(provider_for(idp, "discovery"))
            await system_cas.start()
            assert not system_cas.ready and system_cas.failing == "tls"
            await system_cas.stop()
            trusted = ProviderKeys(
                provider_for(idp, "discovery"),
                fetch=functools.partial(fetch_json, ssl_context=idp.client_ssl_context()),
            )
            await trusted.start()
            assert trusted.ready and verify(trusted, idp.mint())
            await trusted.stop()

        run(main())


def test_https_checks_the_host_name():
    with IdentityProvider(tls=True, tls_names=("localhost",)) as idp:

        async def main():
            keys = ProviderKeys(
                provider_for(idp),
                fetch=functools.partial(fetch_json, ssl_context=idp.client_ssl_context()),
            )
            await keys.start()
            assert not keys.ready and keys.failing == "tls"
            await keys.stop()

        assert idp.url.startswith("https://127.0.0.1:")
        run(main())


# -- workers and reloads ---------------------------------------------------------------------


def test_each_worker_refreshes_at_most_once_per_interval(idp):
    async def main():
        workers = [ProviderKeys(provider_for(idp, refresh_interval=0.5)) for _ in range(4)]
        await asyncio.gather(*(worker.start() for worker in workers))
        await asyncio.gather(
            *(
                worker.refresh_for_kid(secrets.token_urlsafe(8))
                for worker in workers
                for _ in range(50)
            )
        )
        await asyncio.sleep(1.2)
        await asyncio.gather(*(worker.stop() for worker in workers))

    run(main())
    # start + one kid fetch + at most 3 refreshes (0.45 s apart at the least) each
    assert idp.jwks_fetches <= 4 * 5


def test_a_reload_storm_does_not_fetch_again(idp):
    async def main():
        keys = ProviderKeys(provider_for(idp))
        await keys.start()
        for _ in range(20):
            reloaded = ProviderKeys(provider_for(idp), previous=keys)
            await keys.stop()
            await reloaded.start()
            assert reloaded.ready
            keys = reloaded
        await keys.stop()

    run(main())
    assert idp.jwks_fetches == 1
