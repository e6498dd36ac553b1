"""The host-wide table in shared memory, across real fork()ed processes, on both twins."""

import fcntl
import os
import signal
import struct
import time
import traceback

import pytest

from fastgw._core import CORE, NO_EXTENSIONS
from fastgw.ratelimit import SharedBuckets

S = 1_000_000_000
T0 = 1_000 * S


@pytest.fixture(params=["python", "compiled"])
def impl(request):
    module = CORE["bucket"].get(request.param)
    if module is None:
        if NO_EXTENSIONS:
            pytest.skip("FASTGW_NO_EXTENSIONS is set")
        pytest.fail("compiled bucket missing: pip install . builds it")
    return module


def in_children(count: int, work) -> list[int]:
    """Run ``work(index) -> int`` in ``count`` forked processes, started together."""
    gate_r, gate_w = os.pipe()
    children = []
    for index in range(count):
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                os.close(gate_w)
                os.read(gate_r, 1)  # returns when the parent closes its end
                os.write(out_w, str(work(index)).encode())
                status = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(status)
        os.close(out_w)
        children.append((pid, out_r))
    os.close(gate_r)
    os.close(gate_w)
    results = []
    for pid, out_r in children:
        with os.fdopen(out_r, "rb") as out:
            data = out.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, f"child {pid} failed"
        results.append(int(data))
    return results


def test_forked_workers_let_exactly_n_through(impl):
    buckets = SharedBuckets.create(1024, implementation=impl)
    limit = impl.Limit("per-client", 1000, 60.0)

    def hammer(_index):
        return sum(buckets.decide([(limit, "alice")], T0).allowed for _ in range(1000))

    counts = in_children(4, hammer)
    assert sum(counts) == 1000
    assert not buckets.decide([(limit, "alice")], T0).allowed


def test_forked_workers_on_the_real_clock(impl):
    buckets = SharedBuckets.create(1024, implementation=impl)
    limit = impl.Limit("per-client", 200, 60.0)  # one token back every 0.3 s
    start = time.monotonic()

    def hammer(_index):
        return sum(buckets.decide([(limit, "alice")]).allowed for _ in range(2000))

    total = sum(in_children(4, hammer))
    elapsed = time.monotonic() - start
    assert 200 <= total <= 200 + int(elapsed / 0.3) + 1


def test_forked_workers_spend_all_or_nothing(impl):
    buckets = SharedBuckets.create(1024, implementation=impl)
    per_key = impl.Limit("per-key", 50, 60.0)
    overall = impl.Limit("overall", 300, 60.0)
    keys = [f"client-{i}" for i in range(10)]

    def hammer(index):
        allowed = 0
        for n in range(600):
            key = keys[(index + n) % len(keys)]
            allowed += buckets.decide([(per_key, key), (overall, "all")], T0).allowed
        return allowed

    assert sum(in_children(4, hammer)) == 300
    # every token the overall limit gave out was taken from exactly one per-key bucket
    spent = sum(50 - buckets.decide([(per_key, key)], T0).remaining - 1 for key in keys)
    assert spent == 300


def test_forked_workers_share_a_small_table(impl):
    buckets = SharedBuckets.create(16, implementation=impl)
    limit = impl.Limit("l", 5, 3600.0)
    keys = [f"k{i}" for i in range(12)]  # fits: 12 live buckets in 16 slots, 2 sets

    def hammer(index):
        return sum(
            buckets.decide([(limit, keys[(index + n) % len(keys)])], T0).allowed for n in range(300)
        )

    counts = in_children(4, hammer)
    assert buckets.live(T0) <= 16
    # a bucket evicted by a colliding set restarts full: at least 5 per key, never fewer
    assert sum(counts) >= 5 * len(keys)


def test_a_lock_held_by_a_dead_process_is_recovered(impl):
    buckets = SharedBuckets.create(64, implementation=impl)
    limit = impl.Limit("l", 10, 1.0)
    table = buckets.table
    index = (hash("victim") ^ limit.seed) & (table.nsets - 1)
    pid = os.fork()
    if pid == 0:
        if impl is CORE["bucket"]["python"]:
            fcntl.lockf(table._lockfd, fcntl.LOCK_EX, 1, index)
        else:
            offset = table.nsets * impl.WAYS * 16 + 4 * index
            struct.pack_into("i", table.mapping, offset, os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    start = time.monotonic()
    assert buckets.decide([(limit, "victim")], T0).allowed
    assert time.monotonic() - start < 5


def test_a_million_keys_keep_memory_fixed(impl):
    compiled = impl is not CORE["bucket"]["python"]
    count = 1_000_000 if compiled else 200_000  # the Python twin is ~40x slower
    buckets = SharedBuckets.create(4096, implementation=impl)
    nbytes = buckets.nbytes
    per_ip = impl.Limit("per-ip", 100, 1.0)
    pinned = impl.Limit("per-user", 3, 3600.0)
    for _ in range(3):
        assert buckets.decide([(pinned, "mallory")], T0).allowed

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    now = T0
    for i in range(10_000):  # touch every page of the table first
        buckets.decide([(per_ip, f"warm-{i}")], now)
    before = rss()
    for i in range(count):
        now += 1000
        decision = buckets.decide([(per_ip, f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")], now)
        assert decision.allowed
        if i % 50_000 == 0:
            assert not buckets.decide([(pinned, "mallory")], now).allowed
            assert buckets.live(now) <= buckets.capacity
    assert rss() - before < 8 << 20
    assert buckets.nbytes == nbytes
    denied = buckets.decide([(pinned, "mallory")], now)
    assert (denied.allowed, denied.remaining) == (False, 0)
    assert denied.retry_after == 1200 - (now - T0) // S
