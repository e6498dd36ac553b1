"""The compiled hot path, with a pure-Python twin of each module.

The choice is made here, once: ``FASTGW_NO_EXTENSIONS=1`` forces the Python
twins, and so does a missing or broken compiled module.
"""

import os

from . import _router_py

NO_EXTENSIONS = bool(os.environ.get("FASTGW_NO_EXTENSIONS"))

_router_c = None
if not NO_EXTENSIONS:
    try:
        from . import _router_c
    except ImportError:
        _router_c = None

COMPILED = _router_c is not None

Router = (_router_c or _router_py).Router

IMPLEMENTATIONS = {"python": _router_py}
if _router_c is not None:
    IMPLEMENTATIONS["compiled"] = _router_c

__all__ = ["COMPILED", "IMPLEMENTATIONS", "NO_EXTENSIONS", "Router"]
