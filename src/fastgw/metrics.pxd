# Compiles metrics.py as C: what the request path counts into, typed.
cimport cython


cdef class Series:
    cdef public tuple bounds
    cdef public list counts
    cdef public double total

    @cython.locals(n=Py_ssize_t, i=Py_ssize_t)
    cpdef observe(self, double value)


cdef class RouteStats:
    cdef public dict answered
    cdef public Series durations
    cdef public object route

    @cython.locals(key=Py_ssize_t)
    cpdef count(self, Py_ssize_t method, Py_ssize_t status, double elapsed)
