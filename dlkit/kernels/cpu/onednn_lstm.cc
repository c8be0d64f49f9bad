// XLA FFI handlers for one LSTM layer over a whole sequence through oneDNN's RNN primitive
// (vanilla_lstm, one direction, left to right): forward training (outputs, final carry and the
// workspace the backward reads) and backward (gradients of the input, initial carry, weights and
// bias). Time-major, float32:
//   x (T, N, C), h0 and c0 (N, H), wx (C, 4H), wh (H, 4H), b (4H): gate order i, f, g, o (dlkit's
//   and oneDNN's), z_t = x_t wx + h_{t-1} wh + b.
// The user layouts are oneDNN's tnc / ldnc / ldigo / ldgo with L = D = 1, so no copy is made; the
// weights are reordered into the primitive's chosen layout per call (as the convs do).
// oneDNN's backward accumulates into the weight gradients: they are zeroed first.
// A call runs the whole batch on one team of `threads`, or (split = 1) the batch in `threads`
// chunks of rows, one thread each, at once: no team sync per time step. The chunks' workspaces
// lie end to end in one buffer; their weight gradients are summed in chunk order (fixed for fixed
// shapes and threads, so bitwise reproducible).
// Threads, thread safety and admission: onednn_common.h. Plans are cached by (kind, T, N, C, H,
// threads, rows between time steps).

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "onednn_common.h"

namespace ffi = xla::ffi;

namespace {

using namespace dlkit_onednn;  // NOLINT: Engine, Stream, Md, ThreadScope, Guard, ...

struct Dims {
  int64_t t, n, c, h, threads;
  int64_t ldn;  // rows between time steps: the whole batch (n, or more for a chunk of rows)
  memory::desc Layer(int64_t ch) const {
    return memory::desc({t, n, ch}, dt::f32, memory::dims{ldn * ch, ch, 1});
  }
  memory::desc Iter() const { return Md({1, 1, n, h}, tag::ldnc); }
  memory::desc Wx(tag f) const { return Md({1, 1, c, 4, h}, f); }
  memory::desc Wh(tag f) const { return Md({1, 1, h, 4, h}, f); }
  memory::desc Bias() const { return Md({1, 1, 4, h}, tag::ldgo); }
};

dnnl::lstm_forward::primitive_desc FwdPd(const Dims& d) {
  return dnnl::lstm_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::rnn_direction::unidirectional_left2right,
      d.Layer(d.c), d.Iter(), d.Iter(), d.Wx(tag::any), d.Wh(tag::any), d.Bias(), d.Layer(d.h),
      d.Iter(), d.Iter(), UserScratch());
}

struct Plan {
  dnnl::primitive rnn;
  Reorder wx, wh;  // user -> primitive (fwd, bwd); bwd also: dwx, dwh primitive -> user
  Reorder dwx, dwh;
  size_t scratch = 0, workspace = 0;
};

enum Kind { kFwd = 0, kBwd = 1 };

std::shared_ptr<Plan> MakePlan(int kind, const Dims& d) {
  OmpThreads team(d.threads);  // oneDNN sizes a primitive for the team it is created under
  auto plan = std::make_shared<Plan>();
  auto fwd = FwdPd(d);
  plan->workspace = fwd.workspace_desc().get_size();
  if (kind == kFwd) {
    plan->rnn = dnnl::lstm_forward(fwd);
    plan->wx.Make(d.Wx(tag::ldigo), fwd.weights_layer_desc(), false);
    plan->wh.Make(d.Wh(tag::ldigo), fwd.weights_iter_desc(), false);
    plan->scratch = fwd.scratchpad_desc().get_size();
    return plan;
  }
  auto pd = dnnl::lstm_backward::primitive_desc(
      Engine(), dnnl::prop_kind::backward, dnnl::rnn_direction::unidirectional_left2right,
      d.Layer(d.c), d.Iter(), d.Iter(), d.Wx(tag::any), d.Wh(tag::any), d.Bias(), d.Layer(d.h),
      d.Iter(), d.Iter(), d.Layer(d.c), d.Iter(), d.Iter(), d.Wx(tag::any), d.Wh(tag::any),
      d.Bias(), d.Layer(d.h), d.Iter(), d.Iter(), fwd, UserScratch());
  plan->rnn = dnnl::lstm_backward(pd);
  plan->wx.Make(d.Wx(tag::ldigo), pd.weights_layer_desc(), false);
  plan->wh.Make(d.Wh(tag::ldigo), pd.weights_iter_desc(), false);
  plan->dwx.Make(d.Wx(tag::ldigo), pd.diff_weights_layer_desc(), true);
  plan->dwh.Make(d.Wh(tag::ldigo), pd.diff_weights_iter_desc(), true);
  plan->scratch = pd.scratchpad_desc().get_size();
  return plan;
}

std::shared_ptr<Plan> GetPlan(int kind, const Dims& d) {
  return Cached<Plan>({kind, d.t, d.n, d.c, d.h, d.threads, d.ldn},
                      [&] { return MakePlan(kind, d); });
}

// Asks for transparent huge pages (madvise) on the 2 MiB pages inside the workspace when they are
// not mapped in yet. Without the door's keep-arena, XLA mmaps a buffer this big (79 MiB per layer
// at char_lstm's shapes; glibc mmaps anything over 32 MiB) afresh every call, and it then faults
// in 2 MiB at a time instead of 4 KiB (~20k faults per layer and call). Contents are untouched;
// memory already in use keeps its pages (Unmapped). Only the workspace: on conv and batch-norm
// outputs huge pages halved the faults but not the system time, and slowed resnet18 (those are
// mapped ahead instead: Prefault).
void AdviseHugePages(void* p, size_t bytes) {
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p);
  const uintptr_t a = (begin + kHuge - 1) & ~(kHuge - 1), e = (begin + bytes) & ~(kHuge - 1);
  if (e <= a || !Unmapped(a)) return;
  madvise(reinterpret_cast<void*>(a), e - a, MADV_HUGEPAGE);
}

// One primitive call of a handler: its dims, first row, workspace offset (bytes) and forward plan.
struct Chunk {
  Dims d;
  int64_t row;
  size_t ws;
  std::shared_ptr<Plan> fwd;
};

// The call's chunks (see the header) and the workspace bytes they need together.
std::vector<Chunk> Chunks(const Dims& whole, bool split, size_t& ws_bytes) {
  int64_t k = split ? std::min(whole.threads, whole.n) : 1;
  std::vector<Chunk> chunks;
  ws_bytes = 0;
  for (int64_t i = 0, row = 0; i < k; ++i) {
    Dims d = whole;
    d.n = whole.n / k + (i < whole.n % k ? 1 : 0);
    if (k > 1) d.threads = 1;
    chunks.push_back({d, row, ws_bytes, GetPlan(kFwd, d)});
    ws_bytes += (chunks.back().fwd->workspace + 63) / 64 * 64;
    row += d.n;
  }
  return chunks;
}

// Runs f on every chunk: on this thread, or on a team of one thread per chunk (errors rethrown).
void RunChunks(const std::vector<Chunk>& chunks, const std::function<void(const Chunk&)>& f) {
  if (chunks.size() == 1) return f(chunks[0]);
  std::vector<std::string> errors(chunks.size());
#pragma omp parallel num_threads(static_cast<int>(chunks.size()))
  {
    omp_set_num_threads(1);  // oneDNN runs sequentially inside a parallel region anyway
    for (size_t i = omp_get_thread_num(); i < chunks.size(); i += omp_get_num_threads()) {
      try {
        f(chunks[i]);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    }
  }
  for (const auto& e : errors)
    if (!e.empty()) throw std::runtime_error("oneDNN: " + e);
}

using F32 = ffi::Buffer<ffi::F32>;
using OutF32 = ffi::ResultBuffer<ffi::F32>;

bool Is(ffi::Span<const int64_t> got, std::initializer_list<int64_t> want) {
  return got.size() == want.size() && std::equal(want.begin(), want.end(), got.begin());
}

// Reads (T, N, C, H) from x and wh; checks every other operand against them.
ffi::Error CheckShapes(const char* what, ffi::Span<const int64_t> x, ffi::Span<const int64_t> h0,
                       ffi::Span<const int64_t> c0, ffi::Span<const int64_t> wx,
                       ffi::Span<const int64_t> wh, ffi::Span<const int64_t> b, Dims& d) {
  if (x.size() != 3 || wh.size() != 2)
    return ffi::Error::InvalidArgument(std::string(what) + ": x must be (T, N, C), wh (H, 4H)");
  d.t = x[0], d.n = x[1], d.c = x[2], d.h = wh[0];
  if (!Is(wh, {d.h, 4 * d.h}) || !Is(wx, {d.c, 4 * d.h}) || !Is(b, {4 * d.h}) ||
      !Is(h0, {d.n, d.h}) || !Is(c0, {d.n, d.h}) || d.t < 1 || d.n < 1 || d.c < 1 || d.h < 1)
    return ffi::Error::InvalidArgument(std::string(what) + ": operand shapes do not match");
  return ffi::Error::Success();
}

memory Mem(const memory::desc& md, const void* p) {
  return memory(md, Engine(), const_cast<void*>(p));
}

// Checks the operands, reads the dims and lays out the call's chunks; the workspace must match.
ffi::Error Prepare(const char* what, F32& x, F32& h0, F32& c0, F32& wx, F32& wh, F32& b,
                   size_t ws_bytes, int64_t threads, int64_t split, std::vector<Chunk>& chunks) {
  Dims d{0, 0, 0, 0, threads, 0};
  if (auto e = CheckShapes(what, x.dimensions(), h0.dimensions(), c0.dimensions(),
                           wx.dimensions(), wh.dimensions(), b.dimensions(), d);
      e.failure())
    return e;
  d.ldn = d.n;
  size_t want = 0;
  chunks = Chunks(d, split != 0, want);
  if (ws_bytes != want)
    return ffi::Error::InvalidArgument(std::string(what) + ": workspace size does not match");
  return ffi::Error::Success();
}

// The arguments forward and backward share: the inputs, the weights (reordered into this thread's
// weight buffers when the primitive wants another layout), the forward's outputs, the workspace
// and the scratchpad; p: x, h0, c0, wx, wh, b, y, hT, cT (offset to the chunk's rows), workspace.
std::unordered_map<int, memory> SharedArgs(const Plan& plan, const Chunk& k,
                                           std::vector<const float*> p, const uint8_t* ws) {
  const Dims& d = k.d;
  auto rows = [&](int i, int64_t width) { return p[i] + k.row * width; };
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC_LAYER, Mem(d.Layer(d.c), rows(0, d.c))},
      {DNNL_ARG_SRC_ITER, Mem(d.Iter(), rows(1, d.h))},
      {DNNL_ARG_SRC_ITER_C, Mem(d.Iter(), rows(2, d.h))},
      {DNNL_ARG_WEIGHTS_LAYER, plan.wx.In(Mem(d.Wx(tag::ldigo), p[3]), kWeightSlot)},
      {DNNL_ARG_WEIGHTS_ITER, plan.wh.In(Mem(d.Wh(tag::ldigo), p[4]), kWeightSlot2)},
      {DNNL_ARG_BIAS, Mem(d.Bias(), p[5])},
      {DNNL_ARG_DST_LAYER, Mem(d.Layer(d.h), rows(6, d.h))},
      {DNNL_ARG_DST_ITER, Mem(d.Iter(), rows(7, d.h))},
      {DNNL_ARG_DST_ITER_C, Mem(d.Iter(), rows(8, d.h))}};
  if (plan.workspace)
    args.emplace(DNNL_ARG_WORKSPACE,
                 Mem(memory::desc({static_cast<int64_t>(plan.workspace)}, dt::u8, tag::a),
                     ws + k.ws));
  if (plan.scratch) args.emplace(DNNL_ARG_SCRATCHPAD, ScratchMem(plan.scratch));
  return args;
}

ffi::Error LstmFwdImpl(F32 x, F32 h0, F32 c0, F32 wx, F32 wh, F32 b, OutF32 y, OutF32 hT,
                       OutF32 cT, ffi::ResultBuffer<ffi::U8> ws, int64_t threads, int64_t split) {
  return Guard("onednn lstm fwd", [&]() -> ffi::Error {
    ThreadScope scope(threads);
    std::vector<Chunk> chunks;
    if (auto e = Prepare("onednn lstm fwd", x, h0, c0, wx, wh, b, ws->element_count(), threads,
                         split, chunks);
        e.failure())
      return e;
    AdviseHugePages(ws->typed_data(), ws->size_bytes());
    RunChunks(chunks, [&](const Chunk& k) {
      const Plan* plan = k.fwd.get();
      auto args = SharedArgs(*plan, k,
                             {x.typed_data(), h0.typed_data(), c0.typed_data(), wx.typed_data(),
                              wh.typed_data(), b.typed_data(), y->typed_data(), hT->typed_data(),
                              cT->typed_data()},
                             ws->typed_data());
      plan->rnn.execute(Stream(), args);
      Stream().wait();
    });
    return ffi::Error::Success();
  });
}

// A weight gradient's memory as the primitive writes it, zeroed (oneDNN accumulates into it): the
// user's buffer itself, or this thread's buffer `slot` in the primitive's layout (reordered to the
// user's afterwards).
memory ZeroedGradient(const Reorder& r, memory user, Slot slot) {
  memory m = r.needed ? r.Packed(slot) : user;
  std::memset(m.get_data_handle(), 0, m.get_desc().get_size());
  return m;
}

ffi::Error LstmBwdImpl(F32 x, F32 h0, F32 c0, F32 wx, F32 wh, F32 b, F32 y, F32 hT, F32 cT,
                       ffi::Buffer<ffi::U8> ws, F32 dy, F32 dhT, F32 dcT, OutF32 dx, OutF32 dh0,
                       OutF32 dc0, OutF32 dwx, OutF32 dwh, OutF32 db, int64_t threads,
                       int64_t split) {
  return Guard("onednn lstm bwd", [&]() -> ffi::Error {
    ThreadScope scope(threads);
    std::vector<Chunk> chunks;
    if (auto e = Prepare("onednn lstm bwd", x, h0, c0, wx, wh, b, ws.element_count(), threads,
                         split, chunks);
        e.failure())
      return e;
    // Weight gradients: chunk 0 writes the outputs, chunk i > 0 its own (wx, wh, b) block of
    // this thread's buffer, summed into the outputs in chunk order afterwards.
    const size_t nwx = dwx->element_count(), nwh = dwh->element_count(), nb = db->element_count();
    const size_t block = nwx + nwh + nb;
    float* extra = static_cast<float*>(
        ThreadBuffer(kChunkGradSlot, sizeof(float) * block * (chunks.size() - 1)));
    RunChunks(chunks, [&](const Chunk& k) {
      const Dims& d = k.d;
      const size_t i = &k - chunks.data();
      float* gwx = i == 0 ? dwx->typed_data() : extra + (i - 1) * block;
      float* gwh = i == 0 ? dwh->typed_data() : gwx + nwx;
      float* gb = i == 0 ? db->typed_data() : gwx + nwx + nwh;
      auto plan = GetPlan(kBwd, d);
      auto args = SharedArgs(*plan, k,
                             {x.typed_data(), h0.typed_data(), c0.typed_data(), wx.typed_data(),
                              wh.typed_data(), b.typed_data(), y.typed_data(), hT.typed_data(),
                              cT.typed_data()},
                             ws.typed_data());
      auto rows = [&](const float* p, int64_t width) { return p + k.row * width; };
      memory dwx_user = Mem(d.Wx(tag::ldigo), gwx);
      memory dwh_user = Mem(d.Wh(tag::ldigo), gwh);
      memory dwx_m = ZeroedGradient(plan->dwx, dwx_user, kGradSlot);
      memory dwh_m = ZeroedGradient(plan->dwh, dwh_user, kGradSlot2);
      std::memset(gb, 0, sizeof(float) * nb);
      args.insert({{DNNL_ARG_DIFF_DST_LAYER, Mem(d.Layer(d.h), rows(dy.typed_data(), d.h))},
                   {DNNL_ARG_DIFF_DST_ITER, Mem(d.Iter(), rows(dhT.typed_data(), d.h))},
                   {DNNL_ARG_DIFF_DST_ITER_C, Mem(d.Iter(), rows(dcT.typed_data(), d.h))},
                   {DNNL_ARG_DIFF_SRC_LAYER, Mem(d.Layer(d.c), rows(dx->typed_data(), d.c))},
                   {DNNL_ARG_DIFF_SRC_ITER, Mem(d.Iter(), rows(dh0->typed_data(), d.h))},
                   {DNNL_ARG_DIFF_SRC_ITER_C, Mem(d.Iter(), rows(dc0->typed_data(), d.h))},
                   {DNNL_ARG_DIFF_WEIGHTS_LAYER, dwx_m},
                   {DNNL_ARG_DIFF_WEIGHTS_ITER, dwh_m},
                   {DNNL_ARG_DIFF_BIAS, Mem(d.Bias(), gb)}});
      plan->rnn.execute(Stream(), args);
      if (plan->dwx.needed) plan->dwx.Run(dwx_m, dwx_user);
      if (plan->dwh.needed) plan->dwh.Run(dwh_m, dwh_user);
      Stream().wait();
    });
    float* outs[] = {dwx->typed_data(), dwh->typed_data(), db->typed_data()};
    const size_t sizes[] = {nwx, nwh, nb}, starts[] = {0, nwx, nwx + nwh};
    for (size_t i = 1; i < chunks.size(); ++i)
      for (int g = 0; g < 3; ++g) {
        const float* from = extra + (i - 1) * block + starts[g];
        for (size_t j = 0; j < sizes[g]; ++j) outs[g][j] += from[j];
      }
    return ffi::Error::Success();
  });
}

}  // namespace

#pragma GCC visibility push(default)

// The operands both handlers take first: x, h0, c0, wx, wh, b.
#define LSTM_INPUTS(B) \
  B.Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()

XLA_FFI_DEFINE_HANDLER_SYMBOL(DlkitOnednnLstmFwd, LstmFwdImpl,
                              LSTM_INPUTS(ffi::Ffi::Bind())
                                  .Ret<F32>()  // y
                                  .Ret<F32>()  // hT
                                  .Ret<F32>()  // cT
                                  .Ret<ffi::Buffer<ffi::U8>>()  // workspace
                                  .Attr<int64_t>("threads")
                                  .Attr<int64_t>("split"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(DlkitOnednnLstmBwd, LstmBwdImpl,
                              LSTM_INPUTS(ffi::Ffi::Bind())
                                  .Arg<F32>()  // y
                                  .Arg<F32>()  // hT
                                  .Arg<F32>()  // cT
                                  .Arg<ffi::Buffer<ffi::U8>>()  // workspace
                                  .Arg<F32>()  // dy
                                  .Arg<F32>()  // dhT
                                  .Arg<F32>()  // dcT
                                  .Ret<F32>()  // dx
                                  .Ret<F32>()  // dh0
                                  .Ret<F32>()  // dc0
                                  .Ret<F32>()  // dwx
                                  .Ret<F32>()  // dwh
                                  .Ret<F32>()  // db
                                  .Attr<int64_t>("threads")
                                  .Attr<int64_t>("split"));

// Bytes of the workspace the forward writes and the backward reads, for (T, N, C, H) on `threads`
// (split: in chunks of rows); -1 when oneDNN refuses the shapes. Called at trace time (ctypes) to
// size the forward's workspace output.
extern "C" int64_t DlkitOnednnLstmWorkspace(int64_t t, int64_t n, int64_t c, int64_t h,
                                            int64_t threads, int64_t split) {
  try {
    size_t bytes = 0;
    Chunks(Dims{t, n, c, h, threads, n}, split != 0, bytes);
    return static_cast<int64_t>(bytes);
  } catch (const std::exception&) {
    return -1;
  }
}

#pragma GCC visibility pop
