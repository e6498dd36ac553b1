"""Status lines and the gateway's own small JSON error responses, built once."""

from http import HTTPStatus

import orjson

REASONS = {s.value: s.phrase for s in HTTPStatus}
STATUS_LINES = {code: f"HTTP/1.1 {code} {reason}\r\n".encode() for code, reason in REASONS.items()}


def status_line(code: int) -> bytes:
    line = STATUS_LINES.get(code)
    if line is None:
        line = f"HTTP/1.1 {code} Unknown\r\n".encode()
    return line


# The error names that reach clients: short, stable, never a library's text.
ERRORS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "no_route",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
    414: "uri_too_long",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal_error",
    502: "bad_gateway",
    503: "no_healthy_upstream",
    504: "upstream_timeout",
    505: "http_version_not_supported",
}


def error_response(
    code: int,
    request_id: str,
    *,
    error: str | None = None,
    close: bool = False,
    headers: list[tuple[str, str]] | tuple = (),
    lines: bytes = b"",
    head_only: bool = False,
) -> bytes:
    body = orjson.dumps({"error": error or ERRORS.get(code, "error"), "request_id": request_id})
    parts = [
        status_line(code),
        b"Content-Type: application/json\r\nContent-Length: ",
        str(len(body)).encode(),
        b"\r\nX-Request-Id: ",
        request_id.encode(),
        b"\r\n",
    ]
    for name, value in headers:
        parts.append(f"{name}: {value}\r\n".encode("latin-1"))
    parts.append(lines)
    if close:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if not head_only:
        parts.append(body)
    return b"".join(parts)
