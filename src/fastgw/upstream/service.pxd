# Compiles service.py as C: instance state read and counted on every request.
from fastgw.upstream.pool cimport InstancePool


cdef class InstanceState:
    cdef public InstancePool pool
    cdef public object name, timing
    cdef public Py_ssize_t ejections, failures, in_flight, probe_streak
    cdef public double ejected_until
    cdef public bint healthy

    cpdef available(self, now)


cdef class ServiceRuntime:
    cdef public object _probes, config, instances, loop, name, pick, ssl
    cdef public Py_ssize_t _next

    cpdef succeeded(self, inst)
