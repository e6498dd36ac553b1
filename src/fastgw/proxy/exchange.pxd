# Compiles exchange.py as C: the attributes of an exchange typed.
cdef class Exchange:
    cdef public object _body_waiter, _head, _instance, _last_error, _tried, body, connection
    cdef public object extra_headers, length, method, out, preset, request, route, snapshot
    cdef public object task, upgrade_rest, upstream
    cdef public bint _finished, _resolved, _sent, body_done, chunked, expect_continue, has_body
    cdef public bint keep_alive, response_started, until_close, websocket
    cdef public double _attempt_began, started_at
    cdef public Py_ssize_t _attempts, body_bytes, framing, response_bytes, status
