"""``store: redis``: buckets in Redis, exact across every gateway that shares it.

Each bucket is one Redis string, the TAT in microseconds of Redis's own clock
(``TIME``), so gateway clocks never matter; it expires when the bucket would
be full again. One Lua script, loaded once and run with ``EVALSHA``, decides
a whole batch of requests: each request all-or-nothing over its limits, in
order. Requests made during one event-loop iteration go out together in one
``write()`` on the next, and replies are matched in order (RESP is FIFO), so a
busy gateway makes one round trip per loop iteration, not one per request.

Failure handling: every wait is bounded by ``timeout``. A timeout, a refused
or lost connection or an error reply turns the affected requests over to
``on_error`` (``local``: the host's shared buckets; ``allow``; ``deny``),
counts each such decision in ``fallbacks`` and, while Redis stays
unreachable, sends later requests straight to ``on_error`` as well. The
client reconnects by itself with backoff; the change of state is logged once
each way.

Cluster (``redis+cluster://host:port,...``, ``rediss+cluster://`` over TLS,
each node's name checked against its certificate): keys carry the hash tag
``{limit:key}``; the slot map comes from ``CLUSTER SLOTS``; ``MOVED`` updates
the map (and refreshes it in the background) and ``ASK`` is followed with
``ASKING``. A request whose limits live in different slots runs one script
per slot; if one denies, the others give their token back (a ``refund``
call), so all-or-nothing holds up to requests racing in that instant.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import logging
import ssl as _ssl
from collections import Counter, deque
from collections.abc import Callable, Sequence
from urllib.parse import unquote, urlsplit

import hiredis

from .._core import active
from ..config.model import REDIS_SCHEMES
from ..tls import upstream_context
from .shared import SharedBuckets

log = logging.getLogger("fastgw.ratelimit")

SCRIPT = b"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function store(key, tat)
  if tat > now then
    redis.call('SET', key, string.format('%.0f', tat), 'PX',
               string.format('%d', math.ceil((tat - now) / 1000)))
  else
    redis.call('DEL', key)
  end
end
if ARGV[1] == 'refund' then
  for i = 1, #KEYS do
    local tat = tonumber(redis.call('GET', KEYS[i]))
    if tat then store(KEYS[i], tat - tonumber(ARGV[i + 1])) end
  end
  return 0
end
local nlimits = tonumber(ARGV[2])
local intervals, tolerances = {}, {}
for i = 1, nlimits do
  intervals[i] = tonumber(ARGV[1 + 2 * i])
  tolerances[i] = tonumber(ARGV[2 + 2 * i])
end
local stored = redis.call('MGET', unpack(KEYS))
local tats, dirty, out = {}, {}, {now}
local a, k, o, nargs = 3 + 2 * nlimits, 1, 1, #ARGV
while a <= nargs do
  local n = tonumber(ARGV[a])
  if n > 0 then
    local key = KEYS[k]
    local tat = tats[key] or tonumber(stored[k]) or 0
    if tat < now then tat = now end
    local new = tat + intervals[n]
    o = o + 1
    if new - now <= tolerances[n] then
      out[o] = new
      tats[key] = new
      dirty[key] = true
    else
      out[o] = -tat
      tats[key] = tat
    end
    a = a + 1
    k = k + 1
  else
    n = -n
    local ok, first = true, o + 1
    for i = 0, n - 1 do
      local key = KEYS[k + i]
      local tat = tats[key] or tonumber(stored[k + i]) or 0
      if tat < now then tat = now end
      tats[key] = tat
      local limit = tonumber(ARGV[a + 1 + i])
      local new = tat + intervals[limit]
      o = o + 1
      if new - now <= tolerances[limit] then
        out[o] = new
      else
        ok = false
        out[o] = -tat
      end
    end
    if ok then
      for i = 0, n - 1 do
        local key = KEYS[k + i]
        tats[key] = out[first + i]
        dirty[key] = true
      end
    end
    a = a + 1 + n
    k = k + n
  end
end
for key in pairs(dirty) do store(key, tats[key]) end
return out
"""
SHA = hashlib.sha1(SCRIPT).hexdigest().encode()

US = 1_000_000
#: Lua numbers are doubles: TATs and tolerances stay exact below 2**53 microseconds
MAX_TOLERANCE_US = 1 << 52
#: requests per script call: bounds how long one call holds Redis
MAX_BATCH = 256
MAX_CHECKS = 8  # as in the local table; keeps a call's keys within Lua's stack
BACKOFF_MIN = 0.05
BACKOFF_MAX = 1.0
#: a connection that lived this long (s) was no flap: reconnecting starts fast again
STABLE = 10.0
#: how long close() waits for the reconnecting task to end (s)
CLOSE_WAIT = 1.0
SLOTS = 16384
MAX_REDIRECTS = 3


def encode(*args: bytes | str | int) -> bytes:
    """One command in RESP."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


_EVALSHA = _bulk(b"EVALSHA") + _bulk(SHA)
_DECIDE = _bulk(b"decide")
_REFUND = _bulk(b"refund")
_INDEXES = [_bulk(b"%d" % n) for n in range(256)]
_SCRIPT_LOAD = encode(b"SCRIPT", b"LOAD", SCRIPT)
_ASKING = encode(b"ASKING")
_CLUSTER_SLOTS = encode(b"CLUSTER", b"SLOTS")


def key_slot(key: bytes) -> int:
    """The Redis Cluster slot of ``key`` (CRC16-XMODEM of its hash tag)."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return binascii.crc_hqx(key, 0) % SLOTS


_SCHEMES = [f"{s}://" for s in REDIS_SCHEMES]
_SCHEMES_TEXT = f"{', '.join(_SCHEMES[:-1])} or {_SCHEMES[-1]}"


class RedisURL:
    """A parsed ``redis://``, ``rediss://``, ``redis+cluster://`` or
    ``rediss+cluster://`` URL."""

    __slots__ = ("cluster", "db", "nodes", "password", "tls", "username")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in REDIS_SCHEMES:
            raise ValueError(f"a Redis URL starts with {_SCHEMES_TEXT}")
        self.tls = parts.scheme.startswith("rediss")
        self.cluster = parts.scheme.endswith("+cluster")
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password is not None else None
        netloc = parts.netloc.rpartition("@")[2]
        self.nodes = [_host_port(item) for item in netloc.split(",")]
        path = parts.path.strip("/")
        self.db = int(path) if path else 0
        if self.cluster and self.db:
            raise ValueError("Redis Cluster has only database 0")

    def __str__(self) -> str:
        hosts = ",".join(f"{h}:{p}" for h, p in self.nodes)
        scheme = ("rediss" if self.tls else "redis") + ("+cluster" if self.cluster else "")
        return f"{scheme}://{hosts}/{self.db}"


def _host_port(text: str) -> tuple[str, int]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.partition(":")
    if not host:
        raise ValueError("a Redis URL names no host")
    return host, int(port) if port else 6379


class ReplyError(Exception):
    """Redis answered a command with an error."""


class Connection(asyncio.Protocol):
    """One RESP connection: pipelined writes, replies matched in order.

    ``write(payload, callbacks)`` sends commands at once; each callback gets
    its reply (a ``hiredis.ReplyError`` for an error reply), or the exception
    that ended the connection. A reply later than ``timeout`` aborts the
    connection: whatever is still pending gets ``TimeoutError``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, on_lost) -> None:
        self.loop = loop
        self.timeout = timeout
        self.on_lost = on_lost
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.pending: deque = deque()
        self.marks: deque = deque()  # (deadline, replies due by then)
        self.sent = 0
        self.received = 0
        self.timer: asyncio.TimerHandle | None = None
        self.timed_out = False
        self.closed = False
        self.address: tuple[str, int] | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def write(
        self, payload: bytes, callbacks: Sequence[Callable], timeout: float | None = None
    ) -> None:
        if self.closed or self.transport.is_closing():
            error = ConnectionError("connection closed")
            for callback in callbacks:
                callback(error)
            return
        self.transport.write(payload)
        self.pending.extend(callbacks)
        self.sent += len(callbacks)
        deadline = self.loop.time() + (self.timeout if timeout is None else timeout)
        self.marks.append((deadline, self.sent))
        if self.timer is None or deadline < self.timer.when():
            self._arm(deadline)

    def request(self, *commands: bytes, timeout: float | None = None) -> asyncio.Future:
        """The replies to ``commands``, in a list, once all have come."""
        future = self.loop.create_future()
        replies: list = []

        def collect(reply) -> None:
            replies.append(reply)
            if len(replies) == len(commands) and not future.done():
                future.set_result(replies)

        def lost(reply) -> None:
            if isinstance(reply, BaseException) and not isinstance(reply, hiredis.ReplyError):
                if not future.done():
                    future.set_exception(reply)
            else:
                collect(reply)

        self.write(b"".join(commands), [lost] * len(commands), timeout)
        return future

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        pending = self.pending
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError:
                log.error("redis %s: unreadable reply; reconnecting", self.address)
                self.transport.abort()
                return
            if reply is False:
                break
            if not pending:
                log.error("redis %s: a reply nobody asked for; reconnecting", self.address)
                self.transport.abort()
                return
            self.received += 1
            try:
                pending.popleft()(reply)
            except Exception:
                log.exception("redis %s: handling a reply failed", self.address)
        marks = self.marks
        while marks and marks[0][1] <= self.received:
            marks.popleft()

    def _arm(self, deadline: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_at(deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        self.timer = None
        marks = self.marks
        while marks and marks[0][1] <= self.received:
            marks.popleft()
        if not marks or self.closed:
            return
        deadline = min(mark[0] for mark in marks)
        if deadline <= self.loop.time():
            self.timed_out = True
            self.transport.abort()
        else:
            self._arm(deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.timed_out:
            error: Exception = TimeoutError(f"no reply within {self.timeout * 1000:g} ms")
        else:
            error = ConnectionError(str(exc) if exc else "connection closed")
        pending, self.pending = self.pending, deque()
        self.marks.clear()
        for callback in pending:
            callback(error)
        self.on_lost(self, error)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()


def _check_replies(replies: list) -> list:
    for reply in replies:
        if isinstance(reply, hiredis.ReplyError):
            raise ReplyError(str(reply))
    return replies


class _Request:
    """A request whose limits live in several cluster slots: one part per slot."""

    __slots__ = ("checks", "future", "granted", "keys", "outstanding", "results")

    def __init__(self, checks, future, keys, parts: int) -> None:
        self.checks = checks
        self.future = future
        self.keys = keys
        self.outstanding = parts
        self.results: list = [None] * len(checks)
        self.granted: list = []


class _Call:
    """One script call: its payload, what it decides, and its retries.

    ``items`` are ``(checks, future)`` pairs, or ``(_Request, indexes)`` parts
    on a cluster.
    """

    __slots__ = ("ask", "client", "conn", "items", "noscript", "parts", "payload", "redirects")

    def __init__(self, client: RedisBuckets, items: list, payload: bytes, parts: bool) -> None:
        self.client = client
        self.items = items
        self.payload = payload
        self.parts = parts
        self.conn: Connection | None = None
        self.ask = False
        self.noscript = False
        self.redirects = 0

    def send(self, conn: Connection, *, reload: bool = False) -> None:
        self.conn = conn
        before = (_SCRIPT_LOAD if reload else b"") + (_ASKING if self.ask else b"")
        callbacks = [_ignore] * (reload + self.ask)
        callbacks.append(self.done)
        conn.write(before + self.payload, callbacks)

    def done(self, reply) -> None:
        client = self.client
        if type(reply) is list:
            if client._logged_error is not None:
                client._error_reply(None)
            if self.parts:
                client._parts_done(self.items, reply)
            else:
                client._batch_done(self.items, reply)
        elif isinstance(reply, hiredis.ReplyError):
            self.error(str(reply))
        else:
            self.fail("timeout" if isinstance(reply, TimeoutError) else "unavailable")

    def error(self, message: str) -> None:
        client = self.client
        if message.startswith("NOSCRIPT") and not self.noscript:
            self.noscript = True
            self.send(self.conn, reload=True)
            return
        if message.startswith(("MOVED ", "ASK ")) and self.redirects < MAX_REDIRECTS:
            self.redirects += 1
            kind, slot, address = message.split(" ", 2)
            host, _, port = address.rpartition(":")
            node = (host or self.conn.address[0], int(port))
            self.ask = kind == "ASK"
            if not self.ask:
                client._moved(int(slot), node)
            client._send_to(node, self)
            return
        client._error_reply(message)
        self.fail("error")

    def fail(self, reason: str) -> None:
        client = self.client
        if reason != "error":
            client._break(reason)
        if not self.parts:
            for checks, future in self.items:
                client._fallback(checks, future, reason)
            return
        for request, _ in self.items:
            if request.outstanding > 0:
                request.outstanding = 0
                client._fallback(request.checks, request.future, reason)


def _ignore(reply) -> None:
    pass


class RedisBuckets:
    """Buckets in Redis, shared by every gateway using the same server or cluster.

    ``await start()`` before use and ``await close()`` at the end.
    ``decide(checks)`` returns a future of a ``Decision``, with the same
    meaning as ``SharedBuckets.decide``; it never raises for Redis failures
    (those go to ``on_error``).
    """

    def __init__(
        self,
        url: str,
        timeout: float = 0.05,
        on_error: str = "local",
        local_fallback: SharedBuckets | None = None,
        *,
        ssl: _ssl.SSLContext | None = None,
        server_name: str | None = None,
        connect_timeout: float = 1.0,
        prefix: str = "fastgw:rl:",
        on_fallback: Callable[[str], None] | None = None,
    ) -> None:
        if on_error not in ("local", "allow", "deny"):
            raise ValueError("on_error is local, allow or deny")
        if "{" in prefix or "}" in prefix:
            raise ValueError("the key prefix may not hold { or }")
        self.url = RedisURL(url)
        self.timeout = timeout
        self.connect_timeout = max(connect_timeout, timeout)
        self.on_error = on_error
        if on_error == "local" and local_fallback is None:
            local_fallback = SharedBuckets.create(1 << 16)
        self.local = local_fallback
        self.ssl = ssl if ssl is not None or not self.url.tls else _ssl.create_default_context()
        self.server_name = server_name  # the name the certificates must hold, else each host's
        self.prefix = prefix
        self.on_fallback = on_fallback
        #: decisions made without Redis, by reason: timeout, unavailable, error
        self.fallbacks: Counter[str] = Counter()
        self.healthy = False
        self.closed = False
        self._core = active("bucket")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._broken: asyncio.Future | None = None
        self._conns: dict[tuple[str, int], Connection] = {}
        self._primary: Connection | None = None
        self._slots: list[tuple[str, int]] | None = None
        self._connecting: dict[tuple[str, int], asyncio.Task] = {}
        self._refreshing: asyncio.Task | None = None
        self._queue: list[tuple] = []
        self._scheduled = False
        self._params: dict = {}
        self._announced = ""  # the state last logged: "", "healthy" or "failing"
        self._logged_error: str | None = None

    @classmethod
    def from_config(cls, redis, local_fallback: SharedBuckets | None = None, **kwargs):
        """From a ``fastgw.config.Redis`` section; a bad ``tls`` raises TLSConfigError."""
        if redis.tls is not None:
            kwargs.setdefault("ssl", upstream_context(redis.tls, alpn=()))
            kwargs.setdefault("server_name", redis.tls.server_name)
        return cls(redis.url, redis.timeout, redis.on_error, local_fallback, **kwargs)

    @property
    def state(self) -> str:
        if self.closed:
            return "closed"
        return "healthy" if self.healthy else "failing"

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (or start retrying in the background); returns after the first attempt."""
        self._loop = asyncio.get_running_loop()
        first = self._loop.create_future()
        self._task = self._loop.create_task(self._maintain(first))
        await first

    async def close(self) -> None:
        self.closed = True
        self.healthy = False
        if self._task is not None:
            # Bounded: a cancellation that lands as a connect completes can be lost
            # inside wait_for, and a stopping gateway must not wait on Redis.
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=CLOSE_WAIT)
        for task in (*self._connecting.values(), self._refreshing):
            if task is not None:
                task.cancel()
        self._drop_connections()
        self._flush()

    async def _maintain(self, first: asyncio.Future) -> None:
        loop = self._loop
        delay = BACKOFF_MIN
        try:
            while not self.closed:
                try:
                    if self.url.cluster:
                        await self._connect_cluster()
                    else:
                        await self._connect_single()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # any way of failing to reach Redis
                    self._drop_connections()
                    self._set_failing(_describe(exc))
                else:
                    self._broken = loop.create_future()
                    self._set_healthy()
                    if not first.done():
                        first.set_result(None)
                    since = loop.time()
                    reason = await self._broken
                    self._drop_connections()
                    self._set_failing(reason)
                    if loop.time() - since > STABLE:
                        delay = BACKOFF_MIN
                if not first.done():
                    first.set_result(None)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
        finally:
            if not first.done():
                first.set_result(None)

    async def _open(self, address: tuple[str, int], *, handshake: bool = True) -> Connection:
        loop = self._loop
        host, port = address
        _, conn = await asyncio.wait_for(
            loop.create_connection(
                lambda: Connection(loop, self.timeout, self._lost),
                host,
                port,
                ssl=self.ssl,
                server_hostname=(self.server_name or host) if self.ssl is not None else None,
            ),
            self.connect_timeout,
        )
        conn.address = address
        try:
            if handshake:
                await self._handshake(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    async def _handshake(self, conn: Connection) -> None:
        commands = []
        url = self.url
        if url.password is not None:
            auth = (url.username, url.password) if url.username else (url.password,)
            commands.append(encode(b"AUTH", *auth))
        if url.db:
            commands.append(encode(b"SELECT", url.db))
        commands.append(_SCRIPT_LOAD)
        _check_replies(await conn.request(*commands, timeout=self.connect_timeout))

    async def _connect_single(self) -> None:
        conn = await self._open(self.url.nodes[0])
        self._conns = {conn.address: conn}
        self._primary = conn

    async def _connect_cluster(self) -> None:
        seeds = list(dict.fromkeys([*self._known_nodes(), *self.url.nodes]))
        slots = None
        error: Exception = ConnectionError("no cluster node reachable")
        for address in seeds:
            try:
                slots = await self._slot_map(address)
                break
            except (OSError, TimeoutError, ReplyError, ConnectionError) as exc:
                error = exc
        if slots is None:
            raise error
        conns = {}
        try:
            for address in dict.fromkeys(slots):
                conns[address] = await self._open(address)
        except BaseException:
            for conn in conns.values():
                conn.close()
            raise
        self._conns = conns
        self._slots = slots

    async def _slot_map(self, address: tuple[str, int]) -> list[tuple[str, int]]:
        conn = await self._open(address, handshake=False)
        try:
            commands = []
            if self.url.password is not None:
                auth = (
                    (self.url.username, self.url.password)
                    if self.url.username
                    else (self.url.password,)
                )
                commands.append(encode(b"AUTH", *auth))
            commands.append(_CLUSTER_SLOTS)
            replies = await conn.request(*commands, timeout=self.connect_timeout)
            ranges = _check_replies(replies)[-1]
        finally:
            conn.on_lost = _ignore_lost
            conn.close()
        slots: list = [None] * SLOTS
        for start, end, master, *_ in ranges:
            host = master[0].decode() or address[0]
            node = (host, int(master[1]))
            for slot in range(start, end + 1):
                slots[slot] = node
        if None in slots:
            raise ReplyError("CLUSTERDOWN not every slot is served")
        return slots

    def _known_nodes(self) -> list[tuple[str, int]]:
        return list(dict.fromkeys(self._slots)) if self._slots else []

    def _lost(self, conn: Connection, error: Exception) -> None:
        if self._conns.get(conn.address) is conn:
            self._break(_describe(error))

    def _break(self, reason: str) -> None:
        self.healthy = False
        if self._broken is not None and not self._broken.done():
            self._broken.set_result(reason)

    def _drop_connections(self) -> None:
        conns, self._conns = self._conns, {}
        self._primary = None
        for conn in conns.values():
            conn.close()

    def _set_healthy(self) -> None:
        if self._announced == "failing":
            log.warning("redis %s reachable again: shared rate limiting resumed", self.url)
        else:
            log.info("redis %s connected", self.url)
        self._announced = "healthy"
        self.healthy = True
        self._logged_error = None

    def _set_failing(self, reason: str) -> None:
        self.healthy = False
        if self._announced != "failing" and not self.closed:
            log.warning(
                "redis %s unreachable (%s): rate limits fall back to on_error: %s",
                self.url,
                reason,
                self.on_error,
            )
        self._announced = "failing"

    def _error_reply(self, message: str | None) -> None:
        """Log error replies once per kind, and their end."""
        if message is None:
            self._logged_error = None
            log.warning("redis %s answers rate-limit calls again", self.url)
            return
        kind = message.split(" ", 1)[0]
        if kind != self._logged_error:
            self._logged_error = kind
            log.warning(
                "redis %s: %s; rate limits fall back to on_error: %s",
                self.url,
                message,
                self.on_error,
            )

    # -- cluster redirects -----------------------------------------------------------------

    def _moved(self, slot: int, node: tuple[str, int]) -> None:
        if self._slots is not None:
            self._slots[slot] = node
            if self._refreshing is None or self._refreshing.done():
                self._refreshing = self._loop.create_task(self._refresh())

    async def _refresh(self) -> None:
        for address in list(self._conns):
            try:
                slots = await self._slot_map(address)
            except (OSError, TimeoutError, ReplyError, ConnectionError):
                continue
            for node in dict.fromkeys(slots):
                if node not in self._conns:
                    try:
                        await self._node(node)
                    except (OSError, TimeoutError, ReplyError, ConnectionError) as exc:
                        self._break(_describe(exc))
                        return
            self._slots = slots
            return

    async def _node(self, node: tuple[str, int]) -> Connection:
        conn = self._conns.get(node)
        if conn is not None:
            return conn
        task = self._connecting.get(node)
        if task is None:
            task = self._connecting[node] = self._loop.create_task(self._open(node))
            task.add_done_callback(lambda _: self._connecting.pop(node, None))
        conn = await asyncio.shield(task)
        if not self.healthy:
            conn.close()
            raise ConnectionError("reconnecting")
        kept = self._conns.setdefault(node, conn)
        if kept is not conn:
            conn.close()
        return kept

    def _send_to(self, node: tuple[str, int], call: _Call) -> None:
        conn = self._conns.get(node)
        if conn is not None:
            call.send(conn)
            return

        async def connect_then_send() -> None:
            try:
                conn = await self._node(node)
            except (OSError, TimeoutError, ReplyError, ConnectionError):
                call.fail("unavailable")
                return
            call.send(conn)

        self._loop.create_task(connect_then_send())

    # -- deciding --------------------------------------------------------------------------

    def decide(self, checks: Sequence[tuple]) -> asyncio.Future:
        """A future of the ``Decision`` on ``checks``, a sequence of ``(Limit, key)``."""
        if not 0 < len(checks) <= MAX_CHECKS:
            raise ValueError(f"a decision takes 1 to {MAX_CHECKS} checks, not {len(checks)}")
        future = self._loop.create_future()
        if self.healthy:
            self._queue.append((checks, future))
            if not self._scheduled:
                self._scheduled = True
                self._loop.call_soon(self._flush)
        else:
            self._fallback(checks, future, "unavailable")
        return future

    def _flush(self) -> None:
        self._scheduled = False
        queue, self._queue = self._queue, []
        if not queue:
            return
        if not self.healthy:
            for checks, future in queue:
                self._fallback(checks, future, "unavailable")
        elif self._slots is None:
            calls = [
                _Call(self, batch, self._script_call(batch), False) for batch in _batches(queue)
            ]
            conn = self._primary
            for call in calls:
                call.conn = conn
            conn.write(b"".join([c.payload for c in calls]), [c.done for c in calls])
        else:
            self._flush_cluster(queue)

    def _script_call(self, batch: list) -> bytes:
        prefix = self.prefix
        limits: dict = {}
        keys = []
        argv = []
        for checks, _ in batch:
            if len(checks) > 1:
                argv.append(_bulk(b"%d" % -len(checks)))
            for limit, key in checks:
                data = f"{prefix}{{{limit.name}:{key}}}".encode("utf-8", "surrogatepass")
                keys.append(b"$%d\r\n%s\r\n" % (len(data), data))
                index = limits.get(limit)
                if index is None:
                    index = limits[limit] = _index(len(limits) + 1)
                argv.append(index)
        return self._decide_call(keys, limits, argv)

    def _decide_call(self, keys: list, limits: dict, argv: list) -> bytes:
        """``EVALSHA``: keys, the limits once each, then per request its limit indexes."""
        params = self._params
        return b"".join(
            [
                b"*%d\r\n" % (5 + len(keys) + 2 * len(limits) + len(argv)),
                _EVALSHA,
                _bulk(b"%d" % len(keys)),
                *keys,
                _DECIDE,
                _bulk(b"%d" % len(limits)),
                *[(params.get(limit) or self._limit_params(limit))[2] for limit in limits],
                *argv,
            ]
        )

    def _limit_params(self, limit) -> tuple[int, int, bytes]:
        """``(interval, tolerance, both as RESP)`` in microseconds: Lua computes in doubles."""
        interval = max(1, limit.interval // 1000)
        tolerance = limit.burst * interval
        if tolerance >= MAX_TOLERANCE_US:
            raise ValueError(f"limit {limit.name}: burst * period / count is too long")
        if len(self._params) > 4096:
            self._params.clear()
        params = (interval, tolerance, _bulk(b"%d" % interval) + _bulk(b"%d" % tolerance))
        self._params[limit] = params
        return params

    def _batch_done(self, batch: list, out: list) -> None:
        decision = self._core.Decision
        params = self._params
        now = out[0]
        at = 1
        for checks, future in batch:
            if len(checks) == 1:
                limit = checks[0][0]
                value = out[at]
                at += 1
                interval, tolerance, _ = params.get(limit) or self._limit_params(limit)
                if value > 0:
                    remaining = (tolerance - value + now) // interval
                    result = decision(True, limit, remaining, -((now - value) // US), 0)
                else:
                    reset = -((now + value) // US)
                    retry = -((now + tolerance + value - interval) // US)
                    result = decision(False, limit, 0, reset, retry)
            else:
                outcomes = [self._outcome(out[at + i], now, c[0]) for i, c in enumerate(checks)]
                at += len(checks)
                result = self._report(checks, outcomes)
            if not future.done():
                future.set_result(result)

    def _interval_arg(self, limit) -> bytes:
        interval = (self._params.get(limit) or self._limit_params(limit))[0]
        return _bulk(b"%d" % interval)

    def _outcome(self, value: int, now: int, limit) -> tuple[int, int, int]:
        """``(remaining, reset_us, retry_us)`` of one check from the script's answer."""
        interval, tolerance, _ = self._params.get(limit) or self._limit_params(limit)
        if value > 0:
            return (tolerance - (value - now)) // interval, value - now, 0
        tat = -value
        return 0, tat - now, tat + interval - tolerance - now

    def _report(self, checks, outcomes: list) -> object:
        if all(retry == 0 for _, _, retry in outcomes):
            pick = min(range(len(checks)), key=lambda i: (outcomes[i][0], -outcomes[i][1]))
            remaining, reset, _ = outcomes[pick]
            return self._core.Decision(True, checks[pick][0], remaining, _seconds(reset), 0)
        pick = max(range(len(checks)), key=lambda i: (outcomes[i][2], -i))
        _, reset, retry = outcomes[pick]
        return self._core.Decision(False, checks[pick][0], 0, _seconds(reset), _seconds(retry))

    # -- on a cluster ----------------------------------------------------------------------

    def _flush_cluster(self, queue: list) -> None:
        by_slot: dict[int, list] = {}
        prefix = self.prefix
        for checks, future in queue:
            keys = [
                f"{prefix}{{{limit.name}:{key}}}".encode("utf-8", "surrogatepass")
                for limit, key in checks
            ]
            groups: dict[int, list[int]] = {}
            for i, key in enumerate(keys):
                groups.setdefault(key_slot(key), []).append(i)
            request = _Request(checks, future, keys, len(groups))
            for slot, indexes in groups.items():
                by_slot.setdefault(slot, []).append((request, indexes))
        writes: dict[Connection, list[_Call]] = {}
        for slot, parts in by_slot.items():
            node = self._slots[slot]
            for batch in _batches(parts):
                call = _Call(self, batch, self._parts_call(batch), True)
                conn = self._conns.get(node)
                if conn is None:
                    self._send_to(node, call)
                else:
                    call.conn = conn
                    writes.setdefault(conn, []).append(call)
        for conn, calls in writes.items():
            conn.write(b"".join([c.payload for c in calls]), [c.done for c in calls])

    def _parts_call(self, parts: list) -> bytes:
        limits: dict = {}
        keys = []
        argv = []
        for request, indexes in parts:
            if len(indexes) > 1:
                argv.append(_bulk(b"%d" % -len(indexes)))
            for i in indexes:
                keys.append(_bulk(request.keys[i]))
                limit = request.checks[i][0]
                index = limits.get(limit)
                if index is None:
                    index = limits[limit] = _index(len(limits) + 1)
                argv.append(index)
        return self._decide_call(keys, limits, argv)

    def _parts_done(self, parts: list, out: list) -> None:
        now = out[0]
        at = 1
        for request, indexes in parts:
            granted = True
            for i in indexes:
                outcome = self._outcome(out[at], now, request.checks[i][0])
                request.results[i] = outcome
                granted = granted and outcome[2] == 0
                at += 1
            if granted:
                request.granted.append(indexes)
            request.outstanding -= 1
            if request.outstanding == 0:
                decision = self._report(request.checks, request.results)
                if not decision.allowed and request.granted:
                    self._refund(request)
                if not request.future.done():
                    request.future.set_result(decision)

    def _refund(self, request: _Request) -> None:
        for indexes in request.granted:
            conn = self._conns.get(self._slots[key_slot(request.keys[indexes[0]])])
            if conn is None:
                continue
            payload = [
                b"*%d\r\n" % (4 + 2 * len(indexes)),
                _EVALSHA,
                _bulk(b"%d" % len(indexes)),
                *[_bulk(request.keys[i]) for i in indexes],
                _REFUND,
                *[self._interval_arg(request.checks[i][0]) for i in indexes],
            ]
            conn.write(b"".join(payload), [_ignore])

    # -- without Redis ---------------------------------------------------------------------

    def _fallback(self, checks, future: asyncio.Future, reason: str) -> None:
        self.fallbacks[reason] += 1
        if self.on_fallback is not None:
            self.on_fallback(reason)
        if future.done():
            return
        core = self._core
        if self.on_error == "local":
            decision = self.local.decide(checks)
        elif self.on_error == "allow":
            limit = min((c[0] for c in checks), key=_fresh_order)
            decision = core.Decision(
                True, limit, limit.burst - 1, core.ceil_seconds(limit.interval), 0
            )
        else:
            decision = core.Decision(False, checks[0][0], 0, 1, 1)
        future.set_result(decision)


def _seconds(us: int) -> int:
    return -(-us // US)


def _index(n: int) -> bytes:
    return _INDEXES[n] if n < 256 else _bulk(b"%d" % n)


def _batches(items: list) -> list:
    if len(items) <= MAX_BATCH:
        return [items]
    return [items[i : i + MAX_BATCH] for i in range(0, len(items), MAX_BATCH)]


def _fresh_order(limit) -> tuple[int, int]:
    return limit.burst, -limit.interval


def _ignore_lost(conn, error) -> None:
    pass


def _describe(exc: BaseException | str) -> str:
    if isinstance(exc, str):
        return exc
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__
