"""Compiled twin of ``_claims_py``: the same checks in the same order on C
doubles and borrowed dict lookups, and the identity header values written
in one pass. See ``_claims_py`` for the rules."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

from cpython.dict cimport PyDict_GetItem
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact
from cpython.list cimport PyList_CheckExact
from cpython.long cimport PyLong_CheckExact
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_AsASCIIString, PyUnicode_CheckExact
from libc.math cimport isfinite


cdef extern from "Python.h":
    # Declared here without an exception clause: an overflow is a verdict
    # (malformed), cleared in place instead of raised and caught.
    double PyLong_AsDouble(object value)
    PyObject* PyErr_Occurred()
    void PyErr_Clear()


cdef enum:
    C_OK = 0
    C_MALFORMED_TOKEN = 2
    C_EXPIRED = 6
    C_NOT_YET_VALID = 7
    C_BAD_ISSUER = 8
    C_BAD_AUDIENCE = 9

OK = C_OK
MALFORMED_TOKEN = C_MALFORMED_TOKEN
EXPIRED = C_EXPIRED
NOT_YET_VALID = C_NOT_YET_VALID
BAD_ISSUER = C_BAD_ISSUER
BAD_AUDIENCE = C_BAD_AUDIENCE

cdef frozenset _NO_SCOPES = frozenset()


cdef inline bint _number(PyObject* item, double* out) noexcept:
    cdef object value = <object>item
    cdef double number
    if PyFloat_CheckExact(value):
        number = PyFloat_AS_DOUBLE(value)
    elif PyLong_CheckExact(value):
        number = PyLong_AsDouble(value)
        if number == -1.0 and PyErr_Occurred() != NULL:
            PyErr_Clear()
            return False
    else:
        return False
    out[0] = number
    return isfinite(number)


cdef int check(dict claims, double now, double leeway, str issuer, tuple audiences) except -1:
    cdef double exp, nbf = 0.0, iat = 0.0, later
    cdef PyObject* item = PyDict_GetItem(claims, "exp")
    if item == NULL or not _number(item, &exp):
        return C_MALFORMED_TOKEN
    cdef PyObject* nbf_item = PyDict_GetItem(claims, "nbf")
    if nbf_item != NULL and not _number(nbf_item, &nbf):
        return C_MALFORMED_TOKEN
    cdef PyObject* iat_item = PyDict_GetItem(claims, "iat")
    if iat_item != NULL and not _number(iat_item, &iat):
        return C_MALFORMED_TOKEN
    cdef PyObject* aud_item = PyDict_GetItem(claims, "aud")
    cdef object aud = None
    if aud_item != NULL:
        aud = <object>aud_item
        if not PyUnicode_CheckExact(aud):
            if not PyList_CheckExact(aud):
                return C_MALFORMED_TOKEN
            for entry in <list>aud:
                if not PyUnicode_CheckExact(entry):
                    return C_MALFORMED_TOKEN
    if now >= exp + leeway:
        return C_EXPIRED
    later = now + leeway
    if (nbf_item != NULL and nbf > later) or (iat_item != NULL and iat > later):
        return C_NOT_YET_VALID
    item = PyDict_GetItem(claims, "iss")
    if item == NULL or not PyUnicode_CheckExact(<object>item) or <str><object>item != issuer:
        return C_BAD_ISSUER
    if audiences:
        if aud_item == NULL:
            return C_BAD_AUDIENCE
        if PyUnicode_CheckExact(aud):
            return C_OK if aud in audiences else C_BAD_AUDIENCE
        for entry in <list>aud:
            if entry in audiences:
                return C_OK
        return C_BAD_AUDIENCE
    return C_OK


cdef frozenset scopes(dict claims):
    cdef PyObject* item = PyDict_GetItem(claims, "scope")
    cdef object value
    if item == NULL:
        item = PyDict_GetItem(claims, "scp")
        if item == NULL:
            return _NO_SCOPES
        value = <object>item
        if PyList_CheckExact(value):
            return frozenset([entry for entry in <list>value if PyUnicode_CheckExact(entry)])
    else:
        value = <object>item
    if PyUnicode_CheckExact(value):
        return frozenset([word for word in (<str>value).split(" ") if word])
    return _NO_SCOPES


def check_claims(dict claims not None, double now, double leeway, str issuer not None,
                 tuple audiences not None):
    return check(claims, now, leeway, issuer, audiences)


def scopes_of(dict claims not None):
    return scopes(claims)


# -- identity header fields -------------------------------------------------------------------

SCOPE_TEXTS_KEPT = 1024

cdef Py_ssize_t _SCOPE_TEXTS_KEPT = SCOPE_TEXTS_KEPT
cdef bytes _SUBJECT_LOWER = b"x-auth-subject", _SUBJECT_NAME = b"X-Auth-Subject"
cdef bytes _SCOPES_LOWER = b"x-auth-scopes", _SCOPES_NAME = b"X-Auth-Scopes"
cdef dict _scope_texts = {}
cdef bytes _HEX = b"0123456789ABCDEF"


cdef inline bint _safe(Py_UCS4 c, bint space) noexcept:
    return (0x21 <= c <= 0x7E and c != 0x25) or (space and c == 0x20)


cdef bytes _header_value(str text, bint space):
    cdef Py_UCS4 c
    for c in text:
        if not _safe(c, space):
            break
    else:
        return PyUnicode_AsASCIIString(text)
    cdef bytes raw = text.encode("utf-8")
    cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(raw)
    cdef Py_ssize_t n = len(raw), i, j = 0
    cdef const char* hex_digits = PyBytes_AS_STRING(_HEX)
    for i in range(n):
        if not _safe(s[i], space):
            j += 2
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n + j)
    cdef char* o = PyBytes_AS_STRING(out)
    j = 0
    for i in range(n):
        if _safe(s[i], space):
            o[j] = <char>s[i]
            j += 1
        else:
            o[j] = c'%'
            o[j + 1] = hex_digits[s[i] >> 4]
            o[j + 2] = hex_digits[s[i] & 15]
            j += 3
    return out


def header_value(str text not None, bint space):
    return _header_value(text, space)


cdef tuple _granted(frozenset scopes):
    if not scopes:
        return (scopes, None)
    cdef list values = [_header_value(scope, False) for scope in scopes]
    values.sort()
    return (scopes, (_SCOPES_LOWER, _SCOPES_NAME, b" ".join(values)))


cdef tuple _granted_text(str text):
    cdef PyObject* known = PyDict_GetItem(_scope_texts, text)
    if known != NULL:
        return <tuple>known
    if len(_scope_texts) >= _SCOPE_TEXTS_KEPT:
        _scope_texts.clear()
    granted = _granted(frozenset([word for word in text.split(" ") if word]))
    _scope_texts[text] = granted
    return granted


def identity(sub, dict claims not None):
    cdef PyObject* item = PyDict_GetItem(claims, "scope")
    cdef object value
    cdef tuple granted
    if item == NULL:
        item = PyDict_GetItem(claims, "scp")
    if item == NULL:
        granted = (_NO_SCOPES, None)
    else:
        value = <object>item
        if PyUnicode_CheckExact(value):
            granted = _granted_text(<str>value)
        elif PyList_CheckExact(value) and PyDict_GetItem(claims, "scope") == NULL:
            granted = _granted(frozenset([entry for entry in <list>value
                                          if PyUnicode_CheckExact(entry)]))
        else:
            granted = (_NO_SCOPES, None)
    field = granted[1]
    if sub is None:
        return granted[0], (field,) if field is not None else ()
    subject = (_SUBJECT_LOWER, _SUBJECT_NAME, _header_value(<str?>sub, True))
    return granted[0], (subject, field) if field is not None else (subject,)
