"""Compiled twin of ``_jws_py``: the token's bytes checked and base64url-decoded
in one pass, and the JSON fast path's counts taken in C. See ``_jws_py`` for
the rules and for why the fast path answers what the parser of record would."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Contains, PyDict_GetItem
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_CheckExact

from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from orjson import loads as _loads


cdef extern from "Python.h":
    # On borrowed references, for the walk over a value orjson built.
    int PyDict_CheckExact(PyObject* value)
    int PyList_CheckExact(PyObject* value)
    int PyFloat_CheckExact(PyObject* value)
    PyObject* PyList_GET_ITEM(PyObject* value, Py_ssize_t i)
    Py_ssize_t PyList_GET_SIZE(PyObject* value)
    int PyDict_Next(PyObject* value, Py_ssize_t* position, PyObject** key, PyObject** item)
    Py_ssize_t PyDict_GET_SIZE(PyObject* value)
    void PyObject_GC_UnTrack(void* value)


cdef enum:
    C_MAX_TOKEN = 8 * 1024
    C_MAX_CONTAINERS = 64
    _INVALID = 0xFF

MAX_TOKEN = C_MAX_TOKEN
MAX_CONTAINERS = C_MAX_CONTAINERS
UNDERSTOOD_CRIT = frozenset()

cdef frozenset _UNDERSTOOD_CRIT = UNDERSTOOD_CRIT
cdef frozenset _NESTED = frozenset({"jwt", "application/jwt"})

# base64url value of each byte, _INVALID outside the alphabet
cdef unsigned char _VALUE[256]


cdef void _fill_values() noexcept:
    cdef bytes alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    cdef const unsigned char* a = <const unsigned char*>PyBytes_AS_STRING(alphabet)
    cdef int i
    for i in range(256):
        _VALUE[i] = _INVALID
    for i in range(64):
        _VALUE[a[i]] = <unsigned char>i


_fill_values()


cdef object _decode(const unsigned char* s, Py_ssize_t n):
    """The bytes of the base64url segment S[:N], alphabet already checked; None
    for an impossible length or non-canonical trailing bits."""
    cdef Py_ssize_t tail = n & 3, full = n - tail, i, j = 0
    cdef unsigned int v
    if tail == 1:
        return None
    if (tail == 2 and _VALUE[s[n - 1]] & 0x0F) or (tail == 3 and _VALUE[s[n - 1]] & 0x03):
        return None
    cdef object out = PyBytes_FromStringAndSize(NULL, (full >> 2) * 3 + (tail - 1 if tail else 0))
    cdef unsigned char* o = <unsigned char*>PyBytes_AS_STRING(out)
    for i in range(0, full, 4):
        v = (<unsigned int>_VALUE[s[i]] << 18) | (<unsigned int>_VALUE[s[i + 1]] << 12) \
            | (<unsigned int>_VALUE[s[i + 2]] << 6) | _VALUE[s[i + 3]]
        o[j] = <unsigned char>(v >> 16)
        o[j + 1] = <unsigned char>(v >> 8)
        o[j + 2] = <unsigned char>v
        j += 3
    if tail:
        v = (<unsigned int>_VALUE[s[full]] << 18) | (<unsigned int>_VALUE[s[full + 1]] << 12)
        o[j] = <unsigned char>(v >> 16)
        if tail == 3:
            v |= <unsigned int>_VALUE[s[full + 2]] << 6
            o[j + 1] = <unsigned char>(v >> 8)
    return out


def b64url(data):
    if type(data) is not bytes:
        return None
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), i
    cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(data)
    for i in range(n):
        if _VALUE[s[i]] == _INVALID:
            return None
    return _decode(s, n)


cdef object _split(bytes token):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(token), i, first = -1, second = -1
    cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(token)
    cdef unsigned char c
    if n > C_MAX_TOKEN:
        return None
    for i in range(n):
        c = s[i]
        if _VALUE[c] == _INVALID:
            if c != c'.' or second >= 0:
                return None
            if first < 0:
                first = i
            else:
                second = i
    if second < 0 or first == 0 or second == first + 1:
        return None
    header = _decode(s, first)
    if header is None:
        return None
    claims = _decode(s + first + 1, second - first - 1)
    if claims is None:
        return None
    signature = _decode(s + second + 1, n - second - 1)
    if signature is None:
        return None
    return header, claims, PyBytes_FromStringAndSize(<const char*>s, second), signature


def split(token):
    if type(token) is not bytes:
        return None
    return _split(<bytes>token)


cdef Py_ssize_t _entries(PyObject* value) noexcept:
    """Entries of every object in VALUE (a dict or a list); -1 if it holds a float.

    Each container is taken off the cyclic collector's lists on the way: a
    JSON tree holds no cycle, and a verified token's claims live in the cache
    for as long as it is used, where every full collection would otherwise
    walk them again. (A dict starts being tracked again should a container
    ever be put into it.)"""
    cdef Py_ssize_t count = 0, position = 0, i, inner
    cdef PyObject* key
    cdef PyObject* item
    PyObject_GC_UnTrack(value)
    if PyDict_CheckExact(value):
        count = PyDict_GET_SIZE(value)
        while PyDict_Next(value, &position, &key, &item):
            if PyDict_CheckExact(item) or PyList_CheckExact(item):
                inner = _entries(item)
                if inner < 0:
                    return -1
                count += inner
            elif PyFloat_CheckExact(item):
                return -1
    else:
        for i in range(PyList_GET_SIZE(value)):
            item = PyList_GET_ITEM(value, i)
            if PyDict_CheckExact(item) or PyList_CheckExact(item):
                inner = _entries(item)
                if inner < 0:
                    return -1
                count += inner
            elif PyFloat_CheckExact(item):
                return -1
    return count


cdef inline bint _invisible(unsigned char c) noexcept:
    return c <= 0x20 or c >= 0x7F


cdef bint _vouch(bytes data, object value) noexcept:
    """Whether the fast path's reading VALUE of DATA is the parser of record's."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), i, j, containers = 0, names = 0
    cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef unsigned char c
    for i in range(n):
        c = s[i]
        if c == c'"':
            j = i + 1
            while j < n and _invisible(s[j]):
                j += 1
            if j < n and s[j] == c':':
                names += 1
        elif c == c'{' or c == c'[':
            containers += 1
    if containers > C_MAX_CONTAINERS:
        return False
    return _entries(<PyObject*>value) == names


cdef object _json_object(bytes data, object strict):
    try:
        value = _loads(data)
    except ValueError:
        return strict(data)
    if type(value) is dict and _vouch(data, value):
        return value
    return strict(data)


def json_object(bytes data not None, strict):
    return _json_object(data, strict)


cdef bint _header_ok(dict header) except -1:
    cdef PyObject* item = PyDict_GetItem(header, "alg")
    if item == NULL or not PyUnicode_CheckExact(<object>item):
        return False
    if PyDict_Contains(header, "enc") or PyDict_Contains(header, "b64"):
        return False
    item = PyDict_GetItem(header, "kid")
    if item != NULL and not PyUnicode_CheckExact(<object>item):
        return False
    item = PyDict_GetItem(header, "cty")
    if item != NULL:
        cty = <object>item
        if not PyUnicode_CheckExact(cty) or (<str>cty).lower() in _NESTED:
            return False
    item = PyDict_GetItem(header, "crit")
    if item != NULL:
        crit = <object>item
        if type(crit) is not list or not crit:
            return False
        for name in <list>crit:
            if (not PyUnicode_CheckExact(name) or name not in _UNDERSTOOD_CRIT
                    or not PyDict_Contains(header, name)):
                return False
    return True


def header_ok(dict header not None):
    return _header_ok(header)


def parse(token, strict):
    if type(token) is not bytes:
        return None
    parts = _split(<bytes>token)
    if parts is None:
        return None
    header_bytes, claims_bytes, signing_input, signature = <tuple>parts
    header = _json_object(header_bytes, strict)
    if header is None or not _header_ok(header):
        return None
    claims = _json_object(claims_bytes, strict)
    if claims is None:
        return None
    cdef PyObject* kid = PyDict_GetItem(header, "kid")
    return (<dict>header)["alg"], None if kid == NULL else <object>kid, header, claims, \
        signing_input, signature


cdef Py_ssize_t _integer(const unsigned char* s, Py_ssize_t n, unsigned char* out) noexcept:
    """The DER INTEGER of the unsigned big-endian number S[:N] into OUT; its length."""
    cdef Py_ssize_t start = 0, size, i
    while start < n and s[start] == 0:
        start += 1
    size = n - start
    out[0] = 0x02
    if size == 0:
        out[1] = 1
        out[2] = 0
        return 3
    if s[start] & 0x80:
        out[1] = <unsigned char>(size + 1)
        out[2] = 0
        for i in range(size):
            out[3 + i] = s[start + i]
        return size + 3
    out[1] = <unsigned char>size
    for i in range(size):
        out[2 + i] = s[start + i]
    return size + 2


def der_signature(bytes raw not None):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw), size = n // 2, length
    cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(raw)
    cdef unsigned char out[128]
    if n > 120:  # a long-form length: leave it to the library
        return encode_dss_signature(int.from_bytes(raw[:size], "big"),
                                    int.from_bytes(raw[size:], "big"))
    length = _integer(s, size, out + 2)
    length += _integer(s + size, n - size, out + 2 + length)
    out[0] = 0x30
    out[1] = <unsigned char>length
    return PyBytes_FromStringAndSize(<const char*>out, length + 2)
