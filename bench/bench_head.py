"""Per-request head work: the scans and encodings the request path does, compiled and Python.

A browser-like request head of six fields (as httptools hands it over) is
scanned and its kept fields encoded for the upstream; a typical nginx
response head is scanned and encoded for the client; a request id is
drawn. Each is timed as the best of several rounds, the implementations
alternating, in ns per call.

    python bench/bench_head.py [--budget 0.3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from fastgw._core import CORE

REQUEST = [
    (b"Host", b"api.example.com"),
    (b"User-Agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    (b"Accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    (b"Accept-Language", b"en-US,en;q=0.5"),
    (b"Accept-Encoding", b"gzip, deflate, br, zstd"),
    (b"Connection", b"keep-alive"),
]

RESPONSE = [
    (b"Server", b"nginx/1.26.2"),
    (b"Date", b"Fri, 04 Dec 2026 19:37:47 GMT"),
    (b"Content-Type", b"application/json"),
    (b"Content-Length", b"612"),
    (b"Last-Modified", b"Tue, 01 Dec 2026 10:00:00 GMT"),
    (b"Connection", b"keep-alive"),
    (b"ETag", b'"6756f0e0-264"'),
    (b"Accept-Ranges", b"bytes"),
]


def request_path(head):
    scan, encode = head.scan_request, head.encode_fields

    def run(loops):
        for _ in range(loops):
            encode(scan(REQUEST).fields)

    return run


def response_path(head):
    scan, encode = head.scan_response, head.encode_fields

    def run(loops):
        for _ in range(loops):
            encode(scan(RESPONSE, False)[0])

    return run


def request_ids(head):
    ids = head.RequestIds()

    def run(loops):
        for _ in range(loops):
            ids.next()

    return run


def empty(head):
    def run(loops):
        for _ in range(loops):
            pass

    return run


CASES = {
    "scan_request + encode_fields (6 fields)": request_path,
    "scan_response + encode_fields (8 fields)": response_path,
    "RequestIds.next": request_ids,
    "empty loop": empty,
}


def calibrate(run, budget):
    loops = 1
    while True:
        start = time.perf_counter()
        run(loops)
        if time.perf_counter() - start > budget / 10 or loops > 10**7:
            return loops
        loops *= 2


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=0.3, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    impls = CORE["head"]
    names = [n for n in ("compiled", "python") if n in impls]
    if "compiled" not in impls:
        print("compiled head not built: pip install . builds it\n")
    # the implementations must agree before their speed means anything
    for name in names:
        head = impls[name]
        python = impls["python"]
        got, want = head.scan_request(REQUEST), python.scan_request(REQUEST)
        assert head.encode_fields(got.fields) == python.encode_fields(want.fields)
        assert head.scan_response(RESPONSE, False) == python.scan_response(RESPONSE, False)

    print(f"{'':<44}" + "".join(f"{n:>12}" for n in names) + "   (ns/call)")
    for label, make in CASES.items():
        runs = {name: make(impls[name]) for name in names}
        loops = {name: calibrate(run, args.budget) for name, run in runs.items()}
        best = dict.fromkeys(names, float("inf"))
        for _ in range(args.rounds):
            for name, run in runs.items():
                start = time.perf_counter()
                run(loops[name])
                best[name] = min(best[name], (time.perf_counter() - start) / loops[name] * 1e9)
        cells = "".join(f"{best[n]:>12,.0f}" for n in names)
        ratio = f"   x{best['python'] / best['compiled']:.1f}" if len(names) == 2 else ""
        print(f"{label:<44}{cells}{ratio}")


if __name__ == "__main__":
    main()
