# Compiles exchange.py as C: the attributes of an exchange typed, and the
# steps of a request's life called as C methods by the connections.
from fastgw.http.request cimport Request
from fastgw.proxy.client cimport Client
from fastgw.upstream.service cimport InstanceState


cdef class Exchange:
    cdef public Request request
    cdef public InstanceState _instance
    cdef public Client connection
    cdef public object _body_waiter, _head, _last_error, _tried, body
    cdef public object extra_headers, length, method, out, preset, route, snapshot
    cdef public object backoff, task, upgrade_rest, upstream
    cdef public bint _finished, _resolved, _sent, body_done, chunked, expect_continue, has_body
    cdef public bint keep_alive, response_started, until_close, websocket
    cdef public double _attempt_began, started_at
    cdef public Py_ssize_t _attempts, body_bytes, framing, response_bytes, status

    cpdef start(self)
    cpdef _check(self, Py_ssize_t i)
    cpdef _attempt(self)
    cpdef _send(self, conn)
    cpdef _resolve(self, outcome)
    cpdef _attempt_done(self)
    cpdef _attempt_over(self, outcome, conn)
    cpdef _give_up(self, error)
    cpdef finish(self)
    cpdef client_gone(self)
    cpdef wake_body(self)
    cpdef respond(self, status, headers, body)
    cpdef _answering(self, status)
    cpdef respond_error(self, status, error=*, headers=*)
    cpdef send_continue(self)
    cpdef request_head(self)
    cpdef upstream_head(self, status, kept, chunked, length)
    cpdef upstream_body(self, chunk)
    cpdef upstream_complete(self, conn)
    cpdef flush(self)
    cpdef upstream_eof(self, conn)
    cpdef upstream_failed(self, error, conn)
