# Compiles headers.py as C: the field list of a header view is a struct member.
cdef class Headers:
    cdef public object fields
