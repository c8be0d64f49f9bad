"""CPU tuning: a pure policy from the CPU's features and core count, and `configure()` to apply it.

`choose(features)` returns the settings measured to win on x86 CPUs (BUILD_NOTES, "CPU speed on
any x86"): glibc malloc kept from returning XLA's large per-call buffers to the kernel (without it
every dispatch page-faults its scratch memory afresh), one JAX CPU device per physical core (the
training loop splits a batch over them where data parallelism wins: dlkit.train.cpu_layout), and
XLA flags where one wins. `configure()` applies them; call it before JAX starts its backend
(experiments/train.py does, before the first computation; library users call
`dlkit.cpu.configure(split_devices=True)` first). It prints its choice once.
"""

import ctypes
import dataclasses
import os
import pathlib
import re
import sys

import jax  # importing jax does not start its backend

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
MAX_DEVICES = 16  # one device per physical core, at most this many (measured up to 2)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from the heap (reused across calls)
TRIM_THRESHOLD = 1 << 34  # never trim the heap top back to the kernel


@dataclasses.dataclass(frozen=True)
class CpuFeatures:
    """What the policy reads: vendor, model name, ISA flags that matter, usable cores."""

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
class CpuPolicy:
    """Settings chosen for one CPU; `reasons` says why, for the one printed line."""

    features: CpuFeatures
    keep_malloc_arena: bool = False
    devices: int = 1  # JAX CPU devices to create (the loop decides how many a run uses)
    xla_flags: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()

    def describe(self) -> str:
        f = self.features
        isa = " ".join(sorted(f.flags)) or "no avx2"
        return (
            f"{f.model} ({isa}; {f.cores} cores): malloc keep-arena "
            f"{'on' if self.keep_malloc_arena else 'off'}, {self.devices} CPU "
            f"device{'s' if self.devices != 1 else ''}, XLA flags "
            f"{' '.join(self.xla_flags) or 'none'}"
            + (f" [{'; '.join(self.reasons)}]" if self.reasons else "")
        )


def choose(features: CpuFeatures) -> CpuPolicy:
    """The settings for this CPU (pure): what was measured to win, nothing speculative."""
    reasons = ["keep-arena: XLA's per-call buffers stay mapped (no page faults per dispatch)"]
    devices = max(1, min(features.physical_cores or features.cores, MAX_DEVICES))
    if devices > 1:
        reasons.append("a device per core: one XLA:CPU step keeps ~1.5 of 2 cores busy")
    return CpuPolicy(features, True, devices, xla_flags=(), reasons=tuple(reasons))


def _backend_started() -> bool:
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(bridge is not None and getattr(bridge, "_backends", None))


def _keep_malloc_arena() -> bool:
    """glibc mallopt: large blocks from the heap, heap never trimmed; False off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(MMAP_THRESHOLD)) == 1
    return ok and libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(min(TRIM_THRESHOLD, 2**31 - 1))) == 1


_APPLIED: CpuPolicy | None = None


def collective_threads(devices: int, cores: int) -> int:
    """XLA:CPU pool threads for `devices` in-process devices: max(cores, 2 * devices).

    With fewer than two threads per device a data-parallel step can hang in its all-reduce (one
    device's thread waits in the rendezvous while the other device's work waits for a thread) and
    XLA aborts the process after 40 s; measured: 2 devices hang at 2 and 3 threads, not at 4;
    4 devices at 4 and 6, not at 8 (BUILD_NOTES, "CPU devices that hang").
    """
    return max(cores, 2 * devices) if devices > 1 else cores


def _forced_device_count() -> int:
    """CPU devices the backend will create as already asked for (XLA_FLAGS or jax config)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if m := re.search(r"xla_force_host_platform_device_count=(\d+)", flags):
        return int(m.group(1))
    return max(1, jax.config.jax_num_cpu_devices)


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def reserve_threads(devices: int, cores: int | None = None) -> str | None:
    """Before JAX starts: sets NPROC (the size XLA gives its CPU thread pools) to
    collective_threads(devices); returns a note when it cannot (JAX already started, or the user's
    own NPROC is too low), else None. DLKIT_NPROC marks an NPROC that dlkit set (and may raise)."""
    if devices <= 1:
        return None
    need = collective_threads(devices, cores or _usable_cores())
    have = os.environ.get("NPROC")
    ours = have is not None and have == os.environ.get("DLKIT_NPROC")
    if have is not None and not ours:  # the user's own: kept, checked
        if have.isdigit() and int(have) >= need:
            return None
        return f"NPROC={have} is below {need} XLA threads: {devices} CPU devices may hang"
    if ours and int(have) >= need:
        return None
    if _backend_started():
        return f"JAX started before dlkit.cpu: {devices} CPU devices may hang (BUILD_NOTES)"
    os.environ["NPROC"] = os.environ["DLKIT_NPROC"] = str(need)
    return None


def _threads_said(devices: int) -> str:
    """reserve_threads(devices), said for the printed line: its note, or the threads reserved."""
    note = reserve_threads(devices)
    return note or f"XLA threads {os.environ['NPROC']}: 2 per device, so none hang"


def request_devices(n: int) -> str:
    """Before JAX starts: n CPU devices, with the XLA threads their collectives need; returns
    what was reserved (or why not), for the printed line."""
    jax.config.update("jax_num_cpu_devices", n)
    return _threads_said(n)


def _why_not_split() -> str | None:
    """Why the device count is not dlkit's to set (the user set it), or None."""
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return "device count set in XLA_FLAGS"
    if jax.config.jax_num_cpu_devices != -1:
        return f"device count already set to {jax.config.jax_num_cpu_devices}"
    return None


def configure(
    policy: CpuPolicy | None = None, *, verbose: bool = True, split_devices: bool = False
) -> CpuPolicy:
    """Applies `policy` (default: choose(detect())) once per process; prints it once (stdout).

    XLA flags and the device split only take effect before JAX starts its backend; if it already
    has, they are skipped (said in the printed line) and the allocator setting still applies.
    `split_devices` creates policy.devices JAX CPU devices (experiments/train.py asks for it when
    parallel.cpu_devices is 0, auto); otherwise the process keeps one. DLKIT_CPU_POLICY=off
    disables it all (for A/B measurements).
    """
    global _APPLIED
    if _APPLIED is not None:
        return _APPLIED
    policy = policy or choose(CpuFeatures.detect())
    if os.environ.get("DLKIT_CPU_POLICY", "on").lower() in ("off", "0", "false"):
        policy = CpuPolicy(policy.features, reasons=("DLKIT_CPU_POLICY=off",))
    notes = []
    if policy.devices > 1:
        why = "not asked" if not split_devices else None
        why = why or ("JAX already started" if _backend_started() else None)
        why = why or _why_not_split()
        if why:
            notes += [] if why == "not asked" else [f"devices not split: {why}"]
            reasons = tuple(r for r in policy.reasons if not r.startswith("a device per core"))
            policy = dataclasses.replace(policy, devices=1, reasons=reasons)
        else:
            jax.config.update("jax_num_cpu_devices", policy.devices)
    if (devices := _forced_device_count()) > 1:  # dlkit's split or the user's own count
        notes.append(_threads_said(devices))
    if policy.keep_malloc_arena and not _keep_malloc_arena():
        policy = dataclasses.replace(policy, keep_malloc_arena=False)
        notes.append("mallopt unavailable (not glibc)")
    if policy.xla_flags:
        if _backend_started():
            notes.append("JAX already started: XLA flags not applied")
            policy = dataclasses.replace(policy, xla_flags=())
        else:
            os.environ["XLA_FLAGS"] = " ".join(
                [os.environ.get("XLA_FLAGS", ""), *policy.xla_flags]
            ).strip()
    policy = dataclasses.replace(policy, reasons=policy.reasons + tuple(notes))
    if verbose:
        print(f"dlkit CPU policy: {policy.describe()}", flush=True)
    _APPLIED = policy
    return policy
