"""The request path: a client connection, the exchange of each request, an
upstream connection. ``connection`` parses what clients send (HTTP/1.1),
``exchange`` is one request's life from route to response, ``upstream``
speaks to an instance; the pools, balancing and health checks they draw on
are in ``fastgw.upstream``."""

from .exchange import Exchange, Rejection
from .upstream import UpstreamError

__all__ = ["Exchange", "Rejection", "UpstreamError"]
