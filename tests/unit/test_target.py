import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastgw.http.target import BadTarget, split_target

ACCEPTED = [
    # already normal: returned as they are
    (b"/", "/", ""),
    (b"/orders/123", "/orders/123", ""),
    (b"/orders/123?x=1", "/orders/123", "x=1"),
    (b"/a/b/", "/a/b/", ""),
    (b"/a.b/c..d/...", "/a.b/c..d/...", ""),
    (b"/a:b@c!$&'()*+,;=", "/a:b@c!$&'()*+,;=", ""),
    # query: split at the first '?', kept byte-exact and never normalised
    (b"/p?", "/p", ""),
    (b"/p?a=1&b=2?c", "/p", "a=1&b=2?c"),
    (b"/p?q=%2f%2F%zz%00/../..//x\\y", "/p", "q=%2f%2F%zz%00/../..//x\\y"),
    (b"/a/../b?x=/../", "/b", "x=/../"),
    # '//' runs merged
    (b"//", "/", ""),
    (b"//a///b//", "/a/b/", ""),
    (b"//evil.example/x", "/evil.example/x", ""),
    (b"/a//b?x", "/a/b", "x"),
    # dot segments, trailing slash kept
    (b"/.", "/", ""),
    (b"/./a", "/a", ""),
    (b"/a/./b", "/a/b", ""),
    (b"/a/b/.", "/a/b/", ""),
    (b"/a/b/./", "/a/b/", ""),
    (b"/a/..", "/", ""),
    (b"/a/../", "/", ""),
    (b"/a/b/..", "/a/", ""),
    (b"/a/b/../c", "/a/c", ""),
    (b"/a/b/c/../../d", "/a/d", ""),
    (b"/a//..", "/", ""),
    (b"/a/.well-known/x", "/a/.well-known/x", ""),
    (b"/.hidden", "/.hidden", ""),
    # unreserved escapes decoded, both hex cases
    (b"/%41%42%5a%61%7A%30%39", "/ABZaz09", ""),
    (b"/%2d%2E%5f%7e", "/-._~", ""),
    (b"/%2D%2e%5F%7E", "/-._~", ""),
    (b"/a%62b", "/abb", ""),
    # dots are decoded before dot segments are resolved
    (b"/a/%2e%2e/b", "/b", ""),
    (b"/a/%2E%2E/b", "/b", ""),
    (b"/a/.%2e/b", "/b", ""),
    (b"/a/%2e/b", "/a/b", ""),
    (b"/a/b/%2e%2e", "/a/", ""),
    # other escapes kept, hex upper-cased
    (b"/a%2ab", "/a%2Ab", ""),
    (b"/a%2Ab", "/a%2Ab", ""),
    (b"/%3f%3F%23%20%c3%a9", "/%3F%3F%23%20%C3%A9", ""),
    (b"/%0a%7f%ff", "/%0A%7F%FF", ""),
    # '%25' is not decoded, so double encoding stays literal
    (b"/%25", "/%25", ""),
    (b"/a%252Fb", "/a%252Fb", ""),
    (b"/a%252fb", "/a%252fb", ""),
    (b"/a%255Cb", "/a%255Cb", ""),
    (b"/%252e%252e/x", "/%252e%252e/x", ""),
    (b"/%2500", "/%2500", ""),
    # absolute-form: only path and query are kept
    (b"http://example.com/a/b?x=1", "/a/b", "x=1"),
    (b"https://example.com:8443/a//./b/", "/a/b/", ""),
    (b"HTTP://Example.COM/a", "/a", ""),
    (b"http://example.com", "/", ""),
    (b"http://example.com?x=1", "/", "x=1"),
    (b"http://example.com/", "/", ""),
    (b"http://[::1]:8080/a/%2e%2e/b", "/b", ""),
    (b"http://192.0.2.1/%7euser", "/~user", ""),
]

REJECTED = [
    # request-target forms
    (b"", "empty target"),
    (b"?x=1", "empty target"),
    (b"*", "asterisk-form"),
    (b"example.com:443", "unsupported request-target form"),
    (b"a/b", "unsupported request-target form"),
    (b"ftp://example.com/a", "unsupported request-target form"),
    (b"http:/a", "unsupported request-target form"),
    (b"http:///a", "invalid authority"),
    (b"http://user@example.com/a", "invalid authority"),
    (b"http://user:pw@example.com/a", "invalid authority"),
    (b"http://exa\\mple.com/a", "invalid authority"),
    (b"http://example.com/a%2fb", "encoded slash"),
    (b"http://example.com/..", "path escapes root"),
    # fragments, anywhere
    (b"/a#b", "fragment"),
    (b"/a?x#b", "fragment"),
    (b"/a?x=%23#", "fragment"),
    (b"#", "fragment"),
    # bytes outside visible ASCII, in the path or the query
    (b"/a b", "invalid character"),
    (b"/a?b c", "invalid character"),
    (b"/a\x00b", "invalid character"),
    (b"/a?\x00", "invalid character"),
    (b"/a\tb", "invalid character"),
    (b"/a\r\nb", "invalid character"),
    (b"/a\x1fb", "invalid character"),
    (b"/a\x7fb", "invalid character"),
    (b"/a\x80b", "invalid character"),
    (b"/caf\xc3\xa9", "invalid character"),
    (b"/a?\xff", "invalid character"),
    # malformed escapes
    (b"/%", "malformed percent-encoding"),
    (b"/a%", "malformed percent-encoding"),
    (b"/%4", "malformed percent-encoding"),
    (b"/%4/", "malformed percent-encoding"),
    (b"/%zz", "malformed percent-encoding"),
    (b"/%g0", "malformed percent-encoding"),
    (b"/%+1", "malformed percent-encoding"),
    (b"/% 1", "invalid character"),
    (b"/%-1", "malformed percent-encoding"),
    (b"/%%41", "malformed percent-encoding"),
    # encoded slash, backslash, NUL; raw backslash
    (b"/a%2fb", "encoded slash"),
    (b"/a%2Fb", "encoded slash"),
    (b"/%2e%2e%2f", "encoded slash"),
    (b"/a%5cb", "encoded backslash"),
    (b"/a%5Cb", "encoded backslash"),
    (b"/a%00b", "encoded NUL"),
    (b"/a\\b", "backslash"),
    (b"/a/..\\..\\etc", "backslash"),
    (b"/\\", "backslash"),
    # climbing above the root
    (b"/..", "path escapes root"),
    (b"/../", "path escapes root"),
    (b"/../a", "path escapes root"),
    (b"/a/../..", "path escapes root"),
    (b"/a/../../b", "path escapes root"),
    (b"/./..", "path escapes root"),
    (b"//..", "path escapes root"),
    (b"/%2e%2e", "path escapes root"),
    (b"/%2E%2E/etc/passwd", "path escapes root"),
    (b"/.%2e", "path escapes root"),
    (b"/a/%2e%2e/%2e%2e/b", "path escapes root"),
]


@pytest.mark.parametrize(("target", "path", "query"), ACCEPTED)
def test_accepted(target, path, query):
    assert split_target(target) == (path, query)


@pytest.mark.parametrize(("target", "reason"), REJECTED)
def test_rejected(target, reason):
    with pytest.raises(BadTarget, match=re.escape(reason)):
        split_target(target)


def test_bad_target_is_value_error():
    with pytest.raises(ValueError, match="path escapes root"):
        split_target(b"/..")


def test_every_control_byte_rejected():
    for byte in [*range(0x21), *range(0x7F, 0x100)]:
        with pytest.raises(BadTarget):
            split_target(b"/a" + bytes([byte]) + b"b")
        with pytest.raises(BadTarget):
            split_target(b"/a?x=" + bytes([byte]))


def test_every_escape():
    unreserved = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    for value in range(256):
        hi, lo = f"{value:02x}"
        for digits in {a + b for a in (hi, hi.upper()) for b in (lo, lo.upper())}:
            target = f"/x%{digits}y".encode()
            if value in (0x00, 0x2F, 0x5C):
                with pytest.raises(BadTarget):
                    split_target(target)
            elif value in unreserved:
                assert split_target(target) == (f"/x{chr(value)}y", "")
            else:
                assert split_target(target) == (f"/x%{value:02X}y", "")


def test_returns_str():
    path, query = split_target(b"/orders/123?x=1")
    assert type(path) is str
    assert type(query) is str


# Long targets: the work is linear in the length of the target.


def test_long_balanced_path():
    target = b"/a" * 25_000 + b"/.." * 25_000 + b"/end"
    assert len(target) > 100 * 1024
    assert split_target(target) == ("/end", "")


def test_long_alternating_path():
    target = b"/seg/%2e%2e" * 10_000 + b"/x/"
    assert len(target) > 100 * 1024
    assert split_target(target) == ("/x/", "")


def test_long_path_escaping_at_the_end():
    target = b"/a" * 25_000 + b"/.." * 25_001
    with pytest.raises(BadTarget, match="path escapes root"):
        split_target(target)


def test_long_slash_run_and_escapes():
    assert split_target(b"/" * 100_000 + b"a") == ("/a", "")
    assert split_target(b"/" + b"%41" * 40_000) == ("/" + "A" * 40_000, "")
    assert split_target(b"/" + b"%2a" * 40_000) == ("/" + "%2A" * 40_000, "")


def test_long_query_untouched():
    query = "a=%2f&b=/../" * 10_000
    assert split_target(b"/p?" + query.encode()) == ("/p", query)


# Properties.

# fmt: off
_PIECES = st.sampled_from([
    "", "", "a", "b", "zz", ".", "..", "...", ".a", "a.", "~", "-", "_",
    ":", "@", "!", "$", "&", "'", "(", ")", "*", "+", ",", ";", "=",
    "%2e", "%2E", "%2e%2e", "%2E%2e", ".%2e", "%41", "%7e", "%7E", "%2a", "%2A",
    "%25", "%252F", "%3f", "%c3%a9", "%2f", "%5c", "%00", "%", "%4", "\\", "#",
])
# fmt: on
_SEGMENT = st.lists(_PIECES, max_size=4).map("".join)
_PATH = st.lists(_SEGMENT, max_size=12).map(lambda segments: "/" + "/".join(segments))
_QUERY = st.none() | st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="#"),
    max_size=20,
)
_ESCAPE = re.compile(r"%(?![0-9A-F]{2})")
_UNRESERVED_ESCAPE = re.compile(r"%(?:[46][1-9A-F]|[57][0-9A]|3[0-9]|2D|2E|5F|7E)")


def _check_normal(path: str) -> None:
    assert path.startswith("/")
    assert "//" not in path
    assert "\\" not in path
    assert "\x00" not in path
    segments = path.split("/")
    assert "." not in segments
    assert ".." not in segments
    assert not _ESCAPE.search(path), "escapes are two upper-case hex digits"
    assert not _UNRESERVED_ESCAPE.search(path), "unreserved characters are decoded"
    for refused in ("%00", "%2F", "%5C"):
        assert refused not in path


@given(_PATH, _QUERY)
def test_output_is_normal_and_idempotent(path, query):
    target = path if query is None else f"{path}?{query}"
    try:
        normal, got_query = split_target(target.encode())
    except BadTarget:
        return
    assert got_query == (query or "")
    _check_normal(normal)
    assert split_target(normal.encode()) == (normal, "")
    assert split_target(f"http://example.com{normal}".encode()) == (normal, "")


_NOISY = st.binary(max_size=40) | st.text(
    alphabet="/.%25eEfFcCa0\\?#~ \x00\x7f\x80", max_size=40
).map(lambda text: ("/" + text).encode("latin-1"))


@given(_NOISY)
def test_arbitrary_bytes(target):
    try:
        normal, query = split_target(target)
    except BadTarget:
        return
    _check_normal(normal)
    assert "#" not in query
    assert split_target(normal.encode()) == (normal, "")


_DOTTY_PATH = st.lists(
    st.lists(st.sampled_from(["", "a", "b", ".", "..", "%2e", "%2E"]), max_size=3).map("".join),
    max_size=12,
).map(lambda segments: "/" + "/".join(segments))


@given(_DOTTY_PATH)
def test_dot_segments_match_rfc3986(path):
    """Where nothing climbs above the root, the result is RFC 3986 remove_dot_segments."""
    try:
        normal, _ = split_target(path.encode())
    except BadTarget:
        return
    merged = re.sub(r"/{2,}", "/", path.replace("%2e", ".").replace("%2E", "."))
    assert normal == _rfc3986_remove_dot_segments(merged)


@given(_DOTTY_PATH)
def test_rejects_exactly_when_climbing_above_root(path):
    depth = 0
    climbs = False
    for segment in path.replace("%2e", ".").replace("%2E", ".").split("/"):
        if segment == "..":
            climbs = climbs or depth == 0
            depth = max(depth - 1, 0)
        elif segment not in ("", "."):
            depth += 1
    if climbs:
        with pytest.raises(BadTarget, match="path escapes root"):
            split_target(path.encode())
    else:
        split_target(path.encode())


def _rfc3986_remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, written as the RFC states it."""
    output = ""
    while path:
        if path.startswith("../"):
            path = path[3:]
        elif path.startswith(("./", "/./")):
            path = path[2:]
        elif path == "/.":
            path = "/"
        elif path.startswith("/../"):
            path = path[3:]
            output = output[: output.rfind("/")] if "/" in output else ""
        elif path == "/..":
            path = "/"
            output = output[: output.rfind("/")] if "/" in output else ""
        elif path in (".", ".."):
            path = ""
        else:
            end = path.find("/", 1)
            end = len(path) if end == -1 else end
            output += path[:end]
            path = path[end:]
    return output
