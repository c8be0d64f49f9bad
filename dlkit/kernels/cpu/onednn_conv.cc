// XLA FFI handlers for 2-D convolution on the CPU through oneDNN: forward (bias, ReLU fused),
// backward-data and backward-weights (+ bias gradient). Activations NHWC, weights HWIO, float32.
//
// Every operand may carry leading batch dimensions (jax.ffi.ffi_call's vmap_method="expand_dims":
// the same count on every operand, size 1 where unbatched). The output's leading dims are their
// broadcast. When only the activations are batched they fold into the conv's batch (one call);
// otherwise the handler loops over the leading index, broadcasting size-1 dims.
//
// Threads, thread safety and admission of concurrent calls: onednn_common.h. Primitives are
// cached by (kind, shapes, attributes, thread count).

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "onednn_common.h"

namespace ffi = xla::ffi;

namespace {

using namespace dlkit_onednn;  // NOLINT: Engine, Stream, Md, ThreadScope, Guard, ...

// Core (non-batch) shape of one conv: x (B,H,W,Ci), w (kh,kw,Ci,Co), y (B,Ho,Wo,Co).
struct Shape {
  int64_t b, h, w, ci, co, kh, kw, ho, wo;
  int64_t sh, sw, pt, pb, pl, pr;
  int64_t relu, bias, threads;
  auto Key(int kind) const {
    return std::vector<int64_t>{kind, b,  h,  w,  ci, co, kh,   kw,   ho,     wo,
                                sh,   sw, pt, pb, pl, pr, relu, bias, threads};
  }
  memory::dims Src() const { return {b, ci, h, w}; }
  memory::dims Wei() const { return {co, ci, kh, kw}; }
  memory::dims Dst() const { return {b, co, ho, wo}; }
  memory::dims Bias() const { return {co}; }
  memory::dims Strides() const { return {sh, sw}; }
  memory::dims PadL() const { return {pt, pl}; }
  memory::dims PadR() const { return {pb, pr}; }
};

dnnl::convolution_forward::primitive_desc FwdPd(const Shape& s, bool training) {
  dnnl::primitive_attr attr = UserScratch();
  if (s.relu) {
    dnnl::post_ops ops;
    ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(ops);
  }
  auto pk = training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
  memory::desc src = Md(s.Src(), tag::nhwc), dst = Md(s.Dst(), tag::nhwc);
  memory::desc wei = Md(s.Wei(), tag::any);
  if (s.bias) {
    return dnnl::convolution_forward::primitive_desc(
        Engine(), pk, dnnl::algorithm::convolution_direct, src, wei, Md(s.Bias(), tag::a), dst,
        s.Strides(), s.PadL(), s.PadR(), attr);
  }
  return dnnl::convolution_forward::primitive_desc(Engine(), pk,
                                                   dnnl::algorithm::convolution_direct, src, wei,
                                                   dst, s.Strides(), s.PadL(), s.PadR(), attr);
}

// A cached primitive with the weight reorder it needs (user HWIO <-> oneDNN's chosen layout).
struct Plan {
  dnnl::primitive conv;
  Reorder wei;  // HWIO -> oneDNN's layout (fwd, bwd-data) or back (bwd-weights)
  size_t conv_scratch = 0;
};

enum Kind { kFwd = 0, kBwdData = 1, kBwdWeights = 2 };

std::shared_ptr<Plan> MakePlan(int kind, const Shape& s) {
  auto plan = std::make_shared<Plan>();
  memory::desc wei;  // the layout oneDNN chose for the weights (or their gradient)
  if (kind == kFwd) {
    auto pd = FwdPd(s, /*training=*/true);
    plan->conv = dnnl::convolution_forward(pd);
    wei = pd.weights_desc();
    plan->conv_scratch = pd.scratchpad_desc().get_size();
  } else if (kind == kBwdData) {
    Shape hint = s;
    hint.relu = 0;
    auto fwd = FwdPd(hint, true);
    auto pd = dnnl::convolution_backward_data::primitive_desc(
        Engine(), dnnl::algorithm::convolution_direct, Md(s.Src(), tag::nhwc),
        Md(s.Wei(), tag::any), Md(s.Dst(), tag::nhwc), s.Strides(), s.PadL(), s.PadR(), fwd,
        UserScratch());
    plan->conv = dnnl::convolution_backward_data(pd);
    wei = pd.weights_desc();
    plan->conv_scratch = pd.scratchpad_desc().get_size();
  } else {
    Shape hint = s;
    hint.relu = 0;
    hint.bias = 1;
    auto fwd = FwdPd(hint, true);
    auto pd = dnnl::convolution_backward_weights::primitive_desc(
        Engine(), dnnl::algorithm::convolution_direct, Md(s.Src(), tag::nhwc),
        Md(s.Wei(), tag::any), Md(s.Bias(), tag::a), Md(s.Dst(), tag::nhwc), s.Strides(),
        s.PadL(), s.PadR(), fwd, UserScratch());
    plan->conv = dnnl::convolution_backward_weights(pd);
    wei = pd.diff_weights_desc();
    plan->conv_scratch = pd.scratchpad_desc().get_size();
  }
  plan->wei.Make(Md(s.Wei(), tag::hwio), wei, /*to_user=*/kind == kBwdWeights);
  return plan;
}

std::shared_ptr<Plan> GetPlan(int kind, const Shape& s) {
  return Cached<Plan>(s.Key(kind), [&] { return MakePlan(kind, s); });
}

// Leading (vmap) dims of an operand whose core rank is `core`.
std::vector<int64_t> Lead(ffi::Span<const int64_t> dims, size_t core) {
  return std::vector<int64_t>(dims.begin(), dims.end() - core);
}

int64_t Prod(const std::vector<int64_t>& v) {
  int64_t p = 1;
  for (int64_t d : v) p *= d;
  return p;
}

// Offset (in groups) of operand with leading dims `lead` at flat output index `i` of `out`.
int64_t GroupOffset(const std::vector<int64_t>& lead, const std::vector<int64_t>& out, int64_t i) {
  int64_t off = 0, stride = 1;
  for (int d = static_cast<int>(out.size()) - 1; d >= 0; --d) {
    int64_t idx = i % out[d];
    i /= out[d];
    if (lead[d] != 1) off += idx * stride;
    stride *= lead[d];
  }
  return off;
}

ffi::Error CheckLead(const std::vector<std::vector<int64_t>>& leads,
                     const std::vector<int64_t>& out) {
  for (const auto& l : leads) {
    if (l.size() != out.size()) return ffi::Error::InvalidArgument("batch dims differ in count");
    for (size_t d = 0; d < l.size(); ++d)
      if (l[d] != 1 && l[d] != out[d])
        return ffi::Error::InvalidArgument("batch dims do not broadcast");
  }
  return ffi::Error::Success();
}

struct Attrs {
  int64_t sh, sw, pt, pb, pl, pr, relu, bias, threads;
};

// A call under this many forward FLOPs runs on one thread: waking an OpenMP team costs more than
// splitting saves (lenet5's convs, 30-60 MFLOP at batch 128). It depends on the call's shape only
// (a vmap-folded batch included), so results stay bitwise for fixed shapes and threads.
constexpr double kSmallConvFlop = 1e8;

// The call's shape; its team: `threads`, or 1 below kSmallConvFlop.
Shape MakeShape(const Attrs& a, int64_t b, int64_t h, int64_t w, int64_t ci, int64_t co,
                int64_t kh, int64_t kw, int64_t ho, int64_t wo) {
  double flop = 2.0 * b * ho * wo * kh * kw * ci * co;
  int64_t threads = flop < kSmallConvFlop ? 1 : a.threads;
  return Shape{b, h, w, ci, co, kh, kw, ho, wo, a.sh, a.sw, a.pt, a.pb, a.pl, a.pr,
               a.relu, a.bias, threads};
}

ffi::Error CheckGeometry(const Shape& s) {
  if (s.sh < 1 || s.sw < 1 || s.pt < 0 || s.pb < 0 || s.pl < 0 || s.pr < 0)
    return ffi::Error::InvalidArgument("onednn conv: strides must be >= 1 and padding >= 0");
  if (s.ho != (s.h + s.pt + s.pb - s.kh) / s.sh + 1 || s.wo != (s.w + s.pl + s.pr - s.kw) / s.sw + 1 ||
      s.ho < 1 || s.wo < 1)
    return ffi::Error::InvalidArgument("onednn conv: output size does not match the geometry");
  return ffi::Error::Success();
}

// The user's HWIO weights at `w` as `plan` wants them (fwd, bwd-data): reordered into this
// thread's weight buffer.
memory WeightsIn(const Plan& plan, const Shape& s, float* w) {
  return plan.wei.In(memory(Md(s.Wei(), tag::hwio), Engine(), w), kWeightSlot);
}

ffi::Error ConvFwdImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> b,
                       ffi::ResultBuffer<ffi::F32> y, int64_t sh, int64_t sw, int64_t pt,
                       int64_t pb, int64_t pl, int64_t pr, int64_t relu, int64_t bias,
                       int64_t threads) {
  return Guard("onednn conv", [&]() -> ffi::Error {
    auto xd = x.dimensions(), wd = w.dimensions(), yd = y->dimensions();
    if (xd.size() < 4 || wd.size() != xd.size() || yd.size() != xd.size() ||
        b.dimensions().size() != xd.size() - 3)
      return ffi::Error::InvalidArgument("onednn conv fwd: operand ranks do not match");
    auto xl = Lead(xd, 4), wl = Lead(wd, 4), bl = Lead(b.dimensions(), 1), yl = Lead(yd, 4);
    if (auto e = CheckLead({xl, wl, bl}, yl); e.failure()) return e;
    size_t n = xd.size();
    int64_t B = xd[n - 4], H = xd[n - 3], W = xd[n - 2], Ci = xd[n - 1];
    int64_t kh = wd[n - 4], kw = wd[n - 3], Co = wd[n - 1];
    int64_t Ho = yd[n - 3], Wo = yd[n - 2];
    if (wd[n - 2] != Ci || yd[n - 1] != Co || yd[n - 4] != B)
      return ffi::Error::InvalidArgument("onednn conv fwd: channel counts do not match");
    Attrs a{sh, sw, pt, pb, pl, pr, relu, bias, threads};
    int64_t groups = Prod(yl);
    bool fold = Prod(wl) == 1 && Prod(bl) == 1 && Prod(xl) == groups;
    int64_t calls = fold ? 1 : groups;
    Shape s = MakeShape(a, fold ? B * groups : B, H, W, Ci, Co, kh, kw, Ho, Wo);
    if (auto e = CheckGeometry(s); e.failure()) return e;
    ThreadScope scope(s.threads);
    auto plan = GetPlan(kFwd, s);
    Prefault(y->typed_data(), y->size_bytes(), s.threads);
    int64_t xsz = s.b * H * W * Ci, wsz = kh * kw * Ci * Co, ysz = s.b * Ho * Wo * Co;
    for (int64_t g = 0; g < calls; ++g) {
      float* xp = x.typed_data() + (fold ? 0 : GroupOffset(xl, yl, g)) * xsz;
      float* wp = w.typed_data() + (fold ? 0 : GroupOffset(wl, yl, g)) * wsz;
      float* bp = b.typed_data() + (fold ? 0 : GroupOffset(bl, yl, g)) * Co;
      memory wm = WeightsIn(*plan, s, wp);
      std::unordered_map<int, memory> args{
          {DNNL_ARG_SRC, memory(Md(s.Src(), tag::nhwc), Engine(), xp)},
          {DNNL_ARG_WEIGHTS, wm},
          {DNNL_ARG_DST, memory(Md(s.Dst(), tag::nhwc), Engine(), y->typed_data() + g * ysz)}};
      if (bias) args.emplace(DNNL_ARG_BIAS, memory(Md(s.Bias(), tag::a), Engine(), bp));
      if (plan->conv_scratch) args.emplace(DNNL_ARG_SCRATCHPAD, ScratchMem(plan->conv_scratch));
      plan->conv.execute(Stream(), args);
    }
    Stream().wait();
    return ffi::Error::Success();
  });
}

ffi::Error ConvBwdDataImpl(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                           ffi::ResultBuffer<ffi::F32> dx, int64_t sh, int64_t sw, int64_t pt,
                           int64_t pb, int64_t pl, int64_t pr, int64_t threads) {
  return Guard("onednn conv", [&]() -> ffi::Error {
    auto gd = dy.dimensions(), wd = w.dimensions(), xd = dx->dimensions();
    if (gd.size() < 4 || wd.size() != gd.size() || xd.size() != gd.size())
      return ffi::Error::InvalidArgument("onednn conv bwd-data: operand ranks do not match");
    auto gl = Lead(gd, 4), wl = Lead(wd, 4), xl = Lead(xd, 4);
    if (auto e = CheckLead({gl, wl}, xl); e.failure()) return e;
    size_t n = gd.size();
    int64_t B = xd[n - 4], H = xd[n - 3], W = xd[n - 2], Ci = xd[n - 1];
    int64_t kh = wd[n - 4], kw = wd[n - 3], Co = wd[n - 1];
    int64_t Ho = gd[n - 3], Wo = gd[n - 2];
    if (wd[n - 2] != Ci || gd[n - 1] != Co || gd[n - 4] != B)
      return ffi::Error::InvalidArgument("onednn conv bwd-data: channel counts do not match");
    Attrs a{sh, sw, pt, pb, pl, pr, 0, 0, threads};
    int64_t groups = Prod(xl);
    bool fold = Prod(wl) == 1 && Prod(gl) == groups;
    int64_t calls = fold ? 1 : groups;
    Shape s = MakeShape(a, fold ? B * groups : B, H, W, Ci, Co, kh, kw, Ho, Wo);
    if (auto e = CheckGeometry(s); e.failure()) return e;
    ThreadScope scope(s.threads);
    auto plan = GetPlan(kBwdData, s);
    Prefault(dx->typed_data(), dx->size_bytes(), s.threads);
    int64_t xsz = s.b * H * W * Ci, wsz = kh * kw * Ci * Co, gsz = s.b * Ho * Wo * Co;
    for (int64_t g = 0; g < calls; ++g) {
      float* gp = dy.typed_data() + (fold ? 0 : GroupOffset(gl, xl, g)) * gsz;
      float* wp = w.typed_data() + (fold ? 0 : GroupOffset(wl, xl, g)) * wsz;
      memory wm = WeightsIn(*plan, s, wp);
      std::unordered_map<int, memory> args{
          {DNNL_ARG_DIFF_DST, memory(Md(s.Dst(), tag::nhwc), Engine(), gp)},
          {DNNL_ARG_WEIGHTS, wm},
          {DNNL_ARG_DIFF_SRC,
           memory(Md(s.Src(), tag::nhwc), Engine(), dx->typed_data() + g * xsz)}};
      if (plan->conv_scratch) args.emplace(DNNL_ARG_SCRATCHPAD, ScratchMem(plan->conv_scratch));
      plan->conv.execute(Stream(), args);
    }
    Stream().wait();
    return ffi::Error::Success();
  });
}

ffi::Error ConvBwdWeightsImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                              ffi::ResultBuffer<ffi::F32> dw, ffi::ResultBuffer<ffi::F32> db,
                              int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl,
                              int64_t pr, int64_t threads) {
  return Guard("onednn conv", [&]() -> ffi::Error {
    auto xd = x.dimensions(), gd = dy.dimensions(), wd = dw->dimensions();
    if (xd.size() < 4 || gd.size() != xd.size() || wd.size() != xd.size() ||
        db->dimensions().size() != xd.size() - 3)
      return ffi::Error::InvalidArgument("onednn conv bwd-weights: operand ranks do not match");
    auto xl = Lead(xd, 4), gl = Lead(gd, 4), wl = Lead(wd, 4);
    if (auto e = CheckLead({xl, gl}, wl); e.failure()) return e;
    size_t n = xd.size();
    int64_t B = xd[n - 4], H = xd[n - 3], W = xd[n - 2], Ci = xd[n - 1];
    int64_t kh = wd[n - 4], kw = wd[n - 3], Co = wd[n - 1];
    int64_t Ho = gd[n - 3], Wo = gd[n - 2];
    if (wd[n - 2] != Ci || gd[n - 1] != Co || gd[n - 4] != B)
      return ffi::Error::InvalidArgument("onednn conv bwd-weights: channel counts do not match");
    Attrs a{sh, sw, pt, pb, pl, pr, 0, 1, threads};
    Shape s = MakeShape(a, B, H, W, Ci, Co, kh, kw, Ho, Wo);
    if (auto e = CheckGeometry(s); e.failure()) return e;
    ThreadScope scope(s.threads);
    auto plan = GetPlan(kBwdWeights, s);
    int64_t xsz = B * H * W * Ci, wsz = kh * kw * Ci * Co, gsz = B * Ho * Wo * Co;
    int64_t groups = Prod(wl);
    for (int64_t g = 0; g < groups; ++g) {
      float* xp = x.typed_data() + GroupOffset(xl, wl, g) * xsz;
      float* gp = dy.typed_data() + GroupOffset(gl, wl, g) * gsz;
      memory user(Md(s.Wei(), tag::hwio), Engine(), dw->typed_data() + g * wsz);
      memory diff_w = plan->wei.needed ? plan->wei.Packed(kGradSlot) : user;
      std::unordered_map<int, memory> args{
          {DNNL_ARG_SRC, memory(Md(s.Src(), tag::nhwc), Engine(), xp)},
          {DNNL_ARG_DIFF_DST, memory(Md(s.Dst(), tag::nhwc), Engine(), gp)},
          {DNNL_ARG_DIFF_WEIGHTS, diff_w},
          {DNNL_ARG_DIFF_BIAS,
           memory(Md(s.Bias(), tag::a), Engine(), db->typed_data() + g * Co)}};
      if (plan->conv_scratch) args.emplace(DNNL_ARG_SCRATCHPAD, ScratchMem(plan->conv_scratch));
      plan->conv.execute(Stream(), args);
      if (plan->wei.needed) plan->wei.Run(diff_w, user);
    }
    Stream().wait();
    return ffi::Error::Success();
  });
}

}  // namespace

// The exported symbols (the library builds with -fvisibility=hidden).
#pragma GCC visibility push(default)

#define CONV_ATTRS(B)                                                                   \
  B.Attr<int64_t>("stride_h").Attr<int64_t>("stride_w").Attr<int64_t>("pad_top")       \
      .Attr<int64_t>("pad_bottom").Attr<int64_t>("pad_left").Attr<int64_t>("pad_right")

XLA_FFI_DEFINE_HANDLER_SYMBOL(DlkitOnednnConvFwd, ConvFwdImpl,
                              CONV_ATTRS(ffi::Ffi::Bind()
                                             .Arg<ffi::Buffer<ffi::F32>>()
                                             .Arg<ffi::Buffer<ffi::F32>>()
                                             .Arg<ffi::Buffer<ffi::F32>>()
                                             .Ret<ffi::Buffer<ffi::F32>>())
                                  .Attr<int64_t>("relu")
                                  .Attr<int64_t>("bias")
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(DlkitOnednnConvBwdData, ConvBwdDataImpl,
                              CONV_ATTRS(ffi::Ffi::Bind()
                                             .Arg<ffi::Buffer<ffi::F32>>()
                                             .Arg<ffi::Buffer<ffi::F32>>()
                                             .Ret<ffi::Buffer<ffi::F32>>())
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(DlkitOnednnConvBwdWeights, ConvBwdWeightsImpl,
                              CONV_ATTRS(ffi::Ffi::Bind()
                                             .Arg<ffi::Buffer<ffi::F32>>()
                                             .Arg<ffi::Buffer<ffi::F32>>()
                                             .Ret<ffi::Buffer<ffi::F32>>()
                                             .Ret<ffi::Buffer<ffi::F32>>())
                                  .Attr<int64_t>("threads"));

// The oneDNN version this library runs against ("3.2.0"), for available()'s report.
extern "C" const char* DlkitOnednnVersion() {
  static std::string v = [] {
    const dnnl_version_t* ver = dnnl_version();
    return std::to_string(ver->major) + "." + std::to_string(ver->minor) + "." +
           std::to_string(ver->patch);
  }();
  return v.c_str();
}

#pragma GCC visibility pop
