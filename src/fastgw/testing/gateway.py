"""A gateway inside the test's own process, for tests written without asyncio."""

from __future__ import annotations

import http.client
from dataclasses import dataclass
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

    def fetch(self, method: str, path: str, headers: dict | None = None,
              body: bytes | None = None, timeout: float = 10) -> Response:
        """One request over a fresh connection to the first listener."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return Response(response.status, response.getheaders(), response.read())
        finally:
            connection.close()

    def reload(self, config: Config | dict | str | Path) -> None:
        """Swap in CONFIG; raises (keeping the running one) if it cannot be built."""
        config = config if isinstance(config, Config) else load_config(config)
        self.call(self.gateway.reload(config))
        self.config = config


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header NAME (any case), or None."""
        name = name.lower()
        return next((v for n, v in self.headers if n.lower() == name), None)


def filters_config(filters, upstream_url: str, **changes) -> dict:
    """A config that serves every path from UPSTREAM_URL through Python FILTERS.

    FILTERS are ``python_filters`` entries: a file path or module name each, or
    a mapping with ``routes``. The one route is ``app`` (``Path=/**``, no
    authentication) to the service ``app``; CHANGES replace top-level keys.
    """
    entries = [str(f) if isinstance(f, Path) else f for f in filters]
    return {
        "listeners": [{"address": "127.0.0.1:0"}],
        "admin": None,
        "services": {"app": {"instances": [upstream_url]}},
        "routes": [{"id": "app", "uri": "lb://app", "predicates": ["Path=/**"], "auth": "none"}],
        "python_filters": entries,
        **changes,
    }
