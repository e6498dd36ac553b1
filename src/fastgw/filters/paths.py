"""Spring Cloud Gateway's path, status and size filters."""

from __future__ import annotations

import re

from ..http.request import Request
from . import Filter, _header_name, _header_value, expanded, register, template

_STATUS = {
    "MOVED_PERMANENTLY": 301, "FOUND": 302, "SEE_OTHER": 303, "TEMPORARY_REDIRECT": 307,
    "PERMANENT_REDIRECT": 308, "OK": 200, "CREATED": 201, "ACCEPTED": 202, "NO_CONTENT": 204,
    "BAD_REQUEST": 400, "UNAUTHORIZED": 401, "FORBIDDEN": 403, "NOT_FOUND": 404,
    "CONFLICT": 409, "GONE": 410, "TOO_MANY_REQUESTS": 429, "INTERNAL_SERVER_ERROR": 500,
    "BAD_GATEWAY": 502, "SERVICE_UNAVAILABLE": 503, "GATEWAY_TIMEOUT": 504,
}  # fmt: skip
_SIZE = re.compile(r"(\d+)\s*(B|KB|MB|GB|TB)?", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


def status_code(filter_name: str, text: str, allowed: range = range(100, 600)) -> int:
    """A status as SCG takes it: a number or an HttpStatus name."""
    code = int(text) if text.isascii() and text.isdigit() else _STATUS.get(text.upper())
    if code is None or code not in allowed:
        raise ValueError(f"{filter_name}: {text!r} is not a status code here")
    return code


def data_size(filter_name: str, text: str) -> int:
    """Spring's DataSize: bytes, or a number with B, KB, MB, GB or TB (binary units)."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"{filter_name}: {text!r} is not a size like 5000000 or 5MB")
    return int(m[1]) * _UNITS[(m[2] or "B").upper()]


def _path(filter_name: str, text: str) -> str:
    if not text.startswith("/") or any(c.isspace() or c in "?#" for c in text):
        raise ValueError(f"{filter_name}: {text!r} is not a path starting with /")
    return text


@register("PrefixPath")
class PrefixPath(Filter):
    name = "PrefixPath"

    def __init__(self, args: tuple[str, ...]) -> None:
        if len(args) != 1:
            raise ValueError(f"{self.name} takes PREFIX")
        self.prefix = _path(self.name, args[0]).rstrip("/")

    def on_request(self, request: Request) -> None:
        request.path = self.prefix + request.path


@register("SetPath")
class SetPath(Filter):
    name = "SetPath"

    def __init__(self, args: tuple[str, ...]) -> None:
        if len(args) != 1:
            raise ValueError(f"{self.name} takes TEMPLATE")
        self.path = template(_path(self.name, args[0]))

    def on_request(self, request: Request) -> None:
        request.path = expanded(self.path, request)


@register("RedirectTo")
class RedirectTo(Filter):
    """Answers with a redirect to ``url``; the request never reaches the upstream."""

    name = "RedirectTo"

    def __init__(self, args: tuple[str, ...]) -> None:
        if len(args) not in (2, 3):
            raise ValueError(f"{self.name} takes STATUS, URL (and includeRequestParams)")
        self.status = status_code(self.name, args[0], range(300, 400))
        self.url = _header_value(self.name, args[1])
        if not self.url or " " in self.url:
            raise ValueError(f"{self.name}: {args[1]!r} is not a URL")
        self.with_query = len(args) == 3 and args[2].lower() == "true"

    def on_request(self, request: Request):
        url = self.url
        if self.with_query and request.query:
            url += ("&" if "?" in url else "?") + request.query
        return self.status, "redirect", (("Location", url),)


@register("SetStatus")
class SetStatus(Filter):
    name = "SetStatus"

    def __init__(self, args: tuple[str, ...]) -> None:
        if len(args) != 1:
            raise ValueError(f"{self.name} takes STATUS")
        self.status = status_code(self.name, args[0], range(200, 600))

    def on_response(self, request: Request, headers) -> int:
        return self.status


@register("RequestSize")
class RequestSize(Filter):
    """413 for a request whose Content-Length is over ``maxSize`` (SCG's default 5MB)."""

    name = "RequestSize"

    def __init__(self, args: tuple[str, ...]) -> None:
        if len(args) > 1:
            raise ValueError(f"{self.name} takes MAX_SIZE")
        self.limit = data_size(self.name, args[0]) if args else 5 << 20
        self.message = (("errorMessage", f"Request size is larger than permissible limit. "
                         f"Request size exceeds the limit of {self.limit} bytes"),)

    def on_request(self, request: Request):
        for value in request.sent_values("content-length"):
            if int(value) > self.limit:
                return 413, "payload_too_large", self.message
        return None


@register("RequestHeaderSize")
class RequestHeaderSize(Filter):
    """431 for a request whose header fields, names and values, pass ``maxSize``
    (SCG's default 16000 bytes)."""

    name = "RequestHeaderSize"

    def __init__(self, args: tuple[str, ...]) -> None:
        if len(args) > 2:
            raise ValueError(f"{self.name} takes MAX_SIZE, ERROR_HEADER_NAME")
        self.limit = data_size(self.name, args[0]) if args else 16000
        self.header = _header_name(self.name, args[1]) if len(args) == 2 else "errorMessage"

    def on_request(self, request: Request):
        size = sum(len(n) + len(v) for n, v in request.sent)
        if size > self.limit:
            message = f"Request Header/s size is larger than permissible limit ({self.limit} B)"
            return 431, "request_header_fields_too_large", ((self.header, message),)
        return None
