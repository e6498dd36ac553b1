"""A server on an event loop of its own, in a daemon thread, usable from sync tests."""

from __future__ import annotations

import asyncio
import threading
from typing import Self


class BackgroundServer:
    """Subclasses provide ``_listen`` and ``_shutdown`` (run on the server's loop)."""

    thread_name = "background-server"
    new_loop = staticmethod(asyncio.new_event_loop)

    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Self:
        self._loop = self.new_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=self.thread_name,
                                        daemon=True)
        self._thread.start()
        self.call(self._listen())
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        self.call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = None

    def call(self, coroutine, timeout: float = 10):
        """Run ``coroutine`` on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    async def _listen(self) -> None:
        raise NotImplementedError

    async def _shutdown(self) -> None:
        raise NotImplementedError
