"""Builds dlkit's optional native CPU kernels (dlkit/kernels/cpu/*.cc: oneDNN convs and LSTM, a
C++ batch norm) into one library.

Everything else is in pyproject.toml. The extension is optional: without a C++ compiler, off
x86-64 Linux, or without the oneDNN wheels the build prints why and the pure-Python install still
succeeds (dlkit.kernels.cpu.available() is then False and dlkit uses XLA's convolutions).
"""

import concurrent.futures
import importlib.metadata
import os
import pathlib
import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCES = [  # the longest to compile first (they compile in parallel)
    "dlkit/kernels/cpu/attention.cc",
    "dlkit/kernels/cpu/onednn_conv.cc",
    "dlkit/kernels/cpu/onednn_lstm.cc",
    "dlkit/kernels/cpu/batch_norm.cc",
]
FFI_INCLUDE = "dlkit/kernels/cpu/include"  # XLA FFI headers, vendored from jaxlib (README there)
# From the installed .so (<prefix>/lib/python3.X/site-packages/dlkit/kernels/cpu) to <prefix>/lib,
# where the onednn-cpu-gomp wheel puts libdnnl.so.3.
ORIGIN_TO_PREFIX_LIB = "$ORIGIN/../../../../.."


def _dist_file(dist: str, tail: str) -> pathlib.Path | None:
    """The installed file of `dist` whose path ends with `tail` ('oneapi/dnnl/dnnl.hpp')."""
    try:
        files = importlib.metadata.files(dist) or ()
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.as_posix().endswith(tail):
            return pathlib.Path(f.locate()).resolve()
    return None


def _in_parallel(compiler, compile_sources):
    """compiler.compile with one source per call, as many at once as there are cores (the sources
    take 4-10 s each; serial they were half of the install on 2 cores)."""

    def compile_all(sources, output_dir=None, *args, **kwargs):
        for obj in compiler.object_filenames(sources, output_dir=output_dir):
            os.makedirs(os.path.dirname(obj) or ".", exist_ok=True)  # no mkdir race in threads
        workers = max(1, min(len(sources), len(os.sched_getaffinity(0))))
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            parts = pool.map(lambda s: compile_sources([s], output_dir, *args, **kwargs), sources)
            return [obj for part in parts for obj in part]

    return compile_all


class OptionalBuildExt(build_ext):
    """Finds oneDNN and the XLA FFI headers at build time; a failed build only warns."""

    def run(self):
        try:
            self._configure()
            super().run()
        except Exception as e:  # noqa: BLE001 - any failure leaves the pure-Python install
            print(
                f"dlkit: the native CPU kernels were not built ({e}); dlkit uses XLA's ops instead",
                file=sys.stderr,
            )

    def build_extensions(self):
        self.compiler.compile = _in_parallel(self.compiler, self.compiler.compile)
        super().build_extensions()

    def _configure(self):
        if sys.platform != "linux" or platform.machine() != "x86_64":
            raise RuntimeError(f"x86-64 Linux only, this is {sys.platform} {platform.machine()}")
        dnnl_hpp = _dist_file("onednn-devel-cpu-gomp", "include/oneapi/dnnl/dnnl.hpp")
        dnnl_so = _dist_file("onednn-cpu-gomp", "/libdnnl.so.3")
        if dnnl_hpp is None or dnnl_so is None:
            raise RuntimeError("onednn-cpu-gomp / onednn-devel-cpu-gomp are not installed")
        for ext in self.extensions:
            ext.include_dirs += [str(dnnl_hpp.parents[2]), FFI_INCLUDE]
            # link against the soname (the devel wheel's libdnnl.so may be a copy, not a link)
            ext.extra_link_args += ["-l:libdnnl.so.3", f"-L{dnnl_so.parent}"]
            rpaths = [ORIGIN_TO_PREFIX_LIB, str(pathlib.Path(sys.prefix) / "lib")]
            ext.extra_link_args += [f"-Wl,-rpath,{r}" for r in rpaths]


setup(
    ext_modules=[
        Extension(
            "dlkit.kernels.cpu._onednn",
            sources=SOURCES,
            depends=["dlkit/kernels/cpu/onednn_common.h"],
            language="c++",
            extra_compile_args=[
                "-std=c++17",
                "-O2",
                "-fvisibility=hidden",
                "-fopenmp",
                "-Wno-attributes",
                "-Wno-return-type",
                "-Wno-sign-compare",
                "-Wno-psabi",
                "-g0",
            ],
            extra_link_args=["-fopenmp"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
