"""Spring Cloud Gateway's header and parameter filters, request and response side."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, urlencode

from ..config.spring import compile_regex, python_replacement
from ..http.request import Request
from . import Filter, _header_name, _header_value, _name_value, expanded, register, template


@register("AddRequestHeadersIfNotPresent")
class AddRequestHeadersIfNotPresent(Filter):
    name = "AddRequestHeadersIfNotPresent"

    def __init__(self, args: tuple[str, ...]) -> None:
        if not args:
            raise ValueError(f"{self.name} takes NAME:VALUE, ...")
        pairs = []
        for arg in args:
            header, colon, value = arg.partition(":")
            if not colon:
                raise ValueError(f"{self.name}: {arg!r} is not NAME:VALUE")
            pairs.append((_header_name(self.name, header.strip()),
                          template(_header_value(self.name, value.strip()))))
        self.pairs = tuple(pairs)

    def on_request(self, request: Request) -> None:
        headers = request.headers
        for header, value in self.pairs:
            if header not in headers:
                headers.add(header, expanded(value, request))


@register("MapRequestHeader")
class MapRequestHeader(Filter):
    """The values of ``fromHeader`` added under ``toHeader`` as well."""

    name = "MapRequestHeader"

    def __init__(self, args: tuple[str, ...]) -> None:
        if len(args) != 2:
            raise ValueError(f"{self.name} takes FROM_HEADER, TO_HEADER")
        self.source = _header_name(self.name, args[0])
        self.target = _header_name(self.name, args[1])

    def on_request(self, request: Request) -> None:
        for value in request.headers.getall(self.source):
            request.headers.add(self.target, value)


@register("AddRequestParameter")
class AddRequestParameter(Filter):
    name = "AddRequestParameter"

    def __init__(self, args: tuple[str, ...]) -> None:
        if len(args) != 2 or not args[0]:
            raise ValueError(f"{self.name} takes NAME, VALUE")
        self.param = quote(args[0], safe="")
        self.value = template(args[1])

    def on_request(self, request: Request) -> None:
        pair = f"{self.param}={quote(expanded(self.value, request), safe='')}"
        request.query = f"{request.query}&{pair}" if request.query else pair


@register("RemoveRequestParameter")
class RemoveRequestParameter(Filter):
    name = "RemoveRequestParameter"

    def __init__(self, args: tuple[str, ...]) -> None:
        if len(args) != 1 or not args[0]:
            raise ValueError(f"{self.name} takes NAME")
        self.param = args[0]

    def on_request(self, request: Request) -> None:
        if request.query:
            kept = [(k, v) for k, v in parse_qsl(request.query, True) if k != self.param]
            request.query = urlencode(kept)


@register("RewriteRequestParameter")
class RewriteRequestParameter(Filter):
    """Every ``name`` parameter becomes one ``name=replacement``, last as in SCG;
    a query without ``name`` is left alone."""

    name = "RewriteRequestParameter"

    def __init__(self, args: tuple[str, ...]) -> None:
        if len(args) != 2 or not args[0]:
            raise ValueError(f"{self.name} takes NAME, REPLACEMENT")
        self.param = args[0]
        self.pair = (args[0], args[1])

    def on_request(self, request: Request) -> None:
        if request.query:
            pairs = parse_qsl(request.query, True)
            kept = [(k, v) for k, v in pairs if k != self.param]
            if len(kept) != len(pairs):
                request.query = urlencode([*kept, self.pair])


@register("SetResponseHeader")
class SetResponseHeader(Filter):
    name = "SetResponseHeader"

    def __init__(self, args: tuple[str, ...]) -> None:
        self.header, self.value = _name_value(self.name, args)

    def on_response(self, request: Request, headers) -> None:
        headers[self.header] = expanded(self.value, request)


@register("RemoveResponseHeader")
class RemoveResponseHeader(Filter):
    name = "RemoveResponseHeader"

    def __init__(self, args: tuple[str, ...]) -> None:
        if len(args) != 1:
            raise ValueError(f"{self.name} takes NAME")
        self.header = _header_name(self.name, args[0])

    def on_response(self, request: Request, headers) -> None:
        headers.remove(self.header)


_STRATEGIES = ("RETAIN_FIRST", "RETAIN_LAST", "RETAIN_UNIQUE")


@register("DedupeResponseHeader")
class DedupeResponseHeader(Filter):
    """One value left of each named header (names separated by spaces), as SCG does."""

    name = "DedupeResponseHeader"

    def __init__(self, args: tuple[str, ...]) -> None:
        if len(args) not in (1, 2) or not args[0].split():
            raise ValueError(f"{self.name} takes NAMES (space-separated), STRATEGY")
        self.headers = tuple(_header_name(self.name, n) for n in args[0].split())
        self.strategy = args[1] if len(args) == 2 else "RETAIN_FIRST"
        if self.strategy not in _STRATEGIES:
            raise ValueError(f"{self.name}: strategy is one of {', '.join(_STRATEGIES)}")

    def on_response(self, request: Request, headers) -> None:
        for header in self.headers:
            values = [v for value in headers.getall(header) for v in _items(value)]
            if len(values) < 2:
                continue
            if self.strategy == "RETAIN_FIRST":
                values = values[:1]
            elif self.strategy == "RETAIN_LAST":
                values = values[-1:]
            else:
                values = list(dict.fromkeys(values))
            headers[header] = ", ".join(values)


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


@register("RewriteResponseHeader")
class RewriteResponseHeader(Filter):
    name = "RewriteResponseHeader"

    def __init__(self, args: tuple[str, ...]) -> None:
        if len(args) != 3:
            raise ValueError(f"{self.name} takes NAME, REGEXP, REPLACEMENT")
        self.header = _header_name(self.name, args[0])
        self.regex = compile_regex(args[1])
        self.replacement = python_replacement(args[2], self.regex)

    def on_response(self, request: Request, headers) -> None:
        values = headers.getall(self.header)
        if values:
            headers.remove(self.header)
            for value in values:
                headers.add(self.header, self.regex.sub(self.replacement, value))


STRIP_MODES = ("NEVER_STRIP", "AS_IN_REQUEST", "ALWAYS_STRIP")
_VERSIONED_PATH = re.compile(r"^/v\d+/")


@register("RewriteLocationResponseHeader")
class RewriteLocationResponseHeader(Filter):
    """SCG's: the upstream's own ``host[:port]`` (and ``/vN`` version, per the mode) in
    ``Location`` becomes the client's ``Host`` (or ``hostValue``), for the listed protocols."""

    name = "RewriteLocationResponseHeader"

    def __init__(self, args: tuple[str, ...]) -> None:
        if len(args) > 4:
            raise ValueError(f"{self.name} takes STRIP_VERSION_MODE, LOCATION_HEADER_NAME, "
                             "HOST_VALUE, PROTOCOLS_REGEX")
        mode, header, host, protocols = (*args, "", "", "", "")[:4]
        mode = mode.upper() or "AS_IN_REQUEST"
        if mode not in STRIP_MODES:
            raise ValueError(f"{self.name}: stripVersionMode is one of "
                             f"{', '.join(STRIP_MODES)}, not {args[0]!r}")
        self.mode = mode
        self.header = _header_name(self.name, header or "Location")
        self.host = _header_value(self.name, host) if host else None
        protocols = protocols or "http|https|ftp|ftps"
        try:
            re.compile(protocols)
        except re.error as exc:
            raise ValueError(f"{self.name}: protocolsRegex {protocols!r}: {exc}") from None
        # scheme, host[:port], an optional version, then the path (SCG's patterns)
        self.location = re.compile(rf"(?:{protocols})://[^:/]+(?::\d+)?(?P<version>/v\d+)?(?=/)")

    def on_response(self, request: Request, headers) -> None:
        location = headers.get(self.header)
        if location is None:
            return
        found = self.location.match(location)
        host = self.host or request.host
        if found is None or not host:
            return
        strip = self.mode == "ALWAYS_STRIP" or (
            self.mode == "AS_IN_REQUEST" and not _VERSIONED_PATH.match(request.path))
        scheme = location[: location.index("://") + 3]
        kept = "" if strip or found["version"] is None else found["version"]
        headers[self.header] = scheme + host + kept + location[found.end():]


SECURE_HEADERS = (
    ("X-Xss-Protection", "1 ; mode=block"),
    ("Strict-Transport-Security", "max-age=631138519"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy",
     "default-src 'self' https:; font-src 'self' https: data:; img-src 'self' https: data:; "
     "object-src 'none'; script-src https:; style-src 'self' https: 'unsafe-inline'"),
    ("X-Download-Options", "noopen"),
    ("X-Permitted-Cross-Domain-Policies", "none"),
)  # SCG's defaults


@register("SecureHeaders")
class SecureHeaders(Filter):
    """SCG's recommended security headers, where the upstream set none of its own."""

    name = "SecureHeaders"

    def __init__(self, args: tuple[str, ...]) -> None:
        if args:
            raise ValueError(f"{self.name} takes no argument")

    def on_response(self, request: Request, headers) -> None:
        for header, value in SECURE_HEADERS:
            if header not in headers:
                headers.add(header, value)
