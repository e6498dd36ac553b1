"""SCG's Retry: a response with one of the given statuses is asked for again.

Only before a byte reached the client (the response head is held back),
only for the listed methods (GET unless told), never a request with a body
(fastgw streams bodies and keeps no copy to send again), and at most
``retries`` more times; the last answer goes to the client as it came.
Connection failures are retried as for every route, up to the same count.
"""

from __future__ import annotations

from .paths import status_code

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
SERIES = {"INFORMATIONAL": 1, "SUCCESSFUL": 2, "REDIRECTION": 3, "CLIENT_ERROR": 4,
          "SERVER_ERROR": 5}
NAMES = ("retries", "statuses", "methods", "series")
REFUSED = {
    "exceptions": "names Java exception classes; connection failures and timeouts are "
                  "retried as they are",
    "backoff": "is not available: retries follow one another at once",
}


class RetryPolicy:
    __slots__ = ("methods", "retries", "statuses")

    def __init__(self, args: tuple[str, ...]) -> None:
        """``args`` as ``name=value`` (lists space-separated), SCG's defaults for the rest."""
        given = dict(arg.split("=", 1) for arg in args)
        text = given.get("retries", "3")
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 10:
            raise ValueError(f"Retry: retries is a whole number from 1 to 10, not {text!r}")
        self.retries = int(text)
        self.methods = frozenset(m.upper() for m in given.get("methods", "GET").split())
        pushy = sorted(self.methods - IDEMPOTENT)
        if pushy:
            raise ValueError(f"Retry: {pushy[0]} is not idempotent, and is never sent twice")
        statuses = {status_code("Retry", s) for s in given.get("statuses", "").split()}
        series = given.get("series", "SERVER_ERROR" if "statuses" not in given else "")
        for name in series.split():
            if name.upper() not in SERIES:
                raise ValueError(f"Retry: {name!r} is not one of {', '.join(SERIES)}")
            first = SERIES[name.upper()] * 100
            statuses.update(range(first, first + 100))
        self.statuses = frozenset(statuses)

    def wants(self, status: int, method: str, has_body: bool, attempts: int) -> bool:
        return (status in self.statuses and method in self.methods and not has_body
                and attempts <= self.retries)


def retry_args(args: object, shortcut: bool) -> tuple[str, ...]:
    """The shortcut (``Retry=3, BAD_GATEWAY, GET``) or the mapping, as ``name=value``."""
    if shortcut:
        if len(args) > 3:
            raise ValueError(f"Retry: backoff {REFUSED['backoff']}")
        return tuple(f"{name}={value}" for name, value in zip(NAMES, args, strict=False) if value)
    out = []
    for key, value in args.items():
        if key in REFUSED:
            raise ValueError(f"Retry: {key} {REFUSED[key]}")
        if key not in NAMES:
            raise ValueError(f"Retry has no argument {key!r} (arguments: {', '.join(NAMES)})")
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, str | int) and not isinstance(item, bool) for item in items):
            raise ValueError(f"Retry: {key} takes text or numbers")
        out.append(f"{key}={' '.join(str(item) for item in items)}")
    return tuple(out)
