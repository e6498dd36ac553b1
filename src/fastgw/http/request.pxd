# Compiles request.py as C: a request's fields are a struct the exchange reads directly.
cdef class Request:
    cdef public object claims, client_cert, client_ip, context, forwarded_for, headers, host, identity
    cdef public object method, path, path_vars, query, request_id_bytes, route_id, scheme
    cdef public object scopes, sent, version
