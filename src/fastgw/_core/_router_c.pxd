cdef class Node:
    cdef dict literal
    cdef Node any
    cdef tuple regex_tests
    cdef tuple regex_children
    cdef Node dstar
    cdef tuple tail
    cdef tuple ends
    cdef bint has_children
    cdef Py_ssize_t memo_slot


cdef class Element:
    cdef int kind
    cdef str text
    cdef object test
    cdef tuple groups


cdef class SegmentPattern:
    cdef tuple blocks
    cdef str rest
    cdef Py_ssize_t min_gap
    cdef bint anchored
    cdef Py_ssize_t width
    cdef tuple captures
    cdef bint has_vars


cdef class RouteCheck:
    cdef frozenset methods
    cdef frozenset host_names
    cdef tuple host_patterns
    cdef tuple header_names
    cdef tuple header_tests
    cdef tuple host_vars
    cdef tuple tests


cdef class Entry:
    cdef Py_ssize_t ordinal
    cdef Py_ssize_t route
    cdef RouteCheck check
    cdef SegmentPattern pattern
    cdef bint has_vars
    cdef tuple result


cdef class Probe:
    cdef object host
    cdef object header_values
    cdef object request
    cdef object key
    cdef bint key_done
    cdef list labels
    cdef dict cache

    cdef bint host_matches(self, RouteCheck check) except -1
    cdef bint headers_match(self, RouteCheck check) except -1
    cdef int host_variables(self, RouteCheck check, dict out) except -1


cdef class Router:
    cdef Node root
    cdef tuple always
    cdef Py_ssize_t memo_slots
    cdef bint needs_probe

    cdef object _walk(self, str path, Py_ssize_t length)
    cdef dict _variables(self, SegmentPattern pattern, str path, Py_ssize_t length)
