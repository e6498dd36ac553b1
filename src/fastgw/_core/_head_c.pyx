"""Compiled twin of ``_head_py``: the header scans as C loops over the list
httptools filled, names matched against a table of the usual ones by length,
then bytes, without lower-casing them first. See ``_head_py`` for the rules.

A table name's lower-cased form is the table's own bytes object, shared by
every request; other names are lower-cased into new bytes only when they have
an upper-case letter. Anything other than a list of ``bytes`` pairs (or
``bytes`` triples for ``encode_fields``) is left to the Python twin, found
before any work is visible, so odd inputs fail or pass exactly as there.
"""

import os

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.list cimport PyList_CheckExact, PyList_GET_SIZE
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_DecodeLatin1
from libc.string cimport memcpy

from . import _head_py as _py
from ._head_py import (
    AMBIGUOUS_FRAMING,
    BAD_HOST,
    BAD_TRANSFER_ENCODING,
    DUPLICATE_HOST,
    HOP_BY_HOP,
    MISSING_HOST,
    REQUEST_SPECIAL,
    RESPONSE_SPECIAL,
)


cdef extern from "Python.h":
    # Borrowed-pointer forms: the loops look at items without owning them.
    PyObject* _list_item "PyList_GET_ITEM"(object lst, Py_ssize_t i)
    bint _is_tuple "PyTuple_CheckExact"(PyObject* o)
    Py_ssize_t _tuple_size "PyTuple_GET_SIZE"(PyObject* o)
    PyObject* _tuple_item "PyTuple_GET_ITEM"(PyObject* o, Py_ssize_t i)
    bint _is_bytes "PyBytes_CheckExact"(PyObject* o)
    Py_ssize_t _size "PyBytes_GET_SIZE"(PyObject* o)
    char* _data "PyBytes_AS_STRING"(PyObject* o)


# What a name is to scan_request ...
cdef enum:
    Q_PLAIN = 0
    Q_HOST = 1
    Q_TE = 2
    Q_LENGTH = 3
    Q_CONNECTION = 4
    Q_FORWARDED = 5
    Q_EXPECT = 6
    Q_UPGRADE = 7
    Q_REQUEST_ID = 8
    Q_DROPPED = 9

# ... and to scan_response.
cdef enum:
    S_PLAIN = 0
    S_TE = 1
    S_LENGTH = 2
    S_CONNECTION = 3
    S_HOP = 4

cdef enum:
    NAMES_MAX = 192
    LONGEST = 48
    ID_MAX = 128
    MASK_DIGITS = 10  # the count in hex, 40 bits
    BUF_MAX = 64

# Names common enough to share one lower-cased object; the special names of
# both scans are added from the Python twin's sets.
_COMMON = (
    # requests
    b"accept", b"accept-charset", b"accept-encoding", b"accept-language", b"authorization",
    b"baggage", b"cache-control", b"content-type", b"cookie", b"dnt", b"if-match",
    b"if-modified-since", b"if-none-match", b"if-range", b"if-unmodified-since", b"origin",
    b"pragma", b"priority", b"range", b"referer", b"sec-ch-ua", b"sec-ch-ua-mobile",
    b"sec-ch-ua-platform", b"sec-fetch-dest", b"sec-fetch-mode", b"sec-fetch-site",
    b"sec-fetch-user", b"sec-websocket-extensions", b"sec-websocket-key",
    b"sec-websocket-protocol", b"sec-websocket-version", b"traceparent", b"tracestate",
    b"upgrade-insecure-requests", b"user-agent", b"x-api-key", b"x-correlation-id",
    b"x-csrf-token", b"x-real-ip", b"x-requested-with",
    # responses
    b"accept-ranges", b"access-control-allow-credentials", b"access-control-allow-headers",
    b"access-control-allow-methods", b"access-control-allow-origin",
    b"access-control-expose-headers", b"access-control-max-age", b"age", b"allow",
    b"alt-svc", b"content-disposition", b"content-encoding", b"content-language",
    b"content-location", b"content-range", b"content-security-policy", b"date", b"etag",
    b"expires", b"last-modified", b"link", b"location", b"referrer-policy", b"retry-after",
    b"sec-websocket-accept", b"server", b"set-cookie", b"strict-transport-security",
    b"vary", b"via", b"www-authenticate", b"x-content-type-options", b"x-frame-options",
    b"x-powered-by", b"x-xss-protection",
    # a Connection token
    b"close",
)

_REQUEST_CODES = {
    b"host": Q_HOST, b"transfer-encoding": Q_TE, b"content-length": Q_LENGTH,
    b"connection": Q_CONNECTION, b"x-forwarded-for": Q_FORWARDED, b"expect": Q_EXPECT,
    b"upgrade": Q_UPGRADE, b"x-request-id": Q_REQUEST_ID,
}
_RESPONSE_CODES = {
    b"transfer-encoding": S_TE, b"content-length": S_LENGTH, b"connection": S_CONNECTION,
}

cdef frozenset _PERSISTENCE = _py._PERSISTENCE
cdef object _EMPTY = b""


cdef struct Name:
    const unsigned char* text
    PyObject* obj  # the lower-case bytes, owned by _KEEP
    int request
    int response


cdef Name _names[NAMES_MAX]
cdef int _start[LONGEST + 2]  # names of length n are _names[_start[n]:_start[n + 1]]
cdef tuple _KEEP
cdef int _close = -1  # the table indexes of the persistence tokens
cdef int _keep_alive = -1


cdef int _build() except -1:
    global _KEEP, _close, _keep_alive
    names = sorted(set(REQUEST_SPECIAL) | set(RESPONSE_SPECIAL) | set(_COMMON),
                   key=lambda n: (len(n), n))
    if len(names) > NAMES_MAX:
        raise RuntimeError("fastgw._core._head_c: name table too small")
    _KEEP = tuple(names)
    cdef int i, n
    cdef bytes name
    for i, name in enumerate(_KEEP):
        if not 0 < len(name) <= LONGEST or name.lower() != name or not name.isascii():
            raise RuntimeError(f"fastgw._core._head_c: bad table name {name!r}")
        hash(name)  # cached for the set lookups
        if name == b"close":
            _close = i
        elif name == b"keep-alive":
            _keep_alive = i
        _names[i].text = <const unsigned char*>PyBytes_AS_STRING(name)
        _names[i].obj = <PyObject*>name
        if name in _REQUEST_CODES:
            _names[i].request = _REQUEST_CODES[name]
        else:
            _names[i].request = Q_DROPPED if name in REQUEST_SPECIAL else Q_PLAIN
        if name in _RESPONSE_CODES:
            _names[i].response = _RESPONSE_CODES[name]
        else:
            _names[i].response = S_HOP if name in RESPONSE_SPECIAL else S_PLAIN
    i = 0
    for n in range(LONGEST + 2):
        while i < len(_KEEP) and len(_KEEP[i]) < n:
            i += 1
        _start[n] = i
    return 0


_build()


# -- bytes --------------------------------------------------------------------

cdef inline unsigned char _low(unsigned char c) noexcept nogil:
    # bytes.lower(): ASCII letters only
    return c + 32 if <unsigned char>(c - 65) < 26 else c


cdef inline bint _space(unsigned char c) noexcept nogil:
    # bytes.strip(): ASCII whitespace
    return c == 32 or <unsigned char>(c - 9) < 5


cdef inline bint _same(const unsigned char* s, const unsigned char* low,
                       Py_ssize_t n) noexcept nogil:
    """S lower-cased is LOW (lower case already)."""
    cdef Py_ssize_t k
    for k in range(n):
        if _low(s[k]) != low[k]:
            return False
    return True


cdef inline int _find(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    """The table index of S lower-cased, or -1."""
    if n > LONGEST:
        return -1
    cdef int i = _start[n]
    cdef int end = _start[n + 1]
    while i < end:
        if _same(s, _names[i].text, n):
            return i
        i += 1
    return -1


cdef inline object _lowered(const unsigned char* s, Py_ssize_t n):
    """A lower-cased copy of S, written before anything else can see it."""
    cdef object out = PyBytes_FromStringAndSize(NULL, n)
    cdef unsigned char* d = <unsigned char*>PyBytes_AS_STRING(out)
    cdef Py_ssize_t k
    for k in range(n):
        d[k] = _low(s[k])
    return out


cdef inline object _lower(PyObject* name, const unsigned char* s, Py_ssize_t n):
    """NAME.lower() for a name not in the table: NAME itself when it has no upper case."""
    cdef Py_ssize_t k
    for k in range(n):
        if <unsigned char>(s[k] - 65) < 26:
            return _lowered(s, n)
    return <object>name


cdef bint _listed(PyObject* value, set into) except -1:
    """Adds the names in a Connection value, ``t.strip().lower()`` for each
    comma-separated t, to INTO, or only looks at them when INTO is None;
    whether one of them is more than close, keep-alive or empty."""
    cdef const unsigned char* s = <const unsigned char*>_data(value)
    cdef Py_ssize_t n = _size(value), start = 0, end, a, b
    cdef int k
    cdef bint named = False
    while True:
        end = start
        while end < n and s[end] != c',':
            end += 1
        a = start
        b = end
        while a < b and _space(s[a]):
            a += 1
        while b > a and _space(s[b - 1]):
            b -= 1
        k = _find(s + a, b - a)
        if k >= 0:
            named = named or (k != _close and k != _keep_alive)
            if into is not None:
                into.add(<object>_names[k].obj)
        else:
            named = named or b > a
            if into is not None:
                into.add(_lowered(s + a, b - a))
        if end == n:
            return named
        start = end + 1


cdef inline object _length(PyObject* value):
    """int(VALUE): plain digits in C, anything else as int() takes it."""
    cdef const unsigned char* s = <const unsigned char*>_data(value)
    cdef Py_ssize_t n = _size(value), k
    cdef long long v = 0
    if 0 < n <= 18:
        for k in range(n):
            if <unsigned char>(s[k] - 48) >= 10:
                return int(<object>value)
            v = v * 10 + (s[k] - 48)
        return v
    return int(<object>value)


cdef inline bint _good_id(PyObject* value) noexcept:
    """[A-Za-z0-9._:-]{1,128}"""
    cdef const unsigned char* s = <const unsigned char*>_data(value)
    cdef Py_ssize_t n = _size(value), k
    cdef unsigned char c
    if n < 1 or n > ID_MAX:
        return False
    for k in range(n):
        c = s[k]
        if not (<unsigned char>((c | 32) - 97) < 26 or <unsigned char>(c - 48) < 10
                or c == c'.' or c == c'_' or c == c':' or c == c'-'):
            return False
    return True


cdef inline bint _bad_host(PyObject* value) noexcept:
    """[ \\t/\\\\@] anywhere"""
    cdef const unsigned char* s = <const unsigned char*>_data(value)
    cdef Py_ssize_t n = _size(value), k
    cdef unsigned char c
    for k in range(n):
        c = s[k]
        if c == 32 or c == 9 or c == c'/' or c == c'\\' or c == c'@':
            return True
    return False


cdef inline bint _chunked(PyObject* value) noexcept:
    """value.strip().lower() == b"chunked" """
    cdef const unsigned char* s = <const unsigned char*>_data(value)
    cdef Py_ssize_t a = 0, b = _size(value)
    while a < b and _space(s[a]):
        a += 1
    while b > a and _space(s[b - 1]):
        b -= 1
    return b - a == 7 and _same(s + a, <const unsigned char*>b"chunked", 7)


cdef inline bint _pair(PyObject* item, PyObject** name, PyObject** value) noexcept:
    """ITEM is a (bytes, bytes) tuple: its parts, borrowed."""
    if not _is_tuple(item) or _tuple_size(item) != 2:
        return False
    name[0] = _tuple_item(item, 0)
    value[0] = _tuple_item(item, 1)
    return _is_bytes(name[0]) and _is_bytes(value[0])


cdef list _without(list fields, set listed):
    cdef list out = []
    for field in fields:
        if (<tuple>field)[0] not in listed:
            out.append(field)
    return out


# -- the request --------------------------------------------------------------

cdef class RequestHead:
    """What ``scan_request`` found in a request's fields."""

    def __init__(self):
        self.fields = []
        self.host = b""
        self.te = None
        self.length = None
        self.connection = None
        self.expect = None
        self.upgrade = None
        self.request_id = None
        self.forwarded = []
        self.error = None


cdef RequestHead _adopt(other):
    cdef RequestHead head = RequestHead.__new__(RequestHead)
    head.fields = other.fields
    head.host = other.host
    head.te = other.te
    head.length = other.length
    head.connection = other.connection
    head.expect = other.expect
    head.upgrade = other.upgrade
    head.request_id = other.request_id
    head.forwarded = other.forwarded
    head.error = other.error
    return head


cdef RequestHead _request(list raw):
    """The scan, or None when RAW holds something other than (bytes, bytes) pairs."""
    cdef list fields = []
    cdef list forwarded = []
    cdef object host = _EMPTY
    cdef object te = None, length = None, expect = None, upgrade = None, request_id = None
    cdef set connection = None
    cdef Py_ssize_t i, n, hosts = 0
    cdef PyObject* name
    cdef PyObject* value
    cdef const unsigned char* s
    cdef int k, code
    cdef bint twice = False, named = False
    for i in range(PyList_GET_SIZE(raw)):
        if not _pair(_list_item(raw, i), &name, &value):
            return None
        s = <const unsigned char*>_data(name)
        n = _size(name)
        k = _find(s, n)
        if k < 0:
            fields.append((_lower(name, s, n), <object>name, <object>value))
            continue
        code = _names[k].request
        if code == Q_PLAIN:
            fields.append((<object>_names[k].obj, <object>name, <object>value))
        elif code == Q_HOST:
            hosts += 1
            host = <object>value
        elif code == Q_TE:
            if te is not None:
                twice = True
                break
            te = <object>value
        elif code == Q_LENGTH:
            length = _length(value)
        elif code == Q_CONNECTION:
            if connection is None:
                connection = set()
            named |= _listed(value, connection)
        elif code == Q_FORWARDED:
            forwarded.append(PyUnicode_DecodeLatin1(_data(value), _size(value), NULL))
        elif code == Q_EXPECT:
            expect = <object>value
        elif code == Q_UPGRADE:
            upgrade = <object>value
        elif code == Q_REQUEST_ID and request_id is None and _good_id(value):
            request_id = <object>value
    cdef RequestHead head = RequestHead.__new__(RequestHead)
    head.fields = fields
    head.host = host
    head.te = te
    head.length = length
    head.connection = connection
    head.expect = expect
    head.upgrade = upgrade
    head.request_id = request_id
    head.forwarded = forwarded
    head.error = None
    if twice:
        head.error = BAD_TRANSFER_ENCODING
    elif hosts != 1:
        head.error = MISSING_HOST if hosts == 0 else DUPLICATE_HOST
    elif _size(<PyObject*>host) == 0 or _bad_host(<PyObject*>host):
        head.error = BAD_HOST
    elif named:  # else nothing is left once close and keep-alive are taken out
        head.fields = _without(fields, connection - _PERSISTENCE)
    return head


cdef object request(object raw):
    cdef RequestHead head = None
    if PyList_CheckExact(raw):
        head = _request(<list>raw)
    return head if head is not None else _adopt(_py.scan_request(raw))


def scan_request(raw):
    return request(raw)


# -- the response -------------------------------------------------------------

cdef object _response(list raw, bint upgrade):
    """The scan, or None when RAW holds something other than (bytes, bytes) pairs."""
    cdef list kept = []
    cdef bint chunked = False
    cdef object length = None
    cdef set listed = None
    cdef Py_ssize_t i, n
    cdef PyObject* name
    cdef PyObject* value
    cdef const unsigned char* s
    cdef int k, code
    for i in range(PyList_GET_SIZE(raw)):
        if not _pair(_list_item(raw, i), &name, &value):
            return None
        s = <const unsigned char*>_data(name)
        n = _size(name)
        k = _find(s, n)
        if k < 0:
            kept.append((_lower(name, s, n), <object>name, <object>value))
            continue
        code = _names[k].response
        if code == S_PLAIN:
            kept.append((<object>_names[k].obj, <object>name, <object>value))
        elif code == S_TE:
            if chunked or not _chunked(value):
                return AMBIGUOUS_FRAMING
            chunked = True
        elif code == S_LENGTH:
            length = _length(value)
        elif upgrade:
            kept.append((<object>_names[k].obj, <object>name, <object>value))
        elif code == S_CONNECTION and _listed(value, None):
            # a field naming no more than close or keep-alive adds nothing that stays
            if listed is None:
                listed = set()
            _listed(value, listed)
    if chunked and length is not None:
        return AMBIGUOUS_FRAMING
    if listed is not None:
        listed -= _PERSISTENCE
        kept = _without(kept, listed)
    return kept, chunked, length


cdef object response(object raw, object upgrade):
    # An UPGRADE other than a bool is tested as often as the twin tests it there.
    cdef object scanned = None
    if PyList_CheckExact(raw) and (upgrade is True or upgrade is False):
        scanned = _response(<list>raw, upgrade is True)
    return scanned if scanned is not None else _py.scan_response(raw, upgrade)


def scan_response(raw, upgrade):
    return response(raw, upgrade)


# -- encoding -----------------------------------------------------------------

cdef bytes encode(object fields):
    if not PyList_CheckExact(fields):
        return _py.encode_fields(fields)
    cdef Py_ssize_t i, count = PyList_GET_SIZE(fields), total = 0, a, b
    cdef PyObject* item
    cdef PyObject* name
    cdef PyObject* value
    for i in range(count):
        item = _list_item(fields, i)
        if not _is_tuple(item) or _tuple_size(item) != 3:
            return _py.encode_fields(fields)
        name = _tuple_item(item, 1)
        value = _tuple_item(item, 2)
        if not _is_bytes(name) or not _is_bytes(value):
            return _py.encode_fields(fields)
        total += _size(name) + _size(value) + 4
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef char* d = PyBytes_AS_STRING(out)
    for i in range(count):
        item = _list_item(fields, i)
        name = _tuple_item(item, 1)
        value = _tuple_item(item, 2)
        a = _size(name)
        b = _size(value)
        memcpy(d, _data(name), a)
        d[a] = c':'
        d[a + 1] = c' '
        memcpy(d + a + 2, _data(value), b)
        d[a + 2 + b] = c'\r'
        d[a + 3 + b] = c'\n'
        d += a + b + 4
    return out


def encode_fields(fields):
    """Fields as header lines: ``Name: value\\r\\n`` each."""
    return encode(fields)


# -- request ids --------------------------------------------------------------

cdef const char* _HEX = b"0123456789abcdef"


cdef class RequestIds:
    """Ids unique to this process: a random prefix and a counter, as ASCII bytes.

    The counter's 40 bits are kept as hex digits in the id's own buffer and
    counted up there, carry by carry; a prefix other than short ``bytes`` or a
    count other than an ``int`` falls back to the twin's formatting.
    """

    def __init__(self, prefix=None):
        self.prefix_value = prefix if prefix is not None else os.urandom(6).hex().encode()
        self.count_base = 0
        self.calls = 0
        self._rebuild()

    cdef int _rebuild(self) except -1:
        self.fast = False
        prefix = self.prefix_value
        count = self.count_base
        if type(prefix) is not bytes or type(count) is not int:
            return 0
        cdef Py_ssize_t n = len(<bytes>prefix), k
        if n > BUF_MAX - MASK_DIGITS:
            return 0
        cdef unsigned long long v = <unsigned long long>(count & 0xFFFFFFFFFF)
        memcpy(self.buf, PyBytes_AS_STRING(prefix), n)
        for k in range(n + MASK_DIGITS - 1, n - 1, -1):
            self.buf[k] = _HEX[v & 15]
            v >>= 4
        self.size = n + MASK_DIGITS
        self.fast = True
        return 0

    cdef bytes _next(self):
        cdef char* p = self.buf
        cdef Py_ssize_t k
        cdef char c
        if not self.fast:
            count = self.count_base
            count += 1
            self.count_base = count
            return b"%s%010x" % (self.prefix_value, count & 0xFFFFFFFFFF)
        self.calls += 1
        k = self.size - 1
        while k >= self.size - MASK_DIGITS:
            c = p[k]
            if c == c'9':
                p[k] = c'a'
                break
            if c != c'f':
                p[k] = c + 1
                break
            p[k] = c'0'  # and carry
            k -= 1
        return PyBytes_FromStringAndSize(p, self.size)

    def next(self):
        return self._next()

    @property
    def _count(self):
        return self.count_base + self.calls if self.calls else self.count_base

    @_count.setter
    def _count(self, value):
        self.count_base = value
        self.calls = 0
        self._rebuild()

    @property
    def _prefix(self):
        return self.prefix_value

    @_prefix.setter
    def _prefix(self, value):
        self.count_base = self._count
        self.calls = 0
        self.prefix_value = value
        self._rebuild()
