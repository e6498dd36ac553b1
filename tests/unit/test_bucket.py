"""GCRA buckets: arithmetic, multi-limit decisions and the table, on both twins.

Every test runs on a fake clock (``now_ns``) so values are exact.
"""

import mmap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw._core import CORE, NO_EXTENSIONS
from fastgw.ratelimit import SharedBuckets

S = 1_000_000_000
T0 = 1_000 * S  # a monotonic clock is far from zero


def implementation(name):
    module = CORE["bucket"].get(name)
    if module is None:
        if NO_EXTENSIONS:
            pytest.skip("FASTGW_NO_EXTENSIONS is set")
        pytest.fail("compiled bucket missing: pip install . builds it")
    return module


@pytest.fixture(params=["python", "compiled"])
def impl(request):
    return implementation(request.param)


def make(impl, capacity=1024):
    return SharedBuckets.create(capacity, implementation=impl)


def fields(decision):
    return (
        decision.allowed,
        decision.limit.name,
        decision.remaining,
        decision.reset,
        decision.retry_after,
    )


# -- the arithmetic ------------------------------------------------------------------------


def test_gcra_allows_a_burst_then_refills(impl):
    interval, tolerance = S // 10, S  # 10/s, burst 10
    tat = 0
    for i in range(10):
        allowed, tat, remaining, reset, retry = impl.gcra(tat, T0, interval, tolerance)
        assert (allowed, remaining, reset, retry) == (True, 9 - i, (i + 1) * interval, 0)
    assert impl.gcra(tat, T0, interval, tolerance) == (False, tat, 0, S, interval)
    assert impl.gcra(tat, T0 + interval, interval, tolerance)[:3] == (True, tat + interval, 0)


def test_ten_per_second_burst_ten(impl):
    buckets = make(impl)
    limit = impl.Limit("per-client", 10, 1.0, 10)
    checks = [(limit, "alice")]
    decisions = [fields(buckets.decide(checks, T0)) for _ in range(11)]
    assert decisions[:10] == [(True, "per-client", 9 - i, 1, 0) for i in range(10)]
    assert decisions[10] == (False, "per-client", 0, 1, 1)
    assert fields(buckets.decide(checks, T0 + S // 10 - 1)) == (False, "per-client", 0, 1, 1)
    assert fields(buckets.decide(checks, T0 + S // 10)) == (True, "per-client", 0, 1, 0)
    assert fields(buckets.decide(checks, T0 + S // 10)) == (False, "per-client", 0, 1, 1)


def test_refill_is_continuous_and_capped_at_burst(impl):
    buckets = make(impl)
    limit = impl.Limit("l", 100, 60.0, 10)  # one token every 0.6 s, ten at most
    checks = [(limit, "k")]
    for _ in range(10):
        buckets.decide(checks, T0)
    denied = buckets.decide(checks, T0)
    assert fields(denied) == (False, "l", 0, 6, 1)
    # after 3 s, five tokens are back: this request takes one
    assert fields(buckets.decide(checks, T0 + 3 * S)) == (True, "l", 4, 4, 0)
    # an hour later the bucket is full, never fuller
    assert fields(buckets.decide(checks, T0 + 3600 * S)) == (True, "l", 9, 1, 0)


def test_reset_and_retry_after_round_up(impl):
    buckets = make(impl)
    limit = impl.Limit("slow", 1, 60.0)
    assert fields(buckets.decide([(limit, "k")], T0)) == (True, "slow", 0, 60, 0)
    assert fields(buckets.decide([(limit, "k")], T0 + S // 2)) == (False, "slow", 0, 60, 60)
    assert fields(buckets.decide([(limit, "k")], T0 + 59 * S + 1)) == (False, "slow", 0, 1, 1)
    assert fields(buckets.decide([(limit, "k")], T0 + 60 * S)) == (True, "slow", 0, 60, 0)


def test_burst_larger_and_smaller_than_the_rate(impl):
    buckets = make(impl)
    big = impl.Limit("big", 1, 1.0, 5)
    small = impl.Limit("small", 100, 1.0, 1)
    assert [buckets.decide([(big, "k")], T0).allowed for _ in range(6)] == [True] * 5 + [False]
    assert [buckets.decide([(small, "k")], T0).allowed for _ in range(2)] == [True, False]
    assert buckets.decide([(small, "k")], T0 + S // 100).allowed


def test_uneven_rates_never_exceed_the_count(impl):
    buckets = make(impl)
    limit = impl.Limit("odd", 7, 1.0)
    checks = [(limit, "k")]
    allowed = 0
    for ms in range(0, 10_000, 3):
        allowed += buckets.decide(checks, T0 + ms * 1_000_000).allowed
    # 7 at once, then 7 per second for 10 s (to within one interval)
    assert 7 + 69 <= allowed <= 7 + 70


def test_keys_and_limits_are_separate_buckets(impl):
    buckets = make(impl)
    a = impl.Limit("a", 1, 60.0)
    b = impl.Limit("b", 1, 60.0)
    assert buckets.decide([(a, "x")], T0).allowed
    assert buckets.decide([(a, "y")], T0).allowed
    assert buckets.decide([(b, "x")], T0).allowed
    assert not buckets.decide([(a, "x")], T0).allowed


def test_limit_validation(impl):
    with pytest.raises(ValueError):
        impl.Limit("zero", 0, 1.0)
    with pytest.raises(ValueError):
        impl.Limit("no-burst", 10, 1.0, 0)
    with pytest.raises(ValueError):
        impl.Limit("no-period", 10, 0)
    with pytest.raises(ValueError):
        impl.Limit("too-long", 1, 86400.0 * 365 * 1000, 1000)
    limit = impl.Limit("default-burst", 1000, 60.0)
    assert (limit.count, limit.burst, limit.interval, limit.tolerance) == (
        1000,
        1000,
        60_000_000,
        60 * S,
    )


def test_bad_checks_are_rejected(impl):
    buckets = make(impl)
    limit = impl.Limit("l", 10, 1.0)
    with pytest.raises(ValueError):
        buckets.decide([], T0)
    with pytest.raises(ValueError):
        buckets.decide([(limit, str(i)) for i in range(impl.MAX_CHECKS + 1)], T0)
    with pytest.raises(TypeError):
        buckets.decide([(limit, 42)], T0)
    with pytest.raises(TypeError):
        buckets.decide([("l", "k")], T0)


# -- several limits in one decision --------------------------------------------------------


def test_a_denial_spends_nothing_in_the_other_limits(impl):
    buckets = make(impl)
    wide = impl.Limit("wide", 5, 60.0)
    narrow = impl.Limit("narrow", 2, 60.0)
    checks = [(wide, "alice"), (narrow, "alice")]
    assert [buckets.decide(checks, T0).allowed for _ in range(4)] == [True, True, False, False]
    # wide spent two tokens, not four
    assert fields(buckets.decide([(wide, "alice")], T0)) == (True, "wide", 2, 36, 0)


def test_decision_reports_the_most_restrictive_limit(impl):
    buckets = make(impl)
    per_second = impl.Limit("per-second", 10, 1.0)
    per_minute = impl.Limit("per-minute", 100, 60.0, 3)
    checks = [(per_second, "k"), (per_minute, "k")]
    assert fields(buckets.decide(checks, T0)) == (True, "per-minute", 2, 1, 0)
    buckets.decide(checks, T0)
    assert fields(buckets.decide(checks, T0)) == (True, "per-minute", 0, 2, 0)
    # both exhausted? per-second frees up after 0.1 s, per-minute after 0.6 s: report the latter
    for _ in range(7):
        buckets.decide([(per_second, "k")], T0)
    assert fields(buckets.decide(checks, T0)) == (False, "per-minute", 0, 2, 1)


def test_the_denying_limit_is_reported_even_with_more_tokens_elsewhere(impl):
    buckets = make(impl)
    hourly = impl.Limit("hourly", 2, 3600.0)
    burst = impl.Limit("burst", 1000, 1.0)
    assert buckets.decide([(hourly, "k"), (burst, "k")], T0).allowed
    assert buckets.decide([(hourly, "k"), (burst, "k")], T0).allowed
    assert fields(buckets.decide([(burst, "k"), (hourly, "k")], T0)) == (
        False,
        "hourly",
        0,
        3600,
        1800,
    )


def test_the_same_bucket_twice_counts_once(impl):
    buckets = make(impl)
    limit = impl.Limit("l", 3, 60.0)
    twice = [(limit, "k"), (limit, "k")]
    assert fields(buckets.decide(twice, T0)) == (True, "l", 2, 20, 0)
    assert fields(buckets.decide([(limit, "k")], T0)) == (True, "l", 1, 40, 0)
    new = [(limit, "new"), (limit, "new")]
    assert fields(buckets.decide(new, T0)) == (True, "l", 2, 20, 0)
    assert fields(buckets.decide([(limit, "new")], T0)) == (True, "l", 1, 40, 0)


# -- the table -----------------------------------------------------------------------------


def test_capacity_is_rounded_to_whole_sets(impl):
    buckets = make(impl, 1000)
    assert buckets.capacity == 1024
    assert buckets.nbytes == impl.table_bytes(1024 // impl.WAYS)
    assert make(impl, 1).capacity == impl.WAYS


def test_keys_sharing_a_set_keep_their_own_buckets(impl):
    buckets = make(impl, 1)  # one set: every key shares it
    limit = impl.Limit("l", 1, 60.0)
    keys = [f"client-{i}" for i in range(impl.WAYS)]
    assert all(buckets.decide([(limit, k)], T0).allowed for k in keys)
    assert not any(buckets.decide([(limit, k)], T0).allowed for k in keys)
    assert buckets.live(T0) == impl.WAYS


def test_a_full_set_recycles_the_bucket_closest_to_full(impl):
    buckets = make(impl, 1)
    limit = impl.Limit("l", 1, 60.0)
    for i in range(impl.WAYS):  # TATs spread 1 s apart: client-0 is the closest to full
        assert buckets.decide([(limit, f"client-{i}")], T0 + i * S).allowed
    now = T0 + 10 * S
    assert buckets.decide([(limit, "newcomer")], now).allowed
    assert buckets.decide([(limit, "client-0")], now).allowed  # forgotten: over-allowed once
    assert not buckets.decide([(limit, f"client-{impl.WAYS - 1}")], now).allowed


def test_idle_buckets_are_reused_before_live_ones(impl):
    buckets = make(impl, 1)
    fast = impl.Limit("fast", 1000, 1.0)
    slow = impl.Limit("slow", 1, 3600.0)
    assert buckets.decide([(slow, "pinned")], T0).allowed
    for i in range(1000):  # each idle again a millisecond later
        assert buckets.decide([(fast, f"k{i}")], T0 + i * 10**7).allowed
    assert not buckets.decide([(slow, "pinned")], T0 + 10 * S).allowed
    assert buckets.live(T0 + 3600 * S) == 0


def test_a_denied_newcomer_leaves_the_set_as_it_was(impl):
    buckets = make(impl, 1)
    limit = impl.Limit("l", 1, 60.0)
    for i in range(impl.WAYS):
        buckets.decide([(limit, f"client-{i}")], T0 + i)
    spent = impl.Limit("spent", 1, 60.0)
    blocked = [(limit, "newcomer"), (spent, "client-0")]
    buckets.decide([(spent, "client-0")], T0)  # evicts client-0 of limit l
    assert not buckets.decide(blocked, T0 + 100).allowed
    for i in range(1, impl.WAYS):
        assert not buckets.decide([(limit, f"client-{i}")], T0 + 100).allowed


def test_the_table_works_in_a_plain_mapping(impl):
    mapping = mmap.mmap(-1, impl.table_bytes(4))
    table = impl.Table(mapping, 4)
    limit = impl.Limit("l", 2, 1.0)
    assert [table.decide([(limit, "k")], T0).allowed for _ in range(3)] == [True, True, False]
    with pytest.raises(ValueError):
        impl.Table(mapping, 3)
    with pytest.raises(ValueError):
        impl.Table(mapping, 8)


def test_the_clock_defaults_to_monotonic(impl):
    buckets = make(impl)
    limit = impl.Limit("l", 2, 3600.0)
    assert buckets.decide([(limit, "k")]).allowed
    assert buckets.decide(((limit, "k"),)).allowed
    assert not buckets.decide(iter([(limit, "k")])).allowed


# -- the twins agree -----------------------------------------------------------------------

LIMITS = [("a", 3, 1.0, 3), ("b", 10, 60.0, 2), ("c", 7, 1.0, 10), ("d", 1000, 1.0, 1)]

steps = st.lists(
    st.tuples(
        st.integers(0, 400_000_000),  # clock step, ns
        st.lists(
            st.tuples(st.integers(0, len(LIMITS) - 1), st.sampled_from("abcdefghijklmnop")),
            min_size=1,
            max_size=4,
        ),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(steps=steps, capacity=st.sampled_from([1, 8, 16, 1024]))
def test_compiled_and_python_agree(steps, capacity):
    python = implementation("python")
    compiled = implementation("compiled")
    sides = []
    for impl in (python, compiled):
        limits = [impl.Limit(*spec) for spec in LIMITS]
        sides.append((make(impl, capacity), limits))
    now = T0
    for step, picks in steps:
        now += step
        results = [
            fields(buckets.decide([(limits[i], key) for i, key in picks], now))
            for buckets, limits in sides
        ]
        assert results[0] == results[1]
    assert sides[0][0].live(now) == sides[1][0].live(now)
