"""Compiled twin of ``_router_py``: the same trie walk on typed nodes.

``_router_py.Plan`` parses and validates the route table; this module turns
the plan into typed nodes and runs the hot path. See ``_router_py`` for the
matching rules.
"""

cimport cython
from cpython.unicode cimport PyUnicode_FindChar, PyUnicode_Substring

from . import _router_py as _py

cdef enum:
    LITERAL = 0
    ANY = 1
    REGEX = 2
    DSTAR = 3


@cython.trashcan(True)
cdef class Node:
    pass


cdef class Element:
    pass


cdef class SegmentPattern:
    pass


cdef class RouteCheck:
    pass


cdef class Entry:
    pass


# -- building from a plan ----------------------------------------------------

cdef Element _element(tuple src):
    cdef Element element = Element.__new__(Element)
    element.kind = src[0]
    if element.kind == REGEX:
        element.test = src[1]
        element.groups = src[2]
    else:
        element.text = src[1]
    return element


cdef SegmentPattern _pattern(object src):
    cdef SegmentPattern pattern = SegmentPattern.__new__(SegmentPattern)
    pattern.blocks = tuple([tuple([_element(e) for e in block]) for block in src.blocks])
    pattern.rest = src.rest
    pattern.min_gap = src.min_gap
    pattern.has_vars = src.has_vars
    pattern.anchored = len(src.blocks) == 1 or (len(src.blocks) == 2 and not src.blocks[1])
    pattern.width = len(src.blocks[0])
    pattern.captures = tuple([
        (k, element)
        for k, element in enumerate(pattern.blocks[0])
        if (<Element>element).groups or (
            (<Element>element).kind == ANY and (<Element>element).text is not None
        )
    ])
    return pattern


cdef RouteCheck _check(object src):
    cdef RouteCheck check = RouteCheck.__new__(RouteCheck)
    check.methods = src.methods
    check.host_names = src.host_names
    if src.host_patterns is not None:
        check.host_patterns = tuple([_pattern(p) for p in src.host_patterns])
    check.header_names = src.header_names
    check.header_tests = src.header_tests
    if src.host_vars is not None:
        check.host_vars = tuple([p if type(p) is str else _pattern(p) for p in src.host_vars])
    check.tests = src.tests
    return check


cdef list _entries(tuple src_entries):
    cdef dict checks = {}
    cdef list entries = []
    cdef Entry entry
    for src in src_entries:
        entry = Entry.__new__(Entry)
        entry.ordinal = src.ordinal
        entry.route = src.route
        if src.check is not None:
            if id(src.check) not in checks:
                checks[id(src.check)] = _check(src.check)
            entry.check = checks[id(src.check)]
        if src.pattern is not None:
            entry.pattern = _pattern(src.pattern)
        entry.has_vars = src.has_vars
        entry.result = src.result
        entries.append(entry)
    return entries


cdef tuple _ends(object src_ends, list entries):
    if src_ends is None:
        return None
    return tuple([entries[e.ordinal] for e in src_ends])


cdef Node _tree(object src_root, list entries):
    cdef Node root = Node.__new__(Node)
    cdef Node node, child
    cdef list stack = [(src_root, root)]
    cdef list children
    while stack:
        src, node = stack.pop()
        node.ends = _ends(src.ends, entries)
        node.tail = _ends(src.tail, entries)
        node.has_children = src.has_children
        node.memo_slot = src.memo_slot
        node.regex_tests = tuple([test for test, _ in src.regex])
        if src.literal is not None:
            node.literal = {}
            for key, src_child in src.literal.items():
                child = Node.__new__(Node)
                node.literal[key] = child
                stack.append((src_child, child))
        if src.any is not None:
            node.any = Node.__new__(Node)
            stack.append((src.any, node.any))
        children = []
        for _, src_child in src.regex:
            child = Node.__new__(Node)
            children.append(child)
            stack.append((src_child, child))
        node.regex_children = tuple(children)
        if src.dstar is not None:
            node.dstar = Node.__new__(Node)
            stack.append((src.dstar, node.dstar))
    return root


cdef inline Py_ssize_t _seg_end(str path, Py_ssize_t start, Py_ssize_t length) except -2:
    cdef Py_ssize_t end = PyUnicode_FindChar(path, "/", start, length, 1)
    return length if end == -1 else end


# -- single-pattern matching (variables, hosts) ------------------------------

cdef bint _fits(tuple block, list segs, Py_ssize_t start, dict out) except -1:
    cdef Element element
    cdef str seg
    cdef Py_ssize_t k
    for k in range(len(block)):
        element = <Element>block[k]
        seg = <str>segs[start + k]
        if element.kind == LITERAL:
            if seg != element.text:
                return False
        elif not seg:
            return False
        elif element.kind == ANY:
            if out is not None and element.text is not None:
                out[element.text] = seg
        else:
            m = element.test(seg)
            if m is None:
                return False
            if out is not None:
                for name, group in element.groups:
                    out[name] = m.group(group)
    return True


cdef bint _place(SegmentPattern pattern, list segs, dict out) except -1:
    cdef tuple blocks = pattern.blocks
    cdef tuple first = <tuple>blocks[0]
    cdef tuple last, block
    cdef Py_ssize_t n = len(segs), nblocks = len(blocks), gap = pattern.min_gap
    cdef Py_ssize_t cursor, tail, start, stop, k
    if nblocks == 1:
        return len(first) == n and _fits(first, segs, 0, out)
    last = <tuple>blocks[nblocks - 1]
    cursor = len(first)
    tail = n - len(last)
    if tail - cursor < gap or not _fits(last, segs, tail, None):
        return False
    if not _fits(first, segs, 0, out):
        return False
    for k in range(1, nblocks - 1):
        block = <tuple>blocks[k]
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


cdef dict _capture(SegmentPattern pattern, str path, Py_ssize_t length):
    """Variables of an anchored pattern already known to match ``path``."""
    cdef dict out = {}
    cdef Element element
    cdef Py_ssize_t o = 1, k = 0, index, end
    for item in pattern.captures:
        index = (<tuple>item)[0]
        element = <Element>(<tuple>item)[1]
        while k < index:
            o = _seg_end(path, o, length) + 1
            k += 1
        end = _seg_end(path, o, length)
        if element.kind == ANY:
            out[element.text] = PyUnicode_Substring(path, o, end)
        else:
            m = element.test(PyUnicode_Substring(path, o, end))
            for name, group in element.groups:
                out[name] = m.group(group)
    if pattern.rest is not None:
        while k < pattern.width:
            o = _seg_end(path, o, length) + 1
            k += 1
        out[pattern.rest] = PyUnicode_Substring(path, o - 1, length) if o <= length else ""
    return out


# -- matching ----------------------------------------------------------------

cdef object _host_key(object host):
    cdef Py_ssize_t colon
    cdef str text
    if not host:
        return None
    text = <str?>host
    if text[0] == "[":
        return _py.host_key(text)
    colon = PyUnicode_FindChar(text, ":", 0, len(text), 1)
    if colon >= 0:
        text = PyUnicode_Substring(text, 0, colon)
    text = text.lower()
    if text and text[len(text) - 1] == ".":
        text = PyUnicode_Substring(text, 0, len(text) - 1)
    return text or None


@cython.freelist(8)
cdef class Probe:
    """Per-request host and header lookups, each done at most once."""

    cdef bint host_matches(self, RouteCheck check) except -1:
        if not self.key_done:
            self.key = _host_key(self.host)
            self.key_done = True
        if self.key is None:
            return False
        if self.key in check.host_names:
            return True
        if check.host_patterns:
            if self.labels is None:
                self.labels = (<str>self.key).split(".")
            for pattern in check.host_patterns:
                if _place(<SegmentPattern>pattern, self.labels, None):
                    return True
        return False

    cdef int host_variables(self, RouteCheck check, dict out) except -1:
        """The variables of the first of the route's host patterns that matches."""
        cdef dict found
        labels = (<str>self.key).split(".")
        for pattern in check.host_vars:
            if type(pattern) is str:
                if pattern == self.key:
                    return 0
            else:
                found = {}
                if _place(<SegmentPattern>pattern, labels, found):
                    out.update(found)
                    return 0
        return 0

    cdef bint headers_match(self, RouteCheck check) except -1:
        cdef Py_ssize_t k
        if self.cache is None:
            self.cache = {}
        for k in range(len(check.header_names)):
            name = check.header_names[k]
            values = self.cache.get(name)
            if values is None:
                values = self.header_values(name)
                if not isinstance(values, (list, tuple)):
                    values = tuple(values)
                self.cache[name] = values
            test = check.header_tests[k]
            if test is None:
                if not values:
                    return False
            else:
                for value in values:
                    if test(value) is not None:
                        break
                else:
                    return False
        return True


cdef inline bint _admits(RouteCheck check, str method, Probe probe) except -1:
    if check.methods is not None and method not in check.methods:
        return False
    if check.host_names is not None and not probe.host_matches(check):
        return False
    if check.header_names is not None and not probe.headers_match(check):
        return False
    if check.tests is not None:
        for test in check.tests:
            if not test(probe.request):
                return False
    return True


cdef inline Entry _scan(tuple ends, Entry best, str method, Probe probe):
    cdef Entry entry
    for item in ends:
        entry = <Entry>item
        if best is not None and entry.ordinal >= best.ordinal:
            break
        if entry.check is None or _admits(entry.check, method, probe):
            return entry
    return best


cdef inline object _add(object hits, tuple ends):
    """Hits are None, one candidate tuple, or a list of them."""
    if hits is None:
        return ends
    if type(hits) is tuple:
        return [hits, ends]
    (<list>hits).append(ends)
    return hits


cdef inline list _push(list stack, Node node, Py_ssize_t offset):
    if stack is None:
        stack = []
    stack.append(node)
    stack.append(offset)
    return stack


cdef object _enter_dstar(
    Node d, str path, Py_ssize_t length, Py_ssize_t o, list memo, object hits, list stack
):
    """Follow a '**' node's children from every offset not already tried."""
    cdef Py_ssize_t stop = memo[d.memo_slot]
    cdef Py_ssize_t end, k
    cdef Node child
    cdef str seg
    if o >= stop:
        return hits
    if d.ends is not None and stop == length + 2:
        hits = _add(hits, d.ends)
    memo[d.memo_slot] = o
    while o <= length and o < stop:
        end = _seg_end(path, o, length)
        seg = PyUnicode_Substring(path, o, end)
        if d.literal is not None:
            child = <Node>d.literal.get(seg)
            if child is not None:
                stack.append(child)
                stack.append(end + 1)
        if end > o:
            if d.any is not None:
                stack.append(d.any)
                stack.append(end + 1)
            for k in range(len(d.regex_tests)):
                if d.regex_tests[k](seg) is not None:
                    stack.append(d.regex_children[k])
                    stack.append(end + 1)
        o = end + 1
    return hits


cdef class Router:
    """First route, in written order, whose predicates all match a request."""

    def __init__(self, routes):
        plan = _py.Plan(routes)
        entries = _entries(plan.entries)
        self.root = _tree(plan.root, entries)
        self.always = _ends(plan.always, entries)
        self.memo_slots = plan.memo_slots
        self.needs_probe = plan.needs_probe

    def match(self, str method, host, str path not None, header_values, request=None):
        cdef Py_ssize_t length = len(path)
        cdef Entry best = None
        cdef Probe probe = None
        cdef object hits = None
        cdef dict out
        if self.needs_probe:
            probe = Probe.__new__(Probe)
            probe.host = host
            probe.header_values = header_values or request.sent_values
            probe.request = request
        if self.always is not None:
            best = _scan(self.always, best, method, probe)
        if length and path[0] == "/":
            hits = self._walk(path, length)
            if type(hits) is tuple:
                best = _scan(<tuple>hits, best, method, probe)
            elif hits is not None:
                for ends in <list>hits:
                    best = _scan(<tuple>ends, best, method, probe)
        if best is None:
            return None
        if not best.has_vars:
            return best.result
        if best.check is not None and best.check.host_vars is not None:
            out = {}
            probe.host_variables(best.check, out)
            if best.pattern is not None and best.pattern.has_vars:
                out.update(self._variables(best.pattern, path, length))
            return best.route, out or None
        return best.route, self._variables(best.pattern, path, length)

    cdef dict _variables(self, SegmentPattern pattern, str path, Py_ssize_t length):
        cdef dict out
        if pattern.anchored:
            return _capture(pattern, path, length)
        out = {}
        _place(pattern, PyUnicode_Substring(path, 1, length).split("/"), out)
        return out

    cdef object _walk(self, str path, Py_ssize_t length):
        # A state is (node, offset of the next segment); offset length + 1 is the end.
        cdef Node node = self.root
        cdef Node nxt, child
        cdef Py_ssize_t o = 1, end, k
        cdef list stack = None
        cdef list memo = None
        cdef object hits = None
        cdef str seg
        while True:
            if node.tail is not None:
                hits = _add(hits, node.tail)
            if node.dstar is not None:
                if memo is None:
                    memo = [length + 2] * self.memo_slots
                if stack is None:
                    stack = []
                hits = _enter_dstar(node.dstar, path, length, o, memo, hits, stack)
            if o > length:
                if node.ends is not None:
                    hits = _add(hits, node.ends)
            elif node.has_children:
                end = _seg_end(path, o, length)
                seg = PyUnicode_Substring(path, o, end)
                nxt = None
                if node.literal is not None:
                    nxt = <Node>node.literal.get(seg)
                if end > o:
                    child = node.any
                    if child is not None:
                        if nxt is None:
                            nxt = child
                        else:
                            stack = _push(stack, child, end + 1)
                    for k in range(len(node.regex_tests)):
                        if node.regex_tests[k](seg) is not None:
                            child = <Node>node.regex_children[k]
                            if nxt is None:
                                nxt = child
                            else:
                                stack = _push(stack, child, end + 1)
                o = end + 1
                if nxt is not None:
                    node = nxt
                    continue
            if not stack:
                return hits
            o = stack.pop()
            node = <Node>stack.pop()
