"""The validated configuration: plain frozen values, nothing to parse later.

The loader (``fastgw.config.loader``) turns YAML/JSON into these objects or
reports every error as ``FILE:LINE: message``. The gateway compiles a
``Config`` into its runtime snapshot (router, filter chains, pools).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..cors import CorsPolicy, CorsSection

KiB = 1024
MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    max_request_line: int = 8 * KiB
    max_header_bytes: int = 32 * KiB
    max_headers: int = 100
    max_body: int = 10 * MiB
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    max_connections: int = 10000


@dataclass(frozen=True, slots=True)
class TLSCertificate:
    """A further certificate of a listener, for clients asking for one of its names (SNI)."""

    cert: str
    key: str
    server_names: tuple[str, ...] = ()  # empty: the certificate's DNS names
    line: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class ListenerTLS:
    cert: str  # the default certificate: no server name, or one no other certificate has
    key: str
    min_version: str = "1.2"  # "1.2" | "1.3"
    client_auth: str = "none"  # none | optional | require
    client_ca: str | None = None
    certificates: tuple[TLSCertificate, ...] = ()
    ciphers: str | None = None  # OpenSSL cipher string for TLS 1.2; None: fastgw's defaults


@dataclass(frozen=True, slots=True)
class Listener:
    host: str
    port: int
    tls: ListenerTLS | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class Admin:
    host: str = "127.0.0.1"
    port: int = 9901


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    issuer: str
    discovery: bool = False
    jwks_uri: str | None = None
    jwks_file: str | None = None
    audiences: tuple[str, ...] = ()
    algorithms: tuple[str, ...] = ("RS256",)
    secret: str | None = None
    leeway: float = 30.0
    refresh_interval: float = 300.0
    line: int = 0


@dataclass(frozen=True, slots=True)
class CertScopes:
    """Scopes granted to client certificates whose subject matches ``pattern`` (exact or glob)."""

    pattern: str
    scopes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Auth:
    providers: tuple[Provider, ...] = ()
    client_cert_subject_from: str | None = None  # san_uri | san_dns | cn
    client_cert_scopes: tuple[CertScopes, ...] = ()


@dataclass(frozen=True, slots=True)
class Instance:
    scheme: str  # "http" | "https"
    host: str
    port: int
    dns: bool = False  # dns://HOST:PORT: every address HOST resolves to, re-resolved

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'dns' if self.dns else self.scheme}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class HealthCheck:
    path: str = "/healthz"
    interval: float = 5.0
    unhealthy_after: int = 3
    healthy_after: int = 2


@dataclass(frozen=True, slots=True)
class Outlier:
    consecutive_failures: int = 5
    base_ejection: float = 5.0
    max_ejection: float = 60.0
    max_ejected_percent: int = 50
    panic_threshold: int = 50
    count_5xx: bool = False


@dataclass(frozen=True, slots=True)
class ServiceTLS:
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    instances: tuple[Instance, ...]
    balancer: str = "round_robin"  # round_robin | least_requests | random
    connect_timeout: float = 2.0
    response_timeout: float = 30.0
    max_connections: int = 512
    max_pending: int = 1024
    resolve_interval: float = 5.0
    retries: int = 1
    health_check: HealthCheck | None = None
    outlier: Outlier = Outlier()
    tls: ServiceTLS | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class Rate:
    count: int
    period: float  # seconds
    text: str = ""


@dataclass(frozen=True, slots=True)
class RateLimit:
    name: str
    rate: Rate
    burst: int
    key: str  # ip | jwt.sub | jwt.claim.NAME | header.NAME | mtls.subject
    store: str = "local"  # local | redis
    line: int = 0


REDIS_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")


@dataclass(frozen=True, slots=True)
class Redis:
    url: str = "redis://127.0.0.1:6379/0"  # one of REDIS_SCHEMES
    on_error: str = "local"  # local | allow | deny
    timeout: float = 0.05
    tls: ServiceTLS | None = None  # with rediss:// URLs: CA, client certificate, name


@dataclass(frozen=True, slots=True)
class Predicate:
    kind: str  # Path | Method | Host | Header
    args: tuple[str, ...]
    line: int = 0


@dataclass(frozen=True, slots=True)
class FilterSpec:
    name: str
    args: tuple[str, ...]
    line: int = 0


@dataclass(frozen=True, slots=True)
class Route:
    id: str
    uri: str
    service: str  # key into Config.services (a direct http(s):// uri gets its own service)
    predicates: tuple[Predicate, ...] = ()
    auth: str = "jwt"  # jwt | mtls | jwt_or_mtls | none
    filters: tuple[FilterSpec, ...] = ()
    line: int = 0
    order: int = 0  # SCG's route order: lower first, written order among equals
    cors: CorsPolicy | None = None  # metadata.cors


@dataclass(frozen=True, slots=True)
class PythonFilters:
    """One ``python_filters`` entry: a module name or a file, for some routes or all."""

    module: str | None = None
    file: str | None = None
    routes: tuple[str, ...] | None = None  # None: every route
    line: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class LogTarget:
    path: str  # "-" = stderr


@dataclass(frozen=True, slots=True)
class Config:
    listeners: tuple[Listener, ...] = (Listener("0.0.0.0", 8080),)
    admin: Admin | None = field(default_factory=Admin)
    workers: int = 1
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    limits: Limits = field(default_factory=Limits)
    drain_timeout: float = 30.0
    auth: Auth = field(default_factory=Auth)
    services: dict[str, Service] = field(default_factory=dict)
    rate_limits: dict[str, RateLimit] = field(default_factory=dict)
    redis: Redis | None = None
    audit: LogTarget | None = None
    access_log: LogTarget | None = None
    routes: tuple[Route, ...] = ()
    cors: CorsSection | None = None
    python_filters: tuple[PythonFilters, ...] = ()
    source: str = "<dict>"
