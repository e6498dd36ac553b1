"""A service at run time: its instances, how one is picked, and passive ejection.

An instance that fails ``EJECT_AFTER`` times in a row (refused, reset,
timed out, broken response) is ejected for a while that doubles with each
ejection, up to ``MAX_EJECTION``; one success makes it whole again. With a
``health_check``, each instance is also probed in the background and takes
no traffic while its probes fail. With no instance left to try the answer
is 503.
"""

from __future__ import annotations

import asyncio
import logging
import random

from ..config.model import Service
from ..metrics import DURATION_BUCKETS, Series
from .pool import InstancePool

log = logging.getLogger("fastgw.upstream")

EJECT_AFTER = 3
BASE_EJECTION = 5.0
MAX_EJECTION = 60.0


class InstanceState:
    __slots__ = (
        "ejected_until",
        "ejections",
        "failures",
        "healthy",
        "in_flight",
        "name",
        "pool",
        "probe_streak",
        "timing",
    )

    def __init__(self, pool: InstancePool, timing) -> None:
        self.pool = pool
        self.timing = timing  # the service's fastgw_upstream_duration_seconds series
        self.name = pool.instance.url
        self.in_flight = 0
        self.failures = 0
        self.ejections = 0
        self.ejected_until = 0.0
        self.healthy = True
        self.probe_streak = 0

    def available(self, now: float) -> bool:
        return self.healthy and self.ejected_until <= now


class ServiceRuntime:
    __slots__ = ("_next", "_probes", "config", "instances", "loop", "name", "pick", "ssl")

    def __init__(self, config: Service, loop: asyncio.AbstractEventLoop, ssl=None,
                 metrics=None) -> None:
        self.config = config
        self.name = config.name
        self.loop = loop
        self.ssl = ssl
        self._probes: list[asyncio.Task] = []
        server_name = config.tls.server_name if config.tls else None
        timing = (metrics.upstream_duration.series((config.name,)) if metrics is not None
                  else Series(DURATION_BUCKETS))
        self.instances = [
            InstanceState(
                InstancePool(
                    inst,
                    connect_timeout=config.connect_timeout,
                    max_connections=config.max_connections,
                    loop=loop,
                    ssl=ssl if inst.scheme == "https" else None,
                    server_hostname=server_name or inst.host,
                ),
                timing,
            )
            for inst in config.instances
        ]
        self._next = 0
        self.pick = {
            "round_robin": self._round_robin,
            "least_requests": self._least_requests,
            "random": self._random,
        }[config.balancer]

    def _available(self, exclude) -> list[InstanceState]:
        now = self.loop.time()
        return [i for i in self.instances if i.available(now) and i is not exclude]

    def _round_robin(self, exclude: InstanceState | None = None) -> InstanceState | None:
        instances = self.instances
        now = self.loop.time()
        n = len(instances)
        for _ in range(n):
            inst = instances[self._next % n]
            self._next += 1
            if inst.available(now) and inst is not exclude:
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

    def succeeded(self, inst: InstanceState) -> None:
        if inst.failures:
            inst.failures = 0
            inst.ejections = 0

    def failed(self, inst: InstanceState, reason: str) -> None:
        inst.failures += 1
        if inst.failures >= EJECT_AFTER:
            inst.failures = 0
            duration = min(BASE_EJECTION * 2**inst.ejections, MAX_EJECTION)
            inst.ejections += 1
            inst.ejected_until = self.loop.time() + duration
            log.warning(
                "service %s: instance %s ejected for %.0fs after repeated failures (%s)",
                self.name, inst.name, duration, reason,
            )

    def start(self) -> None:
        """Begin active health checks, when the service has them."""
        if self.config.health_check is not None and not self._probes:
            self._probes = [self.loop.create_task(self._probe(i)) for i in self.instances]

    def close(self) -> None:
        for task in self._probes:
            task.cancel()
        self._probes = []
        for inst in self.instances:
            inst.pool.close()

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
                    if ok:
                        inst.ejected_until = 0.0
                        inst.failures = 0
                    log.warning("service %s: instance %s is %s", self.name, inst.name,
                                "healthy" if ok else "unhealthy (health check failing)")
            else:
                inst.probe_streak = 0
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
