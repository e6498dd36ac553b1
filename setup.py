"""Builds the compiled core; without a compiler the pure-Python twins are used."""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# keep in step with MODULES in src/fastgw/_core/__init__.py
CORE_MODULES = ["router", "claims", "door", "bucket", "head"]
# keep in step with REQUEST_PATH there
REQUEST_PATH = ["exchange", "upstream", "connection"]


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
    core = cythonize(
        [f"src/fastgw/_core/_{name}_c.pyx" for name in CORE_MODULES],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
        quiet=True,
    )
    # The request path, compiled from its Python source typed by the .pxd beside it:
    # indexing keeps Python's meaning there (negative from the end, IndexError past
    # it), or the build would differ from its own source.
    request_path = cythonize(
        [Extension(f"fastgw.proxy.{name}", [f"src/fastgw/proxy/{name}.py"])
         for name in REQUEST_PATH],
        compiler_directives={"language_level": "3"},
        quiet=True,
    )
    return core + request_path


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
