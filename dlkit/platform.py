"""Host set-up for the CPU backend, called only at the door (a binary's main) before JAX starts.

`configure(*cpu_devices)` sets up the process, on the CPU backend only, with the tricks an A/B
still shows win (BUILD_NOTES, "Platform (the door)"; `benchmarks/cpu_suite.py --platform=...`):
- one JAX CPU device per physical core (the loop splits a batch over them where that wins:
  dlkit.train.cpu_layout), or the count a run's parallel.cpu_devices asks for;
- XLA's CPU thread pools at 2 threads per device (NPROC), without which the devices' collectives
  can hang and XLA aborts the process (BUILD_NOTES, "Known upstream bugs": the all-reduce hang);
- glibc malloc keeping XLA's large per-call buffers mapped (mallopt "keep-arena"), so a dispatch
  does not page-fault its scratch memory afresh;
- one-device dispatches run on the caller's thread (jax_cpu_enable_async_dispatch off): keep-arena
  reaches only the main thread's arena, and another thread's caps its heap at 64 MiB, so a bigger
  per-call buffer allocated on XLA's dispatch thread was mmapped and page-faulted every call.
- OpenMP threads that sleep when idle (OMP_WAIT_POLICY=PASSIVE, unless set): the oneDNN convs'
  (and PyTorch's) OpenMP teams otherwise spin between calls, and on a loaded or shared machine
  a call waits for descheduled spinners (measured at load 7.6 on 2 cores: a 1x1 stride-2
  ResNet conv 16 ms -> 2.5 ms, a 3x3 64->64 one 34 -> 22 ms; `--platform=omp_default` A/B).
- with DLKIT_THREEFRY=unrolled (opt-in; the test run sets it), jax.random's threefry hash lowered
  unrolled on CPU (`unroll_threefry`), as jax itself does after jax-ml/jax#37872: jax 0.10's CPU
  rule is a while loop that XLA:CPU compiles in 1.1-1.6 s per random draw, with the same bits; off
  by default because unrolled, XLA fuses the hash unvectorized into dropout's consumers and some
  steps run slower (BUILD_NOTES, "Platform" 5).
It returns a frozen `Platform` that says what was done, for the door to print; it prints nothing.
Its line also names the CPU conv backend `impl="auto"` will use (dlkit.kernels.cpu: "oneDNN 3.2.0",
or "XLA (why not oneDNN)"); finding that out loads the oneDNN library, not JAX's backend.
With a GPU or TPU backend intended (JAX_PLATFORMS, or an accelerator plugin installed) it touches
nothing. Library code (`import dlkit`, make_steps, train_and_evaluate) never calls it: without
it a process has JAX's defaults (one CPU device) and trains the same, only slower.
"""

import ctypes
import dataclasses
import importlib
import importlib.metadata
import importlib.util
import os
import pathlib
import re
import sys

import jax  # importing jax does not start its backend

from dlkit.kernels.cpu import dispatch

__all__ = [
    "configure",
    "Platform",
    "CpuFeatures",
    "choose_devices",
    "collective_threads",
    "unroll_threefry",
    "choose_threefry",
]

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
MAX_DEVICES = 16  # one device per physical core, at most this many (measured up to 2)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from the heap (reused across calls)
TRIM_THRESHOLD = 2**31 - 1  # never trim the heap top back to the kernel (mallopt takes an int)
OFF = ("off", "0", "false")  # DLKIT_PLATFORM values that turn configure off (A/B)


@dataclasses.dataclass(frozen=True)
class CpuFeatures:
    """What the choice reads: vendor, model name, ISA flags that matter, usable cores."""

    vendor: str = "unknown"
    model: str = "unknown"
    flags: frozenset = frozenset()
    cores: int = 1  # usable logical CPUs (affinity)
    physical_cores: int = 0  # distinct (package, core) among them; 0: unknown (= cores)

    @classmethod
    def detect(cls) -> "CpuFeatures":
        """From /proc/cpuinfo (Linux) and the process's CPU affinity."""
        vendor, model, flags = "unknown", "unknown", frozenset()
        try:
            text = pathlib.Path("/proc/cpuinfo").read_text()
        except OSError:
            text = ""
        if m := re.search(r"^vendor_id\s*:\s*(.+)$", text, re.M):
            vendor = m.group(1).strip()
        if m := re.search(r"^model name\s*:\s*(.+)$", text, re.M):
            model = m.group(1).strip()
        if m := re.search(r"^flags\s*:\s*(.+)$", text, re.M):
            flags = frozenset(f for f in m.group(1).split() if f in ISA_FLAGS)
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        cores = len(usable) if usable else os.cpu_count() or 1
        return cls(vendor, model, flags, cores, _physical_cores(usable or range(cores)))

    def per_core_devices(self) -> int:
        """One CPU device per physical core (SMT siblings count once), at most MAX_DEVICES."""
        return max(1, min(self.physical_cores or self.cores, MAX_DEVICES))


def _physical_cores(cpus) -> int:
    """Distinct (package, core id) pairs among `cpus` (SMT siblings count once); 0: unknown."""
    seen = set()
    for n in cpus:
        topology = pathlib.Path(f"/sys/devices/system/cpu/cpu{n}/topology")
        try:
            pkg = (topology / "physical_package_id").read_text().strip()
            seen.add((pkg, (topology / "core_id").read_text().strip()))
        except OSError:
            return 0
    return len(seen)


@dataclasses.dataclass(frozen=True)
class Platform:
    """What configure() did to this process; `describe()` is the door's one "platform" line."""

    features: CpuFeatures
    backend: str = "cpu"  # "cpu", or the accelerator platform intended (then nothing was set)
    devices: int = 1  # JAX CPU devices the process will have
    threads: int | None = None  # XLA CPU pool threads reserved (NPROC); None: XLA's default
    keep_malloc_arena: bool = False
    sync_dispatch: bool = False  # one-device dispatches run on the caller's thread
    notes: tuple[str, ...] = ()
    convs: str | None = None  # the CPU conv backend: "oneDNN 3.2.0" or "XLA (reason)"; None: unsaid
    omp_wait: str | None = None  # OMP_WAIT_POLICY in effect for OpenMP libraries loaded after
    threefry_unrolled: bool = False  # jax.random's hash lowered unrolled on CPU (DLKIT_THREEFRY)

    def describe(self) -> str:
        f = self.features
        head = f"{f.model} ({' '.join(sorted(f.flags)) or 'no avx2'}; {f.cores} cores)"
        if self.backend != "cpu":
            return f"{head}: backend {self.backend}, host left as it is" + self._notes()
        threads = f"XLA threads {self.threads}" if self.threads else "XLA threads default"
        return (
            f"{head}: {self.devices} CPU device{'s' if self.devices != 1 else ''}, {threads}, "
            f"malloc keep-arena {'on' if self.keep_malloc_arena else 'off'}"
            + (", dispatch on the caller's thread" if self.sync_dispatch else "")
            + (f", convs: {self.convs}" if self.convs else "")
            + (f", OpenMP wait {self.omp_wait.lower()}" if self.omp_wait else "")
            + (", threefry unrolled" if self.threefry_unrolled else "")
            + self._notes()
        )

    def _notes(self) -> str:
        return f" [{'; '.join(self.notes)}]" if self.notes else ""


def collective_threads(devices: int, cores: int) -> int:
    """XLA:CPU pool threads for `devices` in-process devices: max(cores, 2 * devices).

    With fewer than two threads per device a data-parallel step can hang in its all-reduce (one
    device's thread waits in the rendezvous while the other device's work waits for a thread) and
    XLA aborts the process after 40 s; measured: 2 devices hang at 2 and 3 threads, not at 4;
    4 devices at 4 and 6, not at 8 (BUILD_NOTES, "Known upstream bugs": the all-reduce hang).
    """
    return max(cores, 2 * devices) if devices > 1 else cores


def choose_devices(cpu_devices: tuple[int, ...], features: CpuFeatures, split: bool) -> int:
    """CPU devices for runs asking parallel.cpu_devices (0: auto, one per physical core when
    `split`, else 1; N: N): the most any of them asks (pure)."""
    auto = features.per_core_devices() if split else 1
    return max((n or auto for n in cpu_devices or (0,)), default=1)


def intended_backend(environ=os.environ) -> str:
    """The backend JAX will start: its running one, JAX_PLATFORMS' first, else "cpu" unless an
    accelerator plugin (CUDA, ROCm, TPU) is installed ("accelerator": hands off)."""
    if _backend_started():
        return jax.default_backend()
    platforms = jax.config.jax_platforms or environ.get("JAX_PLATFORMS", "")
    if platforms:
        return platforms.split(",")[0].strip().lower()
    plugins = importlib.metadata.entry_points(group="jax_plugins")
    found = plugins or any(importlib.util.find_spec(m) for m in ("jax_plugins", "libtpu"))
    return "accelerator" if found else "cpu"


def _backend_started() -> bool:
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(bridge is not None and getattr(bridge, "_backends", None))


def _preset_devices(environ) -> int | None:
    """CPU devices already asked for (XLA_FLAGS or jax config), which configure keeps; else None."""
    if m := re.search(r"xla_force_host_platform_device_count=(\d+)", environ.get("XLA_FLAGS", "")):
        return int(m.group(1))
    return jax.config.jax_num_cpu_devices if jax.config.jax_num_cpu_devices != -1 else None


def _reserve_threads(devices: int, cores: int, environ) -> tuple[int | None, str | None]:
    """Sets NPROC (XLA's CPU pool size) to collective_threads(devices); a user's own NPROC is
    kept (a note when too low). (threads, note)."""
    if devices <= 1:
        return None, None
    need = collective_threads(devices, cores)
    have = environ.get("NPROC")
    if have is None:
        environ["NPROC"] = str(need)
        return need, None
    if have.isdigit() and int(have) >= need:
        return int(have), None
    return None, f"NPROC={have} is below {need} XLA threads: {devices} CPU devices may hang"


def _keep_malloc_arena() -> bool:
    """glibc mallopt: large blocks from the heap, heap never trimmed; False off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(MMAP_THRESHOLD)) == 1
    return ok and libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(TRIM_THRESHOLD)) == 1


def _dispatch_on_caller() -> bool:
    """XLA:CPU runs a one-device dispatch on the calling thread; False if jax lacks the option."""
    try:
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    except (AttributeError, KeyError):
        return False
    return True


def unroll_threefry(unrolled: bool = True) -> bool:
    """Lowers jax.random's threefry hash unrolled on CPU, as on GPU/TPU and in jax after #37872:
    the same bits, much faster compiles (unrolled=False: back to jax 0.10's rolled loop, for A/B).
    False where jax has no rolled CPU rule (nothing to do). Programs traced later see it."""
    try:
        mlir = importlib.import_module("jax._src.interpreters.mlir")
        threefry = importlib.import_module("jax._src.random.threefry2x32")
    except ImportError:
        return False
    rolled = getattr(threefry, "_threefry2x32_cpu_lowering_rule", None)
    plain = getattr(threefry, "_threefry2x32_lowering_rule", None)
    primitive = getattr(threefry, "threefry2x32_p", None)
    if rolled is None or plain is None or primitive is None:
        return False
    if unrolled:
        mlir.register_lowering(primitive, plain, platform="cpu", inline=False)
    else:
        mlir.register_lowering(primitive, rolled, platform="cpu")  # as jax 0.10 registers it
    return True


def choose_threefry(environ=os.environ) -> bool:
    """unroll_threefry() when DLKIT_THREEFRY=unrolled (any other value: jax's lowering); a door's
    call, for compile-bound processes such as the tests. True if it unrolled."""
    return environ.get("DLKIT_THREEFRY", "").lower() == "unrolled" and unroll_threefry()


def configure(
    *cpu_devices: int,
    split: bool = True,
    keep_malloc_arena: bool = True,
    sync_dispatch: bool = True,
    omp_passive: bool = True,
    features: CpuFeatures | None = None,
    environ=os.environ,
) -> Platform:
    """Sets up the host for the CPU backend (CPU devices, XLA threads, malloc) and says what it
    did; called once, by a door, before JAX starts. Touches nothing for a GPU or TPU backend.

    `cpu_devices`: the parallel.cpu_devices of the runs to come (0 or none: auto, one device per
    physical core; N: N); the process gets the most any asks, unless XLA_FLAGS or jax config
    already fixed a count (kept). For A/B: `split=False` keeps auto at one device,
    `keep_malloc_arena=False` leaves glibc's malloc alone, `sync_dispatch=False` XLA's asynchronous
    dispatch, `omp_passive=False` OpenMP's wait policy. DLKIT_THREEFRY=unrolled: choose_threefry.
    DLKIT_PLATFORM=off in `environ` does nothing.
    """
    features = features or CpuFeatures.detect()
    backend = intended_backend(environ)
    if backend != "cpu":
        return Platform(features, backend=backend)
    if environ.get("DLKIT_PLATFORM", "on").lower() in OFF:
        return Platform(features, notes=("DLKIT_PLATFORM=off",), convs=dispatch.describe())
    notes, threads, sync = [], None, False
    devices = choose_devices(cpu_devices, features, split)
    if _backend_started():
        devices = jax.local_device_count()
        if devices > 1:
            notes.append("JAX started before the platform: its CPU devices may hang")
    else:
        if (preset := _preset_devices(environ)) is not None:
            devices = preset
            notes.append("device count set by XLA_FLAGS or jax config")
        elif devices > 1:
            jax.config.update("jax_num_cpu_devices", devices)
        threads, note = _reserve_threads(devices, features.cores, environ)
        notes += [note] if note else []
        if sync_dispatch and "JAX_CPU_ENABLE_ASYNC_DISPATCH" in environ:
            notes.append("JAX_CPU_ENABLE_ASYNC_DISPATCH kept")  # the user's choice
        elif sync_dispatch:
            sync = _dispatch_on_caller()
    kept = keep_malloc_arena and _keep_malloc_arena()
    if keep_malloc_arena and not kept:
        notes.append("mallopt unavailable (not glibc)")
    if omp_passive and not _backend_started():
        environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before any OpenMP library loads
    convs = dispatch.describe()  # loads the oneDNN library (and its OpenMP), if it can
    omp_wait = environ.get("OMP_WAIT_POLICY")
    unrolled = choose_threefry(environ)
    return Platform(
        features, "cpu", devices, threads, kept, sync, tuple(notes), convs, omp_wait, unrolled
    )
