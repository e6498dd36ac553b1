"""The HTTP/1.1 parsers: what each twin reports, and that the two agree."""

import importlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw import _core
from fastgw.http.parsing import BadMessage, HeadTooLarge, Upgrade

TWINS = [importlib.import_module("fastgw._core._h1_py")]
if _core.COMPILED and not _core.NO_EXTENSIONS:
    TWINS.append(importlib.import_module("fastgw._core._h1_c"))


class Recorder:
    """A protocol that writes down everything its parser reports."""

    def __init__(self, kind: str, raise_on: str | None = None) -> None:
        self.parser = getattr(self.twin, kind)(self)
        self.events: list = []
        self.raise_on = raise_on

    def _maybe_raise(self, event: str) -> None:
        if event == self.raise_on:
            raise LookupError(event)

    def on_message_begin(self) -> None:
        self.events.append(("begin",))
        self._maybe_raise("begin")

    def on_headers_complete(self) -> None:
        p = self.parser
        self.events.append(("head", p.method, p.status, p.version, p.url, list(p.headers),
                            p.upgrade, p.keep_alive()))
        self._maybe_raise("head")

    def on_body(self, chunk: bytes) -> None:
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + chunk)
        else:
            self.events.append(("body", chunk))
        self._maybe_raise("body")

    def on_message_complete(self) -> None:
        self.events.append(("complete", self.parser.keep_alive()))
        self._maybe_raise("complete")


def feed(twin, kind: str, chunks, limits=None, raise_on=None) -> list:
    recorder = type("R", (Recorder,), {"twin": twin})(kind, raise_on)
    if limits:
        recorder.parser.limit(*limits)
    for chunk in chunks:
        try:
            recorder.parser.feed(chunk)
        except Upgrade as exc:
            recorder.events.append(("upgrade", exc.offset))
            break
        except HeadTooLarge as exc:
            recorder.events.append(("too large", exc.status))
            break
        except BadMessage as exc:
            recorder.events.append(("bad", str(exc)))
            break
        except LookupError as exc:
            recorder.events.append(("raised", str(exc)))
            break
    return recorder.events


@pytest.fixture(params=TWINS, ids=lambda m: m.__name__.rpartition(".")[2])
def h1(request):
    return request.param


def test_a_request_head_arrives_whole(h1):
    events = feed(h1, "RequestParser", [b"GET /a?b=1 HTT", b"P/1.1\r\nHost: x\r\nX-Long: ab",
                                        b"cd\r\n\r\n"])
    assert events == [("begin",), ("head", "GET", 0, "1.1", b"/a?b=1",
                                   [(b"Host", b"x"), (b"X-Long", b"abcd")], False, True),
                      ("complete", True)]


def test_a_response_head_body_and_end(h1):
    events = feed(h1, "ResponseParser", [b"HTTP/1.0 404 Nope\r\nContent-Length: 3\r\n\r\nab",
                                         b"c"])
    assert events == [("head", "", 404, "1.0", b"", [(b"Content-Length", b"3")], False, False),
                      ("body", b"abc"), ("complete", False)]


def test_limits_give_414_and_431(h1):
    assert feed(h1, "RequestParser", [b"GET /" + b"a" * 20 + b" HTTP/1.1\r\n\r\n"],
                limits=(10, 100, 10))[-1] == ("too large", 414)
    assert feed(h1, "RequestParser", [b"GET / HTTP/1.1\r\nA: " + b"b" * 200 + b"\r\n\r\n"],
                limits=(100, 100, 10))[-1] == ("too large", 431)
    assert feed(h1, "RequestParser", [b"GET / HTTP/1.1\r\n" + b"A: b\r\n" * 3 + b"\r\n"],
                limits=(100, 100, 2))[-1] == ("too large", 431)


def test_trailers_are_dropped(h1):
    events = feed(h1, "RequestParser", [
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"])
    assert events[1][5] == [(b"Transfer-Encoding", b"chunked")]
    assert events[2:] == [("body", b"abc"), ("complete", True)]


def test_an_upgrade_says_where_the_new_protocol_starts(h1):
    data = b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nrest"
    events = feed(h1, "RequestParser", [data])
    assert events[1][6] is True
    assert events[-1] == ("upgrade", len(data) - 4)


def test_what_a_callback_raises_comes_out_of_feed(h1):
    for event in ("begin", "head", "body", "complete"):
        events = feed(h1, "RequestParser",
                      [b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"], raise_on=event)
        assert events[-1] == ("raised", event)


def test_malformed_bytes_are_a_bad_message(h1):
    assert feed(h1, "RequestParser", [b"GET / HTTP/1.1\r\nContent-Length: 1\r\n"
                                      b"Content-Length: 2\r\n\r\n"])[-1][0] == "bad"
    assert feed(h1, "ResponseParser", [b"HTTP/1.1 20 OK\r\n\r\n"])[-1][0] == "bad"


def test_an_idle_parser_keeps_nothing_of_the_last_head(h1):
    recorder = type("R", (Recorder,), {"twin": h1})("RequestParser")
    recorder.parser.feed(b"GET /long HTTP/1.1\r\nHost: x\r\n\r\n")
    assert recorder.parser.headers is None and recorder.parser.url == b""


# -- the twins agree ------------------------------------------------------------------------

FIELDS = st.sampled_from([
    b"Host: a", b"Content-Length: 3", b"Content-Length: 0", b"Transfer-Encoding: chunked",
    b"Connection: close", b"Connection: keep-alive", b"Connection: Upgrade",
    b"Upgrade: websocket", b"X-A: 1", b"X-B:  spaced ", b"Bad Name: x", b"X-Obs: a\r\n b",
    b"Content-Length: 1x", b"Expect: 100-continue", b"X-Empty:",
])
BODIES = st.sampled_from([b"", b"abc", b"3\r\nabc\r\n0\r\n\r\n", b"3\r\nabc\r\n0\r\nT: 1\r\n\r\n",
                          b"zz\r\n", b"1;ext=1\r\na\r\n0\r\n\r\n"])


@st.composite
def streams(draw, kind: str):
    out = b""
    for _ in range(draw(st.integers(1, 3))):
        if kind == "RequestParser":
            method = draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"BREW", b"CONNECT"]))
            target = draw(st.sampled_from([b"/", b"/a/b?c=d", b"http://h/x", b"*", b"/\x01"]))
            version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.2"]))
            line = method + b" " + target + b" " + version
        else:
            version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9"]))
            status = draw(st.sampled_from([b"200 OK", b"101 Switching", b"204 No", b"100 Go",
                                           b"99 X", b"304 NM"]))
            line = version + b" " + status
        fields = draw(st.lists(FIELDS, max_size=4))
        out += line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + draw(BODIES)
    if draw(st.booleans()):
        out += draw(st.binary(max_size=8))
    cuts = sorted(draw(st.lists(st.integers(0, len(out)), max_size=6)))
    return [out[a:b] for a, b in zip([0, *cuts], [*cuts, len(out)], strict=True)]


@pytest.mark.skipif(len(TWINS) < 2, reason="the compiled parser is not built")
@settings(max_examples=400, deadline=None)
@given(data=st.data(), kind=st.sampled_from(["RequestParser", "ResponseParser"]),
       limits=st.sampled_from([None, (8, 40, 3), (64, 64, 2)]))
def test_the_twins_agree(data, kind, limits):
    chunks = data.draw(streams(kind))
    python, compiled = TWINS
    assert feed(compiled, kind, chunks, limits) == feed(python, kind, chunks, limits)
