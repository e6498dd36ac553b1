# Compiles connection.py as C: the attributes of a client connection typed.
cimport cython

from fastgw.proxy.client cimport Client
from fastgw.proxy.exchange cimport Exchange


cdef class ClientConnection(Client):
    cdef public Exchange active, last, reading
    cdef public object _limits, _timer_kind, client_cert, gateway
    cdef public object parser, queue, scheme, transport, tunnel
    cdef public bint _in_head, _running, read_paused
    cdef public double _deadline
    cdef public Py_ssize_t _head_bytes, _next, buffered, requests, tick

    cpdef data_received(self, data)
    cpdef on_message_begin(self)
    @cython.locals(ex=Exchange)
    cpdef on_headers_complete(self)
    @cython.locals(ex=Exchange)
    cpdef on_body(self, body)
    @cython.locals(ex=Exchange)
    cpdef on_message_complete(self)
    @cython.locals(ex=Exchange)
    cpdef _run_next(self)
    cpdef exchange_done(self, ex)
    cpdef abort(self)
    cpdef body_consumed(self, n)
    cpdef write(self, data)
    cpdef close(self)
    cpdef _arm(self, kind, timeout)
    cpdef _disarm(self)
