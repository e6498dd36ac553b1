"""Request-target parsing and path normalisation (RFC 9112 section 3.2, RFC 3986).

``split_target`` turns the raw request-target into the path that routing and the
upstream see, and the query string, which is forwarded exactly as received.

The path is normalised once, before routing: escapes of unreserved characters are
decoded, every other escape is spelt with upper-case hex, ``//`` runs are merged and
``.``/``..`` segments are resolved after decoding, so ``%2e%2e`` is a ``..`` segment.
A path that climbs above ``/``, holds a raw ``\\``, or encodes ``/``, ``\\`` or NUL is
refused. Escapes are decoded in a single pass: ``%252F`` becomes nothing but ``%252F``.
"""

__all__ = ["BadTarget", "split_target"]


class BadTarget(ValueError):
    """A request-target that must be answered with 400.

    The message is a short reason that is safe to show to the client.
    """


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEXDIGITS = "0123456789ABCDEFabcdef"
_REFUSED_ESCAPES = {
    "00": "encoded NUL in path",
    "2F": "encoded slash in path",
    "5C": "encoded backslash in path",
}


def _escape_tables() -> tuple[dict[str, str], dict[str, str]]:
    replacements: dict[str, str] = {}
    refused: dict[str, str] = {}
    for hi in _HEXDIGITS:
        for lo in _HEXDIGITS:
            digits = hi + lo
            canonical = digits.upper()
            char = chr(int(digits, 16))
            if canonical in _REFUSED_ESCAPES:
                refused[digits] = _REFUSED_ESCAPES[canonical]
            elif char in _UNRESERVED:
                replacements[digits] = char
            else:
                replacements[digits] = "%" + canonical
    return replacements, refused


# Two hex digits as written after '%' -> what the normalised path holds instead.
_ESCAPES, _REFUSED = _escape_tables()

# RFC 3986 reg-name / IP-literal / port characters (pct-encoded included).
_AUTHORITY_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:[]%"
)


def split_target(target: bytes) -> tuple[str, str]:
    """Split a raw request-target into ``(normalised_path, query)``.

    ``target`` is the request-target from the request line, as bytes. Origin-form
    (``/path?query``) and absolute-form (``http://host/path?query``, of which only the
    path and query are kept) are accepted. ``query`` is the text after the first ``?``
    (``''`` when there is none), unchanged. Raises :class:`BadTarget` for a target that
    must be answered with 400.
    """
    try:
        text = target.decode("ascii")
    except UnicodeDecodeError:
        raise BadTarget("invalid character in target") from None
    if not text.isprintable() or " " in text or "#" in text:
        raise BadTarget("fragment in target" if "#" in text else "invalid character in target")
    path, _, query = text.partition("?")
    if path[:1] != "/":
        path = _absolute_form_path(path)
    if "%" in path or "/." in path or "//" in path or "\\" in path:
        path = _normalise(path)
    return path, query


def _absolute_form_path(path: str) -> str:
    """The path of an absolute-form target (without its query), ``/`` when empty."""
    if not path:
        raise BadTarget("empty target")
    if path == "*":
        raise BadTarget("asterisk-form not allowed")
    scheme, sep, rest = path.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise BadTarget("unsupported request-target form")
    authority, slash, path = rest.partition("/")
    if not authority or not _AUTHORITY_CHARS.issuperset(authority):
        raise BadTarget("invalid authority in target")
    return "/" + path if slash else "/"


def _normalise(path: str) -> str:
    if "\\" in path:
        raise BadTarget("backslash in path")
    if "%" in path:
        path = _decode_unreserved(path)
    return _remove_dot_segments(path)


def _decode_unreserved(path: str) -> str:
    head, *parts = path.split("%")
    out = [head]
    for part in parts:
        digits = part[:2]
        replacement = _ESCAPES.get(digits)
        if replacement is None:
            raise BadTarget(_REFUSED.get(digits, "malformed percent-encoding"))
        out.append(replacement)
        out.append(part[2:])
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """Resolve ``.``/``..`` and empty segments of an absolute path; keep a trailing slash."""
    segments = path.split("/")
    kept: list[str] = []
    for segment in segments:
        if segment == "..":
            if not kept:
                raise BadTarget("path escapes root")
            kept.pop()
        elif segment and segment != ".":
            kept.append(segment)
    if not kept:
        return "/"
    if segments[-1] in ("", ".", ".."):
        return "/" + "/".join(kept) + "/"
    return "/" + "/".join(kept)
