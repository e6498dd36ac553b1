"""``store: local``: buckets for one host, shared by all its workers.

The table lives in an anonymous shared mapping made once, before the workers
fork, so every worker reads and writes the same buckets and a limit holds for
the host as a whole. With one process the same table serves as is: a
decision costs a few hundred nanoseconds either way (``bench/bench_ratelimit.py``).
"""

from __future__ import annotations

import mmap

from .._core import active

#: slots in a default table: 16 MiB of shared memory, touched only as used
DEFAULT_CAPACITY = 1 << 20


class SharedBuckets:
    """A fixed-size table of buckets in shared memory.

    ``create`` it in the process that forks the workers; each worker then
    calls ``decide``. ``capacity`` bounds memory whatever the number of keys:
    idle buckets are reused first, and when a set is full of live buckets the
    one closest to full is recycled (see ``fastgw._core._bucket_py``).
    """

    __slots__ = ("capacity", "decide", "implementation", "nbytes", "table")

    def __init__(self, table, implementation) -> None:
        self.table = table
        self.implementation = implementation
        self.capacity: int = table.capacity
        self.nbytes: int = len(table.mapping)
        #: ``decide(checks, now_ns=None) -> Decision``: ``checks`` is a sequence of
        #: ``(Limit, key)``; allowed only if every check allows, and a denial
        #: spends nothing in any of them. ``now_ns`` defaults to the monotonic clock.
        self.decide = table.decide

    @classmethod
    def create(cls, capacity: int = DEFAULT_CAPACITY, *, implementation=None) -> SharedBuckets:
        """A table of at least ``capacity`` slots (rounded up to a power of two)."""
        impl = implementation if implementation is not None else active("bucket")
        if capacity < 1:
            raise ValueError("capacity must be positive")
        nsets = 1 << (-(-capacity // impl.WAYS) - 1).bit_length()
        mapping = mmap.mmap(-1, impl.table_bytes(nsets))
        return cls(impl.Table(mapping, nsets), impl)

    def live(self, now_ns: int | None = None) -> int:
        """Buckets in use (not full) at ``now_ns``."""
        return self.table.live(now_ns)

    def close(self) -> None:
        self.table.close()
        self.table.mapping.close()

    def __repr__(self) -> str:
        return f"<SharedBuckets capacity={self.capacity} nbytes={self.nbytes}>"
