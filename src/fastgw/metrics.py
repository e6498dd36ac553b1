"""Counters and histograms of this worker, rendered in the Prometheus text format.

Deliberately tiny: an increment on the hot path is a dict lookup and an add.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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


class Histogram:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = (),
                 buckets: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.name = name
        self.help = help_text
        self.labels = labels
        self.buckets = buckets
        self.values: dict[tuple, list] = {}

    def observe(self, key: tuple, value: float) -> None:
        series = self.values.get(key)
        if series is None:
            series = self.values[key] = [[0] * (len(self.buckets) + 1), 0.0]
        series[0][bisect.bisect_left(self.buckets, value)] += 1
        series[1] += value

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for key, (counts, total) in self.values.items():
            running = 0
            for bound, count in zip((*self.buckets, float("inf")), counts, strict=True):
                running += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                labels = _labels((*self.labels, "le"), (*key, le))
                out.append(f"{self.name}_bucket{labels} {running}")
            out.append(f"{self.name}_sum{_labels(self.labels, key)} {total:g}")
            out.append(f"{self.name}_count{_labels(self.labels, key)} {running}")
        return out


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

    def render(self) -> bytes:
        lines: list[str] = []
        for metric in vars(self).values():
            lines += metric.render()
        return ("\n".join(lines) + "\n").encode()


def export(metrics: Metrics) -> dict:
    """This worker's numbers, as plain data another worker can add up."""
    out = {}
    for attr, metric in vars(metrics).items():
        if isinstance(metric, Histogram):
            out[attr] = [[list(k), counts, total] for k, (counts, total) in metric.values.items()]
        else:
            out[attr] = [[list(k), v] for k, v in metric.values.items()]
    return out


def merge(metrics: Metrics, exported: dict) -> None:
    """Add another worker's exported numbers into ``metrics``."""
    for attr, rows in exported.items():
        metric = getattr(metrics, attr, None)
        if isinstance(metric, Histogram):
            for key, counts, total in rows:
                series = metric.values.setdefault(tuple(key), [[0] * len(counts), 0.0])
                series[0] = [a + b for a, b in zip(series[0], counts, strict=True)]
                series[1] += total
        elif isinstance(metric, Counter):
            for key, value in rows:
                metric.values[tuple(key)] += value
