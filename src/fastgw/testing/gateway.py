"""A gateway inside the test's own process, for tests written without asyncio."""

from __future__ import annotations

from pathlib import Path

import uvloop

from ..config import Config, load_config
from ..gateway import Gateway
from ._background import BackgroundServer


class InProcessGateway(BackgroundServer):
    """``Gateway`` on a uvloop loop of its own, in a daemon thread.

    ``config`` is a ``Config``, a dict or a file path; listeners and the admin
    listener may ask for port 0, and ``url`` / ``admin_url`` say where they
    are. ``start()`` returns once every listener is bound and every JWT
    provider has had its first key-set fetch; ``ready`` says whether it got
    one. ``reload(config)`` swaps the config as SIGHUP does.
    """

    thread_name = "fastgw-gateway"
    new_loop = staticmethod(uvloop.new_event_loop)

    def __init__(self, config: Config | dict | str | Path) -> None:
        self.config = config if isinstance(config, Config) else load_config(config)
        self.gateway: Gateway | None = None

    async def _listen(self) -> None:
        self.gateway = Gateway(self.config)
        await self.gateway.start()

    async def _shutdown(self) -> None:
        await self.gateway.stop()

    def call(self, coroutine, timeout: float = 30):
        return super().call(coroutine, timeout)

    @property
    def port(self) -> int:
        """The port of the first listener."""
        return self.gateway.listening[0].address[1]

    @property
    def url(self) -> str:
        """``http://`` or ``https://`` and the first listener's address."""
        listening = self.gateway.listening[0]
        host, port = listening.address
        host = f"[{host}]" if ":" in host else host
        return f"{listening.scheme}://{host}:{port}"

    @property
    def admin_url(self) -> str:
        admin = self.gateway.admin
        if admin is None:
            raise RuntimeError("this config has no admin listener")
        return f"http://{admin.host}:{admin.port}"

    @property
    def ready(self) -> bool:
        return self.gateway.ready

    def reload(self, config: Config | dict | str | Path) -> None:
        """Swap in CONFIG; raises (keeping the running one) if it cannot be built."""
        config = config if isinstance(config, Config) else load_config(config)
        self.call(self.gateway.reload(config))
        self.config = config
