"""CPU cost of the gateway's own request path, without sockets or peers.

A client protocol and an upstream connection are driven through in-memory
transports: each request is parsed, routed, checked, forwarded and answered
exactly as on the wire, but no syscall happens, so the number is the
gateway's Python/Cython work per request (the part wrk cannot isolate on a
shared machine).

    python bench/bench_pipeline.py [--requests 20000] [--rounds 5] [--jwt] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from pathlib import Path

import uvloop

from fastgw.gateway import Gateway
from fastgw.http.protocol import ClientProtocol
from fastgw.upstream.connection import UpstreamConnection

RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sat, 28 Nov 2026 07:00:00 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 6\r\n"
            b"Connection: keep-alive\r\n\r\nhello\n")
REQUEST = (b"GET /orders/42?limit=10 HTTP/1.1\r\nHost: api.example.com\r\n"
           b"User-Agent: wrk\r\nAccept: */*\r\n\r\n")


class MemoryTransport(asyncio.Transport):
    def __init__(self, on_write=None) -> None:
        super().__init__()
        self.on_write = on_write
        self.written = 0
        self.closed = False

    def write(self, data) -> None:
        self.written += len(data)
        if self.on_write is not None:
            self.on_write(data)

    def writelines(self, chunks) -> None:
        for chunk in chunks:
            self.write(chunk)

    def get_extra_info(self, name, default=None):
        return {"peername": ("10.0.0.7", 40000), "socket": None}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def jwt_setup(config: dict) -> bytes:
    """Add ``/secure/**``, which needs an RS256 token with a scope, beside ``/public/**``
    (``auth: none``); the request carries the token either way."""
    import json
    import tempfile

    from fastgw.testing.idp import SigningKey, jwks, mint_token

    key = SigningKey.generate("RS256")
    path = Path(tempfile.mkdtemp()) / "jwks.json"
    path.write_text(json.dumps(jwks(key)))
    config["auth"] = {"jwt": {"providers": [{
        "name": "bench", "issuer": "https://idp.bench", "jwks_file": str(path),
        "audiences": ["bench-api"], "algorithms": ["RS256"]}]}}
    orders = config["routes"][-1]
    for name, auth, scopes in (("public", "none", []), ("secure", "jwt", ["RequireScopes=bench"])):
        config["routes"].append({**orders, "id": name, "predicates": [f"Path=/{name}/**"],
                                 "auth": auth, "filters": orders["filters"] + scopes})
    token = mint_token(key, iss="https://idp.bench", aud="bench-api", scope="bench", ttl=3600)
    return REQUEST.replace(b"Accept: */*\r\n", b"Accept: */*\r\nAuthorization: Bearer "
                           + token.encode() + b"\r\n")


async def run(requests: int, profile: bool, jwt: bool, rounds: int) -> None:
    config = {
        "listeners": [{"address": "127.0.0.1:0"}],
        "admin": None,
        "services": {"orders": {"instances": ["http://127.0.0.1:9"]}},
        "routes": [
            {"id": f"r{i}", "uri": "lb://orders", "predicates": [f"Path=/svc{i}/**"],
             "auth": "none"} for i in range(50)
        ] + [{"id": "orders", "uri": "lb://orders", "predicates": ["Path=/orders/**"],
              "auth": "none", "filters": ["AddRequestHeader=X-Gateway, fastgw"]}],
    }
    if jwt:
        with_token = jwt_setup(config)
        cases = {"auth: none": with_token.replace(b"/orders/", b"/public/"),
                 "RS256 JWT (cached) + scope": with_token.replace(b"/orders/", b"/secure/")}
    else:
        cases = {"plain": REQUEST}
    gateway = Gateway(config)
    await gateway.start()
    loop = asyncio.get_running_loop()
    pool = gateway.snapshot.services["orders"].instances[0].pool
    done = None
    count = 0
    request = b""

    conn = UpstreamConnection(pool, loop)
    # the upstream answers each request as soon as its head is written
    conn.connection_made(MemoryTransport(lambda data: loop.call_soon(conn.data_received, RESPONSE)))
    # the pool hands out this connection and takes it back after each response
    conn.reusable = True
    pool.open = 1
    pool.release(conn)

    def answered(data: bytes) -> None:
        nonlocal count
        count += 1
        if count >= requests:
            done.set()
        else:
            loop.call_soon(protocol.data_received, request)

    protocol = ClientProtocol(gateway)
    protocol.connection_made(MemoryTransport(answered))
    profiler = cProfile.Profile() if profile else None
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):  # interleaved, so drift on a shared machine hits every case alike
        for name, request in cases.items():
            count, done = 0, asyncio.Event()
            started = time.process_time()
            if profiler:
                profiler.enable()
            protocol.data_received(request)
            await done.wait()
            if profiler:
                profiler.disable()
            results[name].append((time.process_time() - started) / requests * 1e6)
    print(f"{requests} requests x {rounds} rounds, best round's CPU per request "
          "(parse, route, checks, filters, forward, relay):")
    for name, times in results.items():
        print(f"  {name:<28} {min(times):6.1f} us")
    if jwt:
        base, secure = (min(times) for times in results.values())
        print(f"  JWT adds {secure - base:.1f} us ({100 * (secure / base - 1):.1f}%)")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    await gateway.stop(timeout=0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jwt", action="store_true",
                        help="an RS256 route with a cached token against auth: none")
    args = parser.parse_args()
    uvloop.run(run(args.requests, args.profile, args.jwt, args.rounds))


if __name__ == "__main__":
    main()
