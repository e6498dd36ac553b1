"""The key set of each JWT provider: loaded at start, kept fresh in the background.

Theory of operation. A ``ProviderKeys`` owns one provider's current
``KeySet`` and replaces it by plain attribute assignment, so a request that
picked up a key set keeps a consistent one while a refresh runs. Every load,
whatever asked for it, is one *attempt*: discovery when needed, one GET of
the JWKS (or one read of ``jwks_file``), then the new key set or the old one
kept. At most one attempt runs at a time; anyone who wants one while it runs
waits for that one (single flight).

Attempts are scheduled like Envoy's ``jwt_authn`` async fetcher, with
separate intervals after good and failed ones: ``refresh_interval`` after a
good attempt, and after a failed one 1 s, 2 s, 4 s ... capped at
``refresh_interval``; each delay is jittered by ±10% so that workers and
gateways started together drift apart. A token naming a kid we do not have
may ask for an early attempt (``refresh_for_kid``), but such attempts are at
least ``min_kid_interval`` apart, and a kid that an attempt just showed to be
missing does not ask again for ``unknown_kid_ttl``; a flood of made-up kids
therefore costs one fetch per interval at most, and never delays a token
whose key we hold.

A failed attempt (network, status, not JSON, no ``keys`` array, no usable
key, too large) keeps the last good key set. Failures are logged when their
kind changes, recovery once; keys ``key_from_jwk`` drops are logged once per
key-set version. ``on_refresh(provider, result)`` is called after each
attempt with ``"ok"`` (an unchanged key set is ``"ok"`` too: the metric says
whether the provider answered usefully) or ``"error"``.

Discovery is done before the first JWKS fetch and again after any failed
one, since an identity provider that moved its keys says so there. If that
rediscovery fails, the last known ``jwks_uri`` is tried anyway. A
``jwks_file`` is re-read on the same schedule, so replacing the file rotates
static keys without a reload.

Each worker process runs its own ``ProviderKeys``. On a config reload, pass
the old instance as ``previous``: an unchanged provider then keeps its key
set, schedule and kid limits instead of fetching again, so a burst of
reloads costs the identity provider nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..config.model import Provider
from .fetch import MAX_DOCUMENT, FetchError, fetch_json
from .keys import KeySet, keyset_from_jwks, keyset_from_secret

__all__ = ["ProviderKeys"]

log = logging.getLogger("fastgw.auth.jwks")

RETRY_INITIAL = 1.0
JITTER = 0.1
UNKNOWN_KIDS_KEPT = 1024
UNKNOWN_KID_MAX_LENGTH = 256
WELL_KNOWN = "/.well-known/openid-configuration"

Fetch = Callable[[str], Awaitable[Any]]
OnRefresh = Callable[[str, str], None]


class ProviderKeys:
    """The current key set of one provider, kept fresh in the background."""

    def __init__(
        self,
        provider: Provider,
        *,
        on_refresh: OnRefresh | None = None,
        clock: Callable[[], float] = time.monotonic,
        min_kid_interval: float = 30.0,
        unknown_kid_ttl: float | None = None,
        retry_initial: float = RETRY_INITIAL,
        fetch: Fetch = fetch_json,
        previous: ProviderKeys | None = None,
    ) -> None:
        self.provider = provider
        self.name = provider.name
        self.keyset: KeySet | None = None
        self._on_refresh = on_refresh
        self._clock = clock
        self._min_kid_interval = min_kid_interval
        self._unknown_kid_ttl = 2 * min_kid_interval if unknown_kid_ttl is None else unknown_kid_ttl
        self._retry_initial = retry_initial
        self._fetch = fetch
        self._static = provider.secret is not None
        self._source = (provider.issuer, provider.discovery, provider.jwks_uri,
                        provider.jwks_file, provider.secret)
        self._version = 0
        self._identity: tuple = ()
        self._logged_drops: set[str] = set()
        self._discovered: str | None = None
        self._rediscover = False
        self._failures = 0
        self._failure_kind: str | None = None
        self._next_due = 0.0
        self._last_good: float | None = None
        self._last_kid_fetch: float | None = None
        self._unknown_kids: OrderedDict[str | None, float] = OrderedDict()
        self._inflight: asyncio.Task[bool] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._started = False
        self._stopped = False
        if self._static:
            self.keyset = keyset_from_secret(provider.secret)
            self._version = self.keyset.version
        elif previous is not None:
            self._adopt(previous)
        if self.keyset is not None:
            self._ready.set()

    @property
    def ready(self) -> bool:
        """True once a key set is loaded (a secret provider is ready at once)."""
        return self.keyset is not None

    @property
    def failing(self) -> str | None:
        """The kind of failure of the last attempt, or None if it was good."""
        return self._failure_kind

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the key set (unless ``previous`` gave a fresh one) and keep it fresh.

        Never raises for a failed load: the provider stays not ready and the
        background keeps retrying."""
        if self._static or self._started:
            return
        self._started = True
        if self.keyset is None or self._next_due <= self._clock():
            await asyncio.wait({self._attempt_shared()})
        if not self._stopped:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"jwks-refresh-{self.name}"
            )

    async def stop(self) -> None:
        self._stopped = True
        tasks = [task for task in (self._task, self._inflight) if task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._task = self._inflight = None

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until a key set is loaded; False if ``timeout`` passed first."""
        if self.keyset is not None:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        return self.keyset is not None

    # -- unknown kids -----------------------------------------------------------------------

    async def refresh_for_kid(self, kid: str | None) -> bool:
        """A token named a kid we do not have: fetch again if allowed, then say
        whether the kid is known.

        Allowed means no kid-triggered fetch in the last ``min_kid_interval``
        and the kid not shown missing by an attempt in the last
        ``unknown_kid_ttl``; an attempt already running is joined instead."""
        if self._knows(kid):
            return True
        if self._static or self._stopped:
            return False
        now = self._clock()
        if self._recently_unknown(kid, now):
            return False
        task = self._inflight
        if task is None:
            last = self._last_kid_fetch
            if last is not None and now - last < self._min_kid_interval:
                return False
            self._last_kid_fetch = now
            task = self._attempt_shared()
        await asyncio.wait({task})  # a caller that gives up never cancels the shared attempt
        if self._knows(kid):
            return True
        self._remember_unknown(kid, self._clock())
        return False

    def _knows(self, kid: str | None) -> bool:
        keyset = self.keyset
        if keyset is None:
            return False
        return len(keyset) > 0 if kid is None else keyset.has_kid(kid)

    def _recently_unknown(self, kid: str | None, now: float) -> bool:
        expires = self._unknown_kids.get(kid)
        if expires is None:
            return False
        if expires <= now:
            del self._unknown_kids[kid]
            return False
        return True

    def _remember_unknown(self, kid: str | None, now: float) -> None:
        if kid is not None and len(kid) > UNKNOWN_KID_MAX_LENGTH:
            return  # long made-up kids are bounded by the kid interval alone
        unknown = self._unknown_kids
        unknown[kid] = now + self._unknown_kid_ttl
        unknown.move_to_end(kid)
        while len(unknown) > UNKNOWN_KIDS_KEPT:
            unknown.popitem(last=False)

    # -- attempts ---------------------------------------------------------------------------

    def _attempt_shared(self) -> asyncio.Task[bool]:
        task = self._inflight
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._attempt(), name=f"jwks-fetch-{self.name}"
            )
            self._inflight = task
        return task

    async def _run(self) -> None:
        while True:
            remaining = self._next_due - self._clock()
            if remaining > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._wake.wait()
                continue
            await asyncio.wait({self._attempt_shared()})

    async def _attempt(self) -> bool:
        try:
            try:
                keyset, dropped = await self._load()
            except FetchError as exc:
                self._failed(exc.kind, str(exc))
                return False
            except Exception as exc:
                log.debug("provider %s: unexpected error loading keys", self.name, exc_info=True)
                self._failed("internal", f"{type(exc).__name__}: {exc}")
                return False
            self._succeeded(keyset, dropped)
            return True
        finally:
            if self._inflight is asyncio.current_task():
                self._inflight = None

    async def _load(self) -> tuple[KeySet, tuple[str, ...]]:
        if self.provider.jwks_file is not None:
            source = self.provider.jwks_file
            document = await asyncio.to_thread(_read_json_file, source, MAX_DOCUMENT)
        else:
            source = await self._jwks_uri()
            try:
                document = await self._fetch(source)
            except FetchError:
                self._rediscover = self.provider.discovery
                raise
        try:
            keyset, dropped = keyset_from_jwks(document, self._version + 1)
        except ValueError as exc:
            self._rediscover = self.provider.discovery
            raise FetchError("not_jwks", f"{source}: {exc}") from None
        if not len(keyset):
            self._rediscover = self.provider.discovery
            reasons = "; ".join(dropped[:5]) or "the set is empty"
            raise FetchError("no_keys", f"{source}: no usable key ({reasons})")
        self._rediscover = False
        return keyset, dropped

    async def _jwks_uri(self) -> str:
        if self.provider.jwks_uri is not None:
            return self.provider.jwks_uri
        if self._discovered is None or self._rediscover:
            try:
                uri = await self._discover()
            except FetchError as exc:
                if self._discovered is None:
                    raise
                log.debug("provider %s: rediscovery failed (%s); trying %s",
                          self.name, exc, self._discovered)
            else:
                if self._discovered is not None and uri != self._discovered:
                    log.info("provider %s: jwks_uri moved from %s to %s",
                             self.name, self._discovered, uri)
                self._discovered = uri
        return self._discovered

    async def _discover(self) -> str:
        issuer = self.provider.issuer
        url = issuer.rstrip("/") + WELL_KNOWN
        document = await self._fetch(url)
        if type(document) is not dict:
            raise FetchError("discovery", f"{url}: not a JSON object")
        if document.get("issuer") != issuer:
            raise FetchError(
                "discovery",
                f"{url} names issuer {document.get('issuer')!r}, not the configured {issuer!r}",
            )
        uri = document.get("jwks_uri")
        scheme = urlsplit(uri).scheme if type(uri) is str else ""
        if scheme not in ("http", "https"):
            raise FetchError("discovery", f"{url}: no http(s) jwks_uri")
        if urlsplit(issuer).scheme == "https" and scheme != "https":
            raise FetchError("discovery", f"{url}: an https issuer with a plain-http jwks_uri")
        return uri

    def _succeeded(self, keyset: KeySet, dropped: tuple[str, ...]) -> None:
        identity = tuple(sorted(
            (k.kid or "", k.kty, k.alg or "", k.crv or "", k.thumbprint) for k in keyset.keys
        ))
        if self.keyset is None or identity != self._identity:
            self._version = keyset.version
            self._identity = identity
            self._logged_drops = set()
            self._unknown_kids.clear()
            self.keyset = keyset
            kids = ", ".join(str(key.kid) for key in keyset.keys)
            log.info("provider %s: key set version %d loaded with %d keys (%s)",
                     self.name, keyset.version, len(keyset), kids)
        for line in dropped:
            if line not in self._logged_drops:
                self._logged_drops.add(line)
                log.warning("provider %s: JWKS key ignored, %s", self.name, line)
        if self._failure_kind is not None:
            log.info("provider %s: key refresh works again", self.name)
        self._failure_kind = None
        self._failures = 0
        self._last_good = self._clock()
        self._schedule(self.provider.refresh_interval)
        self._ready.set()
        self._report("ok")

    def _failed(self, kind: str, message: str) -> None:
        self._failures += 1
        delay = min(self._retry_initial * 2 ** min(self._failures - 1, 30),
                    self.provider.refresh_interval)
        delay = self._schedule(delay)
        keyset = self.keyset
        kept = (f"keeping key set version {keyset.version}" if keyset is not None
                else "no key set yet")
        level = logging.WARNING if kind != self._failure_kind else logging.DEBUG
        log.log(level, "provider %s: key refresh failed (%s): %s; %s, next try in %.1fs",
                self.name, kind, message, kept, delay)
        self._failure_kind = kind
        self._report("error")

    def _schedule(self, delay: float) -> float:
        delay *= random.uniform(1 - JITTER, 1 + JITTER)
        self._next_due = self._clock() + delay
        self._wake.set()
        return delay

    def _report(self, result: str) -> None:
        if self._on_refresh is None:
            return
        try:
            self._on_refresh(self.name, result)
        except Exception:
            log.exception("provider %s: on_refresh callback failed", self.name)

    def _adopt(self, previous: ProviderKeys) -> None:
        if previous._source != self._source or previous.keyset is None:
            return
        self.keyset = previous.keyset
        self._version = previous._version
        self._identity = previous._identity
        self._logged_drops = set(previous._logged_drops)
        self._discovered = previous._discovered
        self._last_kid_fetch = previous._last_kid_fetch
        self._unknown_kids = OrderedDict(previous._unknown_kids)
        self._failures = previous._failures
        self._failure_kind = previous._failure_kind
        self._last_good = previous._last_good
        self._next_due = previous._next_due
        if previous._failure_kind is None and previous._last_good is not None:
            # A shorter interval in the new config counts from the last good attempt.
            self._next_due = min(self._next_due,
                                 previous._last_good + self.provider.refresh_interval)

def _read_json_file(path: str, max_size: int) -> Any:
    try:
        with open(path, "rb") as file:
            data = file.read(max_size + 1)
    except OSError as exc:
        raise FetchError("file", f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > max_size:
        raise FetchError("too_large", f"{path} is larger than {max_size} bytes")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise FetchError("not_json", f"{path} is not JSON: {exc}") from None
