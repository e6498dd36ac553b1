# Compiles upstream.py as C: the attributes of an upstream connection typed.
from fastgw.proxy.exchange cimport Exchange


cdef class UpstreamConnection:
    cdef public Exchange exchange, _completed
    cdef public object _drain_waiter, _headers, _timer, loop, parser, pool, transport, tunnel
    cdef public bint _response_head_seen, closed, request_sent, reusable, write_paused
    cdef public double _timeout, idle_since, last_read
