import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgw._core import IMPLEMENTATIONS, NO_EXTENSIONS
from fastgw._core._router_py import (
    validate_header_regex,
    validate_host_pattern,
    validate_path_pattern,
)


def implementation(name):
    module = IMPLEMENTATIONS.get(name)
    if module is None:
        if NO_EXTENSIONS:
            pytest.skip("FASTGW_NO_EXTENSIONS is set")
        pytest.fail("compiled router missing: pip install . builds it")
    return module


@pytest.fixture(params=["python", "compiled"])
def make(request):
    router_class = implementation(request.param).Router

    def make(*routes):
        return router_class([_spec(r) for r in routes])

    return make


def _spec(route):
    """Shorthand: a path string, or a dict with path(s)/methods/hosts/headers."""
    if isinstance(route, str):
        return ((route,), None, None, ())
    paths = route.get("paths", (route["path"],) if "path" in route else None)
    return (paths, route.get("methods"), route.get("hosts"), route.get("headers", ()))


def no_headers(name):
    raise AssertionError(f"header {name!r} looked up without a Header predicate")


def match(router, path, method="GET", host=None, headers=None):
    if headers is None:
        return router.match(method, host, path, no_headers)
    return router.match(method, host, path, lambda name: headers.get(name, ()))


def index(router, path, **kw):
    result = match(router, path, **kw)
    return None if result is None else result[0]


# -- paths -------------------------------------------------------------------


def test_literal_segments_match_exactly_and_case_sensitively(make):
    r = make("/orders/open")
    assert match(r, "/orders/open") == (0, None)
    for path in ("/orders", "/orders/open/", "/Orders/open", "/orders/opened", "/orders/open/x"):
        assert match(r, path) is None, path


def test_trailing_slash_is_significant_on_both_sides(make):
    r = make("/a", "/b/")
    assert index(r, "/a") == 0
    assert index(r, "/a/") is None
    assert index(r, "/b/") == 1
    assert index(r, "/b") is None


def test_root(make):
    r = make("/")
    assert index(r, "/") == 0
    assert index(r, "/a") is None


def test_star_matches_one_non_empty_segment(make):
    r = make("/a/*/c")
    assert match(r, "/a/b/c") == (0, None)
    assert index(r, "/a//c") is None
    assert index(r, "/a/c") is None
    assert index(r, "/a/b/b/c") is None


def test_double_star_at_the_end_matches_zero_or_more_segments(make):
    r = make("/orders/**")
    for path in ("/orders", "/orders/", "/orders/1", "/orders/1/2/3", "/orders/1/"):
        assert match(r, path) == (0, None), path
    for path in ("/order", "/ordersx", "/", "/x/orders"):
        assert match(r, path) is None, path


def test_double_star_alone_matches_everything(make):
    r = make("/**")
    for path in ("/", "/a", "/a/b/", "//"):
        assert index(r, path) == 0


def test_double_star_in_the_middle(make):
    r = make("/a/**/z", "/**/x/**/y")
    assert index(r, "/a/z") == 0
    assert index(r, "/a/1/2/3/z") == 0
    assert index(r, "/a/z/") is None
    assert index(r, "/x/y") == 1
    assert index(r, "/1/x/2/3/y") == 1
    assert index(r, "/1/x/2/3/y/z") is None
    assert index(r, "/y/x") is None


def test_consecutive_double_stars_are_one(make):
    r = make("/a/**/**/b")
    assert index(r, "/a/b") == 0
    assert index(r, "/a/1/2/b") == 0


def test_variables(make):
    r = make("/users/{id}/orders/{order_id}")
    assert match(r, "/users/7/orders/x-1") == (0, {"id": "7", "order_id": "x-1"})
    assert match(r, "/users//orders/1") is None


def test_variable_with_regex(make):
    r = make("/n/{id:\\d+}", "/n/{name}")
    assert match(r, "/n/123") == (0, {"id": "123"})
    assert match(r, "/n/12a") == (1, {"name": "12a"})


def test_regex_braces_and_slashes_inside_a_variable(make):
    r = make("/y/{year:\\d{4}}", "/p/{x:a|b}")
    assert match(r, "/y/2024") == (0, {"year": "2024"})
    assert match(r, "/y/202") is None
    assert match(r, "/p/b") == (1, {"x": "b"})


def test_regex_groups_inside_variables_do_not_shift_captures(make):
    r = make("/f/{name:(a|b)+}-{ver:(\\d)\\.(\\d)}")
    assert match(r, "/f/ab-1.2") == (0, {"name": "ab", "ver": "1.2"})


def test_in_segment_wildcards(make):
    r = make("/files/*.json", "/files/file-?.txt", "/v/v{major}.{minor}", "/d/{name}.tar.gz")
    assert index(r, "/files/a.json") == 0
    assert index(r, "/files/.json") == 0
    assert index(r, "/files/a.jsonx") is None
    assert index(r, "/files/file-1.txt") == 1
    assert index(r, "/files/file-12.txt") is None
    assert match(r, "/v/v1.2") == (2, {"major": "1", "minor": "2"})
    assert match(r, "/v/v1.2.3") == (2, {"major": "1", "minor": "2.3"})
    assert match(r, "/v/v.2") is None
    assert match(r, "/d/a.b.tar.gz") == (3, {"name": "a.b"})


def test_capture_the_rest(make):
    r = make("/files/{*path}", "/{*all}")
    assert match(r, "/files") == (0, {"path": ""})
    assert match(r, "/files/") == (0, {"path": "/"})
    assert match(r, "/files/a/b") == (0, {"path": "/a/b"})
    assert match(r, "/files/a/b/") == (0, {"path": "/a/b/"})
    assert match(r, "/other") == (1, {"all": "/other"})
    assert match(r, "/") == (1, {"all": "/"})


def test_variables_around_a_floating_double_star(make):
    r = make("/{a}/**/{b}/x/**/{c}")
    assert match(r, "/1/2/x/3") == (0, {"a": "1", "b": "2", "c": "3"})
    # each '**' takes as few segments as it can, left to right
    assert match(r, "/1/p/q/x/r/x/s/t") == (0, {"a": "1", "b": "q", "c": "t"})


def test_first_route_in_written_order_wins(make):
    r = make("/**", "/a/b", "/a/{x}")
    assert match(r, "/a/b") == (0, None)
    r = make("/a/{x}", "/a/b", "/**")
    assert match(r, "/a/b") == (0, {"x": "b"})
    assert match(r, "/a/b/c") == (2, None)


def test_a_route_with_several_patterns_captures_from_the_first_that_matches(make):
    r = make({"paths": ("/a/{x}", "/{y}/b")}, "/a/b")
    assert match(r, "/a/b") == (0, {"x": "b"})
    assert match(r, "/z/b") == (0, {"y": "z"})


def test_route_without_path_is_always_a_candidate(make):
    r = make("/a", {"methods": ("POST",)}, "/**")
    assert index(r, "/a") == 0
    assert index(r, "/b", method="POST") == 1
    assert index(r, "/b") == 2


def test_request_target_without_leading_slash_only_meets_pathless_routes(make):
    r = make("/**", {"methods": ("OPTIONS",)})
    assert index(r, "*", method="OPTIONS") == 1
    assert index(r, "", method="GET") is None


def test_empty_table(make):
    assert make().match("GET", None, "/", no_headers) is None


def test_result_variables_are_fresh_dicts(make):
    r = make("/a/{x}")
    first = match(r, "/a/1")[1]
    first["x"] = "changed"
    assert match(r, "/a/1") == (0, {"x": "1"})


# -- methods, hosts, headers -------------------------------------------------


def test_methods(make):
    r = make({"path": "/a", "methods": ("GET", "post")}, "/a")
    assert index(r, "/a", method="GET") == 0
    assert index(r, "/a", method="POST") == 0
    assert index(r, "/a", method="PUT") == 1
    assert index(r, "/a", method="get") == 1


@pytest.mark.parametrize(
    ("pattern", "host", "ok"),
    [
        ("example.com", "example.com", True),
        ("example.com", "EXAMPLE.com", True),
        ("Example.COM", "example.com:8443", True),
        ("example.com", "example.com.", True),
        ("example.com", "www.example.com", False),
        ("example.com", None, False),
        ("example.com", "", False),
        ("*.example.com", "api.example.com", True),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", "example.com", False),
        ("**.example.com", "a.b.example.com:80", True),
        ("**.example.com", "api.example.com", True),
        ("**.example.com", "example.com", False),
        ("{sub}.example.com", "api.example.com", True),
        ("{sub:[a-z]+}.example.com", "API.example.com", True),
        ("{sub:[a-z]+}.example.com", "a1.example.com", False),
        ("api-*.example.com", "api-eu.example.com", True),
        ("api.**", "api.x.y", True),
        ("api.**", "api", False),
        ("[::1]", "[::1]:8080", True),
        ("[::1]", "[0:0::1]", True),
        ("[::1]", "::1", False),
        ("127.0.0.1", "127.0.0.1:80", True),
    ],
)
def test_hosts(make, pattern, host, ok):
    r = make({"path": "/", "hosts": (pattern,)})
    assert (index(r, "/", host=host) == 0) is ok


def test_several_hosts_match_any(make):
    r = make({"hosts": ("a.com", "*.b.com")})
    assert index(r, "/", host="a.com") == 0
    assert index(r, "/", host="x.b.com") == 0
    assert index(r, "/", host="c.com") is None


def test_headers(make):
    r = make(
        {"path": "/a", "headers": (("x-request-id", r"\d+"),)},
        {"path": "/a", "headers": (("x-debug", None),)},
        {"path": "/a", "headers": (("X-Flag", ""),)},
        "/a",
    )
    assert index(r, "/a", headers={"x-request-id": ["12"]}) == 0
    assert index(r, "/a", headers={"x-request-id": ["x", "34"]}) == 0
    assert index(r, "/a", headers={"x-request-id": ["12a"]}) == 3
    assert index(r, "/a", headers={"x-debug": [""]}) == 1
    assert index(r, "/a", headers={"x-flag": ["anything"]}) == 2
    assert index(r, "/a", headers={}) == 3


def test_header_values_are_looked_up_lazily_and_once(make):
    r = make(
        "/plain/**",
        {"path": "/h", "headers": (("x-a", "1"),)},
        {"path": "/h", "headers": (("x-a", "2"), ("x-b", "3"))},
    )
    assert index(r, "/plain/x") == 0  # no_headers raises if called
    calls = []

    def lookup(name):
        calls.append(name)
        return {"x-a": ["2"], "x-b": ("3",)}[name]

    assert r.match("GET", None, "/h", lookup) == (2, None)
    assert sorted(calls) == ["x-a", "x-b"]


def test_all_predicates_must_pass(make):
    r = make(
        {
            "path": "/a/**",
            "methods": ("GET",),
            "hosts": ("*.example.com",),
            "headers": (("x-v", "2"),),
        },
        "/**",
    )
    good = {"method": "GET", "host": "api.example.com", "headers": {"x-v": ["2"]}}
    assert index(r, "/a/1", **good) == 0
    assert index(r, "/b", **good) == 1
    assert index(r, "/a/1", **{**good, "method": "POST"}) == 1
    assert index(r, "/a/1", **{**good, "host": "example.org"}) == 1
    assert index(r, "/a/1", **{**good, "headers": {"x-v": ["3"]}}) == 1


# -- validation --------------------------------------------------------------

BAD_PATHS = [
    ("orders", "must start with '/'"),
    ("", "must start with '/'"),
    ("/a//b", "empty segment"),
    ("/a/../b", "'..' segments"),
    ("/./b", "'.' segments"),
    ("/a**", "'**' must be a whole segment"),
    ("/***", "'**' must be a whole segment"),
    ("/{*rest}/a", "must be the last segment"),
    ("/x{*rest}", "must be a whole segment"),
    ("/{id}/{id}", "variable 'id' appears twice"),
    ("/{id}/{*id}", "variable 'id' appears twice"),
    ("/{a}{b}", "need literal text"),
    ("/*{b}", "need literal text"),
    ("/{", "never closed"),
    ("/a}", "without '{'"),
    ("/{}", "invalid variable name ''"),
    ("/{1x}", "invalid variable name '1x'"),
    ("/{x:}", "empty regex"),
    ("/{x:(}", "invalid regex"),
    ("/{x:(a+)+}", "unbounded repeat"),
    ("/{x:(a)\\1}", "backreferences"),
    ("/a b", "character ' '"),
    ("/a\\b", "character '\\\\'"),
]


@pytest.mark.parametrize(("pattern", "message"), BAD_PATHS)
def test_invalid_path_patterns(make, pattern, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_path_pattern(pattern)
    with pytest.raises(ValueError, match=re.escape(message)):
        make(pattern)


@pytest.mark.parametrize(
    "pattern",
    [
        "/",
        "/**",
        "/a/",
        "/a/**/b/**",
        "/{*rest}",
        "/**/{*rest}",
        "/{x:(a+)++}",
        "/{x:(?>a+)+}",
        "/{x:[a-z]+}-{y:\\d+}",
        "/{a}{b:\\d+}",
        "/a.b/c..d/...",
        "/%20/caf%C3%A9",
    ],
)
def test_valid_path_patterns(make, pattern):
    validate_path_pattern(pattern)
    make(pattern)


BAD_HOSTS = [
    ("", "empty"),
    ("example.com:8080", "must not carry a port"),
    ("[::1]:8080", "must not carry a port"),
    ("[zz]", "not an IPv6 address"),
    ("a..b", "empty label"),
    ("a b.com", "character ' '"),
    ("a/b", "character '/'"),
    ("a**.com", "'**' must be a whole label"),
    ("{*x}.com", "not allowed in a host pattern"),
    ("{x}.{x}.com", "variable 'x' appears twice"),
]


@pytest.mark.parametrize(("pattern", "message"), BAD_HOSTS)
def test_invalid_host_patterns(make, pattern, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_host_pattern(pattern)
    with pytest.raises(ValueError, match=re.escape(message)):
        make({"hosts": (pattern,)})


def test_invalid_predicates(make):
    with pytest.raises(ValueError, match="route 1: invalid method"):
        make("/a", {"methods": ("G ET",)})
    with pytest.raises(ValueError, match="route 0: methods predicate has no values"):
        make({"methods": ()})
    with pytest.raises(ValueError, match="route 0: paths predicate has no values"):
        make({"paths": ()})
    with pytest.raises(ValueError, match="route 0: invalid header name"):
        make({"headers": (("x y", "1"),)})
    with pytest.raises(ValueError, match="route 0: header regex '\\(': invalid regex"):
        make({"headers": (("x-a", "("),)})
    with pytest.raises(ValueError, match="unbounded repeat"):
        make({"headers": (("x-a", "(a*)*b"),)})
    with pytest.raises(TypeError):
        make({"paths": "/a"})


def test_validate_header_regex():
    validate_header_regex(r"\d+")
    validate_header_regex(None)
    validate_header_regex(r"(\d++,)*\d+")
    with pytest.raises(ValueError, match="unbounded repeat"):
        validate_header_regex(r"(\d+,)*\d+")


# -- hostile input -----------------------------------------------------------


def _fast(fn, limit=1.0):
    start = time.perf_counter()
    result = fn()
    assert time.perf_counter() - start < limit
    return result


def test_very_long_paths(make):
    r = make("/a/**", "/**/{x}/**/y", "/{a}/{b}", "/**/z/{*rest}")
    many = "/a" + "/s" * 20000
    assert _fast(lambda: match(r, many)) == (0, None)
    assert _fast(lambda: match(r, "/q" + "/s" * 20000 + "/y")) == (1, {"x": "q"})
    assert _fast(lambda: match(r, "/q" + "/s" * 20000)) is None
    assert _fast(lambda: index(r, "/q" + "x" * 200000)) is None
    assert _fast(lambda: index(r, "/" * 20000)) is None
    assert _fast(lambda: match(r, "/z" * 20000 + "/q"))[0] == 3


def test_many_floating_double_stars_stay_polynomial(make):
    r = make("/**/a/**/b/**/c/**/d/**/e/**/f")
    path = "/a/b" * 3000 + "/x"
    assert _fast(lambda: index(r, path)) is None
    assert _fast(lambda: index(r, path + "/c/d/e/f")) == 0


def test_in_segment_wildcards_do_not_backtrack(make):
    r = make("/{a}.{b}.{c}.{d}.json", "/x/*a*b*c*d*e")
    segment = "1." * 20000 + "jsox"
    assert _fast(lambda: index(r, "/" + segment)) is None
    assert _fast(lambda: index(r, "/x/" + "a" * 50000)) is None


def test_deep_patterns_build_and_free_without_recursion(make):
    deep = "/x" * 20000
    r = make(deep + "/**", deep + "/{v}")
    assert index(r, deep + "/1") == 0
    assert make(deep + "/{v}").match("GET", None, deep + "/1", no_headers) == (0, {"v": "1"})
    stars = "/*" * 20000
    assert index(make(stars), "/a" * 20000) == 0


# -- the two implementations agree, and agree with a naive matcher ------------

LITERALS = ["a", "b", "c1", "", "1"]
SEGMENTS = ["a", "b", "c1", "*", "**", "{v}", "{w:\\d+}", "*.json", "x?", "{p}.json", "1"]
REQUEST_SEGMENTS = ["a", "b", "c1", "1", "22", "x.json", "xy", "", ".json", "q.json"]
METHODS = ["GET", "POST", "DELETE"]
HOSTS = ["example.com", "*.example.com", "**.example.com", "{s}.example.com", "a.*.com"]
REQUEST_HOSTS = [
    None,
    "example.com",
    "A.Example.com:8080",
    "a.b.example.com",
    "a.x.com",
    "example.org",
    "",
]
HEADERS = [("x-a", "1"), ("x-a", None), ("x-b", "\\d+"), ("x-b", "b|c")]


def _even(token):
    return token % 2 == 0


def _third(token):
    return token % 3 == 0


TESTS = [_even, _third]  # what the trie cannot index, given the request (here a number)


def _name_variables(segments):
    """Suffix each variable with its position, so names are unique in a pattern."""
    return [
        re.sub(r"\{(\*?)(\w+)", lambda m, k=k: f"{{{m[1]}{m[2]}{k}", s)
        for k, s in enumerate(segments)
    ]


def _pattern(segments, rest):
    segments = [s for k, s in enumerate(segments) if s or (k == len(segments) - 1 and not rest)]
    return "/" + "/".join(_name_variables([*segments, "{*rest}"] if rest else segments))


path_patterns = st.builds(
    _pattern, st.lists(st.sampled_from(SEGMENTS + LITERALS), max_size=5), st.booleans()
)


def _optional(choices, size, none_weight=1):
    values = st.lists(st.sampled_from(choices), min_size=1, max_size=size).map(tuple)
    return st.one_of(*[st.none()] * none_weight, values)


routes = st.lists(
    st.tuples(
        st.one_of(st.none(), *[st.lists(path_patterns, min_size=1, max_size=3).map(tuple)] * 5),
        _optional(METHODS, 3),
        st.one_of(st.none(), st.none(), _optional(HOSTS, 2)),
        st.one_of(
            st.just(()),
            st.just(()),
            st.lists(st.sampled_from(HEADERS), max_size=2, unique_by=lambda h: h[0]).map(tuple),
        ),
        st.one_of(st.just(()), st.lists(st.sampled_from(TESTS), max_size=2).map(tuple)),
    ),
    max_size=8,
)

requests = st.tuples(
    st.sampled_from(METHODS),
    st.sampled_from(REQUEST_HOSTS),
    st.lists(st.sampled_from(REQUEST_SEGMENTS), max_size=7).map(lambda s: "/" + "/".join(s)),
    st.dictionaries(
        st.sampled_from(["x-a", "x-b"]),
        st.lists(st.sampled_from(["1", "2", "b", "12", ""]), max_size=2),
    ),
    st.integers(min_value=0, max_value=11),
)


def _segment_regex(segment):
    out = []
    for token in re.split(r"(\{\w+(?::[^}]*)?\}|\*|\?)", segment):
        if token == "*":
            out.append("[^/]*")
        elif token == "?":
            out.append("[^/]")
        elif token.startswith("{"):
            name, _, regex = token[1:-1].partition(":")
            out.append(f"(?P<{name}>{regex or '[^/]+?'})")
        else:
            out.append(re.escape(token))
    return "".join(out)


def naive_path(pattern):
    """A whole-path regex per pattern: the slow, obvious reading of the rules."""
    out = []
    for segment in pattern[1:].split("/"):
        if segment == "**":
            out.append("(?:/[^/]*)*?")
        elif segment.startswith("{*"):
            out.append(f"(?P<{segment[2:-1]}>(?:/[^/]*)*)")
        elif segment == "*":
            out.append("/[^/]+")
        elif not segment:
            out.append("/")
        else:
            out.append("/" + f"(?=[^/])(?:{_segment_regex(segment)})")
    return re.compile("".join(out))


def naive_host(pattern):
    labels = []
    for label in pattern.split("."):
        if label == "**":
            labels.append(r"[^.]+(?:\.[^.]+)*")
        else:
            label = re.sub(r"\\\*", "[^.]+", re.escape(label))
            labels.append(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^.]+)", label))
    return re.compile(r"\.".join(labels))


def _host_variables(hosts, name):
    for pattern in hosts:
        m = naive_host(pattern).fullmatch(name)
        if m is not None:
            return m.groupdict()
    return {}


def naive_match(table, method, host, path, headers, token):
    name = None
    if host:
        name = host.split(":")[0].lower().rstrip(".")
    for i, (paths, methods, hosts, header_specs, tests) in enumerate(table):
        if methods is not None and method not in methods:
            continue
        if hosts is not None and not (name and any(naive_host(h).fullmatch(name) for h in hosts)):
            continue
        if not all(
            (values := headers.get(h, ()))
            and (regex is None or any(re.fullmatch(regex, v) for v in values))
            for h, regex in header_specs
        ):
            continue
        if not all(test(token) for test in tests):
            continue
        variables = _host_variables(hosts, name) if hosts is not None else {}
        if paths is None:
            return i, (variables or None)
        for pattern in paths:
            m = naive_path(pattern).fullmatch(path)
            if m is not None:
                return i, ({**variables, **m.groupdict()} or None)
    return None


RUNS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@RUNS
@given(table=routes, probes=st.lists(requests, min_size=1, max_size=12))
def test_compiled_and_python_agree(table, probes):
    python = implementation("python").Router(table)
    compiled = implementation("compiled").Router(table)
    for method, host, path, headers, token in probes:
        lookup = lambda name, headers=headers: headers.get(name, ())  # noqa: E731
        assert compiled.match(method, host, path, lookup, token) == python.match(
            method, host, path, lookup, token
        ), (method, host, path, headers, token)


@pytest.mark.parametrize("name", ["python", "compiled"])
@RUNS
@given(table=routes, probes=st.lists(requests, min_size=1, max_size=12))
def test_agrees_with_a_naive_matcher(name, table, probes):
    router = implementation(name).Router(table)
    for method, host, path, headers, token in probes:
        got = router.match(method, host, path, lambda n, h=headers: h.get(n, ()), token)
        expected = naive_match(table, method, host, path, headers, token)
        assert got == expected, (method, host, path, token)
