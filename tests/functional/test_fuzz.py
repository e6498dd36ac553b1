"""Property tests over real sockets: whatever the bytes, the gateway forwards
exactly what a reference says or refuses it, and nothing half-parsed leaks."""

from __future__ import annotations

import re
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .support import assert_error, assert_nothing_reached

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

VALID_VALUE_CHARS = string.ascii_letters + string.digits + string.punctuation + " \t"
INVALID_VALUE_CHARS = "".join(chr(c) for c in [*range(0, 9), *range(10, 32), 127])


@FUZZ
@given(
    value=st.text(
        alphabet=st.sampled_from(VALID_VALUE_CHARS + INVALID_VALUE_CHARS), min_size=0, max_size=40
    )
)
def test_header_value_is_forwarded_verbatim_or_refused(gateway, shared_upstream, raw, value):
    shared_upstream.clear()
    connection = raw(gateway.port)
    connection.send(
        b"GET /echo/fuzz HTTP/1.1\r\nHost: gateway.test\r\nX-Fuzz: "
        + value.encode("latin-1")
        + b"\r\n\r\n"
    )
    response = connection.read_response()
    if any(c in INVALID_VALUE_CHARS for c in value):
        assert_error(response, 400)
        assert_nothing_reached(shared_upstream)
    else:
        assert response.status == 200, response
        [received] = shared_upstream.requests
        assert received.header_values("x-fuzz") == [value.strip(" \t")]
    connection.close()


UNRESERVED = set(string.ascii_letters + string.digits + "-._~")
SEGMENTS = ["a", "b", ".", "..", "%2e", "%2E%2e", ".%2E", "%41", "%7e", "%2D", "%20", "x.y", "..."]


def reference_normalise(path: str) -> str | None:
    """Decode unreserved %XX, resolve dot segments (RFC 3986 5.2.4); None above the root."""

    def decode(match: re.Match) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in UNRESERVED else match.group(0)

    segments = re.sub(r"%([0-9A-Fa-f]{2})", decode, path).split("/")[1:]
    output: list[str] = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if not output:
                return None
            output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/" + "/".join(output)


@FUZZ
@given(segments=st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=6))
def test_path_is_normalised_like_the_reference(gateway, shared_upstream, raw, segments):
    shared_upstream.clear()
    path = "/echo/" + "/".join(segments)
    expected = reference_normalise(path)
    connection = raw(gateway.port)
    response = connection.exchange("GET", path)
    connection.close()
    if expected is None:
        assert_error(response, 400)
        assert_nothing_reached(shared_upstream)
    elif expected == "/echo" or expected.startswith("/echo/"):
        assert response.status == 200, (path, expected, response)
        assert [r.target for r in shared_upstream.requests] == [expected]
    else:
        assert_error(response, 404)
        assert_nothing_reached(shared_upstream)
