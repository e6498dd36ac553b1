"""JSON-lines logs (access, audit) written by a thread, never by the event loop.

The loop only appends a line to a bounded deque; a writer thread drains it in
batches. When the bound is hit the line is dropped, counted, and the drop is
reported once per burst, so a flood cannot grow memory or stall requests.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque

import orjson

log = logging.getLogger("fastgw.logs")

FLUSH_INTERVAL = 0.2


def rfc3339_ms(ts: float) -> str:
    t = time.gmtime(ts)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (  # noqa: UP031 - hot path, no f-string parse
        t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, int(ts * 1000) % 1000,
    )


class LineWriter:
    def __init__(self, path: str, *, max_queued: int = 100_000, name: str = "log") -> None:
        self.path = path
        self.name = name
        self.max_queued = max_queued
        self.dropped = 0
        self._reported_drops = 0
        self._queue: deque[bytes] = deque()
        self._wake = threading.Event()
        self._stopping = False
        if path == "-":
            self._file = sys.stderr.buffer
            self._owns = False
        else:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - owned by the writer thread
            self._owns = True
        self._thread = threading.Thread(target=self._run, name=f"fastgw-{name}", daemon=True)
        self._thread.start()

    def write(self, record: dict) -> None:
        if len(self._queue) >= self.max_queued:
            self.dropped += 1
            return
        self._queue.append(orjson.dumps(record) + b"\n")
        if len(self._queue) == 1:
            self._wake.set()

    def _run(self) -> None:
        queue = self._queue
        while True:
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            if queue:
                batch = []
                while queue:
                    batch.append(queue.popleft())
                try:
                    self._file.write(b"".join(batch))
                    self._file.flush()
                except OSError as exc:
                    log.error("%s: cannot write %s: %s", self.name, self.path, exc)
            if self.dropped != self._reported_drops:
                log.error("%s: %d lines dropped, the queue was full", self.name,
                          self.dropped - self._reported_drops)
                self._reported_drops = self.dropped
            if self._stopping and not queue:
                return

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=5)
        if self._owns:
            self._file.close()
