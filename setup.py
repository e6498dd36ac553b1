"""Builds the compiled core; without a compiler the pure-Python twins are used."""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# keep in step with MODULES in src/fastgw/_core/__init__.py
CORE_MODULES = ["router", "claims", "door", "bucket", "head", "jws", "h1"]
LLHTTP = "src/fastgw/_core/llhttp"
# keep in step with FROM_SOURCE there: modules compiled from their own .py
FROM_SOURCE = [
    "proxy/client", "proxy/exchange", "proxy/upstream", "proxy/connection", "http/request",
    "http/headers", "http/target", "metrics", "upstream/pool", "upstream/service",
    "ratelimit/policy", "auth/door", "auth/verifier", "auth/jws",
]


class OptionalBuildExt(build_ext):
    """A failed compile leaves a working install on the Python twins."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any toolchain failure
            print(f"fastgw: compiled core not built ({exc}); using pure Python", file=sys.stderr)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            print(f"fastgw: {ext.name} not built ({exc}); using pure Python", file=sys.stderr)


def extensions():
    if os.environ.get("FASTGW_NO_EXTENSIONS"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    # _h1_c links llhttp, the parser httptools and Node.js use, from its C source.
    llhttp = {"h1": [f"{LLHTTP}/{name}.c" for name in ("api", "http", "llhttp")]}
    core = cythonize(
        [Extension(f"fastgw._core._{name}_c",
                   [f"src/fastgw/_core/_{name}_c.pyx", *llhttp.get(name, ())],
                   include_dirs=[LLHTTP] if name in llhttp else [])
         for name in CORE_MODULES],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
        quiet=True,
    )
    # Python source keeps Python's semantics: negative indices, bounds checks,
    # annotations that are only hints. The .pxd beside a module, where there is
    # one, is what types its classes.
    from_source = cythonize(
        [Extension("fastgw." + name.replace("/", "."), [f"src/fastgw/{name}.py"])
         for name in FROM_SOURCE],
        compiler_directives={"language_level": "3", "annotation_typing": False},
        quiet=True,
    )
    return core + from_source


setup(
    ext_modules=extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
    options={"build_ext": {"parallel": os.cpu_count() or 1}},
)
