"""The gateway's deadlines: one timer for every client connection's deadline."""

from __future__ import annotations

import asyncio

import uvloop

from fastgw.proxy.deadlines import RESOLUTION, Deadlines


class Conn:
    def __init__(self, deadlines: Deadlines, name: str, log: list) -> None:
        self.tick = 0
        self.deadlines = deadlines
        self.name = name
        self.log = log
        self.due = 0.0

    def expired(self) -> None:
        # What a connection does: act only once its real deadline has come.
        if self.deadlines.loop.time() < self.due:
            self.deadlines.watch(self, self.due)
            return
        self.log.append(self.name)


def run(coro):
    return uvloop.run(coro)


def test_connections_expire_in_deadline_order_and_a_forgotten_one_never():
    async def main():
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        log: list[str] = []
        now = loop.time()
        late, early, gone = (Conn(deadlines, n, log) for n in ("late", "early", "gone"))
        for conn, after in ((late, 0.3), (early, 0.1), (gone, 0.2)):
            conn.due = now + after
            deadlines.watch(conn, conn.due)
        deadlines.forget(gone)
        assert gone.tick == 0
        async with asyncio.timeout(10):
            while len(log) < 2:
                await asyncio.sleep(RESOLUTION)
        await asyncio.sleep(3 * RESOLUTION)
        deadlines.close()
        return log, [late.tick, early.tick]

    log, ticks = run(main())
    assert log == ["early", "late"]
    assert ticks == [0, 0]


def test_a_deadline_moved_later_is_honoured_not_fired_early():
    async def main():
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        log: list[str] = []
        conn = Conn(deadlines, "moved", log)
        conn.due = loop.time() + RESOLUTION
        deadlines.watch(conn, conn.due)
        conn.due = loop.time() + 5 * RESOLUTION  # moved later without re-watching
        async with asyncio.timeout(10):
            while not log:
                await asyncio.sleep(RESOLUTION / 2)
        fired_at = loop.time()
        deadlines.close()
        return log, fired_at >= conn.due

    log, not_early = run(main())
    assert log == ["moved"]
    assert not_early


def test_nothing_is_held_once_every_connection_is_forgotten():
    async def main():
        deadlines = Deadlines(asyncio.get_running_loop())
        conns = [Conn(deadlines, str(i), []) for i in range(100)]
        for i, conn in enumerate(conns):
            deadlines.watch(conn, deadlines.loop.time() + 60 + i)
        for conn in conns:
            deadlines.forget(conn)
        held = sum(len(due) for due in deadlines._due.values())
        deadlines.close()
        return held

    assert run(main()) == 0
