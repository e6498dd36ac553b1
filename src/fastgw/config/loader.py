"""Turning a configuration into a validated ``Config``.

The reader walks the tree from ``source`` section by section. A problem is
recorded as (file, line, "path: message") and reading goes on, so that one
``ConfigError`` reports all of them. Routes are read last: they refer to
services, rate limits, providers and listeners.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from fastgw._core._router_py import (
    validate_header_regex,
    validate_host_pattern,
    validate_path_pattern,
)
from fastgw.cors import CorsPolicy, CorsSection, check_policy, origin_pattern
from fastgw.filters.breaker import breaker_args
from fastgw.filters.retry import RetryPolicy, retry_args
from fastgw.predicates import CHECKS as PREDICATE_CHECKS
from fastgw.tls import SUBJECT_SOURCES, XFCC_FIELDS, check_ciphers, check_scope_pattern

from .errors import ConfigError
from .model import (
    REDIS_SCHEMES,
    Admin,
    Auth,
    CertScopes,
    Config,
    FilterSpec,
    HealthCheck,
    Instance,
    Limits,
    Listener,
    ListenerTLS,
    LogTarget,
    Outlier,
    Predicate,
    Provider,
    PythonFilters,
    Rate,
    RateLimit,
    Redis,
    Route,
    Service,
    ServiceTLS,
    TLSCertificate,
)
from .source import (
    UNSET,
    Document,
    EnvText,
    LineList,
    LineMap,
    child_path,
    holds_unset,
    item_path,
    read_document,
)
from .spring import (
    FILTER_ARGS,
    PREDICATE_ARGS,
    camel_case,
    compile_regex,
    expanded_args,
    python_regex,
    python_replacement,
    refuse_spel,
    split_shortcut,
)
from .units import parse_duration, parse_rate, parse_size, show

ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "ES256", "ES384", "EdDSA", "HS256", "HS384", "HS512",
)  # fmt: skip
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
AUTH_MODES = ("jwt", "mtls", "jwt_or_mtls", "none")
MIN_SECRET_BYTES = 32
MAX_LIMITS_PER_ROUTE = 8  # one decision checks at most this many buckets

_DEFAULT = Config()
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HOST_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")


def load_config(
    source: str | os.PathLike | Mapping, *, env: Mapping[str, str] | None = None
) -> Config:
    """Read and validate a configuration: a YAML or JSON file path, or a dict.

    ``${VAR}`` references expand from ``env`` (default ``os.environ``).
    Raises ``ConfigError`` listing every problem found.
    """
    document = read_document(source, os.environ if env is None else env)
    return _Reader(document).config()


@dataclass(frozen=True, slots=True)
class Spot:
    """Where a value sits: its path for the message, its line for FILE:LINE."""

    path: str
    line: int

    def key(self, key: str, line: int) -> Spot:
        return Spot(child_path(self.path, key), line or self.line)

    def item(self, index: int, line: int) -> Spot:
        return Spot(item_path(self.path, index), line or self.line)


Convert = Callable[[Any], Any]
Read = Callable[[Any, Spot], Any]


class _Fields:
    """The keys of one mapping, handed out by name; unknown keys are reported at once.

    With ``extensions``, keys starting with ``x-`` are let through unread: a
    place to keep YAML anchors.
    """

    def __init__(
        self,
        reader: _Reader,
        table: LineMap,
        at: Spot,
        known: Iterable[str],
        *,
        extensions: bool = False,
    ) -> None:
        self.reader = reader
        self.table = table
        self.at = at
        known = tuple(known)
        for key in table:
            if key not in known and not (extensions and key.startswith("x-")):
                reader.error(self.spot(key), "unknown key" + _hint(key, known))

    def spot(self, key: str) -> Spot:
        return self.at.key(key, self.table.lines.get(key, 0))

    def __contains__(self, key: str) -> bool:
        return self.table.get(key) is not None

    def get(
        self, key: str, convert: Convert, default: Any = None, *, required: bool = False
    ) -> Any:
        return self.section(key, lambda value, _: convert(value), default, required=required)

    def section(self, key: str, read: Read, default: Any = None, *, required: bool = False) -> Any:
        if key not in self:
            if required:
                self.reader.error(self.at, f"{key!r} is required")
            return default
        result = self.reader.apply(read, self.table[key], self.spot(key))
        return default if result is None else result

    def take(self, **converters: Convert) -> dict[str, Any]:
        """The given keys that are set and valid, for a model class to fill in its defaults."""
        values = {key: self.get(key, convert) for key, convert in converters.items()}
        return {key: value for key, value in values.items() if value is not None}


def _closest(word: str, choices: Iterable[str]) -> str | None:
    choices = list(choices)
    lowered = {choice.lower(): choice for choice in choices}
    if word.lower() in lowered:
        return lowered[word.lower()]
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def _hint(word: str, choices: Iterable[str]) -> str:
    """The closest of ``choices`` as a suggestion, or else all of them."""
    choices = list(choices)
    close = _closest(word, choices)
    if close:
        return f" (did you mean {close!r}?)"
    return f" (known: {', '.join(choices)})" if choices else ""


class _Reader:
    def __init__(self, document: Document) -> None:
        self.document = document
        self.errors = list(document.errors)
        self.addresses: dict[tuple[str, int], str] = {}
        self.mtls_listeners = 0
        self.cert_scopes_declared = False
        self.providers_declared = False
        self.provider_names: dict[str, str] = {}
        self.service_names: set[str] = set()
        self.services: dict[str, Service] = {}
        self.limit_names: set[str] = set()
        self.rate_limits: dict[str, RateLimit] = {}
        self.route_ids: dict[str, str] = {}
        self.has_redis = False
        self.spring = False  # routes under spring.cloud.gateway: SCG's defaults
        self.default_filters: tuple[Any, Spot] | None = None
        self.globalcors: tuple[Any, Spot] | None = None  # for the cors: section

    # --- plumbing -------------------------------------------------------------------------

    def error(self, at: Spot, message: str) -> None:
        text = f"{at.path}: {message}" if at.path else message
        self.errors.append((self.document.file, at.line, text))

    def apply(self, read: Read, value: Any, at: Spot) -> Any:
        """``read(value, at)``, or None with the problem recorded."""
        if value is UNSET:
            return None
        try:
            return read(value, at)
        except ValueError as exc:
            self.error(at, str(exc))
            return None

    def fields(self, value: Any, at: Spot, known: Iterable[str]) -> _Fields:
        if not isinstance(value, LineMap):
            raise ValueError(f"expected a mapping, got {show(value)}")
        return _Fields(self, value, at, known)

    def items(self, value: Any, at: Spot, read: Read, *, single: bool = False) -> list:
        """Each item of a list through ``read``; bad items are reported and left out."""
        if single and not isinstance(value, LineList):
            value, lines = [value], [at.line]
        elif isinstance(value, LineList):
            lines = value.lines
        else:
            raise ValueError(f"expected a list, got {show(value)}")
        results = (self.apply(read, item, at.item(i, lines[i])) for i, item in enumerate(value))
        return [result for result in results if result is not None]

    def named(self, read: Callable[..., Any], what: str) -> Read:
        """A reader of a mapping from names (of services, rate limits) to sections."""

        def read_all(value: Any, at: Spot) -> dict:
            if not isinstance(value, LineMap):
                raise ValueError(
                    f"expected a mapping of {what} names to {what}s, got {show(value)}"
                )
            results = {}
            for name, item in value.items():
                spot = at.key(name, value.lines[name])
                if not _NAME.fullmatch(name):
                    self.error(spot, f"{show(name)} is not a {what} name (letters, digits, . _ -)")
                    continue
                result = self.apply(partial(read, name=name), item, spot)
                if result is not None:
                    results[name] = result
            return results

        return read_all

    def file(self, value: Any) -> str:
        path = os.path.join(self.document.base_dir, os.path.expanduser(_text(value)))
        path = os.path.abspath(path)
        if not os.path.exists(path):
            raise ValueError(f"no such file: {path}")
        if os.path.isdir(path):
            raise ValueError(f"{path} is a directory, not a file")
        return path

    def output_path(self, value: Any) -> str:
        text = _text(value)
        if text == "-":
            return text
        return os.path.abspath(os.path.join(self.document.base_dir, os.path.expanduser(text)))

    # --- the whole file -------------------------------------------------------------------

    def config(self) -> Config:
        root = self.document.root
        top = _Fields(self, root, Spot("", self.document.line), _TOP_KEYS, extensions=True)
        listeners = top.section("listeners", self.listeners, _DEFAULT.listeners)
        if "admin" in root and root["admin"] is None:
            admin = None
        elif "admin" in top:
            admin = top.section("admin", self.admin)
        else:
            admin = Admin()
            self.claim((admin.host, admin.port), Spot("admin", top.at.line), default=True)
        settings = top.take(workers=_workers, drain_timeout=_duration())
        trusted_proxies = top.section("trusted_proxies", self.scalars(_network), ())
        limits = top.section("limits", self.limits, Limits())
        auth = top.section("auth", self.auth, Auth())
        self.services = top.section("services", self.named(self.service, "service"), {})
        self.has_redis = "redis" in top
        redis = top.section("redis", self.redis)
        self.rate_limits = top.section("rate_limits", self.named(self.rate_limit, "rate limit"), {})
        audit = top.section("audit", self.log_target)
        access_log = top.section("access_log", self.log_target)
        routes = top.section("routes", lambda value, at: self.items(value, at, self.route), [])
        if "spring" in top:
            if routes:
                self.error(top.spot("spring"), "routes are either under routes: or under spring:")
            routes = top.section("spring", self.spring_layout, [])
        cors = top.section("cors", self.cors)
        if cors is None and self.globalcors is not None:
            cors = self.apply(self.cors, *self.globalcors)
        python_filters = top.section(
            "python_filters", lambda value, at: self.items(value, at, self.python_filters), [])
        if self.errors:
            raise ConfigError(_in_file_order(self.errors))
        return Config(
            listeners=tuple(listeners),
            admin=admin,
            trusted_proxies=tuple(trusted_proxies),
            limits=limits,
            auth=auth,
            services=self.services,
            rate_limits=self.rate_limits,
            redis=redis,
            audit=audit,
            access_log=access_log,
            routes=tuple(routes),
            cors=cors,
            python_filters=tuple(python_filters),
            source=self.document.file,
            **settings,
        )

    def scalars(self, convert: Convert) -> Read:
        return lambda value, at: tuple(self.items(value, at, lambda v, _: convert(v), single=True))

    # --- listeners and admin -----------------------------------------------------------------

    def listeners(self, value: Any, at: Spot) -> tuple[Listener, ...]:
        listeners = self.items(value, at, self.listener)
        if isinstance(value, LineList) and not value:
            self.error(at, "at least one listener is needed")
        return tuple(listeners)

    def listener(self, value: Any, at: Spot) -> Listener | None:
        f = self.fields(value, at, ("address", "tls"))
        address = f.get("address", _address, required=True)
        tls = f.section("tls", self.listener_tls)
        if address is None:
            return None
        self.claim(address, f.spot("address"))
        return Listener(*address, tls=tls, line=at.line)

    def claim(self, address: tuple[str, int], at: Spot, *, default: bool = False) -> None:
        """Two listeners cannot bind the same address."""
        for taken, owner in self.addresses.items():
            if _overlaps(address, taken):
                message = f"{_format_address(address)} is already used by {owner}"
                if default:
                    message = f"the default address {message}; set admin.address, or admin: null"
                self.error(at, message)
                return
        self.addresses[address] = at.path.removesuffix(".address")

    def listener_tls(self, value: Any, at: Spot) -> ListenerTLS:
        f = self.fields(value, at, _LISTENER_TLS_KEYS)
        cert = f.get("cert", self.file, required=True)
        key = f.get("key", self.file, required=True)
        certificates = f.section("certificates", self.tls_certificates, ())
        client_auth = f.get("client_auth", _choice(*_CLIENT_AUTH))
        if client_auth in ("optional", "require"):
            self.mtls_listeners += 1
            if "client_ca" not in f:
                self.error(
                    at,
                    f"client_auth: {client_auth} needs client_ca, the CA bundle "
                    "that client certificates must chain to",
                )
        elif "client_ca" in f and (client_auth == "none" or "client_auth" not in f):
            self.error(
                f.spot("client_ca"),
                "client_ca has no effect with client_auth: none (use optional or require)",
            )
        options = f.take(min_version=_tls_version, client_ca=self.file, ciphers=_ciphers)
        if "ciphers" in options and options.get("min_version") == "1.3":
            self.error(
                f.spot("ciphers"),
                'ciphers choose TLS 1.2 ciphers, and min_version: "1.3" turns TLS 1.2 off',
            )
        if client_auth is not None:
            options["client_auth"] = client_auth
        return ListenerTLS(cert=cert, key=key, certificates=certificates, **options)

    def tls_certificates(self, value: Any, at: Spot) -> tuple[TLSCertificate, ...]:
        """More certificates for a listener, each chosen by the server name a client asks for."""
        owners: dict[str, str] = {}

        def certificate(value: Any, at: Spot) -> TLSCertificate | None:
            f = self.fields(value, at, ("cert", "key", "server_names"))
            cert = f.get("cert", self.file, required=True)
            key = f.get("key", self.file, required=True)
            names = f.section("server_names", self.server_names, ())
            for name in names:
                if name in owners:
                    self.error(
                        f.spot("server_names"), f"{name} is already served by {owners[name]}"
                    )
                owners.setdefault(name, at.path)
            if cert is None or key is None:
                return None
            return TLSCertificate(cert, key, names, line=at.line)

        if isinstance(value, LineList) and not value:
            raise ValueError("list at least one certificate, or leave certificates out")
        return tuple(self.items(value, at, certificate))

    def server_names(self, value: Any, at: Spot) -> tuple[str, ...]:
        if isinstance(value, LineList) and not value:
            raise ValueError(
                "list at least one name, or leave server_names out to use the certificate's "
                "DNS names"
            )
        names = self.items(value, at, lambda v, _: _server_name(v), single=True)
        return tuple(dict.fromkeys(names))

    def admin(self, value: Any, at: Spot) -> Admin:
        f = self.fields(value, at, ("address",))
        address = f.get("address", _address)
        if address is None:
            address = (Admin().host, Admin().port)
        self.claim(address, f.spot("address"))
        return Admin(*address)

    # --- limits and auth -------------------------------------------------------------------

    def limits(self, value: Any, at: Spot) -> Limits:
        f = self.fields(value, at, _LIMIT_KEYS)
        return Limits(
            **f.take(
                max_request_line=_size(minimum=1),
                max_header_bytes=_size(minimum=1),
                max_headers=_integer(minimum=1),
                max_body=_size(minimum=0),
                header_timeout=_duration(positive=True),
                idle_timeout=_duration(positive=True),
                max_connections=_integer(minimum=1),
            )
        )

    def auth(self, value: Any, at: Spot) -> Auth:
        f = self.fields(value, at, ("jwt", "client_certs"))
        providers = f.section("jwt", self.jwt, ())
        subject_from, cert_scopes = f.section("client_certs", self.client_certs, (None, ()))
        return Auth(
            providers=providers,
            client_cert_subject_from=subject_from,
            client_cert_scopes=cert_scopes,
        )

    def jwt(self, value: Any, at: Spot) -> tuple[Provider, ...]:
        f = self.fields(value, at, ("providers",))
        return f.section("providers", lambda v, s: tuple(self.items(v, s, self.provider)), ())

    def client_certs(self, value: Any, at: Spot) -> tuple[str, tuple[CertScopes, ...]]:
        f = self.fields(value, at, ("subject_from", "scopes"))
        subject_from = f.get("subject_from", _choice(*SUBJECT_SOURCES))
        if subject_from is None and "subject_from" not in f:
            subject_from = "san_uri"
        read = partial(self.cert_scopes, subject_from=subject_from)
        scopes = f.section("scopes", read, ())
        self.cert_scopes_declared = "scopes" in f
        return subject_from or "san_uri", scopes

    def cert_scopes(
        self, value: Any, at: Spot, subject_from: str | None
    ) -> tuple[CertScopes, ...]:
        """Subject patterns to scopes; a pattern is checked for the kind of subject in use."""
        if not isinstance(value, LineMap):
            raise ValueError(
                f"expected a mapping of certificate subjects to scopes, got {show(value)}"
            )

        def rule(scopes: Any, at: Spot, pattern: str) -> CertScopes:
            if subject_from is not None:
                check_scope_pattern(pattern, subject_from)
            if isinstance(scopes, LineList) and not scopes:
                raise ValueError("list at least one scope")
            granted = self.items(scopes, at, lambda v, _: _granted_scope(v), single=True)
            return CertScopes(pattern, tuple(dict.fromkeys(granted)))

        rules = []
        for pattern, scopes in value.items():
            spot = at.key(pattern, value.lines[pattern])
            rules.append(self.apply(partial(rule, pattern=pattern), scopes, spot))
        return tuple(found for found in rules if found is not None)

    def provider(self, value: Any, at: Spot) -> Provider | None:
        self.providers_declared = True
        f = self.fields(value, at, _PROVIDER_KEYS)
        name = f.get("name", _text, required=True)
        if name is not None:
            if name in self.provider_names:
                self.error(
                    f.spot("name"),
                    f"provider {name!r} is already defined at {self.provider_names[name]}",
                )
            self.provider_names.setdefault(name, at.path)
        issuer = f.get("issuer", _text, required=True)
        discovery = f.get("discovery", _boolean, False)
        sources = [key for key in _KEY_SOURCES if (discovery if key == "discovery" else key in f)]
        if not sources:
            self.error(at, "needs one key source: discovery: true, jwks_uri, jwks_file or secret")
        elif len(sources) > 1:
            self.error(
                f.spot(sources[1]),
                f"{sources[0]} and {sources[1]} are both set; "
                "a provider has exactly one key source",
            )
        if discovery and issuer is not None and not _is_http_url(issuer):
            self.error(f.spot("issuer"), "discovery needs an http:// or https:// issuer")
        hmac = "secret" in f
        options = f.take(
            jwks_uri=_http_url,
            jwks_file=self.file,
            secret=_secret,
            leeway=_duration(),
            refresh_interval=_duration(positive=True),
        )
        options["audiences"] = f.section("audiences", self.scalars(_text), ())
        algorithms = f.section("algorithms", lambda v, s: self.algorithms(v, s, hmac))
        if algorithms or hmac:
            options["algorithms"] = algorithms or ("HS256",)
        if name is None or issuer is None:
            return None
        return Provider(name=name, issuer=issuer, discovery=discovery, line=at.line, **options)

    def algorithms(self, value: Any, at: Spot, hmac: bool) -> tuple[str, ...]:
        def algorithm(value: Any, at: Spot) -> str:
            name = _algorithm(value)
            if hmac and name not in HMAC_ALGORITHMS:
                raise ValueError(
                    f"{name} cannot go with secret: "
                    "a provider with a secret allows only HS256, HS384, HS512"
                )
            if not hmac and name in HMAC_ALGORITHMS:
                raise ValueError(f"{name} needs secret (HMAC keys never come from a JWKS)")
            return name

        names = self.items(value, at, algorithm, single=True)
        if isinstance(value, LineList) and not value:
            raise ValueError("list at least one algorithm")
        return tuple(dict.fromkeys(names))

    # --- services ----------------------------------------------------------------------------

    def service(self, value: Any, at: Spot, name: str) -> Service | None:
        self.service_names.add(name)
        f = self.fields(value, at, _SERVICE_KEYS)
        instances = f.section("instances", self.instances, required=True)
        tls = f.section("tls", self.service_tls)
        if tls is not None and instances and all(i.scheme == "http" for i in instances):
            self.error(
                f.spot("tls"), "tls is for https:// instances, and every instance is http://"
            )
        options = f.take(
            balancer=_choice("round_robin", "least_requests", "random"),
            connect_timeout=_duration(positive=True),
            response_timeout=_duration(positive=True),
            max_connections=_integer(minimum=1),
            max_pending=_integer(minimum=0),
            resolve_interval=_duration(positive=True),
            retries=_integer(minimum=0),
        )
        health_check = f.section("health_check", self.health_check)
        outlier = f.section("outlier", self.outlier, Outlier())
        if not instances:
            return None
        return Service(name, instances, health_check=health_check, outlier=outlier, tls=tls,
                       line=at.line, **options)

    def instances(self, value: Any, at: Spot) -> tuple[Instance, ...]:
        seen: set[str] = set()

        def instance(value: Any, at: Spot) -> Instance:
            found = _service_instance(value)
            if found.url in seen:
                raise ValueError(f"{found.url} is listed twice")
            seen.add(found.url)
            return found

        instances = self.items(value, at, instance, single=True)
        if isinstance(value, LineList) and not value:
            raise ValueError("at least one instance is needed")
        return tuple(instances)

    def health_check(self, value: Any, at: Spot) -> HealthCheck:
        f = self.fields(value, at, ("path", "interval", "unhealthy_after", "healthy_after"))
        return HealthCheck(
            **f.take(
                path=_request_path,
                interval=_duration(positive=True),
                unhealthy_after=_integer(minimum=1),
                healthy_after=_integer(minimum=1),
            )
        )

    def outlier(self, value: Any, at: Spot) -> Outlier:
        f = self.fields(value, at, _OUTLIER_KEYS)
        outlier = Outlier(
            **f.take(
                consecutive_failures=_integer(minimum=1),
                base_ejection=_duration(positive=True),
                max_ejection=_duration(positive=True),
                max_ejected_percent=_percent,
                panic_threshold=_percent,
                count_5xx=_boolean,
            )
        )
        if outlier.max_ejection < outlier.base_ejection:
            if "max_ejection" in f:
                self.error(f.spot("max_ejection"), "must not be shorter than base_ejection")
            else:
                self.error(f.spot("base_ejection"), "must not be longer than max_ejection "
                           f"({outlier.max_ejection:g}s by default)")
        return outlier

    def service_tls(self, value: Any, at: Spot) -> ServiceTLS:
        f = self.fields(value, at, ("ca", "cert", "key", "server_name"))
        if ("cert" in f) != ("key" in f):
            missing, given = ("key", "cert") if "cert" in f else ("cert", "key")
            self.error(
                f.spot(given),
                f"needs {missing}: a client certificate goes with its private key",
            )
        return ServiceTLS(
            **f.take(ca=self.file, cert=self.file, key=self.file, server_name=_hostname)
        )

    # --- rate limits, redis, logs -------------------------------------------------------------

    def rate_limit(self, value: Any, at: Spot, name: str) -> RateLimit | None:
        self.limit_names.add(name)
        f = self.fields(value, at, ("rate", "burst", "key", "store"))
        rate = f.get("rate", parse_rate, required=True)
        burst = f.get("burst", _integer(minimum=1), rate.count if rate else 1)
        key = f.get("key", _limit_key, required=True)
        store = f.get("store", _choice("local", "redis"), "local")
        if store == "redis" and not self.has_redis:
            self.error(f.spot("store"), "store: redis needs a top-level redis: section")
        if rate is None or key is None:
            return None
        return RateLimit(name, rate, burst, key, store, line=at.line)

    def redis(self, value: Any, at: Spot) -> Redis:
        f = self.fields(value, at, ("url", "on_error", "timeout", "tls"))
        tls = f.section("tls", self.service_tls)
        redis = Redis(
            **f.take(
                url=_redis_url,
                on_error=_choice("local", "allow", "deny"),
                timeout=_duration(positive=True),
            ),
            tls=tls,
        )
        if redis.tls is not None and not redis.url.startswith("rediss"):
            self.error(f.spot("tls"), "needs a rediss:// or rediss+cluster:// url")
        return redis

    def log_target(self, value: Any, at: Spot) -> LogTarget | None:
        f = self.fields(value, at, ("path",))
        path = f.get("path", self.output_path, required=True)
        return None if path is None else LogTarget(path)

    # --- routes --------------------------------------------------------------------------------

    # --- the Spring Cloud Gateway layout ----------------------------------------------------

    def spring_layout(self, value: Any, at: Spot) -> list[Route]:
        """``spring.cloud.gateway`` (or SCG 4's ``.server.webflux``): routes in ``order``."""
        f = self.fields(value, at, ("cloud", "application", "profiles", "main"))
        cloud = f.section("cloud", lambda v, s: self.fields(v, s, ("gateway",)))
        if cloud is None:
            return []
        self.spring = True
        return cloud.section("gateway", self.spring_gateway, [])

    def spring_gateway(self, value: Any, at: Spot) -> list[Route]:
        f = self.spring_fields(value, at, _SPRING_GATEWAY_KEYS)
        if "server" in f:
            server = f.section("server", lambda v, s: self.fields(v, s, ("webflux",)))
            if server is not None and "webflux" in server:
                if "routes" in f:
                    self.error(f.spot("server"), "routes are either under gateway or under "
                               "gateway.server.webflux")
                return server.section("webflux", self.spring_gateway, [])
        if "globalcors" in f:
            # fastgw's own cors: section has globalcors's shape.
            self.globalcors = f.section("globalcors", lambda v, s: (v, s))
        self.default_filters = f.section("default-filters", lambda v, s: (v, s))
        routes = f.section("routes", lambda v, s: self.items(v, s, self.route), [])
        return sorted(routes, key=lambda route: route.order)

    def spring_fields(self, value: Any, at: Spot, known: tuple[str, ...]) -> _Fields:
        """Fields with Spring's relaxed binding: ``defaultFilters`` is ``default-filters``;
        settings only a JVM can use are named as such."""
        if isinstance(value, LineMap):
            relaxed = LineMap()
            for key, item in value.items():
                kebab = _kebab(key)
                if kebab in _JVM_KEYS:
                    self.error(at.key(key, value.lines[key]), f"{key} {_JVM_KEYS[kebab]}")
                    continue
                if isinstance(item, str) and "#{" in item:
                    self.apply(lambda v, _: refuse_spel(v), item, at.key(key, value.lines[key]))
                    continue
                relaxed[kebab] = item
                relaxed.lines[kebab] = value.lines[key]
            value = relaxed
        return self.fields(value, at, known)

    def route_metadata(self, value: Any, at: Spot) -> dict[str, Any]:
        """``response-timeout`` and ``connect-timeout`` in milliseconds, as SCG reads them;
        ``cors``, the route's CORS policy."""
        f = self.spring_fields(value, at, ("response-timeout", "connect-timeout", "cors"))
        found = {
            key.replace("-", "_"): f.get(key, _millis)
            for key in ("response-timeout", "connect-timeout")
            if key in f
        }
        if "cors" in f:
            found["cors"] = f.section("cors", self.cors_policy)
        return {key: value for key, value in found.items() if value is not None}

    def route_service(self, service: str, route_id: str, metadata: dict, line: int) -> str:
        """A route with its own timeouts or retries gets its own copy of its service
        (and pool)."""
        changes = {k: v for k, v in metadata.items() if k in _ROUTE_SERVICE_KEYS}
        base = self.services.get(service)
        if not changes or base is None:
            return service
        name = f"{service}#{route_id}"
        self.services[name] = replace(base, name=name, line=line, **changes)
        return name

    def route(self, value: Any, at: Spot) -> Route | None:
        if self.spring:
            f = self.spring_fields(value, at, _SPRING_ROUTE_KEYS)
        else:
            f = self.fields(value, at, ("id", "uri", "predicates", "auth", "filters", "metadata"))
        route_id = f.get("id", _text, required=True)
        if route_id is not None:
            if route_id in self.route_ids:
                self.error(
                    f.spot("id"),
                    f"route {route_id!r} is already defined at {self.route_ids[route_id]}",
                )
            self.route_ids.setdefault(route_id, at.path)
        target = f.get("uri", self.route_target, required=True)
        predicates = f.section("predicates", self.predicates, [])
        # SCG routes are open unless the file declares token providers.
        default_auth = "jwt" if self.providers_declared or not self.spring else "none"
        auth = f.get("auth", _choice(*AUTH_MODES), None if "auth" in f else default_auth)
        label = f"route {route_id!r}" if route_id is not None else "this route"
        if auth in ("jwt", "jwt_or_mtls") and not self.providers_declared:
            self.error(f.spot("auth"), f"{label} needs auth.jwt.providers (or auth: none)")
        if auth in ("mtls", "jwt_or_mtls") and not self.mtls_listeners:
            self.error(
                f.spot("auth"),
                f"{label} needs a listener with tls.client_auth: optional or require",
            )
        read_filter = partial(self.filter, auth=auth, label=label)
        filters = f.section("filters", lambda v, s: self.items(v, s, read_filter), [])
        if self.default_filters is not None:
            defaults, spot = self.default_filters
            read_defaults = partial(self.items, read=read_filter)
            filters = [*(self.apply(read_defaults, defaults, spot) or ()), *filters]
        order = f.get("order", _order, 0)
        metadata = f.section("metadata", self.route_metadata, {})
        if route_id is None or target is None:
            return None
        uri, service, instance = target
        if instance is not None and service not in self.services:
            self.services[service] = Service(service, (instance,), line=f.spot("uri").line)
        retries = [RetryPolicy(spec.args).retries for spec in filters if spec.name == "Retry"]
        if retries:
            metadata = {**metadata, "retries": retries[-1]}
        service = self.route_service(service, route_id, metadata, at.line)
        return Route(route_id, uri, service, tuple(predicates), auth, tuple(filters), line=at.line,
                     order=order, cors=metadata.get("cors"))

    def predicates(self, value: Any, at: Spot) -> list[Predicate]:
        first: dict[str, str] = {}

        def read(value: Any, at: Spot) -> Predicate | None:
            predicate = self.predicate(value, at)
            if predicate is not None and predicate.kind in ("Path", "Host"):
                kind = predicate.kind
                if kind in first:
                    raise ValueError(
                        f"a route takes one {kind} predicate, and {first[kind]} is one; "
                        f"list every pattern in it ({kind}=A, B)"
                    )
                first[kind] = at.path
            return predicate

        return self.items(value, at, read)

    def route_target(self, value: Any) -> tuple[str, str, Instance | None]:
        """(uri, service name, instance); a direct URL is its own service, named by it."""
        text = _text(value)
        if text.startswith("lb://"):
            name = text.removeprefix("lb://")
            if name not in self.service_names:
                known = sorted(self.service_names)
                raise ValueError(f"unknown service {name!r}{_hint(name, known)}")
            return text, name, None
        if text.startswith(("http://", "https://")):
            instance = _instance(text)
            return instance.url, instance.url, instance
        raise ValueError(
            f"{show(value)} is not lb://SERVICE, http://HOST:PORT or https://HOST:PORT"
        )

    def spring_form(self, value: Any, at: Spot, known: dict) -> tuple[str, tuple[str, ...]] | None:
        """A predicate or filter, shortcut or expanded, as (name, args)."""
        if isinstance(value, str):
            name, args = split_shortcut(value)
            named = _NAMED_ARGS.get(name)
            return (name, named(args, True)) if named else (name, args)
        if not isinstance(value, LineMap):
            raise ValueError(f"expected NAME=ARGS or {{name: NAME, args: ...}}, got {show(value)}")
        f = self.fields(value, at, ("name", "args"))
        name = f.get("name", _text, required=True)
        if name is None or holds_unset(value.get("args")):
            return None
        named = _NAMED_ARGS.get(name)
        if named is not None:
            return name, f.section("args", lambda v, s: named(_relaxed(v), False), ())
        args = f.section("args", lambda v, s: expanded_args(name, v, known))
        if args is None and "args" in f:
            return None
        return name, args or ()

    def predicate(self, value: Any, at: Spot) -> Predicate | None:
        form = self.spring_form(value, at, PREDICATE_ARGS)
        if form is None:
            return None
        name, args = form
        if name == "Path":
            return Predicate(name, _path_args(args, self.spring), line=at.line)
        check = _PREDICATES.get(name)
        if check is None:
            raise ValueError(f"unknown predicate {name!r}{_hint(name, ['Path', *_PREDICATES])}")
        return Predicate(name, check(args), line=at.line)

    def filter(self, value: Any, at: Spot, auth: str | None, label: str) -> FilterSpec | None:
        form = self.spring_form(value, at, FILTER_ARGS)
        if form is None:
            return None
        name, args = form
        if name == "RequestRateLimiter":
            name, args = "RateLimit", (self.request_rate_limiter(args, auth, label, at),)
        if name == "RateLimit":
            self.check_rate_limit_filter(args, auth, label)
        elif name == "StripPrefix":
            if len(args) != 1 or not (args[0].isascii() and args[0].isdigit()):
                raise ValueError("StripPrefix takes one whole number >= 0 (path segments to drop)")
        elif name == "RequireScopes":
            _check_scopes(args)
            if auth == "none":
                raise ValueError(f"RequireScopes needs a token, and {label} has auth: {auth}")
            if auth == "mtls" and not self.cert_scopes_declared:
                raise ValueError(
                    f"RequireScopes on {label} (auth: mtls) needs auth.client_certs.scopes, "
                    "the scopes client certificates are granted"
                )
        elif name == "ForwardClientCert":
            return FilterSpec(name, self.forward_client_cert(args), line=at.line)
        elif name == "RewritePath":
            if len(args) != 2:
                raise ValueError("RewritePath takes REGEX, REPLACEMENT")
            regex = compile_regex(args[0])
            args = (python_regex(args[0]), python_replacement(args[1], regex))
        problem = _validate_filter(name, args)
        if problem:
            raise ValueError(problem)
        return FilterSpec(name, args, line=at.line)

    def request_rate_limiter(self, args: tuple[str, ...], auth: str | None, label: str,
                             at: Spot) -> str:
        """SCG's RequestRateLimiter as a rate limit of fastgw's own, keyed by the principal.

        Each request takes ``requestedTokens``: a bucket refilled at
        ``replenishRate`` tokens a second holding ``burstCapacity`` is one
        refilled at replenishRate / requestedTokens requests a second holding
        burstCapacity / requestedTokens of them.
        """
        if not 1 <= len(args) <= 3:
            raise ValueError("RequestRateLimiter takes REPLENISH_RATE, BURST_CAPACITY, "
                             "REQUESTED_TOKENS")
        replenish, burst, requested = (*(_whole(a) for a in args), 1, 1)[:3]
        if burst < requested or replenish < requested:
            raise ValueError("RequestRateLimiter: replenishRate and burstCapacity must be at "
                             "least requestedTokens")
        if auth in (None, "none"):
            raise ValueError(f"RequestRateLimiter keys by the verified principal, and {label} "
                             "has auth: none")
        key = "mtls.subject" if auth == "mtls" else "jwt.sub"
        name = f"{at.path}.RequestRateLimiter"
        rate = Rate(replenish // requested, 1.0, f"{replenish // requested}/s")
        store = "redis" if self.has_redis else "local"
        self.limit_names.add(name)
        self.rate_limits[name] = RateLimit(name, rate, burst // requested, key, store,
                                           line=at.line)
        return name

    def forward_client_cert(self, args: tuple[str, ...]) -> tuple[str, ...]:
        """The XFCC fields to send, in Envoy's order, ``Hash`` always among them."""
        if not self.mtls_listeners:
            raise ValueError(
                "ForwardClientCert needs a listener with tls.client_auth: optional or require"
            )
        wanted = set()
        for arg in args:
            if arg == "Chain":
                raise ValueError(
                    "ForwardClientCert: Chain is not available (the verified chain is not "
                    "exposed by Python's ssl); use Cert"
                )
            if arg not in XFCC_FIELDS:
                hint = _hint(arg, XFCC_FIELDS)
                raise ValueError(f"ForwardClientCert: unknown field {arg!r}{hint}")
            wanted.add(arg)
        if not wanted:
            wanted = {"Subject", "URI", "DNS"}
        return tuple(field for field in XFCC_FIELDS if field in wanted or field == "Hash")

    def check_rate_limit_filter(self, args: tuple[str, ...], auth: str | None, label: str) -> None:
        if not args:
            raise ValueError("RateLimit takes the names of one or more rate limits")
        if len(args) > MAX_LIMITS_PER_ROUTE:
            raise ValueError(f"RateLimit takes at most {MAX_LIMITS_PER_ROUTE} rate limits")
        for name in args:
            if name not in self.limit_names:
                raise ValueError(
                    f"unknown rate limit {name!r}{_hint(name, sorted(self.limit_names))}"
                )
            limit = self.rate_limits.get(name)
            if limit is None:
                continue
            if limit.key.startswith("jwt.") and auth in ("none", "mtls"):
                raise ValueError(
                    f"rate limit {name!r} is keyed by {limit.key}, and {label} has auth: {auth}"
                )
            if limit.key == "mtls.subject" and auth in ("none", "jwt"):
                raise ValueError(
                    f"rate limit {name!r} is keyed by mtls.subject, and {label} has auth: {auth}"
                )


    # --- CORS and Python filters ------------------------------------------------------------

    def cors(self, value: Any, at: Spot) -> CorsSection:
        """fastgw's ``cors:``, shaped as SCG's ``spring.cloud.gateway.globalcors``."""
        settings = self.relaxed(value, at, _CORS_SECTION_KEYS)
        configurations = []
        if "configurations" in settings:
            table, spot = settings["configurations"]
            if not isinstance(table, LineMap):
                raise ValueError(f"expected a mapping of path patterns to CORS policies, "
                                 f"got {show(table)}")
            for pattern, item in table.items():
                where = spot.key(pattern, table.lines[pattern])
                path = pattern.removeprefix("[").removesuffix("]")
                if not path.startswith("/"):
                    self.error(where, f"{show(pattern)} is not a path pattern such as '[/**]'")
                    continue
                policy = self.apply(self.cors_policy, item, where)
                if policy is not None:
                    configurations.append((path, policy))
        simple = False
        if "simple" in settings:
            item, spot = settings["simple"]
            simple = self.apply(lambda v, _: _boolean(v), item, spot) or False
        return CorsSection(tuple(configurations), simple)

    def cors_policy(self, value: Any, at: Spot) -> CorsPolicy:
        settings = self.relaxed(value, at, _CORS_POLICY_KEYS)
        values = {}
        for name, (item, spot) in settings.items():
            result = self.apply(lambda v, _, name=name: _CORS_CONVERT[name](v), item, spot)
            if result is not None:
                values[name] = result
        policy = CorsPolicy(**values, line=at.line)
        problem = check_policy(policy)
        if problem:
            self.error(settings.get("allow_credentials", (None, at))[1], problem)
        return policy

    def relaxed(self, value: Any, at: Spot, known: dict[str, str]) -> dict[str, tuple[Any, Spot]]:
        """Keys as Spring binds them (allowedOrigins, allowed-origins, allowed_origins),
        under the names in KNOWN, each with its value and spot."""
        if not isinstance(value, LineMap):
            raise ValueError(f"expected a mapping, got {show(value)}")
        found = {}
        for key, item in value.items():
            spot = at.key(key, value.lines[key])
            name = known.get(key.replace("-", "").replace("_", "").lower())
            if name is None:
                self.error(spot, "unknown key" + _hint(key, _spring_names(known)))
            elif item is not UNSET:
                found[name] = (item, spot)
        return found

    def python_filters(self, value: Any, at: Spot) -> PythonFilters | None:
        if isinstance(value, str):
            value_map = None
            module, file, routes = (None, value, None) if _is_file(value) else (value, None, None)
        else:
            value_map = self.fields(value, at, ("module", "file", "routes"))
            module = value_map.get("module", _text)
            file = value_map.get("file", _text)
            routes = value_map.section("routes", self.scalars(_text))
            if (module is None) == (file is None):
                raise ValueError("takes one of module: NAME or file: PATH")
        if file is not None:
            try:
                file = self.file(file)
            except ValueError as exc:
                self.error(value_map.spot("file") if value_map else at, str(exc))
                return None
        elif not all(part.isidentifier() for part in module.split(".")):
            raise ValueError(f"{show(module)} is not a module name (a.b.c) or a .py file")
        for route_id in routes or ():
            if route_id not in self.route_ids:
                self.error(value_map.spot("routes"),
                           f"unknown route {route_id!r}{_hint(route_id, self.route_ids)}")
        return PythonFilters(module, file, routes, line=at.line)


_TOP_KEYS = (
    "listeners", "admin", "workers", "trusted_proxies", "limits", "drain_timeout", "auth",
    "services", "rate_limits", "redis", "audit", "access_log", "routes", "spring", "cors",
    "python_filters",
)  # fmt: skip
# Filters whose expanded arguments are read by name, SCG's defaults for the rest.
_NAMED_ARGS = {"Retry": retry_args, "CircuitBreaker": breaker_args}
_ROUTE_SERVICE_KEYS = ("response_timeout", "connect_timeout", "retries")
_SPRING_GATEWAY_KEYS = ("routes", "default-filters", "globalcors", "server")
_SPRING_ROUTE_KEYS = ("id", "uri", "predicates", "filters", "order", "metadata", "auth")
_CORS_SECTION_KEYS = {"corsconfigurations": "configurations",
                      "addtosimpleurlhandlermapping": "simple"}  # fmt: skip
_CORS_POLICY_KEYS = {
    "allowedorigins": "allowed_origins", "allowedoriginpatterns": "allowed_origin_patterns",
    "allowedmethods": "allowed_methods", "allowedheaders": "allowed_headers",
    "exposedheaders": "exposed_headers", "allowcredentials": "allow_credentials",
    "maxage": "max_age",
}  # fmt: skip


def _spring_names(known: dict[str, str]) -> list[str]:
    """Each relaxed key as SCG's reference writes it."""
    spelled = {
        "configurations": "cors-configurations",
        "simple": "add-to-simple-url-handler-mapping",
    }
    return [spelled.get(name, re.sub(r"_(.)", lambda m: m[1].upper(), name))
            for name in known.values()]


def _is_file(text: str) -> bool:
    return text.endswith(".py") or "/" in text


def _cors_list(check: Callable[[str], str]) -> Convert:
    """A list, or Spring's comma-separated text, of values passed through CHECK."""

    def convert(value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, LineList):
            items = [_text(v).strip() for v in value]
        else:
            raise ValueError(f"expected a list or comma-separated text, got {show(value)}")
        return tuple(check(v) for v in items)

    return convert


def _cors_origin(text: str) -> str:
    if text == "*":
        return text
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in ("http", "https") or not rest or "/" in rest.rstrip("/"):
        raise ValueError(f"{text!r} is not an origin (scheme://host[:port]) or '*'; "
                         "use allowedOriginPatterns for wildcards")
    return text


def _cors_origin_pattern(text: str) -> str:
    origin_pattern(text)
    return text


def _cors_token(what: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if text != "*" and not _TOKEN.fullmatch(text):
            raise ValueError(f"{text!r} is not {what} or '*'")
        return text

    return check


def _max_age(value: Any) -> int:
    return int(parse_duration(value))

_JVM_KEYS = {
    "key-resolver": "names a Java KeyResolver bean; fastgw keys RequestRateLimiter by the "
                    "verified principal",
    "discovery": "uses a Java DiscoveryClient; list the instances under services:",
    "httpclient": "configures Reactor Netty; see services: (timeouts, tls, max_connections)",
    "filter": "configures Java filter beans; set the arguments on the filter itself",
    "predicate": "configures Java predicate beans; set the arguments on the predicate itself",
    "redis-rate-limiter": "configures a Java bean; set RequestRateLimiter's arguments",
    "route-filter-cache-enabled": "is a Java cache setting",
    "x-forwarded": "configures a Java filter; fastgw always sets X-Forwarded-*",
    "forwarded": "configures a Java filter; fastgw always sets X-Forwarded-*",
}
_LIMIT_KEYS = (
    "max_request_line", "max_header_bytes", "max_headers", "max_body",
    "header_timeout", "idle_timeout", "max_connections",
)  # fmt: skip
_PROVIDER_KEYS = (
    "name", "issuer", "discovery", "jwks_uri", "jwks_file", "audiences", "algorithms",
    "secret", "leeway", "refresh_interval",
)  # fmt: skip
_CLIENT_AUTH = ("none", "optional", "require")
_LISTENER_TLS_KEYS = (
    "cert", "key", "certificates", "min_version", "ciphers", "client_auth", "client_ca",
)  # fmt: skip
_KEY_SOURCES = ("discovery", "jwks_uri", "jwks_file", "secret")
_SERVICE_KEYS = (
    "instances", "balancer", "connect_timeout", "response_timeout", "max_connections",
    "max_pending", "resolve_interval", "retries", "health_check", "outlier", "tls",
)  # fmt: skip
_OUTLIER_KEYS = (
    "consecutive_failures", "base_ejection", "max_ejection", "max_ejected_percent",
    "panic_threshold", "count_5xx",
)  # fmt: skip


def _in_file_order(errors: list[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
    return sorted(dict.fromkeys(errors), key=lambda error: error[1])


# --- scalar values ---------------------------------------------------------------------------


def _whole(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ValueError(f"{show(text)} is not a whole number >= 1")
    return int(text)


def _relaxed(args: Any) -> dict:
    """Expanded arguments by their camel-case names (``status-codes`` is ``statusCodes``)."""
    if not isinstance(args, LineMap):
        raise ValueError(f"expected a mapping of arguments, got {show(args)}")
    return {camel_case(key): value for key, value in args.items()}


def _kebab(key: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "-" + m[1].lower(), key)


def _order(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {show(value)}")
    return value


def _millis(value: Any) -> float:
    """A timeout as SCG writes it: milliseconds, or a duration with its unit."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError("must be more than 0 ms")
        return value / 1000
    return _duration(positive=True)(value)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {show(value)}")
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _integer(*, minimum: int) -> Convert:
    def convert(value: Any) -> int:
        if isinstance(value, EnvText) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"expected a whole number, got {show(value)}")
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value

    return convert


def _percent(value: Any) -> int:
    percent = _integer(minimum=0)(value)
    if percent > 100:
        raise ValueError(f"must be a percentage from 0 to 100, got {percent}")
    return percent


def _boolean(value: Any) -> bool:
    if isinstance(value, EnvText):
        value = {
            "true": True,
            "false": False,
            "yes": True,
            "no": False,
            "on": True,
            "off": False,
        }.get(value.strip().lower(), value)
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {show(value)}")
    return value


def _choice(*options: str) -> Convert:
    def convert(value: Any) -> str:
        if not isinstance(value, str) or value not in options:
            close = _closest(value, options) if isinstance(value, str) else None
            hint = f" (did you mean {close!r}?)" if close else ""
            raise ValueError(f"{show(value)} is not one of {', '.join(options)}{hint}")
        return value

    return convert


def _duration(*, positive: bool = False) -> Convert:
    def convert(value: Any) -> float:
        seconds = parse_duration(value)
        if positive and seconds <= 0:
            raise ValueError("must be longer than 0")
        return seconds

    return convert


def _size(*, minimum: int) -> Convert:
    def convert(value: Any) -> int:
        size = parse_size(value)
        if size < minimum:
            raise ValueError(f"must be at least {minimum} bytes")
        return size

    return convert


def _workers(value: Any) -> int:
    if value == "auto":
        return os.cpu_count() or 1
    try:
        return _integer(minimum=1)(value)
    except ValueError:
        raise ValueError(f'expected a whole number >= 1 or "auto", got {show(value)}') from None


def _tls_version(value: Any) -> str:
    text = {1.2: "1.2", 1.3: "1.3"}.get(value, value) if isinstance(value, float) else value
    if text not in ("1.2", "1.3"):
        raise ValueError(f'{show(value)} is not a TLS version (use "1.2" or "1.3")')
    return text


def _ciphers(value: Any) -> str:
    text = _text(value).strip()
    problem = check_ciphers(text)
    if problem:
        raise ValueError(problem)
    return text


def _server_name(value: Any) -> str:
    """A name clients ask for in SNI: a DNS name, or ``*.`` and a DNS name."""
    text = _text(value).strip().lower().rstrip(".")
    try:
        ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        raise ValueError(f"{show(value)}: clients never send an IP address as a server name")
    base = text.removeprefix("*.")
    if "*" in base or not _HOSTNAME.fullmatch(base) or len(base) > 253:
        raise ValueError(f"{show(value)} is not a server name (a DNS name, or *. and a DNS name)")
    if base != text and "." not in base:
        raise ValueError(f"{show(value)} would match names under a top-level domain")
    return text


def _granted_scope(value: Any) -> str:
    scope = _text(value)
    if any(c.isspace() or not c.isprintable() for c in scope):
        raise ValueError(f"{show(value)} is not one scope (list scopes one by one)")
    if scope.startswith("SCOPE_"):
        raise ValueError(
            f"{show(value)}: write {scope.removeprefix('SCOPE_')!r}; the SCOPE_ prefix belongs in "
            "RequireScopes only"
        )
    return scope


def _network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    text = _text(value)
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"{show(value)} is not an IP network (a CIDR such as 10.0.0.0/8, or one address)"
        ) from None


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOSTNAME.fullmatch(host)) and len(host) <= 253
    return True


def _hostname(value: Any) -> str:
    text = _text(value)
    if not _is_host(text):
        raise ValueError(f"{show(value)} is not a host name")
    return text


def _split_host_port(text: str, shown: str) -> tuple[str, str]:
    host, colon, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise ValueError(f"{shown}: only an IPv6 address goes in brackets")
    elif not colon or ":" in host:
        raise ValueError(f"{shown} is not HOST:PORT (an IPv6 host goes in brackets: [::1]:8080)")
    if not _is_host(host):
        raise ValueError(f"{shown}: {show(host)} is not a host name or IP address")
    return host, port


def _port(port: str, shown: str) -> int:
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(f"{shown}: the port must be a number from 0 to 65535")
    return int(port)


def _address(value: Any) -> tuple[str, int]:
    text = _text(value).strip()
    host, port = _split_host_port(text, show(value))
    return host, _port(port, show(value))


def _format_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _overlaps(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Whether binding both addresses would clash (port 0 never does)."""
    if a[1] != b[1] or a[1] == 0:
        return False
    if a[0] == b[0] or "::" in (a[0], b[0]):
        return True
    return "0.0.0.0" in (a[0], b[0]) and ":" not in a[0] + b[0]


def _instance(value: Any) -> Instance:
    text = _text(value).strip()
    shown = show(value)
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if scheme not in ("http", "https") or not sep:
        raise ValueError(f"{shown} is not http://HOST:PORT or https://HOST:PORT")
    return _instance_at(scheme, rest, shown)


def _service_instance(value: Any) -> Instance:
    """An instance of a service: an http(s):// URL, or dns://HOST:PORT."""
    text = _text(value).strip()
    scheme, sep, rest = text.partition("://")
    if scheme.lower() != "dns" or not sep:
        return _instance(value)
    shown = show(value)
    found = _instance_at("http", rest, shown)
    try:
        ipaddress.ip_address(found.host)
    except ValueError:
        return Instance("http", found.host, found.port, dns=True)
    raise ValueError(f"{shown}: dns:// takes a host name to resolve; list an address as http://")


def _instance_at(scheme: str, rest: str, shown: str) -> Instance:
    netloc, _, path = rest.partition("/")
    if "@" in netloc:
        raise ValueError(f"{shown}: an instance URL carries no user name or password")
    if path or "?" in rest or "#" in rest:
        raise ValueError(
            f"{shown}: an instance URL has no path, query or fragment (rewrite paths with filters)"
        )
    default_port = "443" if scheme == "https" else "80"
    if netloc.endswith("]") or ":" not in netloc:
        netloc = f"{netloc}:{default_port}"
    host, port = _split_host_port(netloc, shown)
    return Instance(scheme, host.lower(), _port(port, shown))


def _is_http_url(text: str) -> bool:
    parts = urlsplit(text)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _http_url(value: Any) -> str:
    text = _text(value)
    if not _is_http_url(text):
        raise ValueError(f"{show(value)} is not an http:// or https:// URL")
    return text


def _request_path(value: Any) -> str:
    text = _text(value)
    if not text.startswith("/") or any(c.isspace() or ord(c) < 0x20 for c in text):
        raise ValueError(f"{show(value)} is not a request path (it starts with /)")
    return text


def _secret(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected text")
    size = len(value.encode())
    if size < MIN_SECRET_BYTES:
        raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes; this one has {size}")
    return value


def _algorithm(value: Any) -> str:
    name = _text(value).strip()
    if name.lower() == "none":
        raise ValueError("'none' can never be allowed: an unsigned token proves nothing")
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}{_hint(name, ALGORITHMS)}")
    return name


def _limit_key(value: Any) -> str:
    text = _text(value).strip()
    if text in ("ip", "jwt.sub", "mtls.subject"):
        return text
    if text.startswith("jwt.claim.") and len(text) > len("jwt.claim."):
        return text
    header = text.removeprefix("header.")
    if header != text and _TOKEN.fullmatch(header):
        return "header." + header.lower()
    raise ValueError(
        f"{show(value)} is not a limit key "
        "(ip, jwt.sub, jwt.claim.NAME, header.NAME or mtls.subject)"
    )


def _redis_url(value: Any) -> str:
    """Checked without repeating the URL in messages: it may hold a password."""
    text = _text(value).strip()
    scheme, sep, rest = text.partition("://")
    if scheme not in REDIS_SCHEMES or not sep:
        schemes = [f"{s}://" for s in REDIS_SCHEMES]
        raise ValueError(f"must start with {', '.join(schemes[:-1])} or {schemes[-1]}")
    netloc, _, path = rest.partition("/")
    netloc = netloc.split("?", 1)[0].rpartition("@")[2]
    hosts = netloc.split(",") if scheme.endswith("+cluster") else [netloc]
    for host in hosts:
        shown = show(host)
        if not host:
            raise ValueError("names no host")
        if ":" not in host.rpartition("]")[2]:
            host = f"{host}:6379"
        _port(_split_host_port(host, shown)[1], shown)
    database = path.split("?", 1)[0]
    if database and not (database.isascii() and database.isdigit()):
        raise ValueError(f"the database after the host must be a number, not {show(database)}")
    return text


def _check_scopes(scopes: tuple[str, ...]) -> None:
    if not scopes:
        raise ValueError("RequireScopes needs at least one scope")
    for scope in scopes:
        if not scope or any(c.isspace() for c in scope):
            raise ValueError(
                f"RequireScopes: {show(scope)} is not one scope (separate scopes with commas)"
            )


# --- predicates and filters ------------------------------------------------------------------


def _path_args(args: tuple[str, ...], trailing_slash: bool) -> tuple[str, ...]:
    """The patterns; with matchTrailingSlash (SCG's default), each also with a slash added."""
    if args and args[-1].lower() in ("true", "false"):
        trailing_slash = args[-1].lower() == "true"
        args = args[:-1]
    if not args:
        raise ValueError("Path needs at least one pattern")
    for pattern in args:
        validate_path_pattern(pattern)
    if not trailing_slash:
        return args
    extra = tuple(p + "/" for p in args if _takes_slash(p))
    return args + tuple(p for p in extra if p not in args)


def _takes_slash(pattern: str) -> bool:
    """``/red/{segment}`` may be asked for as ``/red/blue/``; ``/a/``, ``/a/**`` and
    ``/files/{*rest}`` already take it."""
    last = pattern.rsplit("/", 1)[-1]
    return bool(last) and last != "**" and not last.startswith("{*")


def _host_args(args: tuple[str, ...]) -> tuple[str, ...]:
    if not args:
        raise ValueError("Host needs at least one pattern")
    for pattern in args:
        validate_host_pattern(pattern)
    return tuple(pattern.lower() for pattern in args)


def _method_args(args: tuple[str, ...]) -> tuple[str, ...]:
    if not args:
        raise ValueError("Method needs at least one method")
    for method in args:
        if not _TOKEN.fullmatch(method):
            raise ValueError(f"Method: {show(method)} is not a method name")
    return tuple(method.upper() for method in args)


def _header_args(args: tuple[str, ...]) -> tuple[str, ...]:
    if len(args) not in (1, 2):
        raise ValueError("Header takes NAME or NAME, REGEX")
    if not _TOKEN.fullmatch(args[0]):
        raise ValueError(f"Header: {show(args[0])} is not a header name")
    if len(args) == 1 or not args[1]:
        return args[:1]
    regex = python_regex(args[1])
    validate_header_regex(regex)
    return args[0], regex


_PREDICATES: dict[str, Callable[[tuple[str, ...]], tuple[str, ...]]] = {
    **PREDICATE_CHECKS,
    "Method": _method_args,
    "Host": _host_args,
    "Header": _header_args,
}


def _validate_filter(name: str, args: tuple[str, ...]) -> str | None:
    # Imported late: user filters register themselves in this registry, and
    # they may import the config package while doing so.
    from fastgw.filters import validate_filter

    return validate_filter(name, args)


_CORS_CONVERT: dict[str, Convert] = {
    "allowed_origins": _cors_list(_cors_origin),
    "allowed_origin_patterns": _cors_list(_cors_origin_pattern),
    "allowed_methods": _cors_list(_cors_token("a method")),
    "allowed_headers": _cors_list(_cors_token("a header name")),
    "exposed_headers": _cors_list(_cors_token("a header name")),
    "allow_credentials": _boolean,
    "max_age": _max_age,
}
