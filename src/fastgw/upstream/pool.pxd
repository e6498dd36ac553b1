# Compiles pool.py as C: an instance's pool, taken from and given back per request.
cdef class InstancePool:
    cdef public object _idle, _waiters, host_line, instance, loop, overflowed, server_hostname, ssl
    cdef public double connect_timeout
    cdef public Py_ssize_t max_connections, max_pending, open

    cpdef take_idle(self)
    cpdef release(self, conn)
