"""Rate limits: GCRA buckets, per host in shared memory or per fleet in Redis.

- ``Limit``: one configured limit (count per period, burst);
- ``SharedBuckets``: ``store: local``, one table for every worker of the host;
- ``RedisBuckets``: ``store: redis``, one bucket per key for every gateway;
- ``Decision``: allowed or not, and what the ``RateLimit-*`` headers report.

``Limit`` and ``Decision`` come from the compiled core when it is built.
See docs/rate-limiting.md.
"""

from __future__ import annotations

from .._core import active
from .redis import RedisBuckets
from .shared import DEFAULT_CAPACITY, SharedBuckets

_core = active("bucket")
Limit = _core.Limit
Decision = _core.Decision
MAX_CHECKS: int = _core.MAX_CHECKS


def limit_from_config(rate_limit) -> Limit:
    """The ``Limit`` of a ``fastgw.config.RateLimit``."""
    return Limit(rate_limit.name, rate_limit.rate.count, rate_limit.rate.period, rate_limit.burst)


__all__ = [
    "DEFAULT_CAPACITY",
    "MAX_CHECKS",
    "Decision",
    "Limit",
    "RedisBuckets",
    "SharedBuckets",
    "limit_from_config",
]
