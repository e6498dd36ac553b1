"""The request path's two twins in one process, and a harness that drives either.

``fastgw.proxy.{exchange,upstream,connection}`` are compiled from their own
.py source; ``load_twin()`` loads that source a second time, as the package
``fastgw._twin_proxy``, so the pure-Python twin and the compiled build can run
side by side. The twin's modules import each other (its connection makes twin
exchanges, its exchanges drive twin upstream connections) and the shared rest
of fastgw (``fastgw.http``, ``fastgw._core``, the pools, the gateway).

A few names cross the border between the request path and the rest: the
pools make ``UpstreamConnection`` and raise ``UpstreamError``, the checks
answer with ``Rejection``. During a run those names, where the rest holds
them, are the twin's under test (``bordering``), as in a process that has
only that twin.

``drive(modules, scenario)`` runs one ``Gateway`` on the given twin: a client
connection and the upstream connections behind the pool are in-memory
transports that record everything done to them, the client's bytes arrive
in the scenario's chunks, and the upstream answers each request it parses
from the scenario's script. The loop is run to quiescence after every
chunk; nothing waits on the clock. The ``Outcome`` holds what the client and
the upstream saw, the gateway's metrics, access log and audit log (times and
durations left out), its log records and the state the connections were
left in.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.machinery
import importlib.util
import logging
import sys
import tempfile
import types
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import httptools
import orjson
import uvloop

import fastgw.proxy.connection
import fastgw.proxy.deadlines
import fastgw.proxy.exchange
import fastgw.proxy.upstream
from fastgw._core import active
from fastgw.gateway import Gateway
from fastgw.metrics import export
from fastgw.ratelimit.shared import SharedBuckets
from fastgw.upstream.pool import InstancePool

TWIN_PACKAGE = "fastgw._twin_proxy"
MODULES = ("client", "upstream", "exchange", "connection")  # each imports only those before it

COMPILED = types.SimpleNamespace(**{
    name: sys.modules[f"fastgw.proxy.{name}"] for name in MODULES})


def is_built(module) -> bool:
    return (module.__file__ or "").endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def compiled_built() -> bool:
    """The imported request path is the compiled build (not its source)."""
    return all(is_built(getattr(COMPILED, name)) for name in MODULES)


def load_twin() -> types.SimpleNamespace:
    """The request path's Python twin, loaded from the .py beside each build."""
    if TWIN_PACKAGE not in sys.modules:
        source = Path(fastgw.proxy.exchange.__file__).parent
        package = types.ModuleType(TWIN_PACKAGE, "The request path's Python twin.")
        package.__path__ = []  # nothing is found in it but what is put there
        sys.modules[TWIN_PACKAGE] = package
        sys.modules[f"{TWIN_PACKAGE}.deadlines"] = fastgw.proxy.deadlines  # plain Python
        for name in MODULES:
            full = f"{TWIN_PACKAGE}.{name}"
            spec = importlib.util.spec_from_file_location(full, source / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[full] = module
            spec.loader.exec_module(module)
            setattr(package, name, module)
        # It parses with the HTTP/1.1 parser's Python twin, as a process on the twins does.
        h1 = importlib.import_module("fastgw._core._h1_py")
        package.connection.RequestParser = h1.RequestParser
        package.upstream.ResponseParser = h1.ResponseParser
    package = sys.modules[TWIN_PACKAGE]
    return types.SimpleNamespace(**{name: getattr(package, name) for name in MODULES})


def border() -> list[tuple[types.ModuleType, str, str]]:
    """Where the rest of fastgw holds a class or function of the request path:
    ``(module, name, the request path's module it came from)``."""
    found = []
    for module_name, module in list(sys.modules.items()):
        if (module is None or not module_name.startswith("fastgw.")
                or module_name.startswith(("fastgw.proxy.", TWIN_PACKAGE))):
            continue
        for name, value in list(vars(module).items()):
            source = getattr(value, "__module__", None)
            if (isinstance(source, str) and source.startswith("fastgw.proxy.")
                    and source.rpartition(".")[2] in MODULES):
                found.append((module, name, source.rpartition(".")[2]))
    return found


@contextlib.contextmanager
def bordering(modules):
    """The rest of fastgw using the classes of MODULES (one twin) where it names them."""
    saved = []
    for module, name, source in border():
        saved.append((module, name, getattr(module, name)))
        setattr(module, name, getattr(getattr(modules, source), name))
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


# -- the scenario -------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What the upstream does with one request it parsed: send ``chunks`` (one
    read each), then keep the connection or close it; ``early``: as soon as the
    request head is in, not after its body. ``reset``: close without a word."""

    chunks: tuple[bytes, ...] = ()
    close: bool = False
    early: bool = False
    reset: bool = False


OK = Answer((b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",))


@dataclass(frozen=True)
class Scenario:
    chunks: tuple[bytes, ...]  # what the client sends, one read each
    answers: tuple[Answer, ...] = ()  # the upstream's, in order; OK for the rest
    client_eof: bool = False  # the client closes once everything is sent
    refusals: int = 0  # new upstream connections refused before one succeeds
    client_high_water: int = 0  # the client transport pauses writing above this; 0: never
    upstream_high_water: int = 0
    idle: bool = True  # the pool starts with an idle connection
    switch: bool = False  # the upstream agrees to every upgrade, then echoes what it reads
    peer: object = ("10.0.0.7", 40000)  # the client transport's peername (10/8 is trusted)


def config(logs: str) -> dict:
    return {
        "listeners": [{"address": "127.0.0.1:0"}],
        "admin": None,
        "trusted_proxies": ["10.0.0.0/8"],
        "audit": {"path": f"{logs}/audit.log"},
        "access_log": {"path": f"{logs}/access.log"},
        "limits": {"max_request_line": 300, "max_header_bytes": 1024, "max_headers": 24,
                   "max_body": "300KiB"},
        "services": {"orders": {"instances": ["http://127.0.0.1:9"], "retries": 1}},
        "rate_limits": {"few": {"rate": "2/h", "key": "ip"}},
        "routes": [
            {"id": "api", "uri": "lb://orders", "predicates": ["Path=/api/**"], "auth": "none",
             "filters": ["AddRequestHeader=X-Gateway, fastgw",
                         "AddResponseHeader=X-Served-By, fastgw"]},
            {"id": "strip", "uri": "lb://orders", "predicates": ["Path=/strip/**"],
             "auth": "none", "filters": ["StripPrefix=1", "RemoveRequestHeader=X-Drop"]},
            {"id": "limited", "uri": "lb://orders", "predicates": ["Path=/limited/**"],
             "auth": "none", "filters": ["RateLimit=few"]},
            # its check is replaced by later_check when the gateway runs
            {"id": "later", "uri": "lb://orders", "predicates": ["Path=/later/**"],
             "auth": "none"},
        ],
    }


def later_check(ex, rejection):
    """A check that answers a loop iteration later, as a Redis decision does, by the
    request's X-Verdict: allow, deny, fail (the check raises), or none (at once)."""
    verdict = ex.request.headers.get("x-verdict")
    if verdict not in ("allow", "deny", "fail"):
        return None
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    if verdict == "fail":
        loop.call_soon(future.set_exception, RuntimeError("the check failed"))
    else:
        loop.call_soon(future.set_result, None if verdict == "allow" else
                       rejection(403, "forbidden", (("X-Why", "no"),)))
    return future


# -- in-memory transports ------------------------------------------------------------------


class Recorder:
    """Every event of one run, in order, and a count that says whether anything moved."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.activity = 0

    def event(self, *event) -> None:
        self.events.append(event)
        self.activity += 1

    def call(self, where: str, fn, *args) -> None:
        """Call into the gateway as a transport would; what it raises is an event."""
        self.activity += 1
        try:
            fn(*args)
        except Exception as exc:  # recorded, and compared between the twins
            self.event(where, "raised", type(exc).__name__, str(exc))


class Wire(asyncio.Transport):
    """The gateway's end of an in-memory connection, recording what is done to it."""

    def __init__(self, recorder: Recorder, name: str, peer: tuple, high_water: int = 0) -> None:
        super().__init__()
        self.recorder = recorder
        self.name = name
        self.peer = peer
        self.high_water = high_water
        self.loop = asyncio.get_running_loop()
        self.protocol = None
        self.closing = False
        self.lost = False
        self._losing = False
        self.reading_paused = False
        self.writing_paused = False
        self.buffered = 0
        self.on_data = None  # the peer, reading what the gateway writes
        self.on_resume = None  # the peer, told it may write again

    def attach(self, protocol) -> None:
        self.protocol = protocol
        self.recorder.call(self.name, protocol.connection_made, self)

    # what the gateway calls

    def write(self, data) -> None:
        self._written("write", bytes(data))

    def writelines(self, chunks) -> None:
        self._written("writelines", b"".join(chunks))

    def _written(self, how: str, data: bytes) -> None:
        if self.closing:
            self.recorder.event(self.name, how + " after close", data)
            return
        self.recorder.event(self.name, how, data)
        if self.on_data is not None:
            self.on_data(data)
        if self.high_water:
            self.buffered += len(data)
            if self.buffered > self.high_water and not self.writing_paused:
                self.writing_paused = True
                self.recorder.event(self.name, "pause writing")
                self.recorder.call(self.name, self.protocol.pause_writing)

    def pause_reading(self) -> None:
        self.recorder.event(self.name, "pause reading")
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.recorder.event(self.name, "resume reading")
        self.reading_paused = False
        if self.on_resume is not None:
            self.on_resume()

    def is_reading(self) -> bool:
        return not self.reading_paused

    def close(self) -> None:
        self.recorder.event(self.name, "close")
        self._lose()

    def abort(self) -> None:
        self.recorder.event(self.name, "abort")
        self._lose()

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name, default=None):
        return {"peername": self.peer}.get(name, default)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    # what the peer and the event loop do

    def _lose(self) -> None:
        self.closing = True
        if not self._losing:
            self._losing = True
            self.loop.call_soon(self._lost)

    def _lost(self) -> None:
        self.lost = True
        self.recorder.event(self.name, "connection lost")
        self.recorder.call(self.name, self.protocol.connection_lost, None)

    def peer_closes(self) -> None:
        """The other side closed its end: EOF, then (eof_received is falsy) the close."""
        if self.closing:
            return
        self.recorder.event(self.name, "eof")
        self.recorder.call(self.name, self.protocol.eof_received)
        self._lose()

    def drain(self) -> bool:
        """The peer read everything written so far; True if that changed anything."""
        if not self.buffered:
            return False
        self.buffered = 0
        if self.writing_paused and not self.lost:
            self.writing_paused = False
            self.recorder.event(self.name, "resume writing")
            self.recorder.call(self.name, self.protocol.resume_writing)
        return True


class UpstreamPeer:
    """The instance behind the pool: parses each request the gateway writes and
    answers it from the script."""

    def __init__(self, recorder: Recorder, connection_cls, scenario: Scenario) -> None:
        self.recorder = recorder
        self.connection_cls = connection_cls
        self.answers = deque(scenario.answers)
        self.switch = scenario.switch
        self.refusals = scenario.refusals
        self.high_water = scenario.upstream_high_water
        self.wires: list[Wire] = []
        self.connections: list = []

    def connect(self, pool):
        wire = Wire(self.recorder, f"upstream{len(self.connections)}", ("127.0.0.1", 9),
                    self.high_water)
        conn = self.connection_cls(pool, pool.loop)
        ServerEnd(self, wire, conn)
        self.wires.append(wire)
        self.connections.append(conn)
        wire.attach(conn)
        return conn

    def next_answer(self) -> Answer:
        return self.answers.popleft() if self.answers else OK


class ServerEnd:
    """One upstream connection seen from the upstream (httptools parser callbacks)."""

    def __init__(self, peer: UpstreamPeer, wire: Wire, conn) -> None:
        self.peer = peer
        self.wire = wire
        self.conn = conn
        self.parser = httptools.HttpRequestParser(self)
        self.broken = False
        self.tunnel = False
        self.upgrade: bytes | None = None
        self.answer: Answer | None = None
        self.pending: deque = deque()  # bytes to send, or None for the close
        self.scheduled = False
        wire.on_data = self.received
        wire.on_resume = self.schedule

    def received(self, data: bytes) -> None:
        if self.tunnel:
            self.pending.append(b"echo:" + data)
            self.schedule()
            return
        if self.broken:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self.upgrade is not None and self.peer.switch:
                self.tunnel = True
                if data[exc.args[0]:]:
                    self.received(data[exc.args[0]:])
            else:
                self.broken = True  # nobody reads what follows
        except httptools.HttpParserError as exc:
            self.broken = True
            self.peer.recorder.event(self.wire.name, "unparsable request", str(exc))

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"upgrade":
            self.upgrade = value

    def on_headers_complete(self) -> None:
        self.answer = self.peer.next_answer()
        if self.upgrade is not None and self.peer.switch:
            self.answer = Answer((b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: "
                                  + self.upgrade + b"\r\nConnection: Upgrade\r\n\r\nhello",))
        if self.answer.early:
            self.respond()

    def on_message_complete(self) -> None:
        if self.answer is not None and not self.answer.early:
            self.respond()
        self.answer = None

    def respond(self) -> None:
        answer = self.answer
        if answer.reset:
            self.pending.append(None)
        else:
            self.pending.extend(answer.chunks)
            if answer.close:
                self.pending.append(None)
        self.schedule()

    def schedule(self) -> None:
        if self.pending and not self.scheduled:
            self.scheduled = True
            self.wire.loop.call_soon(self.step)

    def step(self) -> None:
        """One read on the gateway's side per call, as a socket delivers them."""
        self.scheduled = False
        wire = self.wire
        if wire.closing:
            self.pending.clear()
            return
        if wire.reading_paused or not self.pending:
            return  # resume_reading schedules the rest
        chunk = self.pending.popleft()
        if chunk is None:
            self.pending.clear()
            wire.peer_closes()
            return
        self.peer.recorder.call(wire.name, self.conn.data_received, chunk)
        self.schedule()


def pool_class(peer: UpstreamPeer, upstream_error: type) -> type:
    """The pool's class, but new connections come from PEER (of the twin under test)."""

    class Pool(InstancePool):
        __slots__ = ()

        async def _connect(self):
            self.open += 1
            if peer.refusals:
                peer.refusals -= 1
                self._released_slot()
                raise upstream_error(502, "upstream connect failed: Connection refused",
                                     retryable=True)
            return peer.connect(self)

    return Pool


# -- a run ----------------------------------------------------------------------------------


QUIET = 6  # loop iterations without an event before a run counts as settled
MAX_ITERATIONS = 20_000


@dataclass
class Outcome:
    events: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    logs: list = field(default_factory=list)  # the fastgw loggers' records
    access: list = field(default_factory=list)
    audit: list = field(default_factory=list)
    state: dict = field(default_factory=dict)

    def client_bytes(self) -> bytes:
        return b"".join(e[2] for e in self.events
                        if e[0] == "client" and e[1] in ("write", "writelines"))

    def upstream_bytes(self) -> bytes:
        return b"".join(e[2] for e in self.events
                        if e[0].startswith("upstream") and e[1] in ("write", "writelines"))

    def happened(self, who: str, what: str) -> bool:
        return any(e[0] == who and e[1] == what for e in self.events)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        self.records.append((record.name, record.levelname, record.getMessage(),
                             None if exc is None else f"{type(exc).__name__}: {exc}"))


async def settle(recorder: Recorder, wires) -> None:
    """Run the loop until nothing happens any more, the peers reading all that was written."""
    for _ in range(MAX_ITERATIONS):
        quiet = 0
        while quiet < QUIET:
            before = recorder.activity
            await asyncio.sleep(0)
            quiet = quiet + 1 if recorder.activity == before else 0
        drained = False
        for wire in list(wires):
            drained |= wire.drain()
        if not drained:
            return
    recorder.event("harness", "did not settle")


def _metrics(gateway: Gateway) -> dict:
    """The metrics without timings: a histogram's observations counted, not placed."""
    out = {}
    for name, rows in export(gateway.metrics).items():
        if name.endswith("_duration"):
            rows = [[key, sum(counts)] for key, counts, _ in rows]
        if rows:
            out[name] = sorted(rows, key=repr)
    return out


def _lines(path: str) -> list[dict]:
    """A JSON-lines log's records, without the time each was written."""
    with open(path, "rb") as f:
        records = [orjson.loads(line) for line in f]
    for record in records:
        record.pop("ts", None)
        record.pop("duration_ms", None)
    return records


def _state(obj, names) -> dict:
    """Attribute values with their types: a compiled attribute may coerce what it stores."""
    out = {}
    for name in names:
        value = getattr(obj, name)
        out[name] = (type(value).__name__, value if isinstance(value, bool | int | str
                                                              | type(None)) else repr(value))
    return out


CLIENT_STATE = ("closing", "read_paused", "write_paused", "trusted", "requests", "buffered",
                "_next", "_in_head", "_head_bytes", "_running",
                "_timer_kind", "client_ip", "scheme")
UPSTREAM_STATE = ("closed", "reusable", "request_sent", "write_paused", "_response_head_seen")


async def _drive(modules, scenario: Scenario, logs: str) -> Outcome:
    loop = asyncio.get_running_loop()
    recorder = Recorder()
    loop.set_exception_handler(
        lambda _, context: recorder.event("loop", "error", context.get("message"),
                                          repr(context.get("exception"))))
    gateway = Gateway(config(logs), buckets=SharedBuckets.create(64))
    await gateway.start()
    records = Records()
    logger = logging.getLogger("fastgw")
    logger.addHandler(records)
    try:
        gateway.request_ids = active("head").RequestIds(prefix=b"twin-")
        for route in gateway.snapshot.routes:
            if route.id == "later":
                route.checks = (functools.partial(later_check,
                                                  rejection=modules.exchange.Rejection),)
        instance = gateway.snapshot.services["orders"].instances[0]
        peer = UpstreamPeer(recorder, modules.upstream.UpstreamConnection, scenario)
        old = instance.pool
        pool = instance.pool = pool_class(peer, modules.upstream.UpstreamError)(
            old.instance, connect_timeout=old.connect_timeout,
            max_connections=old.max_connections, max_pending=old.max_pending, loop=old.loop,
            ssl=old.ssl, server_hostname=old.server_hostname)
        if scenario.idle:
            # the pool starts with one idle connection, as after an earlier request
            first = peer.connect(pool)
            first.reusable = True
            pool.open = 1
            pool.release(first)

        client = Wire(recorder, "client", scenario.peer, scenario.client_high_water)
        wires = peer.wires  # the peer adds the wires of new connections here
        wires.insert(0, client)
        protocol = modules.connection.ClientConnection(gateway, "http")
        client.attach(protocol)
        chunks = deque(scenario.chunks)
        while chunks:
            await settle(recorder, wires)
            if client.closing or client.reading_paused:
                recorder.event("client", "unread", sum(len(c) for c in chunks))
                break
            recorder.call("client", protocol.data_received, chunks.popleft())
        await settle(recorder, wires)
        if scenario.client_eof:
            client.peer_closes()
            await settle(recorder, wires)

        outcome = Outcome()
        outcome.state = {
            "client": _state(protocol, CLIENT_STATE),
            "queued": len(protocol.queue) - protocol._next,
            "active": protocol.active is not None,
            "tunnel": protocol.tunnel is not None,
            "upstream": [_state(conn, UPSTREAM_STATE) for conn in peer.connections],
            "pool": (pool.open, len(pool._idle)),
            "instance": (instance.in_flight, instance.failures, instance.ejections),
        }
        await gateway.stop(timeout=0)
        await settle(recorder, wires)
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        await settle(recorder, wires)
        outcome.events = recorder.events
        outcome.metrics = _metrics(gateway)
        outcome.logs = records.records
        outcome.access = _lines(f"{logs}/access.log")
        outcome.audit = _lines(f"{logs}/audit.log")
        return outcome
    finally:
        logger.removeHandler(records)
        gateway.buckets.close()


def drive(modules, scenario: Scenario) -> Outcome:
    """One run of SCENARIO on a fresh gateway in a fresh loop."""
    with (tempfile.TemporaryDirectory(prefix="fastgw-twins-") as logs, bordering(modules),
          asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner):
        return runner.run(_drive(modules, scenario, logs))
