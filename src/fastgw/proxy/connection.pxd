# Compiles connection.py as C: the attributes of a client connection typed.
from fastgw.proxy.exchange cimport Exchange


cdef class ClientConnection:
    cdef public Exchange active, last, reading
    cdef public object _headers, _timer_kind, _url, client_cert, client_ip, gateway, loop
    cdef public object parser, queue, scheme, server_uri, transport, tunnel
    cdef public bint _in_head, _running, closing, read_paused, trusted, write_paused
    cdef public double _deadline
    cdef public Py_ssize_t _head_bytes, _header_bytes, _next, _url_len, buffered, requests, tick
