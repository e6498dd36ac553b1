"""ProviderKeys scheduling and limits with a scripted fetch, and the fetch client on raw sockets."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import secrets

import pytest
import uvloop

from fastgw.auth.fetch import FetchError, fetch, fetch_json
from fastgw.auth.jwks import ProviderKeys
from fastgw.config.model import Provider
from fastgw.testing.idp import SigningKey, jwks

ISSUER = "https://idp.example.test/realms/corp"
JWKS_URI = "https://idp.example.test/realms/corp/certs"
DISCOVERY_URL = ISSUER + "/.well-known/openid-configuration"

KEY_A = SigningKey.generate("ES256", "key-a")
KEY_B = SigningKey.generate("ES256", "key-b")
WEAK = SigningKey.generate("RS256", "weak", rsa_bits=1024)


def run(coro):
    return uvloop.run(coro)


def provider(**changes) -> Provider:
    options = {"name": "corp", "issuer": ISSUER, "jwks_uri": JWKS_URI,
               "algorithms": ("ES256",), "refresh_interval": 300.0}
    options.update(changes)
    return Provider(**options)


class ScriptedFetch:
    """A fetch answering from ``documents`` (a value, or an exception to raise)."""

    def __init__(self, documents: dict | None = None, delay: float = 0.0) -> None:
        self.documents = {JWKS_URI: jwks(KEY_A)} if documents is None else documents
        self.delay = delay
        self.calls: list[str] = []

    async def __call__(self, url: str):
        self.calls.append(url)
        if self.delay:
            await asyncio.sleep(self.delay)
        answer = self.documents.get(url, FetchError("status", f"{url} answered HTTP 404"))
        if isinstance(answer, Exception):
            raise answer
        return copy.deepcopy(answer)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Results(list):
    def __call__(self, name: str, result: str) -> None:
        self.append((name, result))


async def poll(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


# -- start, ready, static providers ----------------------------------------------------------


def test_not_ready_until_a_key_set_is_loaded():
    async def main():
        results = Results()
        keys = ProviderKeys(provider(), fetch=ScriptedFetch(), on_refresh=results)
        assert not keys.ready and keys.keyset is None
        await keys.start()
        assert keys.ready
        assert keys.keyset.has_kid("key-a") and keys.keyset.version == 1
        assert results == [("corp", "ok")]
        assert await keys.wait_ready(0)
        await keys.stop()

    run(main())


def test_start_does_not_raise_when_the_first_load_fails():
    async def main():
        fetch = ScriptedFetch({JWKS_URI: FetchError("connect", "refused")})
        results = Results()
        keys = ProviderKeys(provider(), fetch=fetch, on_refresh=results)
        await keys.start()
        assert not keys.ready
        assert results == [("corp", "error")]
        assert keys.failing == "connect"
        assert not await keys.wait_ready(0.01)
        await keys.stop()

    run(main())


def test_secret_provider_is_ready_at_once_and_never_fetches():
    async def main():
        fetch = ScriptedFetch()
        keys = ProviderKeys(provider(jwks_uri=None, secret="s" * 32, algorithms=("HS256",)),
                            fetch=fetch)
        assert keys.ready
        assert keys.keyset.find(None, "HS256") is not None
        await keys.start()
        assert await keys.refresh_for_kid("anything") is False
        assert await keys.refresh_for_kid(None) is True
        await keys.stop()
        assert fetch.calls == []

    run(main())


# -- unknown kids ------------------------------------------------------------------------------


def test_known_kid_never_fetches():
    async def main():
        fetch = ScriptedFetch()
        keys = ProviderKeys(provider(), fetch=fetch)
        await keys.start()
        assert await keys.refresh_for_kid("key-a")
        assert await keys.refresh_for_kid(None)
        assert len(fetch.calls) == 1
        await keys.stop()

    run(main())


def test_unknown_kid_fetches_at_most_once_per_interval():
    async def main():
        clock = Clock()
        fetch = ScriptedFetch()
        keys = ProviderKeys(provider(), fetch=fetch, clock=clock, min_kid_interval=30)
        await keys.start()
        fetch.documents[JWKS_URI] = jwks(KEY_A, KEY_B)
        assert await keys.refresh_for_kid("key-b")
        assert len(fetch.calls) == 2
        clock.now += 29
        assert not await keys.refresh_for_kid("key-c")
        assert len(fetch.calls) == 2
        clock.now += 2
        assert not await keys.refresh_for_kid("key-d")
        assert len(fetch.calls) == 3
        await keys.stop()

    run(main())


def test_kid_shown_missing_does_not_fetch_again_within_its_ttl():
    async def main():
        clock = Clock()
        fetch = ScriptedFetch()
        keys = ProviderKeys(provider(), fetch=fetch, clock=clock, min_kid_interval=30,
                            unknown_kid_ttl=120)
        await keys.start()
        assert not await keys.refresh_for_kid("bogus")
        assert len(fetch.calls) == 2
        clock.now += 60
        assert not await keys.refresh_for_kid("bogus")
        assert len(fetch.calls) == 2, "a kid just shown missing must not open the interval"
        assert not await keys.refresh_for_kid("other")
        assert len(fetch.calls) == 3
        clock.now += 121
        assert not await keys.refresh_for_kid("bogus")
        assert len(fetch.calls) == 4
        await keys.stop()

    run(main())


def test_concurrent_callers_share_one_attempt():
    async def main():
        fetch = ScriptedFetch()
        keys = ProviderKeys(provider(), fetch=fetch)
        await keys.start()
        fetch.documents[JWKS_URI] = jwks(KEY_A, KEY_B)
        fetch.delay = 0.05
        answers = await asyncio.gather(*(keys.refresh_for_kid("key-b") for _ in range(50)))
        assert all(answers)
        assert len(fetch.calls) == 2
        await keys.stop()

    run(main())


def test_a_flood_of_random_kids_costs_one_fetch():
    async def main():
        fetch = ScriptedFetch(delay=0.01)
        keys = ProviderKeys(provider(), fetch=fetch)
        await keys.start()

        async def token_with_random_kid():
            await asyncio.sleep(secrets.randbelow(100) / 1000)
            return await keys.refresh_for_kid(secrets.token_urlsafe(12))

        answers = await asyncio.gather(*(token_with_random_kid() for _ in range(500)))
        assert not any(answers)
        assert len(fetch.calls) <= 2
        await keys.stop()

    run(main())


def test_a_caller_that_gives_up_does_not_cancel_the_shared_attempt():
    async def main():
        fetch = ScriptedFetch()
        keys = ProviderKeys(provider(), fetch=fetch)
        await keys.start()
        fetch.documents[JWKS_URI] = jwks(KEY_A, KEY_B)
        fetch.delay = 0.2
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(keys.refresh_for_kid("key-b"), 0.01)
        assert await keys.refresh_for_kid("key-b")
        assert len(fetch.calls) == 2
        await keys.stop()

    run(main())


def test_stop_releases_waiting_callers():
    async def main():
        fetch = ScriptedFetch()
        keys = ProviderKeys(provider(), fetch=fetch)
        await keys.start()
        fetch.delay = 5
        waiting = asyncio.ensure_future(keys.refresh_for_kid("key-b"))
        await asyncio.sleep(0.05)
        await keys.stop()
        assert await asyncio.wait_for(waiting, 1) is False
        assert await keys.refresh_for_kid("key-c") is False
        assert len(fetch.calls) == 2

    run(main())


def test_kid_none_is_known_when_the_set_has_keys():
    async def main():
        fetch = ScriptedFetch({JWKS_URI: FetchError("connect", "refused")})
        keys = ProviderKeys(provider(), fetch=fetch, min_kid_interval=0)
        await keys.start()
        assert not await keys.refresh_for_kid(None)
        fetch.documents[JWKS_URI] = jwks(KEY_A)
        keys._unknown_kids.clear()
        assert await keys.refresh_for_kid(None)
        await keys.stop()

    run(main())


# -- results, versions, logging -----------------------------------------------------------------


def test_unchanged_key_set_keeps_its_version_and_counts_ok():
    async def main():
        results = Results()
        fetch = ScriptedFetch()
        keys = ProviderKeys(provider(), fetch=fetch, on_refresh=results, min_kid_interval=0,
                            unknown_kid_ttl=0)
        await keys.start()
        first = keys.keyset
        assert not await keys.refresh_for_kid("nope")
        assert keys.keyset is first
        fetch.documents[JWKS_URI] = jwks(KEY_A, KEY_B)
        assert await keys.refresh_for_kid("key-b")
        second = keys.keyset
        assert second.version == 2
        fetch.documents[JWKS_URI] = jwks(KEY_B, KEY_A)  # the same keys in another order
        assert not await keys.refresh_for_kid("nope")
        assert keys.keyset is second
        assert results == [("corp", "ok")] * 4
        await keys.stop()

    run(main())


BAD_DOCUMENTS = {
    "connect": FetchError("connect", "refused"),
    "not_json": FetchError("not_json", "not JSON"),
    "a list": [jwks(KEY_B)],
    "keys not an array": {"keys": {"kid": "key-b"}},
    "no keys member": {"jwks": []},
    "empty set": {"keys": []},
    "only unusable keys": {"keys": [WEAK.public_jwk(), KEY_B.public_jwk(use="enc")]},
}


@pytest.mark.parametrize("answer", BAD_DOCUMENTS.values(), ids=BAD_DOCUMENTS.keys())
def test_a_failed_refresh_keeps_the_last_good_key_set(answer):
    async def main():
        results = Results()
        fetch = ScriptedFetch()
        keys = ProviderKeys(provider(), fetch=fetch, on_refresh=results)
        await keys.start()
        good = keys.keyset
        fetch.documents[JWKS_URI] = answer
        assert not await keys.refresh_for_kid("key-b")
        assert keys.keyset is good
        assert keys.ready
        assert results == [("corp", "ok"), ("corp", "error")]
        await keys.stop()

    run(main())


def test_failures_are_logged_when_their_kind_changes(caplog):
    caplog.set_level(logging.DEBUG, "fastgw.auth.jwks")

    async def main():
        fetch = ScriptedFetch()
        keys = ProviderKeys(provider(), fetch=fetch, min_kid_interval=0, unknown_kid_ttl=0)
        await keys.start()
        fetch.documents[JWKS_URI] = FetchError("connect", "refused")
        for _ in range(3):
            await keys.refresh_for_kid("x")
        fetch.documents[JWKS_URI] = FetchError("status", "answered HTTP 500")
        for _ in range(3):
            await keys.refresh_for_kid("x")
        fetch.documents[JWKS_URI] = jwks(KEY_A)
        await keys.refresh_for_kid("x")
        await keys.stop()

    run(main())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "(connect)" in warnings[0] and "keeping key set version 1" in warnings[0]
    assert "(status)" in warnings[1]
    assert any("works again" in r.getMessage() for r in caplog.records)


def test_dropped_keys_are_logged_once_per_key_set_version(caplog):
    caplog.set_level(logging.INFO, "fastgw.auth.jwks")
    document = {"keys": [KEY_A.public_jwk(), WEAK.public_jwk(),
                         KEY_B.public_jwk(kid="enc-key", use="enc")]}

    async def main():
        fetch = ScriptedFetch({JWKS_URI: document})
        keys = ProviderKeys(provider(), fetch=fetch, min_kid_interval=0, unknown_kid_ttl=0)
        await keys.start()
        await keys.refresh_for_kid("x")
        await keys.refresh_for_kid("x")
        assert [k.kid for k in keys.keyset.keys] == ["key-a"]
        fetch.documents[JWKS_URI] = {"keys": [*document["keys"], KEY_B.public_jwk()]}
        await keys.refresh_for_kid("x")
        await keys.stop()

    run(main())
    dropped = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(dropped) == 4  # two keys, two versions
    assert "'weak'" in dropped[0] and "2048" in dropped[0]
    assert "'enc-key'" in dropped[1] and "enc" in dropped[1]


def test_on_refresh_errors_do_not_stop_refreshing(caplog):
    def broken(name, result):
        raise RuntimeError("metrics are down")

    async def main():
        fetch = ScriptedFetch()
        keys = ProviderKeys(provider(refresh_interval=0.05), fetch=fetch, on_refresh=broken)
        await keys.start()
        await poll(lambda: len(fetch.calls) >= 3)
        await keys.stop()

    run(main())


# -- scheduling -----------------------------------------------------------------------------


def test_background_refresh_follows_refresh_interval():
    async def main():
        fetch = ScriptedFetch()
        keys = ProviderKeys(provider(refresh_interval=0.1), fetch=fetch)
        await keys.start()
        await asyncio.sleep(0.65)
        await keys.stop()
        calls = len(fetch.calls)
        await asyncio.sleep(0.25)
        assert len(fetch.calls) == calls, "no refresh after stop"
        return calls

    assert 3 <= run(main()) <= 9


def test_failed_refreshes_back_off_up_to_refresh_interval():
    async def main():
        fetch = ScriptedFetch({JWKS_URI: FetchError("connect", "refused")})
        keys = ProviderKeys(provider(refresh_interval=0.8), fetch=fetch, retry_initial=0.05)
        await keys.start()
        # Backing off 0.05, 0.1, 0.2, 0.4, 0.8, 0.8 s puts 6 attempts in 1.6 s; a fixed
        # 0.05 s retry would make 30.
        await asyncio.sleep(1.6)
        await keys.stop()
        return len(fetch.calls)

    assert 4 <= run(main()) <= 9


def test_a_good_kid_fetch_resets_the_backoff():
    async def main():
        fetch = ScriptedFetch({JWKS_URI: FetchError("connect", "refused")})
        keys = ProviderKeys(provider(refresh_interval=30), fetch=fetch, retry_initial=0.05)
        await keys.start()
        await poll(lambda: len(fetch.calls) >= 3)
        fetch.documents[JWKS_URI] = jwks(KEY_A)
        await poll(lambda: keys.ready)
        calls = len(fetch.calls)
        await asyncio.sleep(0.5)
        assert len(fetch.calls) == calls
        await keys.stop()

    run(main())


def test_an_unchanged_provider_is_adopted_across_a_reload_without_fetching():
    async def main():
        fetch = ScriptedFetch()
        old = ProviderKeys(provider(), fetch=fetch)
        await old.start()
        new = ProviderKeys(provider(audiences=("other",)), fetch=fetch, previous=old)
        await old.stop()
        assert new.ready and new.keyset is old.keyset
        await new.start()
        assert len(fetch.calls) == 1
        assert not await new.refresh_for_kid("x")  # the kid interval carries over too
        assert len(fetch.calls) == 2
        moved = ProviderKeys(provider(jwks_uri=JWKS_URI + "?v=2"), fetch=fetch, previous=new)
        assert not moved.ready
        await new.stop()

    run(main())


def test_a_shorter_refresh_interval_applies_at_once_after_a_reload():
    async def main():
        fetch = ScriptedFetch()
        old = ProviderKeys(provider(), fetch=fetch)
        await old.start()
        await old.stop()
        new = ProviderKeys(provider(refresh_interval=0.05), fetch=fetch, previous=old)
        await new.start()
        await poll(lambda: len(fetch.calls) >= 2)
        await new.stop()

    run(main())


# -- discovery --------------------------------------------------------------------------------


def discovered(issuer=ISSUER, **members):
    return {DISCOVERY_URL: {"issuer": issuer, "jwks_uri": JWKS_URI, **members},
            JWKS_URI: jwks(KEY_A)}


def test_discovery_finds_the_jwks_uri():
    async def main():
        fetch = ScriptedFetch(discovered())
        keys = ProviderKeys(provider(jwks_uri=None, discovery=True), fetch=fetch)
        await keys.start()
        assert keys.ready
        assert fetch.calls == [DISCOVERY_URL, JWKS_URI]
        await keys.stop()

    run(main())


def test_discovery_strips_a_trailing_slash_but_matches_the_issuer_exactly():
    async def main():
        documents = discovered(issuer=ISSUER + "/")
        fetch = ScriptedFetch(documents)
        keys = ProviderKeys(provider(issuer=ISSUER + "/", jwks_uri=None, discovery=True),
                            fetch=fetch)
        await keys.start()
        assert keys.ready and fetch.calls[0] == DISCOVERY_URL
        await keys.stop()
        unslashed = ProviderKeys(provider(jwks_uri=None, discovery=True), fetch=fetch)
        await unslashed.start()
        assert not unslashed.ready and unslashed.failing == "discovery"
        await unslashed.stop()

    run(main())


BAD_DISCOVERY = {
    "other issuer": discovered(issuer="https://evil.example.test/realms/corp"),
    "no issuer": discovered(issuer=None),
    "no jwks_uri": discovered(jwks_uri=None),
    "jwks_uri not http": discovered(jwks_uri="file:///etc/jwks.json"),
    "https issuer, http jwks_uri": discovered(jwks_uri="http://idp.example.test/certs"),
    "not an object": {DISCOVERY_URL: ["issuer"]},
}


@pytest.mark.parametrize("documents", BAD_DISCOVERY.values(), ids=BAD_DISCOVERY.keys())
def test_bad_discovery_documents_are_refused(documents, caplog):
    async def main():
        fetch = ScriptedFetch(documents)
        keys = ProviderKeys(provider(jwks_uri=None, discovery=True), fetch=fetch)
        await keys.start()
        assert not keys.ready
        assert keys.failing == "discovery"
        assert fetch.calls == [DISCOVERY_URL]
        await keys.stop()

    run(main())
    assert any("discovery" in r.getMessage() for r in caplog.records if r.levelno >= 30)


def test_a_failed_jwks_fetch_redoes_discovery():
    async def main():
        fetch = ScriptedFetch(discovered())
        keys = ProviderKeys(provider(jwks_uri=None, discovery=True), fetch=fetch,
                            min_kid_interval=0, unknown_kid_ttl=0)
        await keys.start()
        await keys.refresh_for_kid("x")
        assert fetch.calls.count(DISCOVERY_URL) == 1, "no rediscovery while all is well"
        moved = JWKS_URI + "/v2"
        del fetch.documents[JWKS_URI]
        fetch.documents[DISCOVERY_URL]["jwks_uri"] = moved
        fetch.documents[moved] = jwks(KEY_A, KEY_B)
        assert not await keys.refresh_for_kid("key-b")  # old uri answers 404
        assert await keys.refresh_for_kid("key-b")  # rediscovered
        assert fetch.calls[-2:] == [DISCOVERY_URL, moved]
        await keys.stop()

    run(main())


def test_a_failed_rediscovery_falls_back_to_the_known_jwks_uri():
    async def main():
        fetch = ScriptedFetch(discovered())
        keys = ProviderKeys(provider(jwks_uri=None, discovery=True), fetch=fetch,
                            min_kid_interval=0, unknown_kid_ttl=0)
        await keys.start()
        fetch.documents[JWKS_URI] = FetchError("timeout", "slow")
        assert not await keys.refresh_for_kid("key-b")
        fetch.documents[DISCOVERY_URL] = FetchError("status", "answered HTTP 503")
        fetch.documents[JWKS_URI] = jwks(KEY_A, KEY_B)
        assert await keys.refresh_for_kid("key-b")
        assert fetch.calls[-2:] == [DISCOVERY_URL, JWKS_URI]
        await keys.stop()

    run(main())


# -- jwks_file -----------------------------------------------------------------------------------


def test_jwks_file_is_loaded_and_reread_on_refresh(tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(KEY_A)))

    async def main():
        fetch = ScriptedFetch()
        keys = ProviderKeys(provider(jwks_uri=None, jwks_file=str(path)), fetch=fetch,
                            min_kid_interval=0)
        await keys.start()
        assert keys.keyset.has_kid("key-a")
        path.write_text(json.dumps(jwks(KEY_A, KEY_B)))
        assert await keys.refresh_for_kid("key-b")
        assert fetch.calls == []
        await keys.stop()

    run(main())


@pytest.mark.parametrize(("content", "kind"), [
    (None, "file"),
    (b"{not json", "not_json"),
    (b'{"keys": [' + b" " * (1024 * 1024) + b"]}", "too_large"),
    (b'{"keys": []}', "no_keys"),
])
def test_a_bad_jwks_file_is_an_error(tmp_path, content, kind):
    path = tmp_path / "jwks.json"
    if content is not None:
        path.write_bytes(content)

    async def main():
        results = Results()
        keys = ProviderKeys(provider(jwks_uri=None, jwks_file=str(path)), on_refresh=results)
        await keys.start()
        assert not keys.ready and keys.failing == kind
        assert results == [("corp", "error")]
        await keys.stop()

    run(main())


# -- the fetch client ------------------------------------------------------------------------


async def raw_server(answer: bytes, *, delay: float = 0.0):
    """A server answering every request with ``answer``, then closing."""

    async def serve(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            if delay:
                await asyncio.sleep(delay)
            writer.write(answer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/jwks"


def fetched(answer: bytes, **options):
    async def main():
        server, url = await raw_server(answer)
        async with server:
            return await fetch(url, **options)

    return run(main())


def fetch_fails(answer: bytes, **options) -> FetchError:
    with pytest.raises(FetchError) as caught:
        fetched(answer, **options)
    return caught.value


BODY = b'{"keys": []}'


def test_fetch_reads_a_content_length_body():
    assert fetched(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n" + BODY) == BODY


def test_fetch_reads_a_chunked_body():
    answer = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              b'5\r\n{"key\r\n7\r\ns": []}\r\n0\r\n\r\n')
    assert fetched(answer) == BODY


def test_fetch_reads_a_close_delimited_body():
    assert fetched(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + BODY) == BODY
    assert fetched(b"HTTP/1.0 200 OK\r\n\r\n" + BODY) == BODY


def test_fetch_skips_an_interim_response():
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n" + BODY
    assert fetched(answer) == BODY


@pytest.mark.parametrize(("answer", "kind"), [
    (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "status"),
    (b"HTTP/1.1 302 Found\r\nLocation: http://evil.test/\r\nContent-Length: 0\r\n\r\n", "status"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n" + BODY, "bad_response"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"key", "bad_response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nTransfer-Encoding: chunked\r\n\r\n" + BODY,
     "bad_response"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "bad_response"),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 12\r\n\r\n" + BODY,
     "bad_response"),
    (b"HTTP/1.1 200 OK\r\nContent-Len", "bad_response"),
    (b"", "bad_response"),
    (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "bad_response"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", "status"),
])
def test_fetch_refuses_what_is_not_a_complete_200(answer, kind):
    assert fetch_fails(answer).kind == kind


def test_fetch_caps_the_body():
    big = b"x" * 2000
    assert fetch_fails(b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n" + big,
                       max_size=1000).kind == "too_large"
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n"
               + big + b"\r\n0\r\n\r\n")
    assert fetch_fails(chunked, max_size=1000).kind == "too_large"
    assert fetch_fails(b"HTTP/1.1 200 OK\r\n\r\n" + big, max_size=1000).kind == "too_large"
    endless_head = b"HTTP/1.1 200 OK\r\n" + b"X-Filler: aaaaaaaaaaaaaaaaaaaa\r\n" * 5000
    assert fetch_fails(endless_head, max_size=1000).kind == "too_large"


def test_fetch_gives_up_after_its_timeout():
    async def main():
        server, url = await raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", delay=5)
        async with server:
            started = asyncio.get_running_loop().time()
            with pytest.raises(FetchError) as caught:
                await fetch(url, timeout=0.2)
            assert asyncio.get_running_loop().time() - started < 3
            return caught.value

    assert run(main()).kind == "timeout"


def test_fetch_reports_a_refused_connection(free_port):
    with pytest.raises(FetchError) as caught:
        run(fetch(f"http://127.0.0.1:{free_port()}/jwks"))
    assert caught.value.kind == "connect"


def test_fetch_json_refuses_a_body_that_is_not_json():
    async def main():
        server, url = await raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n<html>")
        async with server:
            await fetch_json(url)

    with pytest.raises(FetchError) as caught:
        run(main())
    assert caught.value.kind == "not_json"


@pytest.mark.parametrize("url", [
    "ftp://idp.example.test/jwks",
    "http:///jwks",
    "http://user:pass@idp.example.test/jwks",
    "http://idp.example.test:99999/jwks",
    "http://idp.example.test/jwks\r\nX-Injected: 1",
    "http://idp.example.test/jwks HTTP/1.1",
    "http://idp.example.test/j\u00e9wks",
])
def test_fetch_refuses_urls_it_will_not_request(url):
    with pytest.raises(FetchError) as caught:
        run(fetch(url))
    assert caught.value.kind == "bad_url"


def test_fetch_sends_a_plain_get_with_the_host():
    async def main():
        seen = []

        async def serve(reader, writer):
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            assert await fetch_json(f"http://127.0.0.1:{port}/certs?realm=a") == {}
        return seen[0], port

    head, port = run(main())
    lines = head.decode().split("\r\n")
    assert lines[0] == "GET /certs?realm=a HTTP/1.1"
    assert f"Host: 127.0.0.1:{port}" in lines
    assert "Connection: close" in lines
