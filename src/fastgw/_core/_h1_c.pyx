# cython: language_level=3
"""The HTTP/1.1 parsers, on llhttp called directly: the compiled twin of ``_h1_py``.

The request line and header fields are collected here, in C, and the protocol
is called once per head instead of once per field. Callbacks, their order and
every verdict are those of the twin on httptools (the same llhttp, in the same
strict mode), so the two agree on every byte stream.
"""

from libc.stdint cimport uint8_t
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_FromStringAndSize

import sys

from fastgw.http.parsing import BadMessage, HeadTooLarge, Upgrade


cdef extern from "llhttp.h":
    ctypedef struct llhttp_t:
        void *data
        uint8_t upgrade

    ctypedef int (*llhttp_data_cb)(llhttp_t*, const char *at, size_t length) noexcept
    ctypedef int (*llhttp_cb)(llhttp_t*) noexcept

    ctypedef struct llhttp_settings_t:
        llhttp_cb on_message_begin
        llhttp_data_cb on_url
        llhttp_data_cb on_header_field
        llhttp_data_cb on_header_value
        llhttp_cb on_headers_complete
        llhttp_data_cb on_body
        llhttp_cb on_message_complete

    ctypedef enum llhttp_type_t:
        HTTP_REQUEST
        HTTP_RESPONSE

    ctypedef enum llhttp_errno_t:
        HPE_OK
        HPE_PAUSED_UPGRADE
        HPE_USER

    void llhttp_settings_init(llhttp_settings_t *settings)
    void llhttp_init(llhttp_t *parser, llhttp_type_t type, const llhttp_settings_t *settings)
    llhttp_errno_t llhttp_execute(llhttp_t *parser, const char *data, size_t len)
    int llhttp_should_keep_alive(const llhttp_t *parser)
    void llhttp_resume_after_upgrade(llhttp_t *parser)
    const char *llhttp_get_error_pos(const llhttp_t *parser)
    const char *llhttp_get_error_reason(const llhttp_t *parser)
    void llhttp_set_error_reason(llhttp_t *parser, const char *reason)
    uint8_t llhttp_get_http_major(llhttp_t *parser)
    uint8_t llhttp_get_http_minor(llhttp_t *parser)
    uint8_t llhttp_get_method(llhttp_t *parser)
    int llhttp_get_status_code(llhttp_t *parser)
    const char *llhttp_method_name(uint8_t method)


cdef llhttp_settings_t _settings
llhttp_settings_init(&_settings)

# "1.1" and the like as one shared str each: a version costs no formatting.
cdef dict _VERSIONS = {}
cdef dict _METHODS = {}


cdef inline str _version(llhttp_t *parser):
    cdef int key = llhttp_get_http_major(parser) * 10 + llhttp_get_http_minor(parser)
    version = _VERSIONS.get(key)
    if version is None:
        version = _VERSIONS[key] = (
            f"{llhttp_get_http_major(parser)}.{llhttp_get_http_minor(parser)}")
    return version


cdef inline str _method(llhttp_t *parser):
    cdef uint8_t key = llhttp_get_method(parser)
    method = _METHODS.get(key)
    if method is None:
        method = _METHODS[key] = llhttp_method_name(key).decode("ascii")
    return method


cdef class _Parser:
    cdef llhttp_t _parser
    cdef object _protocol, _error, _name, _value
    cdef list _url
    cdef Py_ssize_t _header_bytes
    cdef bint _in_head, _begins  # the protocol is told of each message's start
    cdef public list headers
    cdef public bytes url
    cdef public Py_ssize_t url_size, max_url, max_header_bytes, max_headers, status
    cdef public str method, version
    cdef public bint upgrade

    def __init__(self, protocol):
        self._protocol = protocol
        self.max_url = self.max_header_bytes = self.max_headers = sys.maxsize
        self._url = []
        self.url = b""
        self.url_size = 0
        self.headers = []
        self._header_bytes = 0
        self._in_head = False
        self.method = ""
        self.version = ""
        self.status = 0
        self.upgrade = False

    cdef _start(self, llhttp_type_t kind):
        llhttp_init(&self._parser, kind, &_settings)
        self._parser.data = <void*>self

    def limit(self, Py_ssize_t max_url, Py_ssize_t max_header_bytes, Py_ssize_t max_headers):
        """Limits for the head being parsed, and every later one."""
        self.max_url = max_url
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers

    def keep_alive(self):
        return bool(llhttp_should_keep_alive(&self._parser))

    def feed(self, data):
        cdef Py_buffer view
        cdef llhttp_errno_t err
        cdef const char *end
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            err = llhttp_execute(&self._parser, <const char*>view.buf, <size_t>view.len)
            if err == HPE_OK:
                return
            if err == HPE_PAUSED_UPGRADE and self._parser.upgrade:
                end = llhttp_get_error_pos(&self._parser)
                llhttp_resume_after_upgrade(&self._parser)
                raise Upgrade(end - <const char*>view.buf)
        finally:
            PyBuffer_Release(&view)
        error = self._error
        if error is not None:
            self._error = None
            raise error
        raise BadMessage(llhttp_get_error_reason(&self._parser).decode("latin-1"))

    # -- what llhttp reports, in its order ---------------------------------------------

    cdef int _message_begin(self) except -1:
        self._in_head = True
        self._url = []
        self.url_size = 0
        self.headers = []
        self._header_bytes = 0
        self._name = self._value = None
        if self._begins:
            self._protocol.on_message_begin()
        return 0

    cdef int _on_url(self, const char *at, size_t length) except -1:
        self.url_size += length
        if self.url_size > self.max_url:
            raise HeadTooLarge(414)
        self._url.append(PyBytes_FromStringAndSize(at, length))
        return 0

    cdef int _field(self) except -1:
        # A field is whole when the next name starts or the head ends.
        name = self._name
        value = self._value
        self._name = self._value = None
        if not self._in_head:
            return 0
        self._header_bytes += len(name) + len(value) + 4
        self.headers.append((name, value))
        if self._header_bytes > self.max_header_bytes or len(self.headers) > self.max_headers:
            raise HeadTooLarge(431)
        return 0

    cdef int _on_name(self, const char *at, size_t length) except -1:
        if self._value is not None:
            self._field()
        piece = PyBytes_FromStringAndSize(at, length)
        self._name = piece if self._name is None else self._name + piece
        return 0

    cdef int _on_value(self, const char *at, size_t length) except -1:
        piece = PyBytes_FromStringAndSize(at, length)
        self._value = piece if self._value is None else self._value + piece
        return 0

    cdef int _headers_complete(self) except -1:
        if self._value is not None:
            self._field()
        self._in_head = False
        self.url = b"".join(self._url)
        self._url = []
        self.version = _version(&self._parser)
        self.upgrade = self._parser.upgrade
        self._head()
        self._protocol.on_headers_complete()
        # An idle connection keeps nothing of its last head.
        self.headers = None
        self.url = b""
        return 0

    cdef _head(self):
        pass

    cdef int _message_complete(self) except -1:
        if self._value is not None:
            self._field()
        self._protocol.on_message_complete()
        return 0


cdef class RequestParser(_Parser):
    def __init__(self, protocol):
        _Parser.__init__(self, protocol)
        self._begins = True
        self._start(HTTP_REQUEST)

    cdef _head(self):
        self.method = _method(&self._parser)


cdef class ResponseParser(_Parser):
    def __init__(self, protocol):
        _Parser.__init__(self, protocol)
        self._start(HTTP_RESPONSE)

    cdef _head(self):
        self.status = llhttp_get_status_code(&self._parser)


# -- llhttp's callbacks: a Python exception is kept for feed() to raise -----------------

cdef inline _Parser _of(llhttp_t *parser):
    return <_Parser>parser.data


cdef int _cb_message_begin(llhttp_t *parser) noexcept:
    cdef _Parser p = _of(parser)
    try:
        p._message_begin()
    except BaseException as exc:
        p._error = exc
        return -1
    return 0


cdef int _cb_url(llhttp_t *parser, const char *at, size_t length) noexcept:
    cdef _Parser p = _of(parser)
    try:
        p._on_url(at, length)
    except BaseException as exc:
        p._error = exc
        llhttp_set_error_reason(parser, "`on_url` callback error")
        return HPE_USER
    return 0


cdef int _cb_header_field(llhttp_t *parser, const char *at, size_t length) noexcept:
    cdef _Parser p = _of(parser)
    try:
        p._on_name(at, length)
    except BaseException as exc:
        p._error = exc
        llhttp_set_error_reason(parser, "`on_header_field` callback error")
        return HPE_USER
    return 0


cdef int _cb_header_value(llhttp_t *parser, const char *at, size_t length) noexcept:
    cdef _Parser p = _of(parser)
    try:
        p._on_value(at, length)
    except BaseException as exc:
        p._error = exc
        llhttp_set_error_reason(parser, "`on_header_value` callback error")
        return HPE_USER
    return 0


cdef int _cb_headers_complete(llhttp_t *parser) noexcept:
    cdef _Parser p = _of(parser)
    try:
        p._headers_complete()
    except BaseException as exc:
        p._error = exc
        return -1
    # An upgrade has no body: the bytes after the head belong to the new protocol.
    return 1 if parser.upgrade else 0


cdef int _cb_body(llhttp_t *parser, const char *at, size_t length) noexcept:
    cdef _Parser p = _of(parser)
    try:
        p._protocol.on_body(PyBytes_FromStringAndSize(at, length))
    except BaseException as exc:
        p._error = exc
        llhttp_set_error_reason(parser, "`on_body` callback error")
        return HPE_USER
    return 0


cdef int _cb_message_complete(llhttp_t *parser) noexcept:
    cdef _Parser p = _of(parser)
    try:
        p._message_complete()
    except BaseException as exc:
        p._error = exc
        return -1
    return 0


_settings.on_message_begin = _cb_message_begin
_settings.on_url = _cb_url
_settings.on_header_field = _cb_header_field
_settings.on_header_value = _cb_header_value
_settings.on_headers_complete = _cb_headers_complete
_settings.on_body = _cb_body
_settings.on_message_complete = _cb_message_complete
