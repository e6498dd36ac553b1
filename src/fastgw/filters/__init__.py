"""Route filters: a registry of named factories, built-ins and user ones alike.

A filter is built once per route when a config is compiled; at request time
its ``on_request(request)`` runs after authentication, authorization and rate
limiting, and ``on_response(request, headers)`` runs on the response head.
``RequireScopes``, ``RateLimit`` and ``TokenRelay`` are policy: the pipeline
reads them from the route instead of running them as filters.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..http.headers import HOP_BY_HOP
from ..http.request import Request

POLICY = frozenset({"RequireScopes", "RateLimit", "TokenRelay", "ForwardClientCert"})

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class Filter:
    name = ""

    def on_request(self, request: Request) -> None:
        pass

    def on_response(self, request: Request, headers) -> None:
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
        known = ", ".join(sorted([*FILTERS, *POLICY]))
        raise ValueError(f"unknown filter {name!r} (known: {known})")
    return factory(args)


def validate_filter(name: str, args: tuple[str, ...]) -> str | None:
    if name in POLICY:
        if name == "TokenRelay" and args:
            return "TokenRelay takes no argument"
        if name != "TokenRelay" and not args:
            return f"{name} needs at least one argument"
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


def _name_value(filter_name: str, args: tuple[str, ...]) -> tuple[str, str]:
    if len(args) != 2:
        raise ValueError(f"{filter_name} takes NAME, VALUE")
    return _header_name(filter_name, args[0]), _header_value(filter_name, args[1])


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
        request.headers.add(self.header, self.value)


@register("SetRequestHeader")
class SetRequestHeader(Filter):
    name = "SetRequestHeader"

    def __init__(self, args: tuple[str, ...]) -> None:
        self.header, self.value = _name_value(self.name, args)

    def on_request(self, request: Request) -> None:
        request.headers[self.header] = self.value


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
        headers.add(self.header, self.value)
