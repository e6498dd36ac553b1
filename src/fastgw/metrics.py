"""Counters and histograms of this worker, rendered in the Prometheus text format.

The hot path never builds a label tuple: a route's requests and durations
are counted in the route's own ``RouteStats`` (a dict keyed by one small
integer, and a list of bucket counts), a service's upstream timings in a
``Series`` it holds. Labels are attached only when ``/metrics`` is read or a
worker publishes its numbers, by folding those into the labelled metrics.
"""

from __future__ import annotations

from collections import defaultdict

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: methods get small numbers as they are first seen; "" is a request that never had one
METHODS: dict[str, int] = {"": 0, "GET": 1, "HEAD": 2, "POST": 3, "PUT": 4, "DELETE": 5,
                           "PATCH": 6, "OPTIONS": 7}
_METHOD_NAMES = list(METHODS)


def method_index(method: str) -> int:
    index = METHODS.get(method)
    if index is None:
        index = METHODS[method] = len(_METHOD_NAMES)
        _METHOD_NAMES.append(method)
    return index


def _labels(names: tuple[str, ...], values: tuple) -> str:
    if not names:
        return ""
    inner = ",".join(
        f'{n}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for n, v in zip(names, values, strict=True)
    )
    return "{" + inner + "}"


class Counter:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labels = labels
        self.values: dict[tuple, float] = defaultdict(float)

    def inc(self, key: tuple = (), amount: float = 1) -> None:
        self.values[key] += amount

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        out += [f"{self.name}{_labels(self.labels, k)} {v:g}" for k, v in self.values.items()]
        return out


class Gauge(Counter):
    def set(self, key: tuple, value: float) -> None:
        self.values[key] = value

    def render(self) -> list[str]:
        out = super().render()
        out[1] = f"# TYPE {self.name} gauge"
        return out


class Series:
    """One labelled histogram series: ``observe`` is a bucket search and two adds."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left, as a loop: most observations fall in the first buckets.
        bounds = self.bounds
        n = len(bounds)
        i = 0
        while i < n and bounds[i] < value:
            i += 1
        self.counts[i] += 1
        self.total += value


class Histogram:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = (),
                 buckets: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.name = name
        self.help = help_text
        self.labels = labels
        self.buckets = buckets
        self.values: dict[tuple, Series] = {}

    def series(self, key: tuple) -> Series:
        """The series for KEY, made once and kept: hold it, and observe into it."""
        series = self.values.get(key)
        if series is None:
            series = self.values[key] = Series(self.buckets)
        return series

    def observe(self, key: tuple, value: float) -> None:
        self.series(key).observe(value)

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for key, series in self.values.items():
            running = 0
            for bound, count in zip((*self.buckets, float("inf")), series.counts, strict=True):
                running += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                labels = _labels((*self.labels, "le"), (*key, le))
                out.append(f"{self.name}_bucket{labels} {running}")
            out.append(f"{self.name}_sum{_labels(self.labels, key)} {series.total:g}")
            out.append(f"{self.name}_count{_labels(self.labels, key)} {running}")
        return out


class RouteStats:
    """A route's answered requests by method and status, and their durations."""

    __slots__ = ("answered", "durations", "route")

    def __init__(self, route: str) -> None:
        self.route = route
        self.answered: dict[int, int] = {}  # status << 8 | method index -> count
        self.durations = Series(DURATION_BUCKETS)

    def count(self, method: int, status: int, elapsed: float) -> None:
        key = status << 8 | method
        answered = self.answered
        answered[key] = answered.get(key, 0) + 1
        self.durations.observe(elapsed)


class Metrics:
    def __init__(self) -> None:
        self.requests = Counter("fastgw_requests_total", "Requests answered.",
                                ("route", "method", "status"))
        self.request_duration = Histogram("fastgw_request_duration_seconds",
                                          "Time from request head to response end.", ("route",))
        self.upstream_duration = Histogram("fastgw_upstream_duration_seconds",
                                           "Time spent with an upstream.", ("service",))
        self.auth_failures = Counter("fastgw_auth_failures_total", "Rejected credentials.",
                                     ("reason",))
        self.rate_limited = Counter("fastgw_rate_limited_total", "Requests over a limit.",
                                    ("limit",))
        self.store_fallbacks = Counter("fastgw_ratelimit_store_fallbacks_total",
                                       "Decisions made by on_error because Redis failed.",
                                       ("reason",))
        self.jwks_refresh = Counter("fastgw_jwks_refresh_total", "Key set fetches.",
                                    ("provider", "result"))
        self.active_connections = Gauge("fastgw_active_connections", "Open client connections.")
        self.upstream_healthy = Gauge("fastgw_upstream_healthy",
                                      "1 when an instance takes traffic.", ("service", "instance"))
        self.circuit_breaker_state = Gauge("fastgw_circuit_breaker_state",
                                           "1 for the state a route's circuit breaker is in.",
                                           ("route", "name", "state"))
        self.upstream_ejected = Gauge("fastgw_upstream_ejected",
                                      "1 while outlier detection has an instance ejected.",
                                      ("service", "instance"))
        self.upstream_ejections = Counter(
            "fastgw_upstream_ejections_total",
            "Ejections by outlier detection (one per outage, not per failed request).",
            ("service", "instance"))
        self.upstream_pending_full = Counter(
            "fastgw_upstream_pending_full_total",
            "Requests answered 503 because an instance's pool and its wait queue were full.",
            ("service", "instance"))
        self._routes: dict[str, RouteStats] = {}

    def route(self, route_id: str) -> RouteStats:
        """The stats of ROUTE_ID ("" for requests no route was found for), kept across
        reloads so that its counters never go back."""
        stats = self._routes.get(route_id)
        if stats is None:
            stats = self._routes[route_id] = RouteStats(route_id)
        return stats

    def labelled(self) -> Metrics:
        """A copy whose labelled metrics include what the routes counted."""
        out = Metrics()
        for attr, metric in vars(self).items():
            if attr == "_routes":
                continue
            target = getattr(out, attr)
            if isinstance(metric, Histogram):
                for key, series in metric.values.items():
                    _add_series(target.series(key), series.counts, series.total)
            else:
                target.values.update(metric.values)
        for stats in self._routes.values():
            for key, count in stats.answered.items():
                labels = (stats.route, _METHOD_NAMES[key & 0xFF], key >> 8)
                out.requests.values[labels] += count
            if stats.answered:
                series = stats.durations
                _add_series(out.request_duration.series((stats.route,)), series.counts,
                            series.total)
        return out

    def render(self) -> bytes:
        lines: list[str] = []
        for attr, metric in vars(self.labelled()).items():
            if attr != "_routes":
                lines += metric.render()
        return ("\n".join(lines) + "\n").encode()


def _add_series(series: Series, counts: list[int], total: float) -> None:
    series.counts = [a + b for a, b in zip(series.counts, counts, strict=True)]
    series.total += total


def export(metrics: Metrics) -> dict:
    """This worker's numbers, as plain data another worker can add up."""
    out = {}
    for attr, metric in vars(metrics.labelled()).items():
        if isinstance(metric, Histogram):
            out[attr] = [[list(k), s.counts, s.total] for k, s in metric.values.items()]
        elif isinstance(metric, Counter):
            out[attr] = [[list(k), v] for k, v in metric.values.items()]
    return out


def merge(metrics: Metrics, exported: dict) -> None:
    """Add another worker's exported numbers into ``metrics``."""
    for attr, rows in exported.items():
        metric = getattr(metrics, attr, None)
        if isinstance(metric, Histogram):
            for key, counts, total in rows:
                _add_series(metric.series(tuple(key)), counts, total)
        elif isinstance(metric, Counter):
            for key, value in rows:
                metric.values[tuple(key)] += value
