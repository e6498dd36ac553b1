"""Python filters, Zuul's way: ``pre``, ``route``, ``post`` and ``error`` functions.

A module named in the config's ``python_filters:`` marks its filters with the
decorators here::

    from fastgw.filters.python import pre

    @pre(order=10)
    def tenant(ctx):
        ctx.request.headers["X-Tenant"] = ctx.claims["tenant"]

Each snapshot (start, every reload) executes the modules afresh, so a
changed file takes effect on SIGHUP. A route's ``pre`` and ``route`` filters
run as its last check, after authentication, authorization and rate
limiting; an async one takes the exchange's slow path, as a check that
answers later does. ``post`` filters run on the response head, ``error``
filters when the upstream failed or a filter raised. A route with no Python
filters has none of this on its path.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
import traceback
from dataclasses import dataclass

from ..http.headers import Headers
from ..proxy.exchange import Rejection
from ..proxy.upstream import UpstreamError

log = logging.getLogger("fastgw.filters")

KINDS = ("pre", "route", "post", "error")
_MARK = "__fastgw_filter__"


def _kind(kind: str):
    def decorator(fn=None, *, order: int = 0):
        def mark(fn):
            if not callable(fn):
                raise TypeError(f"@{kind} marks a function, not {fn!r}")
            setattr(fn, _MARK, (kind, order))
            return fn

        return mark(fn) if fn is not None else mark

    decorator.__name__ = kind
    decorator.__doc__ = f"Mark ``fn(ctx)`` (sync or async) as a {kind} filter; lower orders first."
    return decorator


pre = _kind("pre")
route = _kind("route")
post = _kind("post")
error = _kind("error")


class Context:
    """What a request's Python filters see and share.

    ``request`` is the request as it will go upstream (``method``, ``path``,
    ``query``, ``headers``, ``host``): change it to change what is sent.
    ``vars`` are the URI template variables the route's predicates captured
    (``{segment}`` of a Path; a Host's ``{sub}`` joins them when the router
    captures them). ``state`` is free for the filters of one request.
    """

    __slots__ = ("_answer", "error", "exchange", "request", "response_headers", "service",
                 "state", "status")  # fmt: skip

    def __init__(self, exchange) -> None:
        self.exchange = exchange
        self.request = exchange.request
        self.state: dict = {}
        self.service: str | None = None  # a route filter's choice of upstream service
        self.status: int | None = None  # the response's, in post and error filters
        self.response_headers: Headers | None = None  # the response's, in post filters
        self.error: BaseException | None = None  # in error filters
        self._answer: Rejection | None = None

    @property
    def route_id(self) -> str:
        return self.request.route_id

    @property
    def vars(self) -> dict[str, str]:
        return self.request.path_vars or {}

    @property
    def claims(self) -> dict:
        """The verified token's claims ({} without one)."""
        return self.request.claims or {}

    @property
    def client_ip(self) -> str:
        return self.request.client_ip

    @property
    def certificate(self):
        """The verified client certificate (``subject``, ``san_uris``, ``san_dns``...), or None."""
        return self.request.client_cert

    def respond(self, status: int, body: bytes | str = b"", headers=()) -> None:
        """Answer the request here; no later filter of the kind runs, nothing goes upstream."""
        if isinstance(body, str):
            body = body.encode()
        pairs = tuple(headers.items()) if isinstance(headers, dict) else tuple(headers)
        self._answer = Rejection(status, headers=pairs, body=body)


@dataclass(frozen=True, slots=True)
class PythonFilter:
    kind: str
    order: int
    fn: object
    name: str  # module.function, for logs and audit lines
    is_async: bool


class FilterLoadError(ValueError):
    """A filter module that cannot be loaded: where the problem is, in that module."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")
        self.file = file
        self.line = line
        self.message = message


def load(entry, source: str) -> list[PythonFilter]:
    """Execute one ``python_filters`` entry afresh; its marked functions, in file order."""
    if entry.file is not None:
        name = "fastgw_filters_" + "".join(c if c.isalnum() else "_" for c in entry.file)
        spec = importlib.util.spec_from_file_location(name, entry.file)
        where = entry.file
    else:
        name = entry.module
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError) as exc:
            raise FilterLoadError(source, entry.line, f"module {name}: {exc}") from None
        if spec is None or spec.loader is None:
            raise FilterLoadError(source, entry.line, f"no module named {name!r}")
        where = spec.origin or name
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the fresh one, as a reload would leave it
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise FilterLoadError(exc.filename or where, exc.lineno or 0,
                              f"SyntaxError: {exc.msg}") from None
    except Exception as exc:  # the module's own code failed: report its line
        sys.modules.pop(name, None)
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == where]
        line = frames[-1].lineno if frames else 0
        raise FilterLoadError(where, line, f"{type(exc).__name__}: {exc}") from None
    found = []
    for attr, value in vars(module).items():
        mark = getattr(value, _MARK, None)
        if mark is None or getattr(value, "__module__", None) != name:
            continue
        kind, order = mark
        is_async = inspect.iscoroutinefunction(value)
        if is_async and kind in ("post", "error"):
            line = value.__code__.co_firstlineno
            raise FilterLoadError(where, line,
                                  f"{attr}: {kind} filters run as the response passes, and "
                                  "must be plain functions (not async)")
        found.append(PythonFilter(kind, order, value, f"{name}.{attr}", is_async))
    return found


def load_all(entries, route_ids, source: str) -> dict[str, PythonChain]:
    """Each route's chain (only routes that have filters), from the config's entries.

    Raises FilterLoadError for the first module that cannot be loaded."""
    every: list[tuple[tuple, PythonFilter]] = []
    per_route: dict[str, list] = {}
    for index, entry in enumerate(entries):
        for position, f in enumerate(load(entry, source)):
            key = (f.order, index, position)
            if entry.routes is None:
                every.append((key, f))
            else:
                for route_id in entry.routes:
                    per_route.setdefault(route_id, []).append((key, f))
    chains = {}
    for route_id in route_ids:
        filters = [f for _, f in sorted(every + per_route.get(route_id, []),
                                        key=lambda pair: pair[0])]
        if filters:
            chains[route_id] = PythonChain(filters)
    return chains


class PythonChain:
    """A route's Python filters, by kind, in order."""

    __slots__ = ("audit", "before", "errors", "posts", "services")

    def __init__(self, filters: list[PythonFilter]) -> None:
        self.before = tuple(f for f in filters if f.kind in ("pre", "route"))
        self.posts = tuple(f for f in filters if f.kind == "post")
        self.errors = tuple(f for f in filters if f.kind == "error")
        self.services = None  # set by the snapshot: the route runtime by service name
        self.audit = None

    # -- pre and route: the route's last check -------------------------------------

    def check(self, ex):
        ctx = Context(ex)
        ex.request.context = ctx
        return self._run(ctx, 0)

    def _run(self, ctx: Context, i: int):
        before = self.before
        while i < len(before):
            f = before[i]
            i += 1
            try:
                result = f.fn(ctx)
            except Exception as exc:
                return self._raised(ctx, f, exc)
            if f.is_async:
                return self._later(ctx, f, result, i)
            if ctx._answer is not None:
                return ctx._answer
        if ctx.service is not None:
            runtime = self.services.get(ctx.service)
            if runtime is None:
                return self._raised(ctx, before[-1],
                                    LookupError(f"no service named {ctx.service!r}"))
            ctx.exchange.route = runtime
        return None

    async def _later(self, ctx: Context, f: PythonFilter, pending, i: int):
        try:
            await pending
        except Exception as exc:
            return self._raised(ctx, f, exc)
        if ctx._answer is not None:
            return ctx._answer
        verdict = self._run(ctx, i)
        if verdict is not None and type(verdict) is not Rejection:
            verdict = await verdict
        return verdict

    # -- post: on the response head --------------------------------------------------

    def on_response(self, request, headers) -> None:
        ctx = request.context
        ex = ctx.exchange
        ctx.status = ex.status
        ctx.response_headers = headers
        for f in self.posts:
            try:
                f.fn(ctx)
            except Exception as exc:
                self._report(ctx, f, exc)
                # Nothing of this response has reached the client yet: it becomes the 500.
                ex.response_started = False
                raise UpstreamError(500, f"python filter {f.name} raised") from None

    # -- error: a filter raised, or the upstream failed ----------------------------------

    def _raised(self, ctx: Context, f: PythonFilter, exc: Exception):
        self._report(ctx, f, exc)
        ctx._answer = None
        return self._on_error(ctx, exc, 500) or Rejection(500, "filter_failed")

    def _report(self, ctx: Context, f: PythonFilter, exc: Exception) -> None:
        request = ctx.request
        log.error("request %s route %s: python filter %s raised %s: %s", request.request_id,
                  request.route_id, f.name, type(exc).__name__, exc,
                  exc_info=(type(exc), exc, exc.__traceback__))
        if self.audit is not None:
            self.audit.record(ctx.exchange, event="filter_failed",
                              reason=f"{f.name}: {type(exc).__name__}", status=500)

    def _on_error(self, ctx: Context, exc: BaseException, status: int) -> Rejection | None:
        ctx.error = exc
        ctx.status = status
        for f in self.errors:
            try:
                f.fn(ctx)
            except Exception as inner:
                self._report(ctx, f, inner)
                return None
            if ctx._answer is not None:
                return ctx._answer
        return None

    def failed(self, ex, error: UpstreamError) -> bool:
        """The upstream failed: True if an error filter answered instead."""
        if not self.errors:
            return False
        ctx = ex.request.context
        answer = self._on_error(ctx, error, error.status)
        if answer is None:
            return False
        answer.answer(ex)
        return True
