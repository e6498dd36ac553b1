"""Route filters: a registry of named factories, built-ins and user ones alike.

A filter is built once per route when a config is compiled; at request time
its ``on_request(request)`` runs after authentication, authorization and rate
limiting, and ``on_response(request, headers)`` runs on the response head.
``on_request`` may answer the request itself by returning ``(status, error,
headers)``; ``on_response`` may return a new status. ``RequireScopes``,
``RateLimit``, ``TokenRelay`` and the Host filters are policy: the pipeline
reads them from the route instead of running them as filters.

The Spring Cloud Gateway filters live in ``headers`` and ``paths``; values
may hold URI template variables (``{segment}``) from the route's Path and
Host patterns.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable

from ..http.headers import HOP_BY_HOP
from ..http.request import Request

POLICY = frozenset({
    "RequireScopes", "RateLimit", "TokenRelay", "ForwardClientCert", "PreserveHostHeader",
    "SetRequestHostHeader", "Retry", "CircuitBreaker",
})  # fmt: skip
_NO_ARGUMENT_NEEDED = frozenset({"Retry", "CircuitBreaker"})
_NO_ARGUMENT = frozenset({"TokenRelay", "PreserveHostHeader"})

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HOST = re.compile(r"[A-Za-z0-9._-]+(?::\d{1,5})?|\[[0-9A-Fa-f:.]+\](?::\d{1,5})?")
_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_-]*)\}")

# Factories of Spring Cloud Gateway that need a JVM, and why fastgw has none.
JVM_ONLY = {
    "ModifyRequestBody": "it runs a Java RewriteFunction on the body (a Python filter can)",
    "ModifyResponseBody": "it runs a Java RewriteFunction on the body (a Python filter can)",
    "JsonToGrpc": "it needs Java protobuf descriptors",
    "SaveSession": "there is no Spring WebSession in fastgw",
    "CacheRequestBody": "it keeps the body for Java code later in the chain",
    "FallbackHeaders": "it serves Spring's forward: fallback chain",
    "Hystrix": "Hystrix is a Java library (retired)",
    "SpringCloudCircuitBreaker": "it names a Java circuit breaker bean",
}
# Factories of SCG that fastgw could serve and does not yet.
NOT_YET = frozenset({
    "LocalResponseCache", "RemoveJsonAttributesResponseBody",
})


def template(value: str):
    """``value`` itself, or a function of the request when it names URI variables."""
    if not _VARIABLE.search(value):
        return value

    def expand(request: Request) -> str:
        found = request.path_vars or {}
        return _VARIABLE.sub(lambda m: found.get(m[1], m[0]), value)

    return expand


def expanded(value, request: Request) -> str:
    return value if type(value) is str else value(request)


class Filter:
    name = ""

    def on_request(self, request: Request):
        pass

    def on_response(self, request: Request, headers):
        pass

    @property
    def has_request(self) -> bool:
        return type(self).on_request is not Filter.on_request

    @property
    def has_response(self) -> bool:
        return type(self).on_response is not Filter.on_response


FilterFactory = Callable[[tuple[str, ...]], Filter]
FILTERS: dict[str, FilterFactory] = {}


def register(name: str):
    def wrap(factory):
        FILTERS[name] = factory
        return factory

    return wrap


def filter(name: str):
    """Register ``fn(request, arg)`` as a request filter usable as ``Name=arg``."""

    def wrap(fn: Callable[[Request, str], None]):
        class UserFilter(Filter):
            def __init__(self, args: tuple[str, ...]) -> None:
                self.name = name
                self.arg = ", ".join(args)

            def on_request(self, request: Request) -> None:
                fn(request, self.arg)

        FILTERS[name] = UserFilter
        return fn

    return wrap


def build_filter(name: str, args: tuple[str, ...]) -> Filter:
    """Raises ValueError with a user-facing message for a bad name or argument."""
    factory = FILTERS.get(name)
    if factory is None:
        if name in JVM_ONLY:
            raise ValueError(f"{name} is not available: {JVM_ONLY[name]}")
        if name in NOT_YET:
            raise ValueError(f"{name} is not available in fastgw yet")
        known = sorted([*FILTERS, *POLICY])
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if close:
            raise ValueError(f"unknown filter {name!r} (did you mean {close[0]!r}?)")
        raise ValueError(f"unknown filter {name!r} (known: {', '.join(known)})")
    return factory(args)


def validate_filter(name: str, args: tuple[str, ...]) -> str | None:
    if name in POLICY:
        if name in _NO_ARGUMENT and args:
            return f"{name} takes no argument"
        if name not in _NO_ARGUMENT | _NO_ARGUMENT_NEEDED and not args:
            return f"{name} needs at least one argument"
        if name in ("Retry", "CircuitBreaker"):
            try:
                (RetryPolicy if name == "Retry" else CircuitBreaker)(args)
            except ValueError as exc:
                return str(exc)
        if name == "SetRequestHostHeader" and (len(args) != 1 or not _HOST.fullmatch(args[0])):
            return f"SetRequestHostHeader takes one host name, not {', '.join(args)!r}"
        return None
    try:
        build_filter(name, args)
    except ValueError as exc:
        return str(exc)
    return None


def _header_name(filter_name: str, name: str) -> str:
    if not _TOKEN.match(name):
        raise ValueError(f"{filter_name}: {name!r} is not a valid header name")
    if name.lower() in HOP_BY_HOP or name.lower() in ("host", "content-length"):
        raise ValueError(f"{filter_name}: the gateway owns the {name} header")
    return name


def _header_value(filter_name: str, value: str) -> str:
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
        raise ValueError(f"{filter_name}: header value has a control character")
    return value


def _name_value(filter_name: str, args: tuple[str, ...]):
    """The header name and its value (a template: it may name URI variables)."""
    if len(args) != 2:
        raise ValueError(f"{filter_name} takes NAME, VALUE")
    return _header_name(filter_name, args[0]), template(_header_value(filter_name, args[1]))


@register("StripPrefix")
class StripPrefix(Filter):
    name = "StripPrefix"

    def __init__(self, args: tuple[str, ...]) -> None:
        if len(args) != 1 or not args[0].isdigit():
            raise ValueError("StripPrefix takes one non-negative integer")
        self.parts = int(args[0])

    def on_request(self, request: Request) -> None:
        segments = request.path.split("/")[1:]
        rest = "/".join(segments[self.parts :])
        request.path = "/" + rest


@register("RewritePath")
class RewritePath(Filter):
    name = "RewritePath"

    def __init__(self, args: tuple[str, ...]) -> None:
        if len(args) != 2:
            raise ValueError("RewritePath takes REGEX, REPLACEMENT")
        try:
            self.pattern = re.compile(args[0])
        except re.error as exc:
            raise ValueError(f"RewritePath: bad regex: {exc}") from None
        self.replacement = args[1]
        try:
            self.pattern.sub(self.replacement, "/")
        except (re.error, IndexError) as exc:
            raise ValueError(f"RewritePath: bad replacement: {exc}") from None

    def on_request(self, request: Request) -> None:
        path = self.pattern.sub(self.replacement, request.path)
        request.path = path if path.startswith("/") else "/" + path


@register("AddRequestHeader")
class AddRequestHeader(Filter):
    name = "AddRequestHeader"

    def __init__(self, args: tuple[str, ...]) -> None:
        self.header, self.value = _name_value(self.name, args)

    def on_request(self, request: Request) -> None:
        request.headers.add(self.header, expanded(self.value, request))


@register("SetRequestHeader")
class SetRequestHeader(Filter):
    name = "SetRequestHeader"

    def __init__(self, args: tuple[str, ...]) -> None:
        self.header, self.value = _name_value(self.name, args)

    def on_request(self, request: Request) -> None:
        request.headers[self.header] = expanded(self.value, request)


@register("RemoveRequestHeader")
class RemoveRequestHeader(Filter):
    name = "RemoveRequestHeader"

    def __init__(self, args: tuple[str, ...]) -> None:
        if len(args) != 1:
            raise ValueError("RemoveRequestHeader takes NAME")
        self.header = _header_name(self.name, args[0])

    def on_request(self, request: Request) -> None:
        request.headers.remove(self.header)


@register("AddResponseHeader")
class AddResponseHeader(Filter):
    name = "AddResponseHeader"

    def __init__(self, args: tuple[str, ...]) -> None:
        self.header, self.value = _name_value(self.name, args)

    def on_response(self, request: Request, headers) -> None:
        headers.add(self.header, expanded(self.value, request))


import fastgw.filters.headers  # noqa: E402  (the SCG filters register themselves)
import fastgw.filters.paths  # noqa: E402,F401
from fastgw.filters.breaker import CircuitBreaker  # noqa: E402
from fastgw.filters.retry import RetryPolicy  # noqa: E402
