// Shared by dlkit's native FFI handlers (onednn_conv.cc, onednn_lstm.cc, batch_norm.cc,
// attention.cc): the engine, per-thread streams and scratchpads, the OpenMP team size per call,
// the admission of concurrent calls, fresh outputs mapped ahead (Prefault), the ISA clones.
// Inline functions: their statics (engine, admission) are one per library, shared by every handler.
//
// Thread safety: XLA calls a handler from several threads at once. Primitives are cached behind a
// mutex and executed outside it; each call gives them its own scratchpad (scratchpad_mode::user),
// so concurrent executions share nothing mutable. oneDNN's engine is shared; each thread has its
// own stream.
//
// Threads: oneDNN (OpenMP build) bakes its thread count into a primitive when it is created and
// runs the calling thread's OpenMP team. A handler's `threads` attribute (> 0) sets the team size
// for the call (ThreadScope) and is part of its cache key, so results are bitwise reproducible for
// a fixed thread count (reduction orders depend on it; a count chosen from the current load would
// break bitwise resume). Calls whose teams together would exceed the process's cores wait for each
// other (Admission).
#pragma once

#include <omp.h>
#include <sched.h>
#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace dlkit_onednn {

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

inline dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

inline dnnl::stream& Stream() {
  thread_local dnnl::stream stream(Engine());
  return stream;
}

// Per-thread work buffers, 64-byte aligned, grown as needed and never shrunk: a call's scratchpad
// and its weights in a primitive's layout reuse the same pages every call, with no allocation,
// page faults or zero fill (a resnet18 step reorders ~45 MB of weights three times). Slot 0 is the
// scratchpad; a call uses each slot for one buffer at a time (a handler never re-enters on its
// thread).
enum Slot {
  kScratchSlot,
  kWeightSlot,
  kWeightSlot2,
  kGradSlot,
  kGradSlot2,
  kChunkGradSlot,
  kSlots
};

inline void* ThreadBuffer(Slot slot, size_t bytes) {
  struct Buf {
    std::unique_ptr<char, void (*)(void*)> data{nullptr, std::free};
    size_t size = 0;
  };
  thread_local std::array<Buf, kSlots> bufs;
  Buf& b = bufs[slot];
  if (bytes > b.size) {
    size_t rounded = (bytes + 63) / 64 * 64;
    b.data.reset(static_cast<char*>(std::aligned_alloc(64, rounded)));
    if (!b.data) throw std::bad_alloc();
    b.size = rounded;
  }
  return b.data.get();
}

inline void* Scratch(size_t bytes) { return ThreadBuffer(kScratchSlot, bytes); }

inline memory::desc Md(const memory::dims& d, tag t) { return memory::desc(d, dt::f32, t); }

inline dnnl::primitive_attr UserScratch() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// The process's usable cores (its CPU affinity), read once.
inline int64_t Cores() {
  static const int64_t cores = [] {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return static_cast<int64_t>(CPU_COUNT(&set));
    return static_cast<int64_t>(std::max(1u, std::thread::hardware_concurrency()));
  }();
  return cores;
}

// Admits oneDNN calls while their OpenMP teams fit the cores: a call with t threads holds t of
// Cores() slots (one call is always admitted). XLA runs independent custom calls (a conv's
// backward-data and backward-weights) on several pool threads at once; without this, each would
// start a full team and the teams would share the cores (measured slower on 2 cores).
class Admission {
 public:
  void Acquire(int64_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return used_ == 0 || used_ + n <= Cores(); });
    used_ += n;
  }
  void Release(int64_t n) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      used_ -= n;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t used_ = 0;
};

inline Admission& Admitted() {
  static Admission admission;
  return admission;
}

// For its lifetime: the calling thread's OpenMP team size is `threads` (when > 0; restored after).
class OmpThreads {
 public:
  explicit OmpThreads(int64_t threads) : prev_(omp_get_max_threads()) {
    if (threads > 0) omp_set_num_threads(static_cast<int>(threads));
  }
  ~OmpThreads() { omp_set_num_threads(prev_); }

 private:
  int prev_;
};

// For the call's lifetime: the calling thread's OpenMP team size is `threads` (restored after),
// and the call holds that many core slots.
class ThreadScope {
 public:
  explicit ThreadScope(int64_t threads)
      : n_(threads > 0 ? threads : omp_get_max_threads()), team_(threads) {
    Admitted().Acquire(n_);
  }
  ~ThreadScope() { Admitted().Release(n_); }

 private:
  int64_t n_;
  OmpThreads team_;
};

// A loop-heavy function compiled for AVX-512, AVX2 and baseline x86-64; the loader picks one
// (batch_norm.cc's channel loops, attention.cc's blocks).
#define DLKIT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif

// Whether the page at `a` (page-aligned) is not mapped in yet (mincore), as in a buffer XLA has
// just mmapped; false when it is, or when mincore cannot tell.
inline bool Unmapped(uintptr_t a) {
  unsigned char resident = 0;
  return mincore(reinterpret_cast<void*>(a), 4096, &resident) == 0 && !(resident & 1);
}

// Maps an output's fresh pages before a kernel writes it: one madvise(MADV_POPULATE_WRITE) per
// thread of the call's team instead of a page fault per 4 KiB page. Without dlkit's door, XLA's
// per-call buffers are mmapped afresh on every call (glibc hands blocks over 32 MiB to mmap), so
// an output's pages are new on every step. Only when the output's first page is not mapped yet
// (mincore): memory in use is left alone. Contents are unchanged; errors are ignored (kernels
// before 5.14 lack the advice, and the kernel then faults the pages as before).
inline void Prefault(void* p, size_t bytes, int64_t threads) {
  constexpr uintptr_t kPage = 4096;
  constexpr uintptr_t kMin = uintptr_t{1} << 20;  // smaller outputs: not worth the system calls
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p);
  const uintptr_t a = (begin + kPage - 1) & ~(kPage - 1), e = (begin + bytes) & ~(kPage - 1);
  if (e <= a || e - a < kMin || !Unmapped(a)) return;
  const int64_t pages = static_cast<int64_t>((e - a) / kPage);
  const int team = static_cast<int>(std::max<int64_t>(1, threads));
#pragma omp parallel num_threads(team)
  {
    const int64_t i = omp_get_thread_num(), n = omp_get_num_threads();
    const int64_t p0 = pages * i / n, p1 = pages * (i + 1) / n;
    if (p1 > p0)
      madvise(reinterpret_cast<void*>(a + p0 * kPage), (p1 - p0) * kPage, MADV_POPULATE_WRITE);
  }
}

inline memory ScratchMem(size_t bytes) {
  return memory(memory::desc({static_cast<int64_t>(bytes)}, dt::u8, tag::a), Engine(),
                Scratch(bytes));
}

// A weight reorder between the user's layout and the one a primitive chose (none when equal):
// `In` gives the primitive its input, `Run(packed, user)` copies a gradient back.
struct Reorder {
  dnnl::primitive prim;
  memory::desc packed;
  bool needed = false;
  size_t scratch = 0;
  void Make(const memory::desc& user, const memory::desc& want, bool to_user) {
    packed = want;
    needed = want != user;
    if (!needed) return;
    auto pd = to_user ? dnnl::reorder::primitive_desc(Engine(), want, Engine(), user, UserScratch())
                      : dnnl::reorder::primitive_desc(Engine(), user, Engine(), want, UserScratch());
    prim = dnnl::reorder(pd);
    scratch = pd.scratchpad_desc().get_size();
  }
  // The packed layout's memory in this thread's buffer `slot` (contents undefined).
  memory Packed(Slot slot) const {
    return memory(packed, Engine(), ThreadBuffer(slot, packed.get_size()));
  }
  // `user` as the primitive wants it: itself, or reordered into this thread's buffer `slot`.
  memory In(const memory& user, Slot slot) const {
    if (!needed) return user;
    memory out = Packed(slot);
    Run(user, out);
    return out;
  }
  void Run(const memory& from, const memory& to) const {
    std::unordered_map<int, memory> args{{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    if (scratch) args.emplace(DNNL_ARG_SCRATCHPAD, ScratchMem(scratch));
    prim.execute(Stream(), args);
  }
};

// Plans (primitives and their reorders) cached by key behind a mutex; a plan is made outside the
// lock (creation may take milliseconds) and the first writer wins: one plan per key.
template <class Plan>
std::shared_ptr<Plan> Cached(const std::vector<int64_t>& key,
                             const std::function<std::shared_ptr<Plan>()>& make) {
  static std::mutex mu;
  static std::map<std::vector<int64_t>, std::shared_ptr<Plan>> cache;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  auto plan = make();
  std::lock_guard<std::mutex> lock(mu);
  return cache.emplace(key, plan).first->second;
}

inline ffi::Error Guard(const char* what, const std::function<ffi::Error()>& body) {
  try {
    return body();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string(what) + ": " + e.what());
  }
}

}  // namespace dlkit_onednn
