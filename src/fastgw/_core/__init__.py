"""The compiled hot path, with a pure-Python twin of each module.

Each module NAME exists as ``_NAME_c`` (Cython) and ``_NAME_py`` (Python) with
the same behaviour. The choice is made here, once: ``FASTGW_NO_EXTENSIONS=1``
forces the Python twins, and so does a missing compiled module.
"""

import importlib
import os

MODULES = ("router", "claims", "door", "bucket", "jws")

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

COMPILED = all("compiled" in impls for impls in CORE.values())


def active(name: str):
    """The module in use for NAME: compiled when available, else its Python twin."""
    impls = CORE[name]
    return impls.get("compiled", impls["python"])


IMPLEMENTATIONS = CORE["router"]
Router = active("router").Router

__all__ = ["COMPILED", "CORE", "IMPLEMENTATIONS", "MODULES", "NO_EXTENSIONS", "Router", "active"]
