"""Cross-origin resource sharing, as Spring's CorsConfiguration and SCG's globalcors.

A ``CorsPolicy`` is one configuration (the top-level ``cors:`` section's
``cors-configurations`` by path pattern, or a route's ``metadata.cors``).
A route with any policy gets a ``CorsRule`` as its first check: a preflight
is answered there, before authentication, and never reaches the upstream;
an actual cross-origin request from an allowed origin gets its
``Access-Control-*`` lines on whatever answers it. A route without a policy
has no such check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from .proxy.exchange import Rejection

ALL = "*"
DEFAULT_METHODS = ("GET", "HEAD")  # Spring's, when allowedMethods is not set
INVALID = "invalid_cors_request"
# Spring's Vary on every answer a policy applies to.
_VARY = ("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
_VARY_LINE = f"{_VARY[0]}: {_VARY[1]}\r\n".encode("latin-1")
# What the gateway says about CORS on such a route; the upstream's own would repeat it.
_OWNED = ("access-control-allow-origin", "access-control-allow-credentials",
          "access-control-expose-headers")  # fmt: skip


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """Spring's CorsConfiguration; None is "not set", so that policies combine."""

    allowed_origins: tuple[str, ...] | None = None
    allowed_origin_patterns: tuple[str, ...] | None = None
    allowed_methods: tuple[str, ...] | None = None
    allowed_headers: tuple[str, ...] | None = None
    exposed_headers: tuple[str, ...] | None = None
    allow_credentials: bool | None = None
    max_age: int | None = None  # seconds
    line: int = field(default=0, compare=False)

    def combine(self, other: CorsPolicy | None) -> CorsPolicy:
        """This policy refined by OTHER (a route's over the global one), as Spring combines."""
        if other is None:
            return self
        lists = {name: _union(getattr(self, name), getattr(other, name)) for name in _LISTS}
        return replace(
            self, **lists,
            allow_credentials=_first(other.allow_credentials, self.allow_credentials),
            max_age=_first(other.max_age, self.max_age),
        )


_LISTS = ("allowed_origins", "allowed_origin_patterns", "allowed_methods", "allowed_headers",
          "exposed_headers")  # fmt: skip


def _union(mine, theirs):
    if theirs is None:
        return mine
    if mine is None:
        return theirs
    if ALL in mine or ALL in theirs:
        return (ALL,)
    return mine + tuple(v for v in theirs if v not in mine)


def _first(value, fallback):
    return fallback if value is None else value


@dataclass(frozen=True, slots=True)
class CorsSection:
    """The top-level ``cors:``: policies by path pattern, first match wins."""

    configurations: tuple[tuple[str, CorsPolicy], ...] = ()
    add_to_simple_url_handler_mapping: bool = False


def check_policy(policy: CorsPolicy) -> str | None:
    """What Spring refuses at startup (CorsConfiguration.validateAllowCredentials)."""
    if policy.allow_credentials and policy.allowed_origins and ALL in policy.allowed_origins:
        return ("cannot be true while allowedOrigins is '*' (browsers refuse that); "
                "list the origins, or use allowedOriginPatterns")
    return None


def origin_pattern(text: str) -> re.Pattern:
    """Spring's allowedOriginPatterns: ``*`` anywhere, and a port list ``[8080, 8081]`` or
    ``[*]`` at the end. Raises ValueError."""
    ports = None
    if text.endswith("]"):
        written = text
        text, sep, listed = text[:-1].rpartition(":[")
        if not sep:
            raise ValueError(f"{written!r}: a port list is written host:[PORT, ...]")
        ports = [p.strip() for p in listed.split(",")]
        if not all(p == ALL or p.isdigit() for p in ports):
            raise ValueError(f"{written!r}: ports are numbers or *")
    regex = ".*".join(re.escape(part) for part in text.lower().split(ALL))
    if ports is not None:
        regex += "(:[0-9]+)?" if ALL in ports else "(:(" + "|".join(ports) + "))?"
    return re.compile(regex)


def path_matcher(pattern: str):
    """A test of request paths against a Spring path pattern; None matches every path."""
    if pattern in ("/**", "**"):
        return None
    regex = ""
    for part in re.split(r"(/\*\*|\*\*|\*|\?|\{[^}]*\})", pattern):
        if part in ("/**", "**"):
            regex += "(/.*)?" if part == "/**" else ".*"
        elif part == "*":
            regex += "[^/]*"
        elif part == "?":
            regex += "[^/]"
        elif part.startswith("{") and part.endswith("}"):
            regex += "[^/]+"
        else:
            regex += re.escape(part)
    return re.compile(regex + "/?").fullmatch


class Compiled:
    """A policy ready for requests: lowered names, compiled patterns, the fixed lines."""

    __slots__ = ("any_header", "any_method", "any_origin", "credentials", "headers",
                 "max_age", "methods", "origins", "patterns", "simple_lines")  # fmt: skip

    def __init__(self, policy: CorsPolicy) -> None:
        origins = policy.allowed_origins or ()
        self.any_origin = ALL in origins
        self.origins = frozenset(o.lower().rstrip("/") for o in origins if o != ALL)
        self.patterns = tuple(origin_pattern(p) for p in policy.allowed_origin_patterns or ())
        methods = policy.allowed_methods or DEFAULT_METHODS
        self.any_method = ALL in methods
        self.methods = tuple(m.upper() for m in methods)
        headers = policy.allowed_headers or ()
        self.any_header = ALL in headers
        self.headers = frozenset(h.lower() for h in headers)
        self.credentials = bool(policy.allow_credentials)
        self.max_age = policy.max_age
        lines = [_VARY]
        if policy.exposed_headers:
            lines.append(("Access-Control-Expose-Headers", ", ".join(policy.exposed_headers)))
        if self.credentials:
            lines.append(("Access-Control-Allow-Credentials", "true"))
        self.simple_lines = tuple(lines)

    def allowed_origin(self, origin: str) -> str | None:
        """What Access-Control-Allow-Origin says to ORIGIN, or None: not allowed."""
        if self.any_origin and not self.credentials:
            return ALL
        key = origin.lower().rstrip("/")
        if self.any_origin or key in self.origins:
            return origin
        for pattern in self.patterns:
            if pattern.fullmatch(key):
                return origin
        return None

    def preflight(self, origin: str, method: str, requested: str | None) -> Rejection:
        allowed = self.allowed_origin(origin)
        if allowed is None:
            return _invalid()
        method = method.strip().upper()
        if not self.any_method and method not in self.methods:
            return _invalid()
        names = [n.strip() for n in requested.split(",") if n.strip()] if requested else []
        if names and not self.any_header and not all(n.lower() in self.headers for n in names):
            return _invalid()
        lines = [("Access-Control-Allow-Origin", allowed), *self.simple_lines[:1],
                 ("Access-Control-Allow-Methods",
                  method if self.any_method else ", ".join(self.methods))]
        if names:
            lines.append(("Access-Control-Allow-Headers", ", ".join(names)))
        if self.credentials:
            lines.append(("Access-Control-Allow-Credentials", "true"))
        if self.max_age is not None:
            lines.append(("Access-Control-Max-Age", str(self.max_age)))
        return Rejection(200, headers=lines, body=b"")

    def simple(self, origin: str) -> bytes | None:
        allowed = self.allowed_origin(origin)
        if allowed is None:
            return None
        lines = [("Access-Control-Allow-Origin", allowed), *self.simple_lines]
        return "".join(f"{n}: {v}\r\n" for n, v in lines).encode("latin-1")


def _invalid() -> Rejection:
    return Rejection(403, INVALID, headers=(_VARY,))


class CorsRule:
    """A route's CORS check: the policies that apply to it, by path, first match wins."""

    __slots__ = ("entries",)

    def __init__(self, entries) -> None:
        self.entries = entries

    @classmethod
    def build(cls, section: CorsSection | None, route_policy: CorsPolicy | None):
        """The rule for a route (or, with no route policy, for requests no route takes)."""
        entries = []
        for pattern, policy in section.configurations if section is not None else ():
            entries.append((path_matcher(pattern), Compiled(policy.combine(route_policy))))
        if route_policy is not None:
            entries.append((None, Compiled(route_policy)))
        return cls(tuple(entries)) if entries else None

    def _policy(self, path: str) -> Compiled | None:
        for match, policy in self.entries:
            if match is None or match(path):
                return policy
        return None

    def __call__(self, ex):
        """The route's check: None to go on, or the answer (preflight, 403)."""
        request = ex.request
        origin = request.headers.get("origin")
        if origin is None or _same_origin(origin, request):
            return None
        policy = self._policy(request.path)
        if policy is None:
            return None
        method = request.headers.get("access-control-request-method")
        if request.method == "OPTIONS" and method is not None:
            return policy.preflight(origin, method,
                                    request.headers.get("access-control-request-headers"))
        lines = policy.simple(origin)
        if lines is None:
            return _invalid()
        ex.extra_headers += lines
        return None

    def answer_unrouted(self, ex) -> bool:
        """A preflight no route takes, answered by the global policies (SCG's
        add-to-simple-url-handler-mapping); False if it is none of theirs."""
        request = ex.request
        if request.method != "OPTIONS" or "access-control-request-method" not in request.headers:
            return False
        verdict = self(ex)
        if verdict is None:
            return False
        verdict.answer(ex)
        return True


class OwnedHeaders:
    """On a CORS route the gateway's Access-Control-* lines stand alone."""

    name = "CORS"
    has_request = False
    has_response = True

    def on_response(self, request, headers) -> None:
        headers.remove_all(_OWNED)


def _same_origin(origin: str, request) -> bool:
    scheme, sep, host = origin.partition("://")
    if not sep:
        return False
    default = ":443" if scheme == "https" else ":80"
    return (scheme.lower() == request.scheme
            and host.lower().removesuffix(default) == request.host.lower().removesuffix(default))
