cdef int check(dict claims, double now, double leeway, str issuer, tuple audiences) except -1
cdef frozenset scopes(dict claims)
