"""A service at run time: its instances, how one is picked, and passive ejection.

Outlier detection (the service's ``outlier`` settings). An instance whose
attempts fail ``consecutive_failures`` times in a row is ejected for
``base_ejection``, doubling with each ejection that no success separates, up
to ``max_ejection``. What counts as a failure: a refused or reset connection,
a connect timeout, a connection closed before the response head, a malformed
response, a response timeout, and the upstream's own 5xx only with
``count_5xx``. A success on any path ends the streak, so one broken endpoint
of an instance that serves the others is not enough to eject it.

Ejection can never cause an outage by itself: the last instance taking
traffic is never ejected, nor more than ``max_ejected_percent`` of them; and
when fewer than ``panic_threshold`` percent take traffic, every instance the
health check has not marked down does. One outage is one ejection: failures
of requests still in flight when an instance was ejected are not counted.

With a ``health_check``, each instance is also probed in the background and
takes no traffic while its probes fail; a passing probe ends an ejection.
With no instance left to try the answer is 503, at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from functools import partial

from ..config.model import Instance, Outlier, Service
from ..metrics import Metrics
from .pool import InstancePool

log = logging.getLogger("fastgw.upstream")


class InstanceState:
    __slots__ = (
        "ejected",
        "ejections",
        "failures",
        "healthy",
        "in_flight",
        "name",
        "pool",
        "probe_streak",
        "readmission",
        "takes_traffic",
        "timing",
    )

    def __init__(self, pool: InstancePool, timing) -> None:
        self.pool = pool
        self.timing = timing  # the service's fastgw_upstream_duration_seconds series
        self.name = pool.instance.url
        self.in_flight = 0
        self.failures = 0  # consecutive, since the last success
        self.ejections = 0  # in a row, since the last success
        self.ejected = False
        self.readmission: asyncio.TimerHandle | None = None
        self.healthy = True  # by the health check
        self.takes_traffic = True
        self.probe_streak = 0


class ServiceRuntime:
    __slots__ = ("_addresses", "_ejections", "_full", "_names", "_next", "_probes", "_resolver",
                 "_timing", "_unresolved", "config", "count_5xx", "instances", "loop", "name",
                 "outlier", "pick", "resolve", "ssl")

    def __init__(self, config: Service, loop: asyncio.AbstractEventLoop, ssl=None,
                 metrics: Metrics | None = None, resolve=None) -> None:
        metrics = metrics if metrics is not None else Metrics()
        self.config = config
        self.name = config.name
        self.loop = loop
        self.ssl = ssl
        self.outlier: Outlier = config.outlier
        self.count_5xx = config.outlier.count_5xx
        self._ejections = metrics.upstream_ejections
        self._full = metrics.upstream_pending_full
        self._timing = metrics.upstream_duration.series((config.name,))
        self._probes: dict[InstanceState, asyncio.Task] = {}
        # dns:// instances: the name lookup (the loop's getaddrinfo unless given),
        # the last good addresses of each name, and the names failing to resolve
        self.resolve = resolve
        self._names = [inst for inst in config.instances if inst.dns]
        self._addresses: dict[Instance, list[str]] = {}
        self._unresolved: set[Instance] = set()
        self._resolver: asyncio.Task | None = None
        self.instances = [self._instance(inst) for inst in config.instances if not inst.dns]
        self._next = 0
        self.pick = {
            "round_robin": self._round_robin,
            "least_requests": self._least_requests,
            "random": self._random,
        }[config.balancer]

    def _instance(self, inst: Instance, host_name: str | None = None) -> InstanceState:
        config = self.config
        server_name = config.tls.server_name if config.tls else None
        pool = InstancePool(
            inst,
            connect_timeout=config.connect_timeout,
            max_connections=config.max_connections,
            max_pending=config.max_pending,
            loop=self.loop,
            ssl=self.ssl if inst.scheme == "https" else None,
            server_hostname=server_name or inst.host,
            host_name=host_name,
            overflowed=partial(self._full.inc, (self.name, inst.url)),
        )
        return InstanceState(pool, self._timing)

    def _available(self, exclude) -> list[InstanceState]:
        return [i for i in self.instances if i.takes_traffic and i is not exclude]

    def _round_robin(self, exclude: InstanceState | None = None) -> InstanceState | None:
        instances = self.instances
        n = len(instances)
        for _ in range(n):
            inst = instances[self._next % n]
            self._next += 1
            if inst.takes_traffic and inst is not exclude:
                return inst
        return None

    def _least_requests(self, exclude: InstanceState | None = None) -> InstanceState | None:
        candidates = self._available(exclude)
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        # Power of two choices: near-optimal, and no herd on one idle instance.
        a, b = random.sample(candidates, 2)
        return a if a.in_flight <= b.in_flight else b

    def _random(self, exclude: InstanceState | None = None) -> InstanceState | None:
        candidates = self._available(exclude)
        return random.choice(candidates) if candidates else None

    # -- outcomes of attempts, as the exchanges report them ----------------------------

    def answered(self, inst: InstanceState, status: int) -> None:
        """INST answered with STATUS: a success, or with ``count_5xx`` maybe a failure."""
        if status >= 500 and self.count_5xx:
            self.failed(inst, f"answered {status}")
        elif inst.failures or inst.ejections:
            inst.failures = 0
            inst.ejections = 0

    def failed(self, inst: InstanceState, reason: str) -> None:
        if inst.ejected:
            return  # in flight when it was ejected: the same outage
        inst.failures += 1
        outlier = self.outlier
        if inst.failures < outlier.consecutive_failures:
            return
        inst.failures = 0
        instances = self.instances
        ejected = sum([1 for i in instances if i.ejected])
        taking = sum([1 for i in instances if i.healthy and not i.ejected])
        if taking <= 1 or (ejected + 1) * 100 > outlier.max_ejected_percent * len(instances):
            return  # never the last one, never more than the share allowed
        duration = min(outlier.base_ejection * 2**inst.ejections, outlier.max_ejection)
        inst.ejections += 1
        inst.ejected = True
        inst.readmission = self.loop.call_later(duration, self._readmit, inst)
        self._ejections.inc((self.name, inst.name))
        self._rebalance()
        log.warning("service %s: instance %s ejected for %gs after %d failures in a row (%s)",
                    self.name, inst.name, duration, outlier.consecutive_failures, reason)

    def _readmit(self, inst: InstanceState) -> None:
        if inst.readmission is not None:
            inst.readmission.cancel()
            inst.readmission = None
        if inst.ejected:
            inst.ejected = False
            inst.failures = 0
            self._rebalance()

    def _rebalance(self) -> None:
        """Which instances take traffic, after any instance changed state."""
        instances = self.instances
        taking = sum([1 for i in instances if i.healthy and not i.ejected])
        panic = taking * 100 < self.outlier.panic_threshold * len(instances)
        for inst in instances:
            inst.takes_traffic = inst.healthy and (panic or not inst.ejected)

    def publish(self, metrics: Metrics) -> None:
        """This worker's view of its instances, into the gauges of METRICS."""
        for inst in self.instances:
            key = (self.name, inst.name)
            metrics.upstream_healthy.set(key, 1 if inst.takes_traffic else 0)
            metrics.upstream_ejected.set(key, 1 if inst.ejected else 0)

    def start(self) -> None:
        """Begin active health checks and name lookups, when the service has them."""
        if self.config.health_check is not None:
            for inst in self.instances:
                self._check(inst)
        if self._names and self._resolver is None:
            self._resolver = self.loop.create_task(self._resolve_forever())

    def _check(self, inst: InstanceState) -> None:
        if inst not in self._probes:
            self._probes[inst] = self.loop.create_task(self._probe(inst))

    def close(self) -> None:
        if self._resolver is not None:
            self._resolver.cancel()
            self._resolver = None
        for inst in self.instances:
            self._retire(inst)

    def _retire(self, inst: InstanceState) -> None:
        """INST takes no more requests: its idle connections close now, busy ones
        when their exchange ends."""
        probe = self._probes.pop(inst, None)
        if probe is not None:
            probe.cancel()
        if inst.readmission is not None:
            inst.readmission.cancel()
        inst.pool.close()

    # -- dns:// instances ------------------------------------------------------------

    async def _resolve_forever(self) -> None:
        while True:
            await self.resolve_names()
            await asyncio.sleep(self.config.resolve_interval)

    async def resolve_names(self) -> None:
        """Look up every dns:// name once, then add and remove instances to match.
        A name that cannot be resolved keeps its last good addresses."""
        resolve = self.resolve if self.resolve is not None else self.loop.getaddrinfo
        for name in self._names:
            try:
                found = await resolve(name.host, name.port, type=socket.SOCK_STREAM)
                addresses = sorted({info[4][0] for info in found})
                if not addresses:
                    raise OSError("no addresses")
            except OSError as exc:
                if name not in self._unresolved:
                    self._unresolved.add(name)
                    log.warning("service %s: cannot resolve %s (%s); keeping its %d last "
                                "known addresses", self.name, name.url, exc,
                                len(self._addresses.get(name, ())))
                continue
            if name in self._unresolved:
                self._unresolved.discard(name)
                log.warning("service %s: %s resolves again", self.name, name.url)
            self._addresses[name] = addresses
        self._settle()

    def _settle(self) -> None:
        current = {inst.pool.instance: inst for inst in self.instances}
        wanted: dict[Instance, str | None] = {}
        for inst in self.config.instances:
            if not inst.dns:
                wanted[inst] = None
            for address in self._addresses.get(inst, ()) if inst.dns else ():
                wanted.setdefault(Instance("http", address, inst.port), inst.host)
        if wanted.keys() == current.keys():
            return
        instances = []
        for inst, host_name in wanted.items():
            state = current.pop(inst, None)
            if state is None:
                state = self._instance(inst, host_name)
                if self.config.health_check is not None:
                    self._check(state)
            instances.append(state)
        self.instances = instances
        for gone in current.values():
            self._retire(gone)
        self._rebalance()
        log.warning("service %s: instances now %s", self.name,
                    ", ".join(i.name for i in instances) or "none")

    async def _probe(self, inst: InstanceState) -> None:
        check = self.config.health_check
        while True:
            ok = await self._probe_once(inst, check.path)
            if ok != inst.healthy:
                inst.probe_streak += 1
                needed = check.healthy_after if ok else check.unhealthy_after
                if inst.probe_streak >= needed:
                    inst.healthy = ok
                    inst.probe_streak = 0
                    inst.failures = 0
                    self._rebalance()
                    log.warning("service %s: instance %s is %s", self.name, inst.name,
                                "healthy" if ok else "unhealthy (health check failing)")
            else:
                inst.probe_streak = 0
                if ok and inst.ejected:
                    self._readmit(inst)  # it answers its probes again
            await asyncio.sleep(check.interval)

    async def _probe_once(self, inst: InstanceState, path: str) -> bool:
        pool = inst.pool
        writer = None
        timeout = self.config.connect_timeout + self.config.response_timeout
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    pool.instance.host, pool.instance.port, ssl=pool.ssl,
                    server_hostname=pool.server_hostname if pool.ssl else None,
                )
                writer.write(
                    b"GET " + path.encode() + b" HTTP/1.1\r\n" + pool.host_line
                    + b"User-Agent: fastgw-health-check\r\nConnection: close\r\n\r\n"
                )
                line = await reader.readline()
        except (OSError, TimeoutError, ValueError):
            return False
        finally:
            if writer is not None:
                writer.close()
        parts = line.split(b" ", 2)
        return len(parts) >= 2 and parts[1][:1] == b"2" and parts[0].startswith(b"HTTP/1.")
