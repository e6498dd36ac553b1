"""The gateway of one process: listeners, the current snapshot, drain and reload.

A ``Snapshot`` is everything the hot path reads, compiled once from a
``Config``: the router, each route's checks and filter chains, the services
with their pools. A reload builds a new snapshot and swaps the reference;
requests already running keep the one they started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import ipaddress
import logging
import os
import socket
import time
from functools import partial

import orjson

from . import _core
from .admin import AdminServer
from .audit import AuditLog
from .auth.door import Authenticator
from .config import Config, load_config
from .config.model import Route
from .cors import CorsRule, OwnedHeaders
from .filters import POLICY, build_filter
from .filters.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from .filters.python import FilterLoadError, load_all
from .filters.retry import RetryPolicy
from .logs import LineWriter, rfc3339_ms
from .metrics import Metrics, export, merge
from .predicates import INDEXED, build_test, weight_groups
from .proxy.connection import ClientConnection
from .proxy.deadlines import Deadlines
from .proxy.exchange import Rejection
from .ratelimit import MAX_CHECKS, RedisBuckets, SharedBuckets
from .ratelimit.policy import RateLimiter
from .tls import (
    BAD_CLIENT_CERT,
    NO_CLIENT_CERT,
    ListenerTLSContext,
    TLSConfigError,
    handshake_failure_reason,
    upstream_context,
)
from .upstream.service import ServiceRuntime

log = logging.getLogger("fastgw")

METRICS_INTERVAL = 0.25
# A request already on its way into an idle keep-alive connection when the drain
# begins (its client could not know) is read and answered, with Connection: close,
# before idle connections are closed.
DRAIN_GRACE = 0.05


class SnapshotError(ValueError):
    """A config that loads but cannot be served; ``errors`` as in ConfigError."""

    def __init__(self, errors: list[tuple[str, int, str]]) -> None:
        super().__init__("\n".join(f"{f}:{line}: {m}" for f, line, m in errors))
        self.errors = errors


class RouteRuntime:
    __slots__ = (
        "auth",
        "breaker",
        "checks",
        "config",
        "forward_client_cert",
        "host_header",
        "id",
        "python",
        "rate_limits",
        "request_filters",
        "response_filters",
        "response_hooks",
        "retry",
        "scopes",
        "service",
        "stats",
        "token_relay",
    )

    def __init__(self, route: Route, service: ServiceRuntime, authenticator: Authenticator,
                 limiter: RateLimiter, metrics: Metrics, cors: CorsRule | None = None,
                 python=None) -> None:
        self.config = route
        self.id = route.id
        self.stats = metrics.route(route.id)
        self.auth = route.auth
        self.service = service
        self.scopes: tuple[str, ...] = ()
        self.rate_limits: tuple[str, ...] = ()
        self.token_relay = False
        self.forward_client_cert: tuple[str, ...] | None = None
        self.host_header: str | None = None  # "": the client's Host; None: the instance's
        self.retry: RetryPolicy | None = None
        self.breaker: CircuitBreaker | None = None
        request_filters = []
        response_filters = []
        for spec in route.filters:
            if spec.name in POLICY:
                if spec.name == "TokenRelay":
                    self.token_relay = True
                elif spec.name == "ForwardClientCert":
                    self.forward_client_cert = spec.args or ("Hash", "Subject", "URI", "DNS")
                elif spec.name == "RequireScopes":
                    self.scopes += spec.args
                elif spec.name == "PreserveHostHeader":
                    self.host_header = ""
                elif spec.name == "SetRequestHostHeader":
                    self.host_header = spec.args[0]
                elif spec.name == "Retry":
                    self.retry = RetryPolicy(spec.args)
                elif spec.name == "CircuitBreaker":
                    show = partial(_show_state, metrics, route.id)
                    self.breaker = CircuitBreaker(spec.args, show)
                    show(self.breaker)
                else:
                    self.rate_limits += spec.args
                continue
            f = build_filter(spec.name, spec.args)
            if f.has_request:
                request_filters.append(f)
            if f.has_response:
                response_filters.append(f)
        self.python = python  # the route's Python filters (PythonChain), if any
        if python is not None and python.posts:
            response_filters.append(python)
        if cors is not None:
            response_filters.insert(0, OwnedHeaders())
        self.request_filters = tuple(request_filters)
        self.response_filters = tuple(response_filters)
        # One test on the response path for routes that do nothing there.
        self.response_hooks = bool(response_filters) or self.retry is not None or (
            self.breaker is not None)
        # CORS at the door (a preflight carries no credentials), then authentication,
        # authorization and rate limiting, in that order; the Python filters last.
        checks = [] if cors is None else [cors]
        if route.auth == "jwt":
            checks.append(authenticator.authenticate)
        elif route.auth == "mtls":
            checks.append(authenticator.certificate)
        elif route.auth == "jwt_or_mtls":
            checks.append(authenticator.token_or_certificate)
        if self.scopes:
            checks.append(authenticator.authorizer(self.scopes))
        if self.rate_limits:
            if len(set(self.rate_limits)) > MAX_CHECKS:
                raise ValueError(f"at most {MAX_CHECKS} rate limits per route")
            checks.append(limiter.check(self.rate_limits))
        if self.breaker is not None:
            checks.append(partial(_admit, self.breaker))
        if python is not None:
            checks.append(python.check)  # the pre and route filters, and the context post reads
        self.checks = tuple(checks)

    def via(self, service: ServiceRuntime) -> RouteRuntime:
        """This route sending to SERVICE: what a route filter's choice makes it."""
        other = object.__new__(RouteRuntime)
        for name in RouteRuntime.__slots__:
            setattr(other, name, getattr(self, name))
        other.service = service
        return other


def _admit(breaker: CircuitBreaker, ex) -> Rejection | None:
    """Through a closed breaker; while it is open, to its fallback or a 503."""
    if breaker.admits():
        return None
    if breaker.fallback is not None:
        return Rejection(0, forward=breaker.fallback)
    return Rejection(503, "circuit_open")


def _show_state(metrics: Metrics, route_id: str, breaker: CircuitBreaker) -> None:
    for state in (CLOSED, OPEN, HALF_OPEN):
        value = 1 if breaker.state == state else 0
        metrics.circuit_breaker_state.set((route_id, breaker.name, state), value)


def route_spec(route: Route, index: int = 0, trusted=(), groups=None):
    """The route as the router takes it; predicates it cannot index become tests."""
    paths = methods = hosts = None
    headers = []
    tests = []
    for p in route.predicates:
        if p.kind not in INDEXED:
            tests.append(build_test(p, index, trusted, groups or {}))
            continue
        if p.kind == "Path":
            if paths is not None:
                raise ValueError("one Path predicate per route (list patterns in it instead)")
            paths = p.args
        elif p.kind == "Method":
            upper = tuple(m.upper() for m in p.args)
            methods = upper if methods is None else tuple(m for m in methods if m in upper)
        elif p.kind == "Host":
            if hosts is not None:
                raise ValueError("one Host predicate per route (list patterns in it instead)")
            hosts = p.args
        elif p.kind == "Header":
            headers.append((p.args[0].lower(), p.args[1] if len(p.args) > 1 else ""))
    return (paths, methods, hosts, tuple(headers), tuple(tests))


class Snapshot:
    def __init__(self, config: Config, loop, authenticator: Authenticator, limiter: RateLimiter,
                 previous: Snapshot | None = None, metrics: Metrics | None = None) -> None:
        metrics = metrics if metrics is not None else Metrics()
        self.config = config
        self.authenticator = authenticator
        self.limiter = limiter
        self.limits = config.limits
        self.unrouted = metrics.route("")  # what is answered before a route is found
        errors = []
        reusable = previous.services if previous is not None else {}
        self.services: dict[str, ServiceRuntime] = {}
        for name, service in config.services.items():
            old = reusable.get(name)
            if old is not None and old.config == service:
                self.services[name] = old
                continue
            context = None
            if any(i.scheme == "https" for i in service.instances):
                try:
                    context = upstream_context(service.tls)
                except (TLSConfigError, OSError) as exc:
                    errors.append((config.source, service.line, f"services.{name}.tls: {exc}"))
                    continue
            self.services[name] = ServiceRuntime(service, loop, ssl=context, metrics=metrics)
        chains = {}
        try:
            chains = load_all(config.python_filters, [r.id for r in config.routes],
                              config.source)
        except FilterLoadError as exc:
            errors.append((exc.file, exc.line, exc.message))
        self.unrouted_cors = (CorsRule.build(config.cors, None)
                              if config.cors and config.cors.add_to_simple_url_handler_mapping
                              else None)
        self.routes: list[RouteRuntime] = []
        specs = []
        groups = weight_groups(config.routes)
        for i, route in enumerate(config.routes):
            where = (config.source, route.line, f"routes[{i}] ({route.id})")
            try:
                specs.append(route_spec(route, i, config.trusted_proxies, groups))
                self.routes.append(
                    RouteRuntime(route, self.services[route.service], authenticator, limiter,
                                 metrics, cors=CorsRule.build(config.cors, route.cors),
                                 python=chains.get(route.id))
                )
            except ValueError as exc:
                errors.append((where[0], where[1], f"{where[2]}: {exc}"))
        for runtime in self.routes:
            chain = runtime.python
            if chain is not None:
                chain.audit = authenticator.audit
                chain.services = {name: runtime.via(service)
                                  for name, service in self.services.items()}
        if not errors:
            try:
                self.router = _core.Router(specs)
            except ValueError as exc:
                errors.append((config.source, 0, f"routes: {exc}"))
        if errors:
            raise SnapshotError(errors)

    def retired_services(self, newer: Snapshot) -> list[ServiceRuntime]:
        kept = {id(s) for s in newer.services.values()}
        return [s for s in self.services.values() if id(s) not in kept]


def bind_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


class Listening:
    """One listening socket whose accepting pauses at max_connections."""

    def __init__(self, gateway: Gateway, sock: socket.socket, listener,
                 tls: ListenerTLSContext | None) -> None:
        self.gateway = gateway
        self.sock = sock
        self.listener = listener
        self.tls = tls
        self.scheme = "https" if tls is not None else "http"
        self.accepting = False

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()[:2]

    def resume(self) -> None:
        if not self.accepting and self.sock.fileno() >= 0:
            self.accepting = True
            self.gateway.loop.add_reader(self.sock.fileno(), self._accept)

    def pause(self) -> None:
        if self.accepting:
            self.accepting = False
            self.gateway.loop.remove_reader(self.sock.fileno())

    def close(self) -> None:
        self.pause()
        self.sock.close()

    def _accept(self) -> None:
        gateway = self.gateway
        loop = gateway.loop
        for _ in range(64):
            if gateway.at_capacity():
                gateway.pause_accepting()
                return
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("accept failed: %s; pausing accepts for 1s", exc)
                    self.pause()
                    loop.call_later(1.0, self.resume)
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.setblocking(False)
            gateway.pending_accepts += 1
            loop.create_task(self._serve(conn))

    async def _serve(self, conn: socket.socket) -> None:
        gateway = self.gateway
        tls = self.tls
        try:
            if tls is None:
                await gateway.loop.connect_accepted_socket(
                    lambda: ClientConnection(gateway, "http"), conn)
            else:
                peer = conn.getpeername()
                await gateway.loop.connect_accepted_socket(
                    lambda: ClientConnection(gateway, "https"), conn, ssl=tls.context,
                    ssl_handshake_timeout=gateway.snapshot.limits.header_timeout)
        except (OSError, TimeoutError) as exc:
            conn.close()
            if tls is not None:
                reason = handshake_failure_reason(exc)
                if reason in (NO_CLIENT_CERT, BAD_CLIENT_CERT):
                    gateway.audit.connection_failure(peer[0], "mtls_failure", reason)
                    gateway.metrics.auth_failures.inc((reason,))
                log.debug("TLS handshake from %s failed: %s (%s)", peer[0], reason, exc)
        finally:
            gateway.pending_accepts -= 1


class Gateway:
    """The gateway in one process (SPEC section 7): ``async with Gateway(config): ...``."""

    def __init__(self, config: Config | dict | str, *, reuse_port: bool = False,
                 worker: int = 0, buckets: SharedBuckets | None = None,
                 metrics_dir: str | None = None, workers: int = 1) -> None:
        if not isinstance(config, Config):
            config = load_config(config)
        self.config = config
        self.reuse_port = reuse_port
        self.worker = worker
        self.loop: asyncio.AbstractEventLoop | None = None
        self.snapshot: Snapshot | None = None
        self.metrics = Metrics()
        self.metrics_dir = metrics_dir
        self.workers = workers  # of this host, all publishing to metrics_dir
        self._publisher: asyncio.Task | None = None
        self.connections: set[ClientConnection] = set()
        self.pending_accepts = 0
        self.listening: list[Listening] = []
        self.admin: AdminServer | None = None
        self.draining = False
        self.listening_ready = False
        self.access_log: LineWriter | None = None
        self.audit: AuditLog | None = None
        self.authenticator: Authenticator | None = None
        # Made before workers fork when there are several, so limits hold per host.
        self.buckets = buckets if buckets is not None else SharedBuckets.create()
        self.redis: RedisBuckets | None = None
        self.redis_config = None
        self._trusted = config.trusted_proxies
        self.request_ids = _core.active("head").RequestIds()
        self.deadlines: Deadlines | None = None
        self._drained: asyncio.Event | None = None

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.deadlines = Deadlines(self.loop)
        self.audit = AuditLog(self.config.audit.path if self.config.audit else "-")
        self.authenticator = Authenticator(self.config.auth, metrics=self.metrics, audit=self.audit)
        self.redis = await self._redis_for(self.config)
        self.snapshot = Snapshot(self.config, self.loop, self.authenticator, self._limiter(),
                                 metrics=self.metrics)
        await self.authenticator.start()
        for service in self.snapshot.services.values():
            service.start()
        if self.config.access_log is not None:
            self.access_log = LineWriter(self.config.access_log.path, name="access_log")
        for listener in self.config.listeners:
            try:
                sock = bind_socket(listener.host, listener.port, self.reuse_port)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {listener.host}:{listener.port}: "
                                         f"{exc.strerror}") from None
            tls = None
            if listener.tls is not None:
                try:
                    tls = ListenerTLSContext(listener.tls)
                except (TLSConfigError, OSError) as exc:
                    sock.close()
                    raise SnapshotError(
                        [(self.config.source, listener.line, f"listeners: tls: {exc}")]
                    ) from None
            self.listening.append(Listening(self, sock, listener, tls))
        if self.config.admin is not None and self.worker == 0:
            self.admin = AdminServer(self, self.config.admin)
            await self.admin.start()
        # What starting made (config, snapshot, key sets, tables) lives as long as
        # the gateway: the collector need not walk it again on every full pass.
        gc.collect()
        gc.freeze()
        for listening in self.listening:
            listening.resume()
            host, port = listening.address
            log.info("listening on %s://%s:%d", listening.scheme, host, port)
        self.listening_ready = True
        if self.metrics_dir is not None:
            self._publisher = self.loop.create_task(self._publish_metrics())

    @property
    def ready(self) -> bool:
        """Config loaded, listeners bound, every provider holding a key set."""
        return self.listening_ready and not self.draining and self.authenticator.ready

    async def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish (up to ``timeout``), close."""
        if timeout is None:
            timeout = self.config.drain_timeout
        self.draining = True
        for conn in self.connections:
            conn.draining = True
        if self._publisher is not None:
            self._publisher.cancel()
        for listening in self.listening:
            listening.close()
        await asyncio.sleep(DRAIN_GRACE)
        for conn in list(self.connections):
            if conn.active is None and not conn.queue and conn.tunnel is None:
                conn.close()
        if self.connections:
            self._drained = asyncio.Event()
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                log.warning("drain timed out with %d connections open", len(self.connections))
                for conn in list(self.connections):
                    conn.abort()
        if self.admin is not None:
            await self.admin.stop()
        for service in self.snapshot.services.values():
            service.close()
        await self.authenticator.stop()
        if self.redis is not None:
            await self.redis.close()
        if self.access_log is not None:
            self.access_log.close()
        self.audit.close()
        if self.deadlines is not None:
            self.deadlines.close()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def _redis_for(self, config: Config) -> RedisBuckets | None:
        if not any(rl.store == "redis" for rl in config.rate_limits.values()):
            return None
        if self.redis is not None and self.redis_config == config.redis:
            return self.redis
        try:
            redis = RedisBuckets.from_config(
                config.redis,
                local_fallback=self.buckets,
                on_fallback=lambda reason: self.metrics.store_fallbacks.inc((reason,)),
            )
        except (TLSConfigError, OSError) as exc:
            raise SnapshotError([(config.source, 0, f"redis: tls: {exc}")]) from None
        await redis.start()
        self.redis_config = config.redis
        return redis

    def _limiter(self) -> RateLimiter:
        return RateLimiter(self.config, buckets=self.buckets, redis=self.redis,
                           metrics=self.metrics, audit=self.audit)

    async def reload(self, config: Config) -> None:
        """Swap in a new snapshot; raises (keeping the old one) if it cannot be built."""
        authenticator = Authenticator(config.auth, metrics=self.metrics, audit=self.audit,
                                      previous=self.authenticator)
        old_redis = self.redis
        redis = await self._redis_for(config)
        limiter = RateLimiter(config, buckets=self.buckets, redis=redis, metrics=self.metrics,
                              audit=self.audit)
        try:
            snapshot = Snapshot(config, self.loop, authenticator, limiter, previous=self.snapshot,
                                metrics=self.metrics)
        except SnapshotError:
            if redis is not old_redis and redis is not None:
                await redis.close()
            raise
        for listening in self.listening:
            address = (listening.listener.host, listening.listener.port)
            new = next((ln for ln in config.listeners if (ln.host, ln.port) == address), None)
            if listening.tls is not None and new is not None and new.tls is not None:
                try:
                    # Always: certificate files may have been replaced in place.
                    listening.tls.reload(new.tls)
                except (TLSConfigError, OSError) as exc:
                    raise SnapshotError([(config.source, new.line, f"listeners: tls: {exc}")]) \
                        from None
        await authenticator.start()
        old, old_authenticator = self.snapshot, self.authenticator
        self.snapshot, self.authenticator, self.redis = snapshot, authenticator, redis
        self.config = config
        await old_authenticator.stop()
        if old_redis is not None and old_redis is not redis:
            await old_redis.close()
        for service in snapshot.services.values():
            service.start()
        self._trusted = config.trusted_proxies
        for service in old.retired_services(snapshot):
            # Idle connections go now; busy ones close when their exchange ends.
            service.close()
        if [(ln.host, ln.port, ln.tls) for ln in config.listeners] != [
            (ln.host, ln.port, ln.tls) for ln in old.config.listeners
        ]:
            log.warning("listener changes need a restart; keeping the current listeners")

    # -- what connections ask of the gateway ------------------------------------------

    def at_capacity(self) -> bool:
        return len(self.connections) + self.pending_accepts >= self.snapshot.limits.max_connections

    def pause_accepting(self) -> None:
        for listening in self.listening:
            listening.pause()

    def connection_opened(self, conn: ClientConnection) -> None:
        self.connections.add(conn)
        if self.draining:
            conn.draining = True
            conn.close()

    def connection_closed(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)
        if self.draining:
            if not self.connections and self._drained is not None:
                self._drained.set()
        elif not self.at_capacity():
            for listening in self.listening:
                listening.resume()

    def is_trusted(self, ip: str) -> bool:
        if not self._trusted:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self._trusted)

    def log_rejection(self, protocol, status: int, error: str | None, request_id: str) -> None:
        self.metrics.route("").count(0, status, 0.0)
        if self.access_log is not None:
            self.access_log.write({
                "ts": rfc3339_ms(time.time()),
                "request_id": request_id,
                "client_ip": protocol.client_ip,
                "status": status,
                "error": error,
            })

    async def render_metrics(self) -> bytes:
        """Prometheus text: the sum over every worker of this host."""
        self.metrics.active_connections.set((), len(self.connections))
        if self.metrics_dir is None:
            total = self.metrics
        else:
            others = await self.loop.run_in_executor(None, self._read_other_workers)
            total = Metrics()
            merge(total, export(self.metrics))
            for published in others:
                merge(total, published["metrics"])
        # Instance state is this worker's view, not a sum.
        total.upstream_healthy.values.clear()
        total.upstream_ejected.values.clear()
        for service in self.snapshot.services.values():
            service.publish(total)
        return total.render()

    async def host_ready(self) -> bool:
        """This worker is ready, and so is every other worker of the host."""
        if not self.ready:
            return False
        if self.metrics_dir is None:
            return True
        others = await self.loop.run_in_executor(None, self._read_other_workers)
        now = time.time()
        fresh = [p for p in others if p["ready"] and now - p["ts"] < 4 * METRICS_INTERVAL + 1]
        return len(fresh) >= self.workers - 1

    def _read_other_workers(self) -> list[dict]:
        found = []
        for name in os.listdir(self.metrics_dir):
            if name.endswith(".json") and name != f"worker-{self.worker}.json":
                try:
                    with open(os.path.join(self.metrics_dir, name), "rb") as f:
                        found.append(orjson.loads(f.read()))
                except (OSError, ValueError):
                    continue  # a worker being replaced; its next write will be whole
        return found

    async def _publish_metrics(self) -> None:
        """With several workers, each leaves its numbers where the admin worker reads them."""
        path = os.path.join(self.metrics_dir, f"worker-{self.worker}.json")

        def write(data: bytes) -> None:
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.replace(path + ".tmp", path)

        while True:
            self.metrics.active_connections.set((), len(self.connections))
            data = orjson.dumps(
                {"ts": time.time(), "ready": self.ready, "metrics": export(self.metrics)})
            with contextlib.suppress(OSError):
                await self.loop.run_in_executor(None, write, data)
            await asyncio.sleep(METRICS_INTERVAL)
