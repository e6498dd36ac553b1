from libc.stdint cimport int32_t, int64_t, uint64_t


cdef class Limit:
    cdef readonly str name
    cdef readonly long long count
    cdef readonly object period
    cdef readonly long long burst
    cdef readonly int64_t interval
    cdef readonly int64_t tolerance
    cdef readonly Py_hash_t seed


cdef class Decision:
    cdef readonly bint allowed
    cdef readonly object limit
    cdef readonly long long remaining
    cdef readonly long long reset
    cdef readonly long long retry_after


cdef class Table:
    cdef readonly object mapping
    cdef readonly Py_ssize_t nsets
    cdef readonly Py_ssize_t capacity
    cdef object view
    cdef int64_t *slots
    cdef int32_t *locks
    cdef uint64_t mask
