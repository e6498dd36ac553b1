"""Route matching: which route, in written order, takes a request.

Pure-Python twin of ``_router_c``; this module also owns pattern parsing and
validation, which both twins share, so the two can only differ on the hot path.

Path patterns (Spring ``PathPattern`` style), split into segments on ``/``:

- a literal segment matches itself exactly, case-sensitively;
- ``*`` matches one non-empty segment; ``{name}`` does too and captures it;
- ``{name:regex}`` captures one segment that the regex matches in full;
- ``*``, ``?`` (one character) and ``{name}`` / ``{name:regex}`` may mix with
  literal text inside a segment: ``*.json``, ``file-?.txt``,
  ``v{major}.{minor}``. Where several wildcards could share the text, each
  takes the shortest text that lets the rest match, left to right
  (``v{major}.{minor}`` on ``v1.2.3`` gives major ``1``, minor ``2.3``);
  two wildcards or variables need literal text or ``?`` between them unless
  one carries a regex;
- ``**`` matches zero or more segments, anywhere it is a whole segment, so
  ``/orders/**`` matches ``/orders``, ``/orders/`` and ``/orders/1/2``; where
  ``**`` in the middle leaves a choice, each takes as few segments as it can;
- ``{*name}``, last only, matches like ``**`` and captures the rest with its
  leading slash: ``/files/{*path}`` on ``/files/a/b`` gives ``/a/b``, on
  ``/files`` gives ``""``;
- wildcards and variables never match an empty segment; only literals and
  ``**`` do;
- a trailing slash is significant on both sides: ``/a/`` matches only
  ``/a/``, ``/a`` only ``/a``. ``//``, ``.`` and ``..`` segments are errors,
  since a normalised request path never holds them;
- a request target that does not start with ``/`` (``OPTIONS *``) meets only
  routes without a Path predicate.

Host patterns split into labels on ``.``, compared case-insensitively, with
the request's port and a trailing dot ignored: ``example.com``,
``*.example.com`` (one label), ``**.example.com`` (one or more labels),
``{sub}.example.com`` (one label, captured as ``sub``),
``{sub:regex}`` (the regex matches one label, ignoring case), in-label ``*``
and ``?``; ``[::1]`` style IPv6 literals compare in canonical form. A request
without a Host never matches a Host predicate.

Methods compare exactly: ``get`` in a config means ``GET``, but a request
whose method is ``get`` matches neither.

Headers: ``(name, regex)`` matches when any value of the header matches the
regex in full (``re.fullmatch``); a ``None`` or empty regex only requires the
header to be present.

Regexes (path variables and headers) may not nest one unbounded repeat inside
another, such as ``(a+)+``, unless one of them is possessive (``*+``, ``++``)
or in an atomic group (``(?>...)``): those backtrack exponentially on hostile
input. Generated segment regexes are linear by construction.

Matching walks a trie of segments: literal children are dict lookups, then the
``*`` child, segment-regex children and ``**`` are followed too, collecting
the candidate patterns of every branch that reaches the end of the path. The
walk is iterative, and a ``**`` node with children remembers the earliest
position it was entered from, so each (node, position) pair is visited once.
Candidate lists are sorted by written order; the lowest one whose method,
host and header predicates pass wins. A route may also carry tests the trie
cannot index (cookies, query, client address, time, weight): callables given
the request, run last and only on candidates.

A match is ``(route, variables)``: the variables of the first of the route's
host patterns, in written order, that matches, then those of its path
pattern; None when neither has any.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from re import _constants as _sre
from re import _parser as _sre_parse

__all__ = [
    "Router",
    "validate_header_regex",
    "validate_host_pattern",
    "validate_path_pattern",
]

# Element kinds of a segment pattern; the trie and ``place`` share them.
LITERAL = 0
ANY = 1
REGEX = 2
DSTAR = 3

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*", re.ASCII)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Z-]+", re.ASCII)
_HOST_TEXT = re.compile(r"[a-z0-9_-]*", re.ASCII)
_BAD_PATH_CHAR = re.compile(r"[\x00-\x20\x7f\\]")


# -- regex safety ------------------------------------------------------------

_REPEATS = (_sre.MAX_REPEAT, _sre.MIN_REPEAT)


def _check_regex_tree(items, what, under_repeat, allow_backrefs):
    for op, av in items:
        if op in _REPEATS:
            unbounded = av[1] == _sre.MAXREPEAT
            if unbounded and under_repeat:
                raise ValueError(
                    f"{what} nests an unbounded repeat inside another, which can backtrack "
                    "without end; make one possessive (*+, ++) or atomic (?>...)"
                )
            _check_regex_tree(av[2], what, under_repeat or unbounded, allow_backrefs)
        elif op is _sre.POSSESSIVE_REPEAT:
            _check_regex_tree(av[2], what, False, allow_backrefs)
        elif op is _sre.ATOMIC_GROUP:
            _check_regex_tree(av, what, False, allow_backrefs)
        elif op is _sre.SUBPATTERN:
            _check_regex_tree(av[3], what, under_repeat, allow_backrefs)
        elif op is _sre.BRANCH:
            for branch in av[1]:
                _check_regex_tree(branch, what, under_repeat, allow_backrefs)
        elif op in (_sre.ASSERT, _sre.ASSERT_NOT):
            _check_regex_tree(av[1], what, under_repeat, allow_backrefs)
        elif op is _sre.GROUPREF_EXISTS:
            _check_regex_tree(av[1], what, under_repeat, allow_backrefs)
            if av[2] is not None:
                _check_regex_tree(av[2], what, under_repeat, allow_backrefs)
        elif op is _sre.GROUPREF and not allow_backrefs:
            raise ValueError(f"{what}: backreferences are not supported here")


def _compile_regex(source, what, allow_backrefs=True):
    try:
        compiled = re.compile(source)
    except re.error as exc:
        raise ValueError(f"{what}: invalid regex: {exc}") from None
    _check_regex_tree(_sre_parse.parse(source), what, False, allow_backrefs)
    return compiled


def validate_header_regex(regex: str | None) -> None:
    """Raise ValueError unless ``regex`` is usable in a Header predicate."""
    if regex:
        _compile_regex(regex, f"header regex {regex!r}")


# -- segment patterns --------------------------------------------------------


class SegmentPattern:
    """A path or host pattern as a sequence of per-segment elements.

    ``blocks`` are the runs of single-segment elements between ``**``
    elements: the first is anchored at the start, the last at the end, the
    middle ones float. ``rest`` names the ``{*name}`` capture, if any.
    """

    __slots__ = ("blocks", "elements", "has_vars", "min_gap", "rest", "text")

    def __init__(self, text, elements, min_gap):
        self.text = text
        self.elements = elements
        self.min_gap = min_gap
        blocks, run, rest, has_vars = [], [], None, False
        for element in elements:
            if element[0] == DSTAR:
                blocks.append(tuple(run))
                run = []
                rest = element[1]
            else:
                run.append(element)
                rest = None
            if element[0] in (ANY, DSTAR):
                has_vars = has_vars or element[1] is not None
            elif element[0] == REGEX:
                has_vars = has_vars or bool(element[2])
        blocks.append(tuple(run))
        self.blocks = tuple(blocks)
        self.rest = rest
        self.has_vars = has_vars


def _split_top_level(text, sep, what):
    """Split on ``sep`` outside ``{...}``, so variable regexes may hold it."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        c = text[i]
        if c == "\\" and depth:
            i += 1
        elif c == "{":
            depth += 1
        elif c == "}":
            if not depth:
                raise ValueError(f"{what}: '}}' without '{{'")
            depth -= 1
        elif c == sep and not depth:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if depth:
        raise ValueError(f"{what}: '{{' is never closed")
    parts.append(text[start:])
    return parts


def _tokenise(segment, what):
    """Tokens: ('lit', text) ('star',) ('dstar',) ('qmark',) ('var', name, regex) ('rest', name)."""
    tokens, text, i = [], [], 0
    while i < len(segment):
        c = segment[i]
        if c == "{":
            depth, j = 1, i + 1
            while depth:
                if segment[j] == "\\":
                    j += 1
                elif segment[j] == "{":
                    depth += 1
                elif segment[j] == "}":
                    depth -= 1
                j += 1
            body = segment[i + 1 : j - 1]
            if text:
                tokens.append(("lit", "".join(text)))
                text = []
            if body.startswith("*"):
                name = sys.intern(body[1:])
                if not _NAME.fullmatch(name):
                    raise ValueError(f"{what}: invalid variable name {name!r} in '{{{body}}}'")
                tokens.append(("rest", name))
            else:
                name, colon, regex = body.partition(":")
                name = sys.intern(name)
                if not _NAME.fullmatch(name):
                    raise ValueError(f"{what}: invalid variable name {name!r} in '{{{body}}}'")
                if colon and not regex:
                    raise ValueError(f"{what}: empty regex in '{{{body}}}'")
                tokens.append(("var", name, regex or None))
            i = j
            continue
        if c == "*":
            if text:
                tokens.append(("lit", "".join(text)))
                text = []
            if segment.startswith("**", i):
                tokens.append(("dstar",))
                i += 2
                continue
            tokens.append(("star",))
        elif c == "?":
            if text:
                tokens.append(("lit", "".join(text)))
                text = []
            tokens.append(("qmark",))
        else:
            text.append(c)
        i += 1
    if text:
        tokens.append(("lit", "".join(text)))
    return tokens


def _composite_regex(tokens, what, flags):
    """One segment of mixed literal text and wildcards, as a fullmatch regex.

    Without user regexes, every wildcard but the last sits in an atomic group
    with the fixed-width text that follows it: the leftmost placement of that
    text is always a correct one, so nothing backtracks and matching stays
    linear in the segment length.
    """
    constrained = any(t[0] == "var" and t[2] for t in tokens)
    items, groups, count = [], [], 0  # items: ("piece", regex) or ("hole", regex)
    for token in tokens:
        kind = token[0]
        if kind in ("lit", "qmark"):
            piece = re.escape(token[1]) if kind == "lit" else "."
            if items and items[-1][0] == "piece":
                items[-1] = ("piece", items[-1][1] + piece)
            else:
                items.append(("piece", piece))
            continue
        if not constrained and items and items[-1][0] == "hole":
            raise ValueError(
                f"{what}: wildcards and variables in one segment need literal text "
                "or '?' between them"
            )
        if kind == "star":
            items.append(("hole", ".*?"))
        elif token[2] is None:
            count += 1
            groups.append((token[1], count))
            items.append(("hole", "(.+?)"))
        else:
            compiled = _compile_regex(token[2], f"{what}: regex {token[2]!r}", allow_backrefs=False)
            count += 1
            groups.append((token[1], count))
            count += compiled.groups
            items.append(("regex", "(" + token[2] + ")"))
    if constrained:
        body = "".join(text for _, text in items)
    else:
        last_hole = max((k for k, item in enumerate(items) if item[0] == "hole"), default=-1)
        parts, k = [], 0
        while k < len(items):
            text = items[k][1]
            if items[k][0] == "hole" and k != last_hole:
                parts.append("(?>" + text + items[k + 1][1] + ")")
                k += 2
            else:
                parts.append(text)
                k += 1
        body = "".join(parts)
    source = flags + body
    try:
        return re.compile(source), tuple(groups), source
    except re.error as exc:
        raise ValueError(f"{what}: invalid regex: {exc}") from None


def _parse_segment(segment, what, host):
    tokens = _tokenise(segment, what)
    if not tokens:
        return (LITERAL, "")
    for k, token in enumerate(tokens):
        if token[0] != "lit":
            continue
        if host:
            text = token[1].lower()
            if not _HOST_TEXT.fullmatch(text):
                if ":" in text:
                    raise ValueError(f"{what} must not carry a port")
                bad = next(c for c in text if not _HOST_TEXT.fullmatch(c))
                raise ValueError(f"{what}: character {bad!r} is not allowed")
            tokens[k] = ("lit", text)
        else:
            bad = _BAD_PATH_CHAR.search(token[1])
            if bad:
                raise ValueError(f"{what}: character {bad.group()!r} is not allowed")
    kinds = [t[0] for t in tokens]
    if "dstar" in kinds:
        if len(tokens) > 1:
            raise ValueError(f"{what}: '**' must be a whole {'label' if host else 'segment'}")
        return (DSTAR, None)
    if "rest" in kinds:
        name = tokens[kinds.index("rest")][1]
        if host:
            raise ValueError(f"{what}: '{{*{name}}}' is not allowed in a host pattern")
        if len(tokens) > 1:
            raise ValueError(f"{what}: '{{*{name}}}' must be a whole segment")
        return (DSTAR, name)
    if kinds == ["lit"]:
        return (LITERAL, tokens[0][1])
    if kinds == ["star"]:
        return (ANY, None)
    if kinds == ["var"] and tokens[0][2] is None:
        return (ANY, tokens[0][1])
    test, groups, source = _composite_regex(tokens, what, "(?si)" if host else "(?s)")
    return (REGEX, test.fullmatch, groups, source)


def _names(element):
    kind = element[0]
    if kind in (ANY, DSTAR):
        return () if element[1] is None else (element[1],)
    if kind == REGEX:
        return tuple(name for name, _ in element[2])
    return ()


def _check_names(elements, what):
    seen = set()
    for element in elements:
        for name in _names(element):
            if name in seen:
                raise ValueError(f"{what}: variable {name!r} appears twice")
            seen.add(name)


def parse_path_pattern(pattern):
    if not isinstance(pattern, str):
        raise ValueError(f"path pattern must be a string, not {type(pattern).__name__}")
    what = f"path pattern {pattern!r}"
    if not pattern.startswith("/"):
        raise ValueError(f"{what} must start with '/'")
    segments = _split_top_level(pattern[1:], "/", what)
    elements = []
    last = len(segments) - 1
    for k, segment in enumerate(segments):
        if not segment and k != last:
            raise ValueError(f"{what}: empty segment ('//')")
        if segment in (".", ".."):
            raise ValueError(f"{what}: {segment!r} segments never match a normalised path")
        element = _parse_segment(segment, what, host=False)
        if element[0] == DSTAR and element[1] is not None and k != last:
            raise ValueError(f"{what}: '{{*{element[1]}}}' must be the last segment")
        elements.append(element)
    _check_names(elements, what)
    return SegmentPattern(pattern, tuple(elements), 0)


def _canonical_ipv6(text):
    """``[addr]`` in canonical form, or None if ``text`` is not one."""
    try:
        return "[" + ipaddress.IPv6Address(text[1:-1]).compressed + "]"
    except ValueError:
        return None


def parse_host_pattern(pattern):
    """A canonical host name (str) for plain names, else a SegmentPattern."""
    if not isinstance(pattern, str):
        raise ValueError(f"host pattern must be a string, not {type(pattern).__name__}")
    what = f"host pattern {pattern!r}"
    if not pattern:
        raise ValueError("host pattern is empty")
    if pattern.startswith("["):
        if not pattern.endswith("]"):
            raise ValueError(f"{what} must not carry a port")
        canonical = _canonical_ipv6(pattern)
        if canonical is None:
            raise ValueError(f"{what}: not an IPv6 address")
        return canonical
    text = pattern[:-1] if pattern.endswith(".") else pattern
    elements = []
    for label in _split_top_level(text, ".", what):
        if not label:
            raise ValueError(f"{what}: empty label")
        elements.append(_parse_segment(label, what, host=True))
    _check_names(elements, what)
    if all(e[0] == LITERAL for e in elements):
        return ".".join(e[1] for e in elements)
    return SegmentPattern(pattern, tuple(elements), 1)


def validate_path_pattern(pattern: str) -> None:
    """Raise ValueError with a precise message unless the Router accepts ``pattern``."""
    parse_path_pattern(pattern)


def validate_host_pattern(pattern: str) -> None:
    """Raise ValueError with a precise message unless the Router accepts ``pattern``."""
    parse_host_pattern(pattern)


def host_key(host):
    """The Host header value as host patterns see it: no port, lower case."""
    if not host:
        return None
    if host[0] == "[":
        end = host.find("]")
        if end < 0:
            return host.lower()
        return _canonical_ipv6(host[: end + 1]) or host[: end + 1].lower()
    colon = host.find(":")
    if colon >= 0:
        host = host[:colon]
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    return host or None


def _fits(block, segs, start, out):
    for k in range(len(block)):
        element = block[k]
        seg = segs[start + k]
        kind = element[0]
        if kind == LITERAL:
            if seg != element[1]:
                return False
        elif not seg:
            return False
        elif kind == ANY:
            if out is not None and element[1] is not None:
                out[element[1]] = seg
        else:
            m = element[1](seg)
            if m is None:
                return False
            if out is not None:
                for name, group in element[2]:
                    out[name] = m.group(group)
    return True


def place(pattern, segs, out):
    """Match one pattern against a segment list, filling ``out`` (a dict, or None).

    Floating blocks take their leftmost fit: ``**`` between them has no
    constraint, so that fit is a correct one, and the search never backtracks.
    """
    blocks = pattern.blocks
    n = len(segs)
    first = blocks[0]
    if len(blocks) == 1:
        return len(first) == n and _fits(first, segs, 0, out)
    gap = pattern.min_gap
    last = blocks[-1]
    cursor = len(first)
    tail = n - len(last)
    if tail - cursor < gap or not _fits(last, segs, tail, None):
        return False
    if not _fits(first, segs, 0, out):
        return False
    for k in range(1, len(blocks) - 1):
        block = blocks[k]
        start = cursor + gap
        stop = tail - gap - len(block)
        while start <= stop and not _fits(block, segs, start, None):
            start += 1
        if start > stop:
            return False
        if out is not None:
            _fits(block, segs, start, out)
        cursor = start + len(block)
    if tail - cursor < gap:
        return False
    if out is not None:
        _fits(last, segs, tail, out)
        if pattern.rest is not None:
            out[pattern.rest] = "/" + "/".join(segs[cursor:]) if cursor < n else ""
    return True


# -- compiling a route table -------------------------------------------------


class Node:
    __slots__ = ("any", "dstar", "ends", "has_children", "literal", "memo_slot", "regex", "tail")

    def __init__(self):
        self.literal = None
        self.any = None
        self.regex = {}  # source -> (fullmatch, child); a tuple of those once frozen
        self.dstar = None  # a '**' child that has children of its own
        self.tail = None  # the candidates of a '**' child that has none
        self.ends = []
        self.has_children = False
        self.memo_slot = -1


class RouteCheck:
    """The non-path predicates of one route; None for a predicate means any.

    ``host_vars`` lists the host patterns in written order (names as str)
    when one of them has variables to capture.
    """

    __slots__ = (
        "header_names", "header_tests", "host_names", "host_patterns", "host_vars", "methods",
        "tests",
    )  # fmt: skip

    def __init__(self, methods, host_names, host_patterns, header_names, header_tests,
                 host_vars=None, tests=None):
        self.methods = methods
        self.host_names = host_names
        self.host_patterns = host_patterns
        self.header_names = header_names
        self.header_tests = header_tests
        self.host_vars = host_vars
        self.tests = tests


class Entry:
    """One path pattern of one route (or a route without Path), in written order."""

    __slots__ = ("check", "has_vars", "ordinal", "pattern", "result", "route")

    def __init__(self, ordinal, route, check, pattern):
        self.ordinal = ordinal
        self.route = route
        self.check = check
        self.pattern = pattern
        self.has_vars = (pattern is not None and pattern.has_vars) or (
            check is not None and check.host_vars is not None
        )
        self.result = (route, None)


def _values(spec, what, i):
    if spec is None:
        return None
    if isinstance(spec, str) or not hasattr(spec, "__iter__"):
        raise TypeError(f"route {i}: {what} must be a tuple of strings or None")
    spec = tuple(spec)
    if not spec:
        raise ValueError(f"route {i}: {what} predicate has no values")
    return spec


def _route_check(i, methods, hosts, headers, extra):
    if methods is not None:
        for m in methods:
            if not isinstance(m, str) or not _TOKEN.fullmatch(m.upper()):
                raise ValueError(f"route {i}: invalid method {m!r}")
        methods = frozenset(m.upper() for m in methods)
    host_names = host_patterns = host_vars = None
    if hosts is not None:
        names, patterns, ordered = [], [], []
        for h in hosts:
            try:
                parsed = parse_host_pattern(h)
            except ValueError as exc:
                raise ValueError(f"route {i}: {exc}") from None
            (names if isinstance(parsed, str) else patterns).append(parsed)
            ordered.append(parsed)
        host_names, host_patterns = frozenset(names), tuple(patterns)
        if any(p.has_vars for p in patterns):
            host_vars = tuple(ordered)
    header_names = header_tests = None
    if headers:
        names, tests = [], []
        for header in headers:
            name, regex = header
            if not isinstance(name, str) or not _TOKEN.fullmatch(name.upper()):
                raise ValueError(f"route {i}: invalid header name {name!r}")
            names.append(name.lower())
            try:
                test = _compile_regex(regex, f"header regex {regex!r}") if regex else None
            except ValueError as exc:
                raise ValueError(f"route {i}: {exc}") from None
            tests.append(None if test is None else test.fullmatch)
        header_names, header_tests = tuple(names), tuple(tests)
    if extra is not None and not all(callable(test) for test in extra):
        raise TypeError(f"route {i}: tests must be callables")
    if methods is None and hosts is None and header_names is None and extra is None:
        return None
    return RouteCheck(
        methods, host_names, host_patterns, header_names, header_tests, host_vars, extra
    )


def _insert(root, pattern, entry):
    node = root
    after_dstar = False
    for element in pattern.elements:
        kind = element[0]
        if kind == DSTAR:
            if not after_dstar:  # '**/**' is '**'
                if node.dstar is None:
                    node.dstar = Node()
                node = node.dstar
            after_dstar = True
            continue
        after_dstar = False
        if kind == LITERAL:
            if node.literal is None:
                node.literal = {}
            node = node.literal.setdefault(element[1], Node())
        elif kind == ANY:
            if node.any is None:
                node.any = Node()
            node = node.any
        else:
            source = element[3]
            if source not in node.regex:
                node.regex[source] = (element[1], Node())
            node = node.regex[source][1]
    node.ends.append(entry)


def _freeze(root):
    """Sort candidate lists, fold childless '**' nodes into their parent, number the rest."""
    slots = 0
    stack = [root]
    while stack:
        node = stack.pop()
        node.ends = tuple(sorted(node.ends, key=lambda e: e.ordinal)) or None
        node.regex = tuple(node.regex.values())
        node.has_children = bool(node.literal is not None or node.any is not None or node.regex)
        if node.literal is not None:
            stack.extend(node.literal.values())
        if node.any is not None:
            stack.append(node.any)
        stack.extend(child for _, child in node.regex)
        d = node.dstar
        if d is not None:
            if d.literal is None and d.any is None and not d.regex:
                node.tail = tuple(sorted(d.ends, key=lambda e: e.ordinal)) or None
                node.dstar = None
            else:
                d.memo_slot = slots
                slots += 1
                stack.append(d)
    return slots


class Plan:
    """A route table compiled once; both twins build their matcher from it."""

    __slots__ = ("always", "entries", "memo_slots", "needs_probe", "root")

    def __init__(self, routes):
        root = Node()
        entries, always = [], []
        needs_probe = False
        checks = {}
        for i, spec in enumerate(routes):
            paths, methods, hosts, headers = spec[:4]
            tests = tuple(spec[4]) if len(spec) > 4 and spec[4] else None
            key = (
                _values(methods, "methods", i),
                _values(hosts, "hosts", i),
                tuple(tuple(h) for h in headers) if headers else None,
                tests,
            )
            if key not in checks:
                checks[key] = _route_check(i, *key)
            check = checks[key]
            if check is not None and (
                check.host_names is not None
                or check.header_names is not None
                or check.tests is not None
            ):
                needs_probe = True
            paths = _values(paths, "paths", i)
            if paths is None:
                entry = Entry(len(entries), i, check, None)
                entries.append(entry)
                always.append(entry)
                continue
            for text in paths:
                try:
                    pattern = parse_path_pattern(text)
                except ValueError as exc:
                    raise ValueError(f"route {i}: {exc}") from None
                entry = Entry(len(entries), i, check, pattern)
                entries.append(entry)
                _insert(root, pattern, entry)
        self.memo_slots = _freeze(root)
        self.root = root
        self.entries = tuple(entries)
        self.always = tuple(always) or None
        self.needs_probe = needs_probe


# -- matching ----------------------------------------------------------------

_UNSET = object()


class Probe:
    """Per-request host and header lookups, each done at most once."""

    __slots__ = ("_cache", "_header_values", "_host", "_key", "_labels", "request")

    def __init__(self, host, header_values, request):
        self._host = host
        self._header_values = header_values
        self.request = request
        self._key = _UNSET
        self._labels = None
        self._cache = None

    def host_matches(self, check):
        key = self._key
        if key is _UNSET:
            key = self._key = host_key(self._host)
        if key is None:
            return False
        if key in check.host_names:
            return True
        if check.host_patterns:
            labels = self._labels
            if labels is None:
                labels = self._labels = key.split(".")
            for pattern in check.host_patterns:
                if place(pattern, labels, None):
                    return True
        return False

    def host_variables(self, check, out):
        """The variables of the first of the route's host patterns that matches."""
        key = host_key(self._host)
        labels = key.split(".")
        for pattern in check.host_vars:
            if type(pattern) is str:
                if pattern == key:
                    return
            else:
                found = {}
                if place(pattern, labels, found):
                    out.update(found)
                    return

    def headers_match(self, check):
        cache = self._cache
        if cache is None:
            cache = self._cache = {}
        for name, test in zip(check.header_names, check.header_tests, strict=True):
            values = cache.get(name)
            if values is None:
                values = self._header_values(name)
                if not isinstance(values, (list, tuple)):
                    values = tuple(values)
                cache[name] = values
            if test is None:
                if not values:
                    return False
            elif not any(test(v) is not None for v in values):
                return False
        return True


def _admits(check, method, probe):
    if check.methods is not None and method not in check.methods:
        return False
    if check.host_names is not None and not probe.host_matches(check):
        return False
    if check.header_names is not None and not probe.headers_match(check):
        return False
    if check.tests is not None:
        request = probe.request
        for test in check.tests:
            if not test(request):
                return False
    return True


class Router:
    """First route, in written order, whose predicates all match a request."""

    __slots__ = ("_always", "_memo_slots", "_needs_probe", "_root")

    def __init__(self, routes):
        plan = Plan(routes)
        self._root = plan.root
        self._always = plan.always
        self._memo_slots = plan.memo_slots
        self._needs_probe = plan.needs_probe

    def match(self, method, host, path, header_values, request=None):
        """The route index and its URI variables (or None), or None. ``header_values``
        looks up a header's values by name; None takes ``request.sent_values``."""
        hits = []
        if self._always is not None:
            hits.append(self._always)
        if path[:1] == "/":
            segs = path[1:].split("/")
            self._walk(segs, hits)
        else:
            segs = None
        best = None
        probe = None
        if self._needs_probe:
            probe = Probe(host, header_values or request.sent_values, request)
        for ends in hits:
            for entry in ends:
                if best is not None and entry.ordinal >= best.ordinal:
                    break
                if entry.check is None or _admits(entry.check, method, probe):
                    best = entry
                    break
        if best is None:
            return None
        if not best.has_vars:
            return best.result
        out = {}
        if best.check is not None and best.check.host_vars is not None:
            probe.host_variables(best.check, out)
        if best.pattern is not None and best.pattern.has_vars:
            place(best.pattern, segs, out)
        return best.route, out or None

    def _walk(self, segs, hits):
        n = len(segs)
        node, i = self._root, 0
        stack = []
        memo = None
        while True:
            if node.tail is not None:
                hits.append(node.tail)
            if node.dstar is not None:
                if memo is None:
                    memo = [n + 1] * self._memo_slots
                _enter_dstar(node.dstar, segs, i, memo, hits, stack)
            if i == n:
                if node.ends is not None:
                    hits.append(node.ends)
            elif node.has_children:
                seg = segs[i]
                i += 1
                nxt = None
                if node.literal is not None:
                    nxt = node.literal.get(seg)
                if seg:
                    child = node.any
                    if child is not None:
                        if nxt is None:
                            nxt = child
                        else:
                            stack.append(child)
                            stack.append(i)
                    for test, child in node.regex:
                        if test(seg) is not None:
                            if nxt is None:
                                nxt = child
                            else:
                                stack.append(child)
                                stack.append(i)
                if nxt is not None:
                    node = nxt
                    continue
            if not stack:
                return
            i = stack.pop()
            node = stack.pop()


def _enter_dstar(d, segs, i, memo, hits, stack):
    """Follow a '**' node's children from every position not already tried."""
    n = len(segs)
    stop = memo[d.memo_slot]
    if i >= stop:
        return
    if d.ends is not None and stop == n + 1:
        hits.append(d.ends)
    memo[d.memo_slot] = i
    for j in range(i, min(stop, n)):
        seg = segs[j]
        if d.literal is not None:
            child = d.literal.get(seg)
            if child is not None:
                stack.append(child)
                stack.append(j + 1)
        if seg:
            if d.any is not None:
                stack.append(d.any)
                stack.append(j + 1)
            for test, child in d.regex:
                if test(seg) is not None:
                    stack.append(child)
                    stack.append(j + 1)
