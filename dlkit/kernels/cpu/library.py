"""Find, load and register the native kernel library (`_onednn*.so`: convs, LSTM, batch norm)
at first use.

Loading never raises: `load()` returns the ctypes handle or None, and `why_unavailable()` says in
one line why (not built, libdnnl.so.3 missing, not x86-64 Linux). The library's rpath finds
libdnnl.so.3 in `<prefix>/lib` (where the onednn-cpu-gomp wheel puts it); failing that, the
wheel's installed file list names it and it is preloaded with RTLD_GLOBAL.
"""

from __future__ import annotations  # ctypes.CDLL in annotations: a test may replace it

import ctypes
import functools
import importlib.metadata
import os
import pathlib
import platform
import sys

import jax

HERE = pathlib.Path(__file__).resolve().parent
LIB_STEM = "_onednn"
ONEDNN_DIST = "onednn-cpu-gomp"
TARGETS = {  # XLA FFI target name -> exported handler symbol
    "dlkit_onednn_conv_fwd": "DlkitOnednnConvFwd",
    "dlkit_onednn_conv_bwd_data": "DlkitOnednnConvBwdData",
    "dlkit_onednn_conv_bwd_weights": "DlkitOnednnConvBwdWeights",
    "dlkit_onednn_lstm_fwd": "DlkitOnednnLstmFwd",
    "dlkit_onednn_lstm_bwd": "DlkitOnednnLstmBwd",
    "dlkit_cpu_bn_fwd": "DlkitCpuBnFwd",
    "dlkit_cpu_bn_bwd": "DlkitCpuBnBwd",
    "dlkit_cpu_attn_fwd": "DlkitCpuAttnFwd",
    "dlkit_cpu_attn_bwd": "DlkitCpuAttnBwd",
}


def usable_cores() -> int:
    """The process's usable cores (its CPU affinity), as the kernels' C++ side counts them."""
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return len(usable) if usable else os.cpu_count() or 1


def library_path() -> pathlib.Path | None:
    """The built extension next to this file (setuptools names it with the ABI tag), or None."""
    found = sorted(HERE.glob(f"{LIB_STEM}*.so"))
    return found[0] if found else None


def _wheel_libdnnl() -> pathlib.Path | None:
    """libdnnl.so.3 from the onednn-cpu-gomp wheel's installed file list, if installed."""
    try:
        files = importlib.metadata.files(ONEDNN_DIST) or ()
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == "libdnnl.so.3":
            path = pathlib.Path(f.locate()).resolve()
            if path.exists():
                return path
    return None


def _open(path: pathlib.Path) -> tuple[ctypes.CDLL | None, str | None]:
    try:
        return ctypes.CDLL(str(path)), None
    except OSError as first:
        dnnl = _wheel_libdnnl()
        if dnnl is None:
            return None, f"{path.name} did not load ({first}); {ONEDNN_DIST} is not installed"
        try:
            ctypes.CDLL(str(dnnl), mode=ctypes.RTLD_GLOBAL)
            return ctypes.CDLL(str(path)), None
        except OSError as second:
            return None, f"{path.name} did not load: {second}"


@functools.cache
def _state() -> tuple[ctypes.CDLL | None, str | None]:
    """(library, None) once loaded and registered with XLA, else (None, one-line reason)."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        where = f"{sys.platform} {platform.machine()}"
        return None, f"the oneDNN kernels are built for x86-64 Linux only (this is {where})"
    path = library_path()
    if path is None:
        return None, (
            f"{LIB_STEM}.so was not built (no compiler or no oneDNN headers at install time: "
            "reinstall with `pip install -e .` and read its build log)"
        )
    lib, reason = _open(path)
    if lib is None:
        return None, reason
    try:
        _register(lib)
    except (AttributeError, ValueError, RuntimeError) as e:
        return None, f"registering the oneDNN handlers with XLA failed: {e}"
    return lib, None


_REGISTERED: set[str] = set()  # XLA keeps a target for the process: register each name once


def _register(lib: ctypes.CDLL) -> None:
    for target, symbol in TARGETS.items():
        if target not in _REGISTERED:
            jax.ffi.register_ffi_target(
                target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu"
            )
            _REGISTERED.add(target)


def load() -> ctypes.CDLL | None:
    """The loaded, registered library, or None (see why_unavailable)."""
    return _state()[0]


def available() -> bool:
    """True when the oneDNN kernels (convs, LSTM) are built, load, and are registered with XLA."""
    return load() is not None


def why_unavailable() -> str | None:
    """One line saying why the kernels cannot run, or None when they can."""
    return _state()[1]


@functools.cache
def vector_width() -> int:
    """The widest vectors (floats) this CPU runs, as the native kernels pick their builds: 16
    (AVX-512F), 8 (AVX2 and FMA) or 4 (baseline x86-64). Needs the library (available())."""
    fn = load().DlkitCpuVectorWidth
    fn.restype, fn.argtypes = ctypes.c_int64, []
    return int(fn())


def lstm_workspace_bytes(
    steps: int, batch: int, features: int, hidden: int, threads: int = 1, split: bool = False
) -> int:
    """Bytes of the workspace oneDNN's LSTM forward keeps for its backward at these shapes."""
    fn = load().DlkitOnednnLstmWorkspace
    fn.restype, fn.argtypes = ctypes.c_int64, [ctypes.c_int64] * 6
    size = fn(steps, batch, features, hidden, threads, int(split))
    if size < 0:
        raise ValueError(
            f"oneDNN refuses an LSTM of (T, N, C, H) = {(steps, batch, features, hidden)}"
        )
    return size


def onednn_version() -> str | None:
    """The version of the libdnnl actually loaded ('3.2.0'), or None."""
    lib = load()
    if lib is None:
        return None
    lib.DlkitOnednnVersion.restype = ctypes.c_char_p
    return lib.DlkitOnednnVersion().decode()
