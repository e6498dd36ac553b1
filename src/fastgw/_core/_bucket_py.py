"""Rate-limit buckets: GCRA over a fixed table of slots in shared memory.

Pure-Python twin of ``_bucket_c``; both give the same decisions on the same
sequence of calls.

GCRA
----
A bucket of ``burst`` tokens that regains one token every ``interval`` ns is
kept as one number, its theoretical arrival time (TAT): the instant it will be
full again. With ``tolerance = burst * interval``, a request at ``now`` is
allowed when ``max(TAT, now) + interval - now <= tolerance``, and then moves
TAT there. That is a token bucket exactly, without any refill work. Times are
integer nanoseconds of the monotonic clock, so no float drift creeps in and
the twins agree to the nanosecond.

The table
---------
A table is a power-of-two number of sets of ``WAYS`` slots; a slot is two
int64: a fingerprint and a TAT. A (limit, key) pair maps to
``fp = hash(key) ^ limit.seed`` (the process's keyed SipHash, shared by every
process forked from the one that made the table); its set is ``fp & mask``
and the full 64 bits must match for a slot to be its bucket, so two keys
merge only on a full 64-bit collision. Fingerprint 0 marks an empty slot.

A key not yet in its set takes the slot with the lowest TAT that this call
has not touched: an empty slot (TAT 0) or an idle one (TAT <= now, a full
bucket, so nothing is lost) when there is one, else the live bucket closest
to full, which then restarts full: the one over-allowance the fixed size
costs, and the smallest one available.

One decision may check several limits. The sets it touches are locked in
ascending order, every check is computed from the buckets as they are, and
only if all allow are the new TATs written: a denied request spends nothing
anywhere, and a bucket named twice in one decision counts once.

The compiled twin locks with a compare-and-swap spinlock word per set inside
the mapping (a waiter takes over the lock of a process that died holding
it); this twin with ``lockf`` byte-range locks on a memfd, one byte per set,
which the kernel releases when a process dies.
"""

from __future__ import annotations

import fcntl
import os
import threading
from time import monotonic_ns

NS = 1_000_000_000
WAYS = 8
#: at most this many limits per decision: they always fit in one set
MAX_CHECKS = WAYS
#: keeps ``now + tolerance + interval`` inside int64
MAX_TOLERANCE = 1 << 62
SLOT_BYTES = 16
LOCK_BYTES = 4


def table_bytes(nsets: int) -> int:
    """Bytes of shared memory a table of ``nsets`` sets needs."""
    return nsets * (WAYS * SLOT_BYTES + LOCK_BYTES)


def ceil_seconds(ns: int) -> int:
    return (ns + NS - 1) // NS


def gcra(tat: int, now: int, interval: int, tolerance: int) -> tuple[bool, int, int, int, int]:
    """One request against one bucket.

    Returns ``(allowed, new_tat, remaining, reset_ns, retry_after_ns)``:
    tokens left after this request, time until the bucket is full again, and
    (when denied) time until this request would be allowed.
    """
    if tat < now:
        tat = now
    new = tat + interval
    if new - now <= tolerance:
        return True, new, (tolerance - (new - now)) // interval, new - now, 0
    return False, tat, 0, tat - now, new - tolerance - now


class Limit:
    """A rate limit: ``count`` per ``period`` seconds, ``burst`` at once."""

    __slots__ = ("burst", "count", "interval", "name", "period", "seed", "tolerance")

    def __init__(self, name: str, count: int, period: float, burst: int | None = None) -> None:
        if burst is None:
            burst = count
        if count < 1 or burst < 1 or not period > 0:
            raise ValueError("a limit needs count >= 1, burst >= 1 and a positive period")
        interval = max(1, round(period * NS) // count)
        if burst * interval > MAX_TOLERANCE:
            raise ValueError(f"limit {name}: burst * period / count is too long")
        self.name = name
        self.count = count
        self.period = period
        self.burst = burst
        self.interval = interval
        self.tolerance = burst * interval
        self.seed = hash(name)

    def __repr__(self) -> str:
        return f"Limit({self.name!r}, {self.count}, {self.period!r}, burst={self.burst})"


class Decision:
    """What the HTTP layer needs: allowed or not, and the limit to report.

    ``limit`` is the most restrictive limit: when allowed, the one with the
    fewest tokens left; when denied, the denying one that frees up last.
    ``reset`` and ``retry_after`` are whole seconds, rounded up.
    """

    __slots__ = ("allowed", "limit", "remaining", "reset", "retry_after")

    def __init__(self, allowed: bool, limit, remaining: int, reset: int, retry_after: int) -> None:
        self.allowed = allowed
        self.limit = limit
        self.remaining = remaining
        self.reset = reset
        self.retry_after = retry_after

    def __repr__(self) -> str:
        name = self.limit.name if self.limit is not None else None
        return (
            f"Decision(allowed={self.allowed}, limit={name!r}, remaining={self.remaining}, "
            f"reset={self.reset}, retry_after={self.retry_after})"
        )


def report(limits, allowed: bool, remaining, reset, retry) -> Decision:
    """The decision to report from the per-check results of one request."""
    pick = 0
    if allowed:
        for i in range(1, len(limits)):
            if remaining[i] < remaining[pick] or (
                remaining[i] == remaining[pick] and reset[i] > reset[pick]
            ):
                pick = i
        return Decision(True, limits[pick], remaining[pick], ceil_seconds(reset[pick]), 0)
    pick = -1
    for i in range(len(limits)):
        if retry[i] > 0 and (pick < 0 or retry[i] > retry[pick]):
            pick = i
    return Decision(False, limits[pick], 0, ceil_seconds(reset[pick]), ceil_seconds(retry[pick]))


def _fingerprints(checks, mask: int):
    if type(checks) is not tuple and type(checks) is not list:
        checks = tuple(checks)
    n = len(checks)
    if not 0 < n <= MAX_CHECKS:
        raise ValueError(f"a decision takes 1 to {MAX_CHECKS} checks, not {n}")
    limits = []
    fps = []
    sets = []
    for limit, key in checks:
        if not isinstance(limit, Limit):
            raise TypeError(f"expected a Limit, got {type(limit).__name__}")
        if not isinstance(key, str):
            raise TypeError(f"a limit key is a str, not {type(key).__name__}")
        fp = hash(key) ^ limit.seed
        if fp == 0:
            fp = 1
        limits.append(limit)
        fps.append(fp)
        sets.append(fp & mask)
    return limits, fps, sets


class Table:
    """Buckets in ``nsets * WAYS`` slots of a shared writable ``mapping``.

    Make it before forking: the mapping and the lock file are then shared by
    every process forked afterwards.
    """

    def __init__(self, mapping, nsets: int) -> None:
        if nsets < 1 or nsets & (nsets - 1):
            raise ValueError("nsets must be a power of two")
        if len(mapping) < table_bytes(nsets):
            raise ValueError("mapping too small for the table")
        self.mapping = mapping
        self.nsets = nsets
        self.mask = nsets - 1
        self.capacity = nsets * WAYS
        self._slots = memoryview(mapping)[: nsets * WAYS * SLOT_BYTES].cast("q")
        self._lockfd = os.memfd_create("fastgw-buckets", os.MFD_CLOEXEC)
        # lockf locks belong to the process; this orders threads within one
        self._mutex = threading.Lock()

    def decide(self, checks, now_ns: int | None = None) -> Decision:
        """Allow the request only if every (limit, key) check allows it."""
        if self._lockfd < 0:
            raise ValueError("the table is closed")
        limits, fps, sets = _fingerprints(checks, self.mask)
        now = monotonic_ns() if now_ns is None else now_ns
        order = sets if len(sets) == 1 else sorted(set(sets))
        fd = self._lockfd
        with self._mutex:
            for s in order:
                fcntl.lockf(fd, fcntl.LOCK_EX, 1, s)
            try:
                ok, remaining, reset, retry = self._apply(limits, fps, sets, now)
            finally:
                for s in order:
                    fcntl.lockf(fd, fcntl.LOCK_UN, 1, s)
        return report(limits, ok, remaining, reset, retry)

    def _apply(self, limits, fps, sets, now):
        # Each set is read once, as a list; only the slots this call claims or
        # updates are written, so the lists stay true for every other slot.
        slots = self._slots
        span = WAYS * 2
        n = len(limits)
        rows = []
        found = [-1] * n
        news = [0] * n
        remaining = [0] * n
        reset = [0] * n
        retry = [0] * n
        ok = True
        for i in range(n):
            fp = fps[i]
            tat = 0
            base = sets[i] * span
            row = slots[base : base + span].tolist()
            rows.append(row)
            marks = row[0::2]
            if fp in marks:
                way = 2 * marks.index(fp)
                found[i] = base + way
                tat = row[way + 1]
            limit = limits[i]
            allowed, news[i], remaining[i], reset[i], retry[i] = gcra(
                tat, now, limit.interval, limit.tolerance
            )
            ok = ok and allowed
        if ok:
            touched = [j for j in found if j >= 0]
            for i in range(n):
                j = found[i]
                if j < 0:
                    for m in range(i):
                        if fps[m] == fps[i]:
                            j = found[m]
                            break
                    else:
                        base = sets[i] * span
                        tats = rows[i][1::2]
                        if not touched:  # the first untouched slot with the lowest TAT
                            j = base + 2 * tats.index(min(tats))
                        else:
                            best = -1
                            for way in range(WAYS):
                                if base + 2 * way not in touched and (
                                    best < 0 or tats[way] < tats[best]
                                ):
                                    best = way
                            j = base + 2 * best
                        slots[j] = fps[i]
                        touched.append(j)
                    found[i] = j
                slots[j + 1] = news[i]
        return ok, remaining, reset, retry

    def live(self, now_ns: int | None = None) -> int:
        """How many buckets are not full at ``now_ns`` (the rest are free slots)."""
        now = monotonic_ns() if now_ns is None else now_ns
        slots = self._slots
        return sum(1 for j in range(0, len(slots), 2) if slots[j] and slots[j + 1] > now)

    def close(self) -> None:
        if self._lockfd >= 0:
            os.close(self._lockfd)
            self._lockfd = -1
        self._slots.release()
