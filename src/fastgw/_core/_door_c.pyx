"""Compiled twin of ``_door_py``: the bearer token read from the raw header
bytes and the whole cached path in one C call. See ``_door_py`` for the rules."""

from collections import OrderedDict

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Contains, PyDict_GetItem, PyDict_Size
from cpython.object cimport PyObject
from libc.string cimport memcmp


cdef extern from "Python.h":
    ctypedef struct PyTypeObject:
        Py_ssize_t tp_dictoffset
    PyTypeObject* Py_TYPE(PyObject* value)
    int PyTuple_Check(PyObject* value)
    void PyObject_GC_UnTrack(void* value)


cdef enum:
    C_OK = 0
    C_MISSING_TOKEN = 1
    C_MALFORMED_TOKEN = 2
    C_TWO_CREDENTIALS = 12
    C_MAX_TOKEN = 8 * 1024

OK = C_OK
MISSING_TOKEN = C_MISSING_TOKEN
MALFORMED_TOKEN = C_MALFORMED_TOKEN
TWO_CREDENTIALS = C_TWO_CREDENTIALS
MAX_TOKEN = C_MAX_TOKEN

cdef double _INF = float("inf")


cdef bint _has_access_token(str query) except -1:
    if "access_token" not in query:
        return False
    for part in query.split("&"):
        if part.split("=", 1)[0] == "access_token":
            return True
    return False


cdef inline bint _blank(unsigned char c) noexcept:
    return c == 32 or c == 9


cdef object _bearer(list fields, str query, int* code):
    """The bearer token as bytes; None with CODE set when there is none."""
    cdef bytes value = None
    cdef bytes name
    cdef tuple field
    cdef Py_ssize_t count = 0
    for item in fields:
        field = <tuple?>item
        name = <bytes?>field[0]
        if PyBytes_GET_SIZE(name) == 13 and memcmp(PyBytes_AS_STRING(name), b"authorization", 13) == 0:
            count += 1
            value = <bytes?>field[2]
    if count == 0:
        code[0] = C_MISSING_TOKEN
        return None
    if count > 1 or (query and _has_access_token(query)):
        code[0] = C_TWO_CREDENTIALS
        return None
    cdef Py_ssize_t end = PyBytes_GET_SIZE(value)
    cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(value)
    # "bearer " in any case: OR-ing 0x20 maps exactly the two cases of a letter
    # onto its lower case, and only them.
    if (end < 7 or (s[0] | 0x20) != c'b' or (s[1] | 0x20) != c'e' or (s[2] | 0x20) != c'a'
            or (s[3] | 0x20) != c'r' or (s[4] | 0x20) != c'e' or (s[5] | 0x20) != c'r'
            or s[6] != c' '):
        code[0] = C_MISSING_TOKEN
        return None
    cdef Py_ssize_t start = 7, i
    while start < end and _blank(s[start]):
        start += 1
    while end > start and _blank(s[end - 1]):
        end -= 1
    if start == end or end - start > C_MAX_TOKEN:
        code[0] = C_MALFORMED_TOKEN
        return None
    for i in range(start, end):
        if s[i] >= 0x80:
            code[0] = C_MALFORMED_TOKEN
            return None
    code[0] = C_OK
    return PyBytes_FromStringAndSize(<const char*>s + start, end - start)


def bearer(list fields not None, str query not None):
    cdef int code = C_OK
    token = _bearer(fields, query, &code)
    return code, token


cdef class CachedToken:
    cdef readonly object result, provider, key, alg
    cdef public object keyset
    cdef readonly dict claims
    cdef readonly double expires, starts, leeway
    cdef readonly bint bound
    cdef public object scopes, fields
    cdef public bint used

    def __init__(self, result, provider, key, str alg, keyset):
        cdef dict claims = result.claims
        cdef double leeway = float(provider.leeway)
        if PyTuple_Check(<PyObject*>result) and Py_TYPE(<PyObject*>result).tp_dictoffset == 0:
            # The verdict, a named tuple of a code, the claims and strings, lives
            # as long as the entry: no cycle runs through it, so the cyclic
            # collector need not walk it on every full collection.
            PyObject_GC_UnTrack(<PyObject*>result)
        self.result = result
        self.claims = claims
        self.provider = provider
        self.key = key
        self.alg = alg
        self.keyset = keyset
        self.leeway = leeway
        self.expires = float(claims["exp"]) + leeway
        cdef double starts = -_INF
        for name in ("nbf", "iat"):
            if name in claims:
                starts = max(starts, <double>float(claims[name]))
        self.starts = starts
        self.bound = "cnf" in claims
        self.scopes = None
        self.fields = None
        self.used = False

    cdef inline bint _fresh(self, double now) noexcept:
        return not (now >= self.expires) and not (self.starts > now + self.leeway)

    def fresh(self, double now):
        return self._fresh(now)


cdef class TokenCache:
    cdef readonly object entries
    cdef readonly Py_ssize_t size
    cdef object _popitem

    def __init__(self, Py_ssize_t size):
        self.entries = OrderedDict()
        self.size = max(0, size)
        self._popitem = self.entries.popitem

    def __len__(self):
        return len(self.entries)

    def get(self, bytes token not None):
        cdef PyObject* item = PyDict_GetItem(self.entries, token)
        if item == NULL:
            return None
        (<CachedToken>item).used = True
        return <CachedToken>item

    def peek(self, bytes token not None):
        cdef PyObject* item = PyDict_GetItem(self.entries, token)
        if item == NULL:
            return None
        return <CachedToken>item

    def put(self, bytes token not None, CachedToken entry not None):
        cdef CachedToken old
        if not self.size:
            return
        entries = self.entries
        # An OrderedDict keeps its entries in its dict: membership is a dict lookup.
        if PyDict_Contains(entries, token):
            del entries[token]
        popitem = self._popitem
        while PyDict_Size(entries) >= self.size:
            oldest, old = popitem(False)  # the oldest
            if old.used:  # a second chance, at the back
                old.used = False
                entries[oldest] = old
        entries[token] = entry

    def pop(self, bytes token not None):
        self.entries.pop(token, None)

    def clear(self):
        self.entries.clear()


def admit(TokenCache cache not None, request, double now):
    cdef list fields = request.headers.fields
    cdef int code = C_OK
    token = _bearer(fields, request.query, &code)
    if token is None:
        return code, None
    cdef PyObject* item = PyDict_GetItem(cache.entries, token)
    if item == NULL:
        return C_OK, token
    cdef CachedToken entry = <CachedToken>item
    if entry.fields is None or entry.bound or not entry._fresh(now):
        return C_OK, token
    if entry.provider.keyset_getter() is not entry.keyset:
        return C_OK, token
    entry.used = True
    request.claims = entry.claims
    request.identity = entry.result
    request.scopes = entry.scopes
    fields.extend(entry.fields)
    return None
