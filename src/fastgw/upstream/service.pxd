# Compiles service.py as C: instance state read and counted on every request.
from fastgw.upstream.pool cimport InstancePool


cdef class InstanceState:
    cdef public InstancePool pool
    cdef public object name, readmission, timing
    cdef public Py_ssize_t ejections, failures, in_flight, probe_streak
    cdef public bint ejected, healthy, takes_traffic


cdef class ServiceRuntime:
    cdef public object _addresses, _ejections, _full, _names, _probes, _resolver, _timing
    cdef public object _unresolved, config, instances, loop, name, outlier, pick, resolve, ssl
    cdef public Py_ssize_t _next
    cdef public bint count_5xx

    cpdef answered(self, inst, Py_ssize_t status)
    cpdef failed(self, inst, reason)
