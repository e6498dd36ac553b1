"""dns:// instances: a service follows what its names resolve to."""

from __future__ import annotations

import asyncio
import logging
import socket

from fastgw.config.model import Instance, Service
from fastgw.upstream.service import ServiceRuntime

NAME = Instance("http", "orders.internal", 8080, dns=True)
STATIC = Instance("http", "10.9.9.9", 80)


class Names:
    """The answers a name lookup gives, changed by the test as it goes."""

    def __init__(self, *addresses: str) -> None:
        self.answer: tuple[str, ...] | OSError = addresses
        self.asked: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int, *, type: int):
        self.asked.append((host, port))
        if isinstance(self.answer, OSError):
            raise self.answer
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, type, 6, "", (a, port))
                for a in self.answer]


def run(scenario):
    async def main():
        names = Names("10.0.0.1", "fd00::1")
        service = ServiceRuntime(Service("orders", (NAME, STATIC)),
                                 asyncio.get_running_loop(), resolve=names.resolve)
        try:
            await scenario(service, names)
        finally:
            service.close()

    asyncio.run(main())


def urls(service: ServiceRuntime) -> list[str]:
    return [inst.name for inst in service.instances]


def test_every_address_of_a_name_is_an_instance_named_in_the_host_header():
    async def scenario(service, names):
        assert urls(service) == ["http://10.9.9.9:80"]  # before the first answer
        await service.resolve_names()
        assert names.asked == [("orders.internal", 8080)]
        assert urls(service) == ["http://10.0.0.1:8080", "http://[fd00::1]:8080",
                                 "http://10.9.9.9:80"]
        hosts = [inst.pool.host_line for inst in service.instances]
        assert hosts == [b"Host: orders.internal:8080\r\n"] * 2 + [b"Host: 10.9.9.9\r\n"]

    run(scenario)


def test_instances_come_and_go_and_those_that_stay_keep_their_state():
    async def scenario(service, names):
        await service.resolve_names()
        stays = service.instances[0]
        stays.in_flight = 3  # requests under way on it
        names.answer = ("10.0.0.1", "10.0.0.2")
        await service.resolve_names()
        assert urls(service) == ["http://10.0.0.1:8080", "http://10.0.0.2:8080",
                                 "http://10.9.9.9:80"]
        assert service.instances[0] is stays and stays.in_flight == 3
        assert service.pick() is not None

    run(scenario)


def test_a_failing_lookup_keeps_the_last_good_addresses_and_logs_once(caplog):
    async def scenario(service, names):
        await service.resolve_names()
        before = list(service.instances)
        names.answer = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        with caplog.at_level(logging.WARNING, logger="fastgw.upstream"):
            for _ in range(3):
                await service.resolve_names()
            assert service.instances == before
            names.answer = ("10.0.0.3",)
            await service.resolve_names()
        assert urls(service) == ["http://10.0.0.3:8080", "http://10.9.9.9:80"]
        failing = [r.getMessage() for r in caplog.records if "cannot resolve" in r.getMessage()]
        assert failing == ["service orders: cannot resolve dns://orders.internal:8080 "
                           "([Errno -3] Temporary failure in name resolution); keeping its 2 "
                           "last known addresses"]
        assert any("resolves again" in r.getMessage() for r in caplog.records)

    run(scenario)


def test_an_empty_answer_is_a_failure_too():
    async def scenario(service, names):
        await service.resolve_names()
        names.answer = ()
        await service.resolve_names()
        assert len(service.instances) == 3

    run(scenario)
