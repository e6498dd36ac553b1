"""Rate limits at the door (SPEC sections 3 to 6), ``store: local``, over real sockets.

One gateway serves this module's routes, each behind one limit:

- ``/client/**``: ``per-client``, 20/min keyed by ``header.X-Client-Id``;
- ``/caller/**``: ``per-caller``, 10/h keyed by ``header.X-Client-Id``;
- ``/ip/**``: ``per-ip``, 5/h keyed by ``ip``, behind ``trusted_proxies: 127.0.0.1/32``;
- ``/orders/**``: ``per-subject``, 5/h keyed by ``jwt.sub`` (a token is required).

Buckets outlive a test, so every test spends from keys of its own
(``fresh``). Two limits on one route, and two workers on one host, get
gateways of their own. Limits counted under concurrency refill slowly (per
hour or per day) so that an exact count cannot be blurred by a token coming
back during a slow run.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from pathlib import Path

import pytest

from .door import AUDIENCE, AuditTrail, provider_config, secret_fragments
from .forge import flip_bit
from .support import assert_error, concurrently, metric, route, scrape

N = 20
PERIOD = 60
CALLER_N = 10
IP_N = 5
SUBJECT_N = 5

_serial = itertools.count()


def fresh(name: str) -> str:
    """A key nobody has spent from yet."""
    return f"{name}-{os.getpid()}-{next(_serial)}"


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway_config(shared_upstream, make_config, idp, tmp_path_factory):
    audit = tmp_path_factory.mktemp("ratelimit-audit") / "audit.log"
    return make_config(
        shared_upstream.url,
        trusted_proxies=["127.0.0.1/32"],
        auth={"jwt": {"providers": [provider_config(idp)]}},
        audit={"path": str(audit)},
        rate_limits={
            "per-client": {"rate": f"{N}/min", "key": "header.X-Client-Id"},
            "per-caller": {"rate": f"{CALLER_N}/h", "key": "header.X-Client-Id"},
            "per-ip": {"rate": f"{IP_N}/h", "key": "ip"},
            "per-subject": {"rate": f"{SUBJECT_N}/h", "key": "jwt.sub"},
        },
        routes=[
            route("client", "Path=/client/**", filters=["RateLimit=per-client"]),
            route("caller", "Path=/caller/**", filters=["RateLimit=per-caller"]),
            route("ip", "Path=/ip/**", filters=["RateLimit=per-ip"]),
            {
                "id": "orders",
                "uri": "lb://echo",
                "predicates": ["Path=/orders/**"],
                "filters": ["RateLimit=per-subject"],
            },
            route("echo", "Path=/echo/**"),
        ],
    )


@pytest.fixture
def audit(gateway):
    return AuditTrail(gateway.config["audit"]["path"])


def rate_headers(response) -> tuple[int, int, int]:
    """``(RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset)``, each exactly once."""
    values = []
    for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
        found = response.header_values(name)
        assert len(found) == 1 and found[0].isdigit(), (name, response)
        values.append(int(found[0]))
    return values[0], values[1], values[2]


def retry_after(response) -> int:
    found = response.header_values("Retry-After")
    assert len(found) == 1 and found[0].isdigit(), response
    return int(found[0])


def assert_throttled(response, limit: int) -> int:
    """A complete 429 of a limit of ``limit``: JSON error, headers; its Retry-After."""
    assert_error(response, 429)
    assert rate_headers(response)[:2] == (limit, 0), response
    seconds = retry_after(response)
    assert seconds >= 1, response
    return seconds


def send(gateway, raw, path: str, headers=(), connection=None):
    """One GET, on a new connection (closed afterwards) unless one is given."""
    if connection is not None:
        return connection.exchange("GET", path, headers=list(headers))
    connection = raw(gateway.port)
    try:
        return connection.exchange("GET", path, headers=list(headers))
    finally:
        connection.close()


def statuses(responses) -> list[int]:
    return [r.status for r in responses]


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


def forged(token: str, bit: int) -> str:
    """``token`` with one bit of its signature flipped: the claims are intact."""
    header, claims, signature = token.split(".")
    return f"{header}.{claims}.{flip_bit(signature, bit)}"


# -- N per period ------------------------------------------------------------------------------


def test_n_per_minute_lets_exactly_n_through_then_429(gateway, upstream, raw):
    client = [("X-Client-Id", fresh("counted"))]
    connection = raw(gateway.port)
    started = time.monotonic()
    allowed = [send(gateway, raw, f"/client/{i}", client, connection) for i in range(N)]
    denied = [send(gateway, raw, f"/client/over/{i}", client, connection) for i in range(5)]
    elapsed = time.monotonic() - started

    assert statuses(allowed) == [200] * N, allowed
    headers = [rate_headers(r) for r in allowed]
    assert [limit for limit, _, _ in headers] == [N] * N
    assert [remaining for _, remaining, _ in headers] == list(range(N - 1, -1, -1))
    # Reset: until the bucket is full again, one interval (60/N s) per token spent.
    resets = [reset for _, _, reset in headers]
    assert resets == sorted(resets), resets
    for spent, reset in enumerate(resets, 1):
        full_after = math.ceil(spent * PERIOD / N)
        assert full_after - math.ceil(elapsed) <= reset <= full_after, (spent, resets)
    assert not any(r.header("Retry-After") for r in allowed), allowed

    for response in denied:
        body = response.json()
        assert set(body) == {"error", "request_id"}, body
        seconds = assert_throttled(response, N)
        assert seconds <= math.ceil(PERIOD / N), response  # one token back per interval
        assert 1 <= rate_headers(response)[2] <= PERIOD, response
    assert len({r.json()["request_id"] for r in denied}) == len(denied)

    # Nothing of a 429 reached the upstream.
    upstream.settle()
    assert len(upstream.requests) == N
    assert not [r for r in upstream.requests if r.target.startswith("/client/over/")]

    # Retry-After is honest: once it has passed, one request gets through, and one only.
    time.sleep(retry_after(denied[-1]))
    again = send(gateway, raw, "/client/again", client, connection)
    assert again.status == 200, again
    assert rate_headers(again)[:2] == (N, 0), again
    assert_throttled(send(gateway, raw, "/client/over/again", client, connection), N)
    upstream.settle()
    assert len(upstream.requests) == N + 1


def test_one_throttled_client_does_not_touch_another(gateway, upstream, raw):
    first, second = fresh("first"), fresh("second")
    for i in range(CALLER_N):
        response = send(gateway, raw, f"/caller/{i}", [("X-Client-Id", first)])
        assert response.status == 200, response
    assert_throttled(send(gateway, raw, "/caller/x", [("X-Client-Id", first)]), CALLER_N)

    remaining = []
    for i in range(CALLER_N):
        response = send(gateway, raw, f"/caller/{i}", [("X-Client-Id", second)])
        assert response.status == 200, response
        remaining.append(rate_headers(response)[1])
    assert remaining == list(range(CALLER_N - 1, -1, -1))
    assert_throttled(send(gateway, raw, "/caller/x", [("X-Client-Id", second)]), CALLER_N)
    assert_throttled(send(gateway, raw, "/caller/x", [("X-Client-Id", first)]), CALLER_N)
    upstream.settle()
    assert len(upstream.requests) == 2 * CALLER_N


def test_ip_key_is_the_right_most_untrusted_forwarded_address(gateway, upstream, raw):
    """The test client stands for a trusted proxy (127.0.0.1): the entries left of
    the address it appended are the caller's own words and change nothing."""
    caller, neighbour = "203.0.113.7", "203.0.113.8"
    chains = [
        caller,
        f"198.51.100.1, {caller}",
        f"10.0.0.1, 198.51.100.2, {caller}",
        f"{caller}, 127.0.0.1",  # a second trusted hop
        f"{neighbour}, {caller}",  # posing as the neighbour
    ]
    assert len(chains) == IP_N
    for i, chain in enumerate(chains):
        response = send(gateway, raw, f"/ip/{i}", [("X-Forwarded-For", chain)])
        assert response.status == 200, response
        assert rate_headers(response)[1] == IP_N - 1 - i, (chain, response)
    for chain in (caller, f"198.51.100.77, {caller}", f"{neighbour}, {caller}"):
        assert_throttled(send(gateway, raw, "/ip/x", [("X-Forwarded-For", chain)]), IP_N)

    for i in range(IP_N):
        response = send(gateway, raw, f"/ip/n{i}", [("X-Forwarded-For", f"{caller}, {neighbour}")])
        assert response.status == 200, response
        assert rate_headers(response)[1] == IP_N - 1 - i, response
    assert_throttled(send(gateway, raw, "/ip/x", [("X-Forwarded-For", neighbour)]), IP_N)
    upstream.settle()
    assert len(upstream.requests) == 2 * IP_N


# -- keys from tokens --------------------------------------------------------------------------


def test_two_subjects_have_separate_quotas(gateway, upstream, raw, idp):
    alice, bob = fresh("alice"), fresh("bob")
    for subject in (alice, bob):
        token = idp.mint(sub=subject, aud=AUDIENCE)
        for i in range(SUBJECT_N):
            response = send(gateway, raw, f"/orders/{i}", bearer(token))
            assert response.status == 200, response
            assert rate_headers(response)[:2] == (SUBJECT_N, SUBJECT_N - 1 - i), response
        assert_throttled(send(gateway, raw, "/orders/x", bearer(token)), SUBJECT_N)
    upstream.settle()
    assert len(upstream.requests) == 2 * SUBJECT_N
    assert {r.header("x-auth-subject") for r in upstream.requests} == {alice, bob}


def test_forged_tokens_do_not_spend_the_quota_of_the_subject_they_name(gateway, upstream, raw, idp):
    alice = fresh("alice")
    token = idp.mint(sub=alice, aud=AUDIENCE)
    connection = raw(gateway.port)
    for bit in range(50):
        response = send(gateway, raw, "/orders/forged", bearer(forged(token, bit)), connection)
        assert_error(response, 401)
        assert response.header("RateLimit-Remaining") is None, response
    upstream.settle()
    assert upstream.requests == []

    for i in range(SUBJECT_N):
        response = send(gateway, raw, f"/orders/{i}", bearer(token), connection)
        assert response.status == 200, response
        assert rate_headers(response)[1] == SUBJECT_N - 1 - i, response
    assert_throttled(send(gateway, raw, "/orders/x", bearer(token), connection), SUBJECT_N)
    # Authentication comes first: a forgery is still a 401 once alice is throttled.
    assert_error(send(gateway, raw, "/orders/f", bearer(forged(token, 7)), connection), 401)


# -- what a 429 leaves behind ------------------------------------------------------------------


def test_a_429_is_audited_and_counted_without_token_material(gateway, raw, idp, audit):
    before = metric(scrape(gateway, raw), "fastgw_rate_limited_total", limit="per-subject")
    subject = fresh("audited")
    token = idp.mint(sub=subject, aud=AUDIENCE)
    for _ in range(SUBJECT_N):
        assert send(gateway, raw, "/orders/1", bearer(token)).status == 200
    denied = [send(gateway, raw, "/orders/1?page=2", bearer(token)) for _ in range(3)]
    for response in denied:
        assert_throttled(response, SUBJECT_N)

    lines = audit.lines_for([r.header("x-request-id") for r in denied])
    assert len(lines) == len(denied), lines
    for line in lines:
        assert line["event"] == "rate_limited", line
        assert line["reason"] == "rate_limited", line
        assert line["status"] == 429, line
        assert line["limit"] == "per-subject", line
        assert line["key"] == "jwt.sub", line
        assert line["route"] == "orders", line
        assert line["path"] == "/orders/1", line
        assert line.get("sub") in (None, subject), line
        assert subject not in line["key"], line
    text = audit.text()
    for fragment in secret_fragments(token):
        assert fragment not in text, f"audit log holds token material {fragment!r}"

    after = metric(scrape(gateway, raw), "fastgw_rate_limited_total", limit="per-subject")
    assert after - before == len(denied)


def test_a_429_keyed_by_ip_names_the_key_kind_only(gateway, raw, audit):
    caller = "192.0.2.44"
    for i in range(IP_N):
        assert send(gateway, raw, f"/ip/{i}", [("X-Forwarded-For", caller)]).status == 200
    response = send(gateway, raw, "/ip/x", [("X-Forwarded-For", caller)])
    assert_throttled(response, IP_N)
    line = audit.line_for(response.header("x-request-id"))
    assert (line["event"], line["limit"], line["key"]) == ("rate_limited", "per-ip", "ip"), line


# -- several limits on one route ---------------------------------------------------------------


@pytest.mark.parametrize(
    "filters",
    [["RateLimit=per-minute, burst-guard"], ["RateLimit=per-minute", "RateLimit=burst-guard"]],
    ids=["one-filter", "two-filters"],
)
def test_two_limits_allow_only_together_and_a_denial_spends_nothing(
    start_gateway, make_config, upstream, raw, filters
):
    """``per-minute`` (6) and ``burst-guard`` (3) on ``/both``; each alone on
    ``/wide`` and ``/narrow``, which read what is left in each bucket."""
    wide, narrow = 6, 3
    gw = start_gateway(
        make_config(
            upstream.url,
            rate_limits={
                "per-minute": {"rate": f"{wide}/min", "key": "header.X-Client-Id"},
                "burst-guard": {"rate": f"{narrow}/min", "key": "header.X-Client-Id"},
            },
            routes=[
                route("both", "Path=/both/**", filters=filters),
                route("wide", "Path=/wide/**", filters=["RateLimit=per-minute"]),
                route("narrow", "Path=/narrow/**", filters=["RateLimit=burst-guard"]),
            ],
        )
    )

    def call(path: str, client: str):
        return send(gw, raw, path, [("X-Client-Id", client)])

    # burst-guard denies: per-minute keeps the tokens of the denied requests.
    one = fresh("one")
    both = [call("/both/1", one) for _ in range(narrow)]
    assert statuses(both) == [200] * narrow, both
    assert [rate_headers(r)[:2] for r in both] == [(narrow, 2), (narrow, 1), (narrow, 0)]
    for _ in range(4):
        assert_throttled(call("/both/2", one), narrow)
    left = [call("/wide/1", one) for _ in range(wide - narrow)]
    assert [rate_headers(r)[:2] for r in left] == [(wide, 2), (wide, 1), (wide, 0)], left
    assert_throttled(call("/wide/2", one), wide)

    # per-minute denies: burst-guard keeps its tokens.
    two = fresh("two")
    assert statuses([call("/wide/1", two) for _ in range(wide)]) == [200] * wide
    for _ in range(narrow):
        assert_throttled(call("/both/1", two), wide)
    left = [call("/narrow/1", two) for _ in range(narrow)]
    assert [rate_headers(r)[:2] for r in left] == [(narrow, 2), (narrow, 1), (narrow, 0)], left
    assert_throttled(call("/narrow/2", two), narrow)

    upstream.settle()
    assert len(upstream.requests) == narrow + (wide - narrow) + wide + narrow


# -- several workers, one host -----------------------------------------------------------------


def accepted_sockets(port: int, state_code: str = "01") -> set[int]:
    """Inodes of the TCP sockets whose local port is ``port`` and whose state is
    ``state_code`` (01 established, server side; 0A listening)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state == state_code and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def socket_owners(pids: list[int], inodes: set[int]) -> dict[int, int]:
    """How many of ``inodes`` each of ``pids`` holds open."""
    owners = {}
    for pid in pids:
        held = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                held += 1
        owners[pid] = held
    return owners


def wait_for_workers(gw, count: int, timeout: float = 15.0) -> list[int]:
    """The worker pids, once ``count`` of them each hold a listening socket."""
    deadline = time.monotonic() + timeout
    while True:
        workers = gw.children()
        if len(workers) == count:
            listening = socket_owners(workers, accepted_sockets(gw.port, "0A"))
            if all(listening.values()):
                return workers
        assert time.monotonic() < deadline, (workers, gw.children())
        time.sleep(0.05)


@pytest.fixture
def two_workers(start_gateway, make_config, upstream):
    limit = 100
    config = make_config(
        upstream.url,
        workers=2,
        rate_limits={"per-host": {"rate": f"{limit}/day", "key": "header.X-Client-Id"}},
        routes=[
            route("limited", "Path=/limited/**", filters=["RateLimit=per-host"]),
            route("echo", "Path=/echo/**"),
        ],
    )
    gw = start_gateway(config)
    wait_for_workers(gw, 2)
    return gw, limit


def test_two_workers_let_exactly_n_through_in_total(two_workers, upstream, raw):
    gw, limit = two_workers
    workers = wait_for_workers(gw, 2)

    # The kernel spreads new connections over both workers (SO_REUSEPORT).
    held = [raw(gw.port) for _ in range(40)]
    for i, connection in enumerate(held):
        assert connection.exchange("GET", f"/echo/spread/{i}").status == 200
    owners = socket_owners(workers, accepted_sockets(gw.port))
    assert sum(owners.values()) == len(held), owners
    assert all(count > 0 for count in owners.values()), owners
    for connection in held:
        connection.close()
    upstream.settle()
    upstream.clear()

    client = [("X-Client-Id", fresh("host-wide"))]

    def client_thread(i: int) -> list[int]:
        return [send(gw, raw, f"/limited/{i}/{j}", client).status for j in range(8)]

    results = [s for thread in concurrently(40, client_thread) for s in thread]
    assert len(results) == 320
    assert set(results) <= {200, 429}, results
    assert results.count(200) == limit
    upstream.settle()
    assert len(upstream.requests) == limit


def test_metrics_of_two_workers_are_summed(two_workers, raw):
    gw, limit = two_workers
    client = [("X-Client-Id", fresh("summed"))]

    def client_thread(i: int) -> list[int]:
        return [send(gw, raw, f"/limited/{i}/{j}", client).status for j in range(10)]

    results = [s for thread in concurrently(20, client_thread) for s in thread]
    assert results.count(200) == limit
    denied = results.count(429)
    assert denied == len(results) - limit

    def counted() -> tuple[float, float]:
        text = scrape(gw, raw)
        return (
            metric(text, "fastgw_rate_limited_total", limit="per-host"),
            metric(text, "fastgw_requests_total", route="limited", method="GET", status="429"),
        )

    # Workers publish their numbers every so often: the sum may lag, never stay short.
    deadline = time.monotonic() + 5
    while counted() != (denied, denied) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert counted() == (denied, denied)
