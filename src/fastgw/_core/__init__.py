"""The compiled hot path, with a pure-Python twin of each module.

Each module NAME exists as ``_NAME_c`` (Cython) and ``_NAME_py`` (Python) with
the same behaviour. The other modules a request runs through (``FROM_SOURCE``)
are compiled from their own Python source instead, the request path's
classes typed by the ``.pxd`` beside each: there the twin is the source
itself. The choice is made here, once:
``FASTGW_NO_EXTENSIONS=1`` forces the Python twins, and so does a missing
compiled module.
"""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

MODULES = ("router", "claims", "door", "bucket", "head", "jws", "h1")

NO_EXTENSIONS = bool(os.environ.get("FASTGW_NO_EXTENSIONS"))


def _load(name: str):
    python = importlib.import_module(f"{__name__}._{name}_py")
    compiled = None
    if not NO_EXTENSIONS:
        try:
            compiled = importlib.import_module(f"{__name__}._{name}_c")
        except ImportError:
            compiled = None
    return python, compiled


#: name -> {"python": module, "compiled": module (when built)}
CORE: dict[str, dict[str, object]] = {}
for _name in MODULES:
    _py, _c = _load(_name)
    CORE[_name] = {"python": _py, **({"compiled": _c} if _c is not None else {})}

#: compiled from their .py by setup.py; under FASTGW_NO_EXTENSIONS the .py is imported
FROM_SOURCE = tuple(f"fastgw.{name}" for name in (
    "proxy.client", "proxy.exchange", "proxy.upstream", "proxy.connection", "http.request",
    "http.headers", "http.target", "metrics", "upstream.pool", "upstream.service",
    "ratelimit.policy", "auth.door", "auth.verifier", "auth.jws",
))


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Imports the FROM_SOURCE modules from their .py even where they are built."""

    def find_spec(self, name, path, target=None):
        if name not in FROM_SOURCE or not path:
            return None
        for entry in path:
            source = os.path.join(entry, name.rpartition(".")[2] + ".py")
            if os.path.exists(source):
                return importlib.util.spec_from_file_location(name, source)
        return None


if NO_EXTENSIONS:
    sys.meta_path.insert(0, _SourceFirst())


def _built(name: str) -> bool:
    """NAME's compiled build is beside its source (found without importing it)."""
    if NO_EXTENSIONS:
        return False
    package = os.path.join(os.path.dirname(os.path.dirname(__file__)), *name.split(".")[1:-1])
    stem = name.rpartition(".")[2]
    return any(os.path.exists(os.path.join(package, stem + suffix))
               for suffix in importlib.machinery.EXTENSION_SUFFIXES)


COMPILED = all("compiled" in impls for impls in CORE.values()) and all(
    _built(name) for name in FROM_SOURCE)


def active(name: str):
    """The module in use for NAME: compiled when available, else its Python twin."""
    impls = CORE[name]
    return impls.get("compiled", impls["python"])


IMPLEMENTATIONS = CORE["router"]
Router = active("router").Router

__all__ = [
    "COMPILED",
    "CORE",
    "FROM_SOURCE",
    "IMPLEMENTATIONS",
    "MODULES",
    "NO_EXTENSIONS",
    "Router",
    "active",
]
