# Compiles upstream.py as C: the attributes of an upstream connection typed.
cimport cython

from fastgw.proxy.exchange cimport Exchange


cdef class UpstreamConnection:
    cdef public Exchange exchange, _completed
    cdef public object _drain_waiter, _timer, loop, parser, pool, transport, tunnel
    cdef public bint _response_head_seen, closed, request_sent, reusable, write_paused
    cdef public double _timeout, idle_since, last_read

    @cython.locals(exchange=Exchange, completed=Exchange)
    cpdef data_received(self, data)
    cpdef begin(self, exchange)
    cpdef request_complete(self, response_timeout)
    @cython.locals(exchange=Exchange)
    cpdef _fail(self, error)
    cpdef abandon(self)
    @cython.locals(exchange=Exchange)
    cpdef on_headers_complete(self)
    @cython.locals(exchange=Exchange)
    cpdef on_body(self, body)
    cpdef on_message_complete(self)
    cpdef _finish(self, reusable)
