"""The deadlines of every client connection of a gateway, on one timer.

A connection has one deadline at a time (its head must arrive, or it may
stay idle, until then). A timer handle per connection costs about 600 bytes
and a cancel-and-rearm whenever the deadline moves earlier; here a
connection is one entry in the set of the tick (of ``RESOLUTION`` seconds)
it is due in, and one loop timer serves the earliest tick. A tick that comes
before a connection's deadline, because the deadline moved later, hands it
to ``expired()``, which puts it back for its real deadline: moving a deadline
later, as every request does, costs nothing.
"""

from __future__ import annotations

import heapq

RESOLUTION = 0.1


class Deadlines:
    __slots__ = ("_due", "_handle", "_next", "_ticks", "loop")

    def __init__(self, loop) -> None:
        self.loop = loop
        self._due: dict[int, set] = {}  # tick -> connections due in it
        self._ticks: list[int] = []  # heap of the ticks in _due
        self._handle = None
        self._next = 0

    def watch(self, conn, when: float) -> None:
        """Call ``conn.expired()`` at WHEN, or within RESOLUTION after it."""
        tick = int(when / RESOLUTION) + 1
        conn.tick = tick
        due = self._due.get(tick)
        if due is None:
            due = self._due[tick] = set()
            heapq.heappush(self._ticks, tick)
            if self._handle is None or tick < self._next:
                if self._handle is not None:
                    self._handle.cancel()
                self._next = tick
                self._handle = self.loop.call_at(tick * RESOLUTION, self._fire)
        due.add(conn)

    def forget(self, conn) -> None:
        due = self._due.get(conn.tick)
        if due is not None:
            due.discard(conn)
        conn.tick = 0

    def _fire(self) -> None:
        self._handle = None
        now = self.loop.time()
        ticks = self._ticks
        while ticks and ticks[0] * RESOLUTION <= now:
            for conn in self._due.pop(heapq.heappop(ticks)):
                conn.tick = 0
                conn.expired()
        if ticks:
            self._next = ticks[0]
            self._handle = self.loop.call_at(self._next * RESOLUTION, self._fire)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
