"""The RateLimit= check: keys, the headers of an answer, the 429 and its audit
record; one limit and several give the same answers."""

from types import SimpleNamespace

import pytest

from fastgw.auth.codes import AuthCode
from fastgw.auth.verifier import Result
from fastgw.config.model import Rate, RateLimit
from fastgw.explain import _CapturedAudit
from fastgw.metrics import Metrics
from fastgw.ratelimit import SharedBuckets
from fastgw.ratelimit.policy import RateLimiter, rate_headers, rate_lines

PER_SUB = RateLimit("per-sub", Rate(3, 60.0), 3, "jwt.sub")
PER_IP = RateLimit("per-ip", Rate(100, 60.0), 100, "ip")


@pytest.fixture
def limiter():
    config = SimpleNamespace(rate_limits={PER_SUB.name: PER_SUB, PER_IP.name: PER_IP},
                             trusted_proxies=())
    buckets = SharedBuckets.create(1024)
    audit = _CapturedAudit()
    yield RateLimiter(config, buckets=buckets, redis=None, metrics=Metrics(), audit=audit), audit
    buckets.close()


def exchange(sub):
    identity = Result(AuthCode.OK, {"sub": sub}, "corp", "k1", "iss", sub) if sub else None
    request = SimpleNamespace(identity=identity, claims=identity and identity.claims,
                              client_ip="10.0.0.1", forwarded_for=[])
    return SimpleNamespace(request=request, extra_headers=b"")


@pytest.mark.parametrize("names", [("per-sub",), ("per-sub", "per-ip"), ("per-sub", "per-sub")])
def test_answers_and_the_429(limiter, names):
    limiter, audit = limiter
    check = limiter.check(names)
    for remaining in (2, 1, 0):
        ex = exchange("alice")
        assert check(ex) is None
        lines = ex.extra_headers.split(b"\r\n")
        assert lines[:2] == [b"RateLimit-Limit: 3", b"RateLimit-Remaining: %d" % remaining]
        assert lines[2].startswith(b"RateLimit-Reset: ") and lines[3:] == [b""]
    rejection = check(exchange("alice"))
    assert rejection.status == 429
    assert dict(rejection.headers)["RateLimit-Remaining"] == "0"
    assert int(dict(rejection.headers)["Retry-After"]) >= 1
    assert audit.records[-1]["limit"] == "per-sub" and audit.records[-1]["key"] == "jwt.sub"
    assert audit.records[-1]["sub"] == "alice"
    assert check(exchange("bob")) is None  # another subject, another bucket


def test_without_a_verified_subject_the_address_is_the_key(limiter):
    limiter, audit = limiter
    check = limiter.check(("per-sub",))
    for _ in range(3):
        assert check(exchange(None)) is None
    assert check(exchange(None)).status == 429
    assert audit.records[-1]["key"] == "ip"
    assert check(exchange("alice")) is None


def test_rate_headers_of_large_and_small_counts():
    limit = SimpleNamespace(count=5000)
    decision = SimpleNamespace(limit=limit, remaining=1023, reset=1024)
    assert rate_headers(decision) == (("RateLimit-Limit", "5000"),
                                      ("RateLimit-Remaining", "1023"), ("RateLimit-Reset", "1024"))
    decision = SimpleNamespace(limit=SimpleNamespace(count=1), remaining=0, reset=-1)
    assert rate_headers(decision)[1:] == (("RateLimit-Remaining", "0"), ("RateLimit-Reset", "-1"))
    assert rate_lines(decision) == (b"RateLimit-Limit: 1\r\nRateLimit-Remaining: 0\r\n"
                                    b"RateLimit-Reset: -1\r\n")
