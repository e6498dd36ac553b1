cdef class RequestHead:
    cdef public object fields
    cdef public object host
    cdef public object te
    cdef public object length
    cdef public object connection
    cdef public object expect
    cdef public object upgrade
    cdef public object request_id
    cdef public object forwarded
    cdef public object error


cdef class RequestIds:
    cdef object prefix_value
    cdef object count_base  # the count when last set; the count is count_base + calls
    cdef unsigned long long calls
    cdef bint fast  # buf holds the prefix and (count & 0xFFFFFFFFFF) in hex
    cdef Py_ssize_t size
    cdef char buf[64]
    cdef int _rebuild(self) except -1
    cdef bytes _next(self)


cdef object request(object raw)
cdef object response(object raw, object upgrade)
cdef bytes encode(object fields)
