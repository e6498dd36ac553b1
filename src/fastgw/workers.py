"""Running the gateway: one process, or a supervisor with N workers on SO_REUSEPORT.

The supervisor never serves traffic. It forks the workers, restarts one that
dies, forwards SIGTERM (graceful drain) and SIGHUP (reload, after checking the
file itself so a bad file is reported once and changes nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time

import uvloop

from .config import ConfigError, load_config
from .gateway import Gateway, SnapshotError
from .ratelimit import SharedBuckets

log = logging.getLogger("fastgw")

RESTART_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0)
_RUNTIME_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None


def serve(path: str, *, worker: int = 0, reuse_port: bool = False, buckets=None,
          metrics_dir: str | None = None, workers: int = 1) -> int:
    """Serve ``path`` in this process until SIGTERM/SIGINT; SIGHUP reloads it."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2

    async def main() -> int:
        loop = asyncio.get_running_loop()
        gateway = Gateway(config, reuse_port=reuse_port, worker=worker, buckets=buckets,
                          metrics_dir=metrics_dir, workers=workers)
        stop = asyncio.Event()
        started = asyncio.Event()

        async def reload() -> None:
            await started.wait()
            try:
                await gateway.reload(load_config(path))
            except (ConfigError, SnapshotError) as exc:
                log.error("reload of %s failed, keeping the running config:\n%s", path, exc)
                return
            log.info("reloaded %s", path)

        # Before starting: a signal that comes as the listeners open is not lost.
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload()))
        try:
            await gateway.start()
        except (SnapshotError, OSError) as exc:
            log.error("cannot start: %s", exc)
            return 2
        started.set()
        await stop.wait()
        log.info("draining (up to %gs)", gateway.config.drain_timeout)
        await gateway.stop()
        return 0

    return uvloop.run(main())


class Supervisor:
    def __init__(self, path: str, workers: int) -> None:
        self.path = path
        self.count = workers
        self.children: dict[int, int] = {}  # pid -> worker index
        self.failures: dict[int, int] = {}
        self.stopping = False
        self.reload_requested = False

    def run(self) -> int:
        try:
            config = load_config(self.path)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
        self.drain_timeout = config.drain_timeout
        # One table for every worker of this host, mapped before they fork.
        self.buckets = SharedBuckets.create()
        # Workers leave their metrics here; the admin worker serves the sum.
        self.metrics_dir = tempfile.mkdtemp(prefix="fastgw-metrics-", dir=_RUNTIME_DIR)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        for index in range(self.count):
            self._spawn(index)
        log.info("supervisor %d running %d workers", os.getpid(), self.count)
        while not self.stopping:
            self._reap()
            if self.reload_requested:
                self.reload_requested = False
                self._reload()
            time.sleep(0.1)
        return self._shutdown()

    def _spawn(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            code = 1
            try:
                code = serve(self.path, worker=index, reuse_port=True, buckets=self.buckets,
                             metrics_dir=self.metrics_dir, workers=self.count)
            finally:
                os._exit(code)
        self.children[pid] = index

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index = self.children.pop(pid, None)
            if index is None or self.stopping:
                continue
            failures = self.failures.get(index, 0)
            delay = RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF) - 1)]
            self.failures[index] = failures + 1
            log.error("worker %d (pid %d) exited (%s); restarting in %.1fs",
                      index, pid, _describe(status), delay)
            time.sleep(delay)
            self._spawn(index)

    def _reload(self) -> None:
        try:
            config = load_config(self.path)
        except ConfigError as exc:
            log.error("reload of %s failed, keeping the running config:\n%s", self.path, exc)
            return
        self.drain_timeout = config.drain_timeout
        self.failures.clear()
        for pid in self.children:
            os.kill(pid, signal.SIGHUP)

    def _shutdown(self) -> int:
        for pid in self.children:
            _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.drain_timeout + 5
        while self.children and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        for pid in self.children:
            _kill(pid, signal.SIGKILL)
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        return 0

    def _on_stop(self, signum, frame) -> None:
        self.stopping = True

    def _on_hup(self, signum, frame) -> None:
        self.reload_requested = True


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.WEXITSTATUS(status)}"


def run(path: str, workers: int | None = None) -> int:
    if workers is None:
        try:
            workers = load_config(path).workers
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
    if workers <= 1:
        return serve(path)
    return Supervisor(path, workers).run()
