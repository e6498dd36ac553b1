"""Compiled twin of ``_bucket_py``: the same GCRA, table layout and decisions.

See ``_bucket_py`` for the theory of operation. The per-set lock here is an
int32 word in the mapping holding the owner's pid, taken with a
compare-and-swap; a waiter that finds the owner gone takes the lock over.
"""

cimport cython
from cpython.object cimport PyObject, PyObject_Hash
from libc.stdint cimport int32_t, int64_t, uint64_t

import os

from . import _bucket_py as _py

cdef extern from *:
    """
    #include <errno.h>
    #include <sched.h>
    #include <signal.h>
    #include <stdint.h>
    #include <time.h>

    static inline void fastgw_relax(void) {
    #if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
    #elif defined(__aarch64__)
        __asm__ __volatile__("yield");
    #endif
    }

    static void fastgw_lock(int32_t *word, int32_t me) {
        unsigned long spins = 0;
        for (;;) {
            int32_t owner = 0;
            if (__atomic_compare_exchange_n(word, &owner, me, 0,
                                            __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
                return;
            ++spins;
            if (spins < 256) {
                fastgw_relax();
                continue;
            }
            sched_yield();
            /* A process killed inside its critical section never unlocks. */
            if ((spins & 4095) == 0 && kill(owner, 0) == -1 && errno == ESRCH
                && __atomic_compare_exchange_n(word, &owner, me, 0,
                                               __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
                return;
        }
    }

    static inline void fastgw_unlock(int32_t *word) {
        __atomic_store_n(word, 0, __ATOMIC_RELEASE);
    }

    static inline int64_t fastgw_monotonic_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    }
    """
    void fastgw_lock(int32_t *word, int32_t me) nogil
    void fastgw_unlock(int32_t *word) nogil
    int64_t fastgw_monotonic_ns() nogil

cdef enum:
    _WAYS = 8
    _MAX_CHECKS = 8

cdef int64_t NS = 1000000000

WAYS = _WAYS
MAX_CHECKS = _MAX_CHECKS
MAX_TOLERANCE = _py.MAX_TOLERANCE
table_bytes = _py.table_bytes

cdef int32_t _pid = os.getpid()


def _after_fork():
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


cdef inline int64_t _ceil_s(int64_t ns):
    return (ns + NS - 1) // NS


def ceil_seconds(int64_t ns):
    return _ceil_s(ns)


def gcra(int64_t tat, int64_t now, int64_t interval, int64_t tolerance):
    """See ``_bucket_py.gcra``."""
    cdef int64_t new
    if tat < now:
        tat = now
    new = tat + interval
    if new - now <= tolerance:
        return True, new, (tolerance - (new - now)) // interval, new - now, 0
    return False, tat, 0, tat - now, new - tolerance - now


cdef class Limit:
    """A rate limit: ``count`` per ``period`` seconds, ``burst`` at once."""

    def __init__(self, str name, count, period, burst=None):
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

    def __repr__(self):
        return f"Limit({self.name!r}, {self.count}, {self.period!r}, burst={self.burst})"


cdef class Decision:
    """See ``_bucket_py.Decision``."""

    def __init__(self, bint allowed, limit, long long remaining, long long reset,
                 long long retry_after):
        self.allowed = allowed
        self.limit = limit
        self.remaining = remaining
        self.reset = reset
        self.retry_after = retry_after

    def __repr__(self):
        name = self.limit.name if self.limit is not None else None
        return (
            f"Decision(allowed={self.allowed}, limit={name!r}, remaining={self.remaining}, "
            f"reset={self.reset}, retry_after={self.retry_after})"
        )


@cython.final
cdef class Table:
    """See ``_bucket_py.Table``."""

    def __init__(self, mapping, Py_ssize_t nsets):
        cdef unsigned char[::1] view
        if nsets < 1 or nsets & (nsets - 1):
            raise ValueError("nsets must be a power of two")
        if len(mapping) < table_bytes(nsets):
            raise ValueError("mapping too small for the table")
        view = mapping
        self.mapping = mapping
        self.view = view
        self.nsets = nsets
        self.capacity = nsets * _WAYS
        self.mask = <uint64_t>(nsets - 1)
        self.slots = <int64_t *>&view[0]
        self.locks = <int32_t *>(&view[0] + nsets * _WAYS * 16)

    def decide(self, checks, now_ns=None):
        """Allow the request only if every (limit, key) check allows it."""
        cdef Py_ssize_t n, i, j, k, m, base, nlocked = 0, ntouched = 0
        cdef int64_t now, tat, new, interval, tolerance
        cdef uint64_t s, fp
        cdef uint64_t fps[_MAX_CHECKS]
        cdef uint64_t sets[_MAX_CHECKS]
        cdef uint64_t locked[_MAX_CHECKS]
        cdef int64_t intervals[_MAX_CHECKS]
        cdef int64_t tolerances[_MAX_CHECKS]
        cdef PyObject *limits[_MAX_CHECKS]
        cdef Py_ssize_t found[_MAX_CHECKS]
        cdef int64_t news[_MAX_CHECKS]
        cdef int64_t remaining[_MAX_CHECKS]
        cdef int64_t reset[_MAX_CHECKS]
        cdef int64_t retry[_MAX_CHECKS]
        cdef Py_ssize_t touched[_MAX_CHECKS]
        cdef bint ok = True, seen
        cdef int64_t *slots = self.slots
        cdef Limit limit
        cdef Py_hash_t h

        if slots == NULL:
            raise ValueError("the table is closed")
        if type(checks) is not tuple and type(checks) is not list:
            checks = tuple(checks)
        n = len(checks)
        if n < 1 or n > _MAX_CHECKS:
            raise ValueError(f"a decision takes 1 to {_MAX_CHECKS} checks, not {n}")
        for i in range(n):
            item, key = checks[i]
            if type(item) is not Limit:
                raise TypeError(f"expected a Limit, got {type(item).__name__}")
            if not isinstance(key, str):
                raise TypeError(f"a limit key is a str, not {type(key).__name__}")
            limit = <Limit>item
            h = PyObject_Hash(key) ^ limit.seed
            if h == 0:
                h = 1
            fps[i] = <uint64_t>h
            sets[i] = <uint64_t>h & self.mask
            intervals[i] = limit.interval
            tolerances[i] = limit.tolerance
            limits[i] = <PyObject *>item
        now = fastgw_monotonic_ns() if now_ns is None else <int64_t>now_ns

        # sorted unique sets: locks are always taken in one order
        for i in range(n):
            s = sets[i]
            j = nlocked
            seen = False
            while j > 0 and locked[j - 1] >= s:
                if locked[j - 1] == s:
                    seen = True
                    break
                j -= 1
            if seen:
                continue
            for k in range(nlocked, j, -1):
                locked[k] = locked[k - 1]
            locked[j] = s
            nlocked += 1
        for i in range(nlocked):
            fastgw_lock(&self.locks[locked[i]], _pid)

        for i in range(n):
            fp = fps[i]
            tat = 0
            found[i] = -1
            base = <Py_ssize_t>(sets[i] * _WAYS * 2)
            for j in range(base, base + _WAYS * 2, 2):
                if <uint64_t>slots[j] == fp:
                    found[i] = j
                    tat = slots[j + 1]
                    break
            interval = intervals[i]
            tolerance = tolerances[i]
            if tat < now:
                tat = now
            new = tat + interval
            if new - now <= tolerance:
                news[i] = new
                remaining[i] = (tolerance - (new - now)) // interval
                reset[i] = new - now
                retry[i] = 0
            else:
                ok = False
                news[i] = tat
                remaining[i] = 0
                reset[i] = tat - now
                retry[i] = new - tolerance - now

        if ok:
            for i in range(n):
                if found[i] >= 0:
                    touched[ntouched] = found[i]
                    ntouched += 1
            for i in range(n):
                j = found[i]
                if j < 0:
                    for m in range(i):
                        if fps[m] == fps[i]:
                            j = found[m]
                            break
                    if j < 0:
                        base = <Py_ssize_t>(sets[i] * _WAYS * 2)
                        for k in range(base, base + _WAYS * 2, 2):
                            seen = False
                            for m in range(ntouched):
                                if touched[m] == k:
                                    seen = True
                                    break
                            if not seen and (j < 0 or slots[k + 1] < slots[j + 1]):
                                j = k
                        slots[j] = <int64_t>fps[i]
                        touched[ntouched] = j
                        ntouched += 1
                    found[i] = j
                slots[j + 1] = news[i]

        for i in range(nlocked - 1, -1, -1):
            fastgw_unlock(&self.locks[locked[i]])
        return _report(limits, n, ok, remaining, reset, retry)

    def live(self, now_ns=None):
        """How many buckets are not full at ``now_ns`` (the rest are free slots)."""
        cdef int64_t now = fastgw_monotonic_ns() if now_ns is None else <int64_t>now_ns
        cdef Py_ssize_t j, count = 0
        if self.slots == NULL:
            raise ValueError("the table is closed")
        for j in range(0, self.capacity * 2, 2):
            if self.slots[j] != 0 and self.slots[j + 1] > now:
                count += 1
        return count

    def close(self):
        self.slots = NULL
        self.locks = NULL
        self.view = None


cdef Decision _report(PyObject **limits, Py_ssize_t n, bint ok, int64_t *remaining,
                      int64_t *reset, int64_t *retry):
    cdef Py_ssize_t i, pick = 0
    cdef Decision d = Decision.__new__(Decision)
    if ok:
        for i in range(1, n):
            if remaining[i] < remaining[pick] or (
                remaining[i] == remaining[pick] and reset[i] > reset[pick]
            ):
                pick = i
        d.allowed = True
        d.remaining = remaining[pick]
        d.reset = _ceil_s(reset[pick])
        d.retry_after = 0
    else:
        pick = -1
        for i in range(n):
            if retry[i] > 0 and (pick < 0 or retry[i] > retry[pick]):
                pick = i
        d.allowed = False
        d.remaining = 0
        d.reset = _ceil_s(reset[pick])
        d.retry_after = _ceil_s(retry[pick])
    d.limit = <object>limits[pick]
    return d
