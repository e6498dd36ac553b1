"""Route match cost against the size of the route table.

Routes are path prefixes as a large gateway has them: ``/svcN/**`` and
``/api/v1/svcN/{id}``, each with ``Method=GET,POST``. Requests hit routes
spread evenly over the table, and one in ten matches nothing. The baseline
is what a naive gateway does: a linear scan of one compiled regex per route.

    python bench/bench_router.py [--sizes 10,1000,10000]
"""

from __future__ import annotations

import argparse
import random
import re
import time

from fastgw._core import IMPLEMENTATIONS


def route_table(size):
    routes = []
    for i in range(size):
        path = f"/svc{i}/**" if i % 2 == 0 else f"/api/v1/svc{i}/{{id}}"
        routes.append(((path,), ("GET", "POST"), None, ()))
    return routes


def requests(size, count=2000, seed=7):
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        i = rng.randrange(size)
        if rng.random() < 0.1:
            out.append(f"/nothing/{i}/here")
        elif i % 2 == 0:
            out.append(f"/svc{i}/orders/{rng.randrange(10**6)}")
        else:
            out.append(f"/api/v1/svc{i}/{rng.randrange(10**6)}")
    return out


class Noop:
    """The floor: calling a match method that does nothing."""

    def match(self, method, host, path, header_values):
        return None


class RegexScan:
    """One compiled regex per route, tried in order."""

    def __init__(self, routes):
        self.routes = []
        for paths, methods, _hosts, _headers in routes:
            rx = re.escape(paths[0]).replace(r"/\*\*", "(?:/.*)?").replace(r"\{id\}", "([^/]+)")
            self.routes.append((re.compile(rx).fullmatch, frozenset(methods)))

    def match(self, method, host, path, header_values):
        for i, (test, methods) in enumerate(self.routes):
            m = test(path)
            if m is not None and method in methods:
                return i, ({"id": m.group(1)} if m.re.groups else None)
        return None


def no_headers(name):
    return ()


def ns_per_match(router, paths, budget=0.3):
    """Best of five runs, each long enough to time reliably."""
    match = router.match
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            for path in paths:
                match("GET", "api.example.com", path, no_headers)
        elapsed = time.perf_counter() - start
        if elapsed > budget / 5 or loops > 10**6:
            break
        loops *= 2
    best = elapsed
    for _ in range(4):
        start = time.perf_counter()
        for _ in range(loops):
            for path in paths:
                match("GET", "api.example.com", path, no_headers)
        best = min(best, time.perf_counter() - start)
    return best / (loops * len(paths)) * 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,1000,10000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    columns = [name for name in ("compiled", "python") if name in IMPLEMENTATIONS]
    columns.append("regex scan")
    if "compiled" not in IMPLEMENTATIONS:
        print("compiled router not built: pip install . builds it\n")

    print(f"{'routes':>8} " + " ".join(f"{c:>14}" for c in columns) + "   (ns/match)")
    for size in sizes:
        routes = route_table(size)
        paths = requests(size)
        routers = {name: IMPLEMENTATIONS[name].Router(routes) for name in columns[:-1]}
        routers["regex scan"] = RegexScan(routes)
        reference = [routers["regex scan"].match("GET", None, p, no_headers) for p in paths[:200]]
        for router in routers.values():
            got = [router.match("GET", None, p, no_headers) for p in paths[:200]]
            assert got == reference, type(router)
        cells = []
        for name in columns:
            sample = paths if name != "regex scan" or size <= 1000 else paths[:200]
            cells.append(f"{ns_per_match(routers[name], sample):>14,.0f}")
        print(f"{size:>8,} " + " ".join(cells))
    floor = ns_per_match(Noop(), requests(10))
    print(f"\ncalling a no-op Python match method costs {floor:,.0f} ns here")


if __name__ == "__main__":
    main()
