"""Route predicates the router's trie cannot index, as tests of a request.

Path, Method, Host and Header go into the router's tables. Cookie, Query,
RemoteAddr, XForwardedRemoteAddr, After, Before, Between and Weight become
callables ``test(request) -> bool`` that the router runs last, and only on
the routes the trie returned as candidates. Each is built once per snapshot.
"""

from __future__ import annotations

import ipaddress
import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .config.spring import compile_regex
from .config.units import show

Test = Callable[[object], bool]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

INDEXED = frozenset({"Path", "Method", "Host", "Header"})

_ZONED = re.compile(r"(?P<stamp>[^\[\]]+?)(?:\[(?P<zone>[^\[\]]+)\])?")


def zoned_instant(text: str) -> float:
    """Java ``ZonedDateTime`` text (``2017-01-20T17:42:47.789-07:00[America/Denver]``)
    as seconds since the epoch."""
    m = _ZONED.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"{show(text)} is not a date-time like 2017-01-20T17:42:47.789-07:00")
    stamp = m["stamp"]
    if stamp.endswith(("Z", "z")):
        stamp = stamp[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        raise ValueError(
            f"{show(text)} is not a date-time like 2017-01-20T17:42:47.789-07:00[America/Denver]"
        ) from None
    if m["zone"] is not None:
        try:
            zone = ZoneInfo(m["zone"])
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{show(text)}: unknown time zone {m['zone']!r}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
    if moment.tzinfo is None:
        raise ValueError(f"{show(text)} has no offset or zone (write -07:00 or [Region/City])")
    return moment.timestamp()


def networks(args: Sequence[str]) -> tuple[Network, ...]:
    out = []
    for arg in args:
        try:
            out.append(ipaddress.ip_network(arg, strict=False))
        except ValueError:
            raise ValueError(f"{show(arg)} is not an address or CIDR like 192.168.0.1/16") from None
    return tuple(out)


# -- argument checks, for the loader -------------------------------------------------------


def _instant_args(name: str, count: int) -> Callable[[tuple[str, ...]], tuple[str, ...]]:
    def check(args: tuple[str, ...]) -> tuple[str, ...]:
        if len(args) != count:
            raise ValueError(f"{name} takes {'DATETIME' if count == 1 else 'DATETIME1, DATETIME2'}")
        instants = [zoned_instant(arg) for arg in args]
        if count == 2 and instants[0] >= instants[1]:
            raise ValueError("Between: the first date-time must come before the second")
        return args

    return check


def _name_regex_args(name: str, *, regex_required: bool) -> Callable:
    def check(args: tuple[str, ...]) -> tuple[str, ...]:
        if len(args) not in ((2,) if regex_required else (1, 2)) or not args[0]:
            raise ValueError(f"{name} takes NAME, REGEXP" + ("" if regex_required else " or NAME"))
        if len(args) == 2 and args[1]:
            return args[0], compile_regex(args[1]).pattern
        return args[:1]

    return check


def _network_args(name: str) -> Callable[[tuple[str, ...]], tuple[str, ...]]:
    def check(args: tuple[str, ...]) -> tuple[str, ...]:
        if not args:
            raise ValueError(f"{name} needs at least one address or CIDR")
        networks(args)
        return args

    return check


def _weight_args(args: tuple[str, ...]) -> tuple[str, ...]:
    if len(args) != 2 or not args[0] or not (args[1].isascii() and args[1].isdigit()):
        raise ValueError("Weight takes GROUP, WEIGHT (a whole number)")
    return args


CHECKS: dict[str, Callable[[tuple[str, ...]], tuple[str, ...]]] = {
    "After": _instant_args("After", 1),
    "Before": _instant_args("Before", 1),
    "Between": _instant_args("Between", 2),
    "Cookie": _name_regex_args("Cookie", regex_required=True),
    "Query": _name_regex_args("Query", regex_required=False),
    "RemoteAddr": _network_args("RemoteAddr"),
    "XForwardedRemoteAddr": _network_args("XForwardedRemoteAddr"),
    "Weight": _weight_args,
}


# -- tests, for the router ------------------------------------------------------------------


class WeightGroup:
    """Routes sharing a Weight group: each request goes to one of them, by weight."""

    __slots__ = ("_chosen", "_last", "cumulative", "routes", "total")

    def __init__(self) -> None:
        self.routes: list[int] = []
        self.cumulative: list[int] = []
        self.total = 0
        self._last = None
        self._chosen = -1

    def add(self, route: int, weight: int) -> None:
        self.total += weight
        self.routes.append(route)
        self.cumulative.append(self.total)

    def chosen(self, request) -> int:
        # One draw per request, however many of the group's routes it meets.
        if request is not self._last:
            self._last = request
            point = random.randrange(self.total) if self.total else 0
            k = 0
            while self.cumulative[k] <= point:
                k += 1
            self._chosen = self.routes[k]
        return self._chosen


def weight_groups(routes: Iterable) -> dict[str, WeightGroup]:
    groups: dict[str, WeightGroup] = {}
    for i, route in enumerate(routes):
        for p in route.predicates:
            if p.kind == "Weight":
                groups.setdefault(p.args[0], WeightGroup()).add(i, int(p.args[1]))
    return groups


def client_address(request, trusted: tuple[Network, ...]) -> str:
    """The caller's address: the peer, or through trusted proxies the last untrusted
    X-Forwarded-For hop."""
    address = request.client_ip
    if not trusted or not _within(address, trusted):
        return address
    hops = [h.strip() for value in request.forwarded_for for h in value.split(",")]
    for hop in reversed(hops):
        address = hop
        if not _within(hop, trusted):
            break
    return address


def _within(address: str, nets: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in nets)


def _cookies(request) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for header in request.sent_values("cookie"):
        for pair in header.split(";"):
            name, equals, value = pair.strip().partition("=")
            if equals:
                found.setdefault(name, []).append(value.strip('"'))
    return found


def build_test(predicate, route: int, trusted: tuple[Network, ...],
               groups: dict[str, WeightGroup]) -> Test:
    kind, args = predicate.kind, predicate.args
    if kind == "After":
        after = zoned_instant(args[0])
        return lambda request: time.time() > after
    if kind == "Before":
        before = zoned_instant(args[0])
        return lambda request: time.time() < before
    if kind == "Between":
        start, end = zoned_instant(args[0]), zoned_instant(args[1])
        return lambda request: start < time.time() < end
    if kind == "Cookie":
        name, value = args[0], re.compile(args[1]).fullmatch
        return lambda request: any(value(v) for v in _cookies(request).get(name, ()))
    if kind == "Query":
        return _query_test(*args)
    if kind == "RemoteAddr":
        nets = networks(args)
        return lambda request: _within(client_address(request, trusted), nets)
    if kind == "XForwardedRemoteAddr":
        nets = networks(args)
        return lambda request: _within(_last_forwarded(request), nets)
    if kind == "Weight":
        group = groups[args[0]]
        return lambda request: group.chosen(request) == route
    raise ValueError(f"no test for predicate {kind!r}")


def _query_test(param: str, regexp: str | None = None) -> Test:
    if regexp is None:
        return lambda request: any(k == param for k, _ in parse_qsl(request.query, True))
    value = re.compile(regexp).fullmatch
    return lambda request: any(
        k == param and value(v) for k, v in parse_qsl(request.query, True)
    )


def _last_forwarded(request) -> str:
    """The X-Forwarded-For hop the nearest proxy added, or the peer without one."""
    for value in reversed(request.forwarded_for):
        hops = [h.strip() for h in value.split(",") if h.strip()]
        if hops:
            return hops[-1]
    return request.client_ip
