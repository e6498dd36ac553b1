# Compiles client.py as C: the face of a connection an exchange calls directly.
cdef class Client:
    cdef public object access_log, client_ip, forwarded, loop, request_ids, server_uri
    cdef public bint closing, draining, trusted, write_paused

    cpdef write(self, data)
    cpdef exchange_done(self, ex)
    cpdef body_consumed(self, n)
    cpdef abort(self)
