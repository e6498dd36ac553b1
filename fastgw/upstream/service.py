"""A service at run time: its instances, how one is picked, and passive ejection.

An instance that fails ``EJECT_AFTER`` times in a row (refused, reset,
timed out, broken response) is ejected for a while that doubles with each
ejection, up to ``MAX_EJECTION``; one success makes it whole again. With no
instance left to try the answer is 503.
"""

from __future__ import annotations

import asyncio
import logging
import random

from ..config.model import Service
from .pool import InstancePool

log = logging.getLogger("fastgw.upstream")

EJECT_AFTER = 3
BASE_EJECTION = 5.0
MAX_EJECTION = 60.0


class InstanceState:
    __slots__ = ("ejected_until", "ejections", "failures", "in_flight", "name", "pool")

    def __init__(self, pool: InstancePool) -> None:
        self.pool = pool
        self.name = pool.instance.url
        self.in_flight = 0
        self.failures = 0
        self.ejections = 0
        self.ejected_until = 0.0


class ServiceRuntime:
    __slots__ = ("_next", "config", "instances", "loop", "name", "pick")

    def __init__(self, config: Service, loop: asyncio.AbstractEventLoop, ssl=None) -> None:
        self.config = config
        self.name = config.name
        self.loop = loop
        server_name = config.tls.server_name if config.tls else None
        self.instances = [
            InstanceState(
                InstancePool(
                    inst,
                    connect_timeout=config.connect_timeout,
                    max_connections=config.max_connections,
                    loop=loop,
                    ssl=ssl if inst.scheme == "https" else None,
                    server_hostname=server_name or inst.host,
                )
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
        return [i for i in self.instances if i.ejected_until <= now and i is not exclude]

    def _round_robin(self, exclude: InstanceState | None = None) -> InstanceState | None:
        instances = self.instances
        now = self.loop.time()
        n = len(instances)
        for _ in range(n):
            inst = instances[self._next % n]
            self._next += 1
            if inst.ejected_until <= now and inst is not exclude:
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

    def close(self) -> None:
        for inst in self.instances:
            inst.pool.close()
