"""``fastgw explain``: one request through a config, check by check, without upstreams.

It runs the very checks the gateway runs (same router, same verifier, same
scope rules), with the audit record captured and printed instead of written,
so "why do I get a 401?" has a precise answer.
"""

from __future__ import annotations

import inspect
import os
import sys
from types import SimpleNamespace

from .auth.door import Authenticator
from .config import ConfigError, load_config
from .gateway import Snapshot, SnapshotError
from .http.headers import HOP_BY_HOP, Headers
from .http.request import Request
from .http.target import BadTarget, split_target
from .metrics import Metrics
from .proxy import Rejection
from .ratelimit import SharedBuckets
from .ratelimit.policy import RateLimiter


class _CapturedAudit:
    def __init__(self) -> None:
        self.records: list[dict] = []

    def record(self, ex, **fields) -> None:
        self.records.append(fields)


def _say(label: str, text: str, out) -> None:
    print(f"{label:<10}{text}", file=out)


async def explain(path: str, method: str, target: str, headers: list[str],
                  token: str | None, out=sys.stdout) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    audit = _CapturedAudit()
    authenticator = Authenticator(config.auth, metrics=Metrics(), audit=audit)
    try:
        limiter = RateLimiter(config, buckets=SharedBuckets.create(64), redis=None,
                              metrics=Metrics(), audit=audit)
        snapshot = Snapshot(config, None, authenticator, limiter)
    except SnapshotError as exc:
        print(exc, file=sys.stderr)
        return 2

    # Arguments are taken as the bytes they were given (os.fsencode undoes the
    # decoding of argv), so a token or header that is not ASCII meets the same
    # verdict it would meet on the wire instead of failing here.
    fields = []
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            print(f"fastgw explain: bad header {header!r} (use 'Name: value')", file=sys.stderr)
            return 2
        raw = os.fsencode(name.strip())
        fields.append((raw.lower(), raw, os.fsencode(value.strip())))
    request_headers = Headers.from_raw(fields)
    if token is not None:
        request_headers.remove(b"authorization")
        request_headers.append_raw(
            (b"authorization", b"Authorization", b"Bearer " + os.fsencode(token)))
    host = request_headers.get("host") or "localhost"
    # What the protocol strips before anything else sees the request.
    listed = {t.strip().lower() for v in request_headers.getall("connection") for t in v.split(",")}
    request_headers.remove_all(HOP_BY_HOP | listed | {"host", "x-auth-subject", "x-auth-scopes"})

    method = method.upper()
    try:
        normal, query = split_target(target.encode("latin-1"))
    except (BadTarget, UnicodeEncodeError) as exc:
        _say("request", f"{method} {target}", out)
        _say("result", f"400 bad request: {exc}", out)
        return 0
    request = Request(method, normal, query, "1.1", request_headers, host, "127.0.0.1", "http",
                      "explain")
    shown = f" (normalised to {normal})" if normal != target.split("?", 1)[0] else ""
    _say("request", f"{method} {target}{shown}  Host: {host}", out)

    request.sent = [(name, value) for _, name, value in request_headers.fields]
    hit = snapshot.router.match(method, host, normal, request.sent_values, request)
    if hit is None:
        _say("route", "no route matches", out)
        _say("result", "404 no_route", out)
        return 0
    route = snapshot.routes[hit[0]]
    request.route_id = route.id
    request.path_vars = hit[1]
    line = route.config.line
    _say("route", f"{route.id} ({config.source}:{line}) -> {route.config.uri}"
         + (f"  vars {hit[1]}" if hit[1] else ""), out)
    _say("auth", route.auth, out)

    needs_keys = bool(route.checks) and route.auth != "none"
    if needs_keys and authenticator.keys:
        await authenticator.start()
        for name, keys in authenticator.keys.items():
            state = "key set loaded" if keys.ready else f"NO KEY SET ({keys.failing or 'none'})"
            _say("provider", f"{name}: {state}", out)

    ex = SimpleNamespace(request=request)
    try:
        for check in route.checks:
            verdict = check(ex)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            name = getattr(check, "__name__", "check")
            if verdict is None:
                detail = ""
                if name == "authenticate":
                    claims = request.claims or {}
                    detail = f": token valid (sub {claims.get('sub')!r}, iss {claims.get('iss')!r})"
                elif name == "authorize":
                    detail = f": has {' '.join(route.scopes)}"
                _say("check", f"{name} passed{detail}", out)
                continue
            assert isinstance(verdict, Rejection)
            record = audit.records[-1] if audit.records else {}
            _say("check", f"{name} FAILED: {record.get('reason', verdict.error)}", out)
            for key in ("sub", "iss", "kid", "limit"):
                if record.get(key) is not None:
                    _say("", f"{key}: {record[key]}", out)
            headers = "".join(f"  {n}: {v}" for n, v in verdict.headers)
            _say("result", f"{verdict.status}{headers}", out)
            return 0
    finally:
        await authenticator.stop()

    for f in route.request_filters:
        before = request.target
        f.on_request(request)
        _say("filter", f"{f.name}: {before} -> {request.target}", out)
    service = route.service
    instances = ", ".join(i.name for i in service.instances)
    relay = "Authorization relayed" if route.token_relay else "Authorization removed"
    _say("upstream", f"{service.name} [{service.config.balancer}: {instances}]", out)
    _say("", f"{method} {request.target}  ({relay})", out)
    _say("result", "forwarded (the status is the upstream's)", out)
    return 0
