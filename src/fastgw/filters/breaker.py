"""SCG's CircuitBreaker, with Resilience4j's count-based rules and defaults.

Closed, it counts the last ``slidingWindowSize`` outcomes; once there are
``minimumNumberOfCalls`` of them and ``failureRateThreshold`` percent or
more failed, it opens. Open, it lets nothing through for
``waitDurationInOpenState``, then half-opens: ``permittedNumberOfCallsInHalfOpenState``
requests probe the upstream, and their failure rate closes it or opens it
again. A failure is an upstream that could not be reached or did not answer
in time, or an answer whose status is among ``statusCodes``. A request it
does not let through, and a failure, are answered through ``fallbackUri``
(``forward:/path``, routed again by the gateway), else with a 503.
"""

from __future__ import annotations

import time
from collections import deque

from ..config.units import parse_duration
from .paths import status_code

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
NAMES = (
    "name", "fallbackUri", "statusCodes", "failureRateThreshold", "slidingWindowSize",
    "minimumNumberOfCalls", "waitDurationInOpenState", "permittedNumberOfCallsInHalfOpenState",
)  # fmt: skip
_DEFAULTS = {
    "failureRateThreshold": "50", "slidingWindowSize": "100", "minimumNumberOfCalls": "100",
    "waitDurationInOpenState": "60s", "permittedNumberOfCallsInHalfOpenState": "10",
}  # fmt: skip


def breaker_args(args: object, shortcut: bool) -> tuple[str, ...]:
    """The shortcut (``CircuitBreaker=NAME, forward:/path``) or the mapping, as ``name=value``."""
    if shortcut:
        if len(args) > 2:
            raise ValueError("CircuitBreaker takes NAME, FALLBACK_URI in the shortcut form")
        return tuple(f"{key}={value}" for key, value in zip(NAMES, args, strict=False))
    out = []
    for key, value in args.items():
        if key not in NAMES:
            raise ValueError(f"CircuitBreaker has no argument {key!r} "
                             f"(arguments: {', '.join(NAMES)})")
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, str | int) and not isinstance(item, bool) for item in items):
            raise ValueError(f"CircuitBreaker: {key} takes text or numbers")
        out.append(f"{key}={' '.join(str(item) for item in items)}")
    return tuple(out)


def _count(key: str, text: str, low: int, high: int) -> int:
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise ValueError(f"CircuitBreaker: {key} is a whole number from {low} to {high}")
    return int(text)


class CircuitBreaker:
    __slots__ = (
        "_failures",
        "_opened_at",
        "_probes",
        "_results",
        "_window",
        "failure_rate",
        "fallback",
        "minimum_calls",
        "name",
        "on_change",
        "permitted",
        "state",
        "statuses",
        "wait",
    )  # fmt: skip

    def __init__(self, args: tuple[str, ...], on_change=None) -> None:
        given = {**_DEFAULTS, **dict(arg.split("=", 1) for arg in args)}
        self.name = given.get("name", "default")
        fallback = given.get("fallbackUri")
        if fallback is not None and not (fallback.startswith("forward:/")
                                         and " " not in fallback):
            raise ValueError(f"CircuitBreaker: fallbackUri is forward:/PATH, not {fallback!r}"
                             " (only forward: is available)")
        self.fallback = fallback.removeprefix("forward:") if fallback else None
        self.statuses = frozenset(status_code("CircuitBreaker", s)
                                  for s in given.get("statusCodes", "").split())
        self.failure_rate = _count("failureRateThreshold", given["failureRateThreshold"], 1, 100)
        size = _count("slidingWindowSize", given["slidingWindowSize"], 1, 100000)
        self.minimum_calls = min(size, _count("minimumNumberOfCalls",
                                              given["minimumNumberOfCalls"], 1, 100000))
        self.wait = parse_duration(given["waitDurationInOpenState"])
        self.permitted = _count("permittedNumberOfCallsInHalfOpenState",
                                given["permittedNumberOfCallsInHalfOpenState"], 1, 1000)
        self._window: deque[bool] = deque(maxlen=size)
        self._failures = 0
        self._results: list[bool] = []
        self._probes = 0
        self._opened_at = 0.0
        self.state = CLOSED
        self.on_change = on_change

    def admits(self) -> bool:
        if self.state == OPEN:
            if time.monotonic() - self._opened_at < self.wait:
                return False
            self._move(HALF_OPEN)
        if self.state == HALF_OPEN:
            if self._probes >= self.permitted:
                if time.monotonic() - self._opened_at < self.wait:
                    return False
                self._move(HALF_OPEN)  # probes that never reported: probe afresh
            self._probes += 1
        return True

    def record(self, failed: bool) -> None:
        if self.state == HALF_OPEN:
            self._results.append(failed)
            if len(self._results) >= self.permitted:
                rate = 100 * sum(self._results) / len(self._results)
                self._move(OPEN if rate >= self.failure_rate else CLOSED)
            return
        if self.state == OPEN:
            return
        window = self._window
        if len(window) == window.maxlen and window[0]:
            self._failures -= 1
        window.append(failed)
        self._failures += failed
        calls = len(window)
        if calls >= self.minimum_calls and 100 * self._failures / calls >= self.failure_rate:
            self._move(OPEN)

    def _move(self, state: str) -> None:
        self.state = state
        self._results = []
        self._probes = 0
        if state != CLOSED:
            self._opened_at = time.monotonic()
        else:
            self._window.clear()
            self._failures = 0
        if self.on_change is not None:
            self.on_change(self)
