"""SCG's Retry: a response with one of the given statuses is asked for again.

Only before a byte reached the client (the response head is held back),
only for the listed methods (GET unless told), never a request with a body
(fastgw streams bodies and keeps no copy to send again), and at most
``retries`` more times; the last answer goes to the client as it came.
Connection failures are retried as for every route, up to the same count.
With ``backoff``, retry n waits ``firstBackoff * factor**n`` (or the previous wait
times ``factor``), at most ``maxBackoff``; the waits are worked out here, once.
"""

from __future__ import annotations

from ..config.spring import camel_case
from ..config.units import parse_duration
from .paths import status_code

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
SERIES = {"INFORMATIONAL": 1, "SUCCESSFUL": 2, "REDIRECTION": 3, "CLIENT_ERROR": 4,
          "SERVER_ERROR": 5}
NAMES = ("retries", "statuses", "methods", "series")
BACKOFF = ("firstBackoff", "maxBackoff", "factor", "basedOnPreviousValue")
REFUSED = {
    "exceptions": "names Java exception classes; connection failures and timeouts are "
                  "retried as they are",
}
MAX_WAIT = 60.0  # s: a wait longer than this is a mistake, not a backoff


class RetryPolicy:
    __slots__ = ("methods", "retries", "statuses", "waits")

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
        self.waits = _waits(given, self.retries) if any(
            f"backoff.{name}" in given for name in BACKOFF) else None

    def wants(self, status: int, method: str, has_body: bool, attempts: int) -> bool:
        return (status in self.statuses and method in self.methods and not has_body
                and attempts <= self.retries)


def _duration(given: dict, name: str, default: str | None) -> float | None:
    text = given.get(f"backoff.{name}", default)
    if text is None or text in ("", "null"):
        return None
    try:
        # Spring's Duration: a bare number is milliseconds
        seconds = int(text) / 1000 if text.isascii() and text.isdigit() else parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"Retry: backoff.{name}: {exc}") from None
    if seconds > MAX_WAIT:
        raise ValueError(f"Retry: backoff.{name} is {text}, more than {MAX_WAIT:.0f}s")
    return seconds


def _waits(given: dict, retries: int) -> tuple[float, ...]:
    """The wait before each retry, as SCG's exponential backoff gives it."""
    first = _duration(given, "firstBackoff", "5ms")
    if first is None:
        first = 0.005
    longest = _duration(given, "maxBackoff", None)
    text = given.get("backoff.factor", "2")
    try:
        factor = float(text)
    except ValueError:
        factor = -1.0
    if not 1 <= factor <= 100:
        raise ValueError(f"Retry: backoff.factor is a number from 1 to 100, not {text!r}")
    previous = given.get("backoff.basedOnPreviousValue", "false").lower()
    if previous not in ("true", "false"):
        raise ValueError(f"Retry: backoff.basedOnPreviousValue is true or false, not {previous!r}")
    if longest is not None and longest < first:
        raise ValueError("Retry: backoff.maxBackoff is shorter than firstBackoff")
    waits, wait = [], first
    for n in range(retries):
        if previous == "false":
            wait = first * factor ** n
        waits.append(min(wait, longest if longest is not None else MAX_WAIT))
        wait = waits[-1] * factor
    return tuple(waits)


def retry_args(args: object, shortcut: bool) -> tuple[str, ...]:
    """The shortcut (``Retry=3, BAD_GATEWAY, GET, 10ms, 50ms, 2, false``) or the
    mapping, as ``name=value`` (``backoff.firstBackoff=10ms``)."""
    if shortcut:
        if len(args) > len(NAMES) + len(BACKOFF) - 1:
            raise ValueError("Retry takes retries, statuses, methods and the backoff's "
                             "firstBackoff, maxBackoff, factor, basedOnPreviousValue")
        names = (*NAMES[:3], *(f"backoff.{name}" for name in BACKOFF))
        return tuple(f"{name}={value}" for name, value in zip(names, args, strict=False)
                     if value)
    out = []
    for key, value in args.items():
        if key == "backoff":
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ValueError("Retry: backoff is a mapping of " + ", ".join(BACKOFF))
            for name, item in value.items():
                name = camel_case(name)
                if name not in BACKOFF:
                    raise ValueError(f"Retry: backoff has no argument {name!r} "
                                     f"(arguments: {', '.join(BACKOFF)})")
                if isinstance(item, bool):
                    item = "true" if item else "false"
                if not isinstance(item, str | int | float) and item is not None:
                    raise ValueError(f"Retry: backoff.{name} takes text or a number")
                out.append(f"backoff.{name}={'' if item is None else item}")
            continue
        if key in REFUSED:
            raise ValueError(f"Retry: {key} {REFUSED[key]}")
        if key not in NAMES:
            raise ValueError(f"Retry has no argument {key!r} (arguments: {', '.join(NAMES)})")
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, str | int) and not isinstance(item, bool) for item in items):
            raise ValueError(f"Retry: {key} takes text or numbers")
        out.append(f"{key}={' '.join(str(item) for item in items)}")
    return tuple(out)
