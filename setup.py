"""mbxmpp build: the Cython extensions under ext/ are optional.

If Cython, a C compiler or a header (expat.h from libexpat1-dev, Python.h) is missing, the build
prints a warning and installs the pure-Python package; mbxmpp.xml then uses its Python tokenizer
and serializer (slixmpp's stringprep fallback works the same way).

    python setup.py build_ext --inplace [--cython-always] [--cython-annotate]
    MBXMPP_DEBUG=1 python setup.py build_ext --inplace    # linetrace + -DMBXMPP_DEBUG
    MBXMPP_REQUIRE_EXTENSIONS=1 pip install .              # fail instead of falling back
"""

import os
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext as _build_ext

CYTHON_DEPENDENCY = "Cython>=3.0,<4"
DEBUG = os.environ.get("MBXMPP_DEBUG", "") not in ("", "0")
REQUIRE = os.environ.get("MBXMPP_REQUIRE_EXTENSIONS", "") not in ("", "0")
HERE = os.path.dirname(os.path.abspath(__file__))

CFLAGS = ["-O2", "-Wall", "-Wno-unused-function"]
if DEBUG:
    CFLAGS += ["-O0", "-g", "-DMBXMPP_DEBUG=1", "-DCYTHON_TRACE=1", "-DCYTHON_TRACE_NOGIL=1"]

EXTENSIONS = [
    Extension("mbxmpp._ext.tokenizer", ["ext/tokenizer.pyx"], extra_compile_args=CFLAGS),
    Extension("mbxmpp._ext.serializer", ["ext/serializer.pyx"], extra_compile_args=CFLAGS),
    Extension("mbxmpp._ext.smstate", ["ext/smstate.pyx"], extra_compile_args=CFLAGS),
]


def _warn(msg):
    line = "*" * 78
    sys.stderr.write(f"\n{line}\nWARNING: {msg}\nmbxmpp falls back to its pure-Python tokenizer "
                     f"and serializer (slower).\n{line}\n\n")


class build_ext(_build_ext):
    """asyncpg-style options; a failed extension build falls back to pure Python."""

    user_options = _build_ext.user_options + [
        ("cython-always", None, "run cythonize() even if the .c files are up to date"),
        ("cython-annotate", None, "produce a colorized HTML version of the Cython source"),
        ("cython-directives=", None, "Cython compiler directives (name=value,...)"),
    ]
    boolean_options = _build_ext.boolean_options + ["cython-always", "cython-annotate"]

    def initialize_options(self):
        super().initialize_options()
        self.cython_always = False
        self.cython_annotate = False
        self.cython_directives = None
        self._cythonized = False
        self._cython_ok = False

    def finalize_options(self):
        # cythonize before setuptools finalizes the Extension objects it is given
        if DEBUG:
            self.cython_annotate = True
        self._cython_ok = self._cythonize()
        super().finalize_options()

    def _cythonize(self):
        if self._cythonized:
            return True
        try:
            from Cython.Build import cythonize
        except ImportError:
            _warn(f"Cython is not installed ({CYTHON_DEPENDENCY} needed): extensions not built.")
            return False
        if self.distribution.ext_modules is None:
            return False
        directives = {"language_level": 3}
        if DEBUG:
            directives.update(linetrace=True, profile=True)
        if self.cython_directives:
            for item in self.cython_directives.split(","):
                name, _, value = item.partition("=")
                value = value.strip()
                directives[name.strip()] = {"True": True, "False": False}.get(value, value)
        exts = []
        for ext in self.distribution.ext_modules:  # one by one: a broken .pyx costs only itself
            try:
                exts += cythonize(
                    [ext], include_path=[os.path.join(HERE, "ext")],
                    compiler_directives=directives, annotate=self.cython_annotate,
                    force=self.cython_always, quiet=not self.verbose)
            except Exception as e:  # Cython's CompileError
                if REQUIRE:
                    raise
                _warn(f"cythonize {ext.name} failed: {e}")
        self.distribution.ext_modules[:] = exts
        self._cythonized = True
        return True

    def run(self):
        try:
            if not self._cython_ok:
                if REQUIRE:
                    raise RuntimeError("Cython is required (MBXMPP_REQUIRE_EXTENSIONS=1)")
                return
            super().run()
        except Exception as e:  # CompileError, CCompilerError, DistutilsExecError, Cython errors
            if REQUIRE:
                raise
            _warn(f"building the C extensions failed: {e}")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:
            if REQUIRE:
                raise
            _warn(f"building {ext.name} failed ({e}); is libexpat1-dev (expat.h) installed?")


setup(
    name="mbxmpp",
    version="0.1.0",
    description="An XMPP server on uvloop with a Cython core",
    python_requires=">=3.11",
    packages=find_packages(include=["mbxmpp*"]),
    ext_modules=EXTENSIONS,
    cmdclass={"build_ext": build_ext},
    install_requires=[
        "uvloop",
        "lmdb",
        "msgpack",
        "cryptography",
        "precis-i18n",
        "aiohttp",
        "dnspython",
        "prometheus-client",
        "ldap3",
    ],
    extras_require={
        "test": ["pytest", "pytest-asyncio", "pytest-timeout", "hypothesis", "slixmpp", "Cython>=3.0,<4",
                 # aioxmpp 0.13.3 imports pytz without declaring it; ssl.match_hostname (gone in
                 # 3.12) limits it to Python 3.11; tests/realclient_aioxmpp shims its pyOpenSSL use
                 "aioxmpp==0.13.3", "pytz",
                 "matplotlib", "playwright",
                 # pinned: tests/test__sourcecode.py runs them, a new release must not fail CI
                 "ruff==0.17.6", "mypy==2.4.1"],
    },
    entry_points={"console_scripts": ["mbxmpp=mbxmpp.cli:main"]},
    zip_safe=False,
)
