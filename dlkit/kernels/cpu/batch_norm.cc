// XLA FFI handlers for training-mode batch normalization on the CPU, ReLU optionally fused:
// forward (y, batch mean, biased batch variance) and backward (gradients of x, scale, bias and the
// residual). float32 x (..., C) read as rows (M, C), M = the product of the leading dims; scale,
// bias, mean, var (C,); an optional residual r of x's shape (a ResNet block's shortcut):
//   y = relu?((x - mean) * scale / sqrt(var + eps) + bias (+ r)).
//
// Plain C++ with OpenMP, not oneDNN: oneDNN's batch norm synchronises its threads with spin
// barriers, which stall for a scheduler slice whenever one of its threads shares a core with
// XLA's pool (measured: a long tail of slow steps on 2 cores). Here each pass is one parallel
// region whose join is OpenMP's (passive under dlkit's door).
//
// Bitwise reproducible for a fixed thread count: the rows are split into `threads` fixed chunks,
// each chunk's per-channel sums are kept apart and added in chunk order. Statistics are one pass
// over x shifted by its first row (no cancellation for data far from 0), accumulated in float
// over blocks of rows and in double across blocks. The backward reads the ReLU mask from y.
// Without a residual the `residual` operand and result are (1,) placeholders.

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "onednn_common.h"

namespace ffi = xla::ffi;

namespace {

using dlkit_onednn::Guard;
using dlkit_onednn::ThreadScope;

constexpr int64_t kBlock = 64;  // rows summed in float before adding into double


// Per-channel sums over rows [r0, r1) of (x - k) and (x - k)^2 into s1, s2 (double, added to).
DLKIT_CLONES void StatSums(const float* x, const float* __restrict k, int64_t r0, int64_t r1,
                           int64_t c, double* s1, double* s2) {
  std::vector<float> acc(2 * c);
  float *__restrict a1 = acc.data(), *__restrict a2 = acc.data() + c;
  for (int64_t b = r0; b < r1; b += kBlock) {
    std::fill(acc.begin(), acc.end(), 0.f);
    for (int64_t r = b; r < std::min(r1, b + kBlock); ++r) {
      const float* __restrict row = x + r * c;
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) {
        float d = row[j] - k[j];
        a1[j] += d;
        a2[j] += d * d;
      }
    }
    for (int64_t j = 0; j < c; ++j) s1[j] += a1[j], s2[j] += a2[j];
  }
}

// y = relu?(x * a + b (+ res)) over rows [r0, r1); res may be null.
DLKIT_CLONES void Affine(const float* x, const float* res, const float* __restrict a,
                         const float* __restrict b, int64_t r0, int64_t r1, int64_t c, bool relu,
                         float* y) {
  const float lo = relu ? 0.f : -INFINITY;
  for (int64_t r = r0; r < r1; ++r) {
    const float* __restrict xr = x + r * c;
    float* __restrict yr = y + r * c;
    if (res) {
      const float* __restrict rr = res + r * c;
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) yr[j] = std::max(xr[j] * a[j] + b[j] + rr[j], lo);
    } else {
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) yr[j] = std::max(xr[j] * a[j] + b[j], lo);
    }
  }
}

// Per-channel sums over rows [r0, r1) of g and g * (x - mean), g = dy masked by y > 0 with ReLU.
DLKIT_CLONES void GradSums(const float* x, const float* y, const float* dy,
                           const float* __restrict mean, int64_t r0, int64_t r1, int64_t c,
                           bool relu, double* sg, double* sgx) {
  std::vector<float> acc(2 * c);
  float *__restrict a1 = acc.data(), *__restrict a2 = acc.data() + c;
  for (int64_t b = r0; b < r1; b += kBlock) {
    std::fill(acc.begin(), acc.end(), 0.f);
    for (int64_t r = b; r < std::min(r1, b + kBlock); ++r) {
      const float *__restrict xr = x + r * c, *__restrict yr = y + r * c;
      const float* __restrict gr = dy + r * c;
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) {
        float yj = yr[j], gj = gr[j];  // loaded unconditionally: the select vectorises
        float g = (relu && !(yj > 0.f)) ? 0.f : gj;
        a1[j] += g;
        a2[j] += g * (xr[j] - mean[j]);
      }
    }
    for (int64_t j = 0; j < c; ++j) sg[j] += a1[j], sgx[j] += a2[j];
  }
}

// dx = g * a + (x - mean) * k3 + k2 over rows [r0, r1), g as in GradSums; dres = g (unless
// null).
DLKIT_CLONES void GradX(const float* x, const float* y, const float* dy,
                        const float* __restrict mean, const float* __restrict a,
                        const float* __restrict k2, const float* __restrict k3, int64_t r0, int64_t r1,
                        int64_t c, bool relu, float* dx, float* dres) {
  for (int64_t r = r0; r < r1; ++r) {
    const float *__restrict xr = x + r * c, *__restrict yr = y + r * c;
    const float* __restrict gr = dy + r * c;
    float* __restrict out = dx + r * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) {
      float yj = yr[j], gj = gr[j];
      float g = (relu && !(yj > 0.f)) ? 0.f : gj;
      out[j] = g * a[j] + (xr[j] - mean[j]) * k3[j] + k2[j];
    }
    if (dres) {
      float* __restrict dr = dres + r * c;
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) {
        float yj = yr[j], gj = gr[j];
        dr[j] = (relu && !(yj > 0.f)) ? 0.f : gj;
      }
    }
  }
}

// Runs body(chunk, row0, row1) for `chunks` fixed, contiguous row ranges of [0, m) on the
// calling thread's OpenMP team (each chunk once, whatever the team's actual size).
template <class Body>
void ForChunks(int64_t m, int64_t chunks, const Body& body) {
#pragma omp parallel
  {
    int n = omp_get_num_threads(), t = omp_get_thread_num();
    for (int64_t i = t; i < chunks; i += n) body(i, m * i / chunks, m * (i + 1) / chunks);
  }
}

using F32 = ffi::Buffer<ffi::F32>;
using OutF32 = ffi::ResultBuffer<ffi::F32>;

// (M, C) of x, checking that scale has C entries.
ffi::Error Rows(const char* what, const F32& x, const F32& scale, int64_t& m, int64_t& c) {
  auto xd = x.dimensions();
  if (xd.size() < 2)
    return ffi::Error::InvalidArgument(std::string(what) + ": x must be (..., C)");
  c = xd.back(), m = 1;
  for (size_t i = 0; i + 1 < xd.size(); ++i) m *= xd[i];
  if (scale.dimensions().size() != 1 || scale.dimensions()[0] != c || m < 1 || c < 1)
    return ffi::Error::InvalidArgument(std::string(what) + ": scale must be (C,)");
  return ffi::Error::Success();
}

int64_t Chunks(int64_t threads, int64_t m) { return std::max<int64_t>(1, std::min(threads, m)); }

ffi::Error BnFwdImpl(F32 x, F32 scale, F32 bias, F32 res, OutF32 y, OutF32 mean, OutF32 var,
                     int64_t relu, int64_t residual, float eps, int64_t threads) {
  return Guard("batch norm fwd", [&]() -> ffi::Error {
    int64_t m, c;
    if (auto e = Rows("batch norm fwd", x, scale, m, c); e.failure()) return e;
    if (residual && res.element_count() != x.element_count())
      return ffi::Error::InvalidArgument("batch norm fwd: the residual must have x's shape");
    ThreadScope scope(threads);
    const int64_t chunks = Chunks(threads, m);
    const float* xp = x.typed_data();
    std::vector<float> k(xp, xp + c);  // the shift: the first row
    std::vector<double> s1(chunks * c, 0.0), s2(chunks * c, 0.0);
    ForChunks(m, chunks, [&](int64_t i, int64_t r0, int64_t r1) {
      StatSums(xp, k.data(), r0, r1, c, &s1[i * c], &s2[i * c]);
    });
    dlkit_onednn::Prefault(y->typed_data(), y->size_bytes(), chunks);
    std::vector<float> a(c), b(c);
    float *mp = mean->typed_data(), *vp = var->typed_data();
    for (int64_t j = 0; j < c; ++j) {
      double t1 = 0, t2 = 0;
      for (int64_t i = 0; i < chunks; ++i) t1 += s1[i * c + j], t2 += s2[i * c + j];
      double d = t1 / m, v = std::max(0.0, t2 / m - d * d);
      mp[j] = static_cast<float>(k[j] + d);
      vp[j] = static_cast<float>(v);
      a[j] = static_cast<float>(scale.typed_data()[j] / std::sqrt(v + eps));
      b[j] = bias.typed_data()[j] - mp[j] * a[j];
    }
    ForChunks(m, chunks, [&](int64_t, int64_t r0, int64_t r1) {
      Affine(xp, residual ? res.typed_data() : nullptr, a.data(), b.data(), r0, r1, c, relu != 0,
             y->typed_data());
    });
    return ffi::Error::Success();
  });
}

ffi::Error BnBwdImpl(F32 x, F32 y, F32 scale, F32 mean, F32 var, F32 dy, OutF32 dx,
                     OutF32 dscale, OutF32 dbias, OutF32 dres, int64_t relu, int64_t residual,
                     float eps, int64_t threads) {
  return Guard("batch norm bwd", [&]() -> ffi::Error {
    int64_t m, c;
    if (auto e = Rows("batch norm bwd", x, scale, m, c); e.failure()) return e;
    if (residual && dres->element_count() != x.element_count())
      return ffi::Error::InvalidArgument("batch norm bwd: the residual must have x's shape");
    ThreadScope scope(threads);
    const int64_t chunks = Chunks(threads, m);
    const float *xp = x.typed_data(), *yp = y.typed_data(), *gp = dy.typed_data();
    const float* mp = mean.typed_data();
    std::vector<double> sg(chunks * c, 0.0), sgx(chunks * c, 0.0);
    ForChunks(m, chunks, [&](int64_t i, int64_t r0, int64_t r1) {
      GradSums(xp, yp, gp, mp, r0, r1, c, relu != 0, &sg[i * c], &sgx[i * c]);
    });
    dlkit_onednn::Prefault(dx->typed_data(), dx->size_bytes(), chunks);
    if (residual) dlkit_onednn::Prefault(dres->typed_data(), dres->size_bytes(), chunks);
    std::vector<float> a(c), k2(c), k3(c);
    for (int64_t j = 0; j < c; ++j) {
      double t1 = 0, t2 = 0;
      for (int64_t i = 0; i < chunks; ++i) t1 += sg[i * c + j], t2 += sgx[i * c + j];
      double rstd = 1.0 / std::sqrt(static_cast<double>(var.typed_data()[j]) + eps);
      double aj = scale.typed_data()[j] * rstd;
      dbias->typed_data()[j] = static_cast<float>(t1);
      dscale->typed_data()[j] = static_cast<float>(t2 * rstd);
      a[j] = static_cast<float>(aj);
      k2[j] = static_cast<float>(-aj * t1 / m);
      k3[j] = static_cast<float>(-aj * rstd * rstd * t2 / m);
    }
    ForChunks(m, chunks, [&](int64_t, int64_t r0, int64_t r1) {
      GradX(xp, yp, gp, mp, a.data(), k2.data(), k3.data(), r0, r1, c, relu != 0,
            dx->typed_data(), residual ? dres->typed_data() : nullptr);
    });
    return ffi::Error::Success();
  });
}

}  // namespace

#pragma GCC visibility push(default)

XLA_FFI_DEFINE_HANDLER_SYMBOL(DlkitCpuBnFwd, BnFwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()  // x
                                  .Arg<F32>()  // scale
                                  .Arg<F32>()  // bias
                                  .Arg<F32>()  // residual (x's shape; (1,) when none)
                                  .Ret<F32>()  // y
                                  .Ret<F32>()  // mean
                                  .Ret<F32>()  // var
                                  .Attr<int64_t>("relu")
                                  .Attr<int64_t>("residual")
                                  .Attr<float>("eps")
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(DlkitCpuBnBwd, BnBwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()  // x
                                  .Arg<F32>()  // y (the ReLU mask)
                                  .Arg<F32>()  // scale
                                  .Arg<F32>()  // mean
                                  .Arg<F32>()  // var
                                  .Arg<F32>()  // dy
                                  .Ret<F32>()  // dx
                                  .Ret<F32>()  // dscale
                                  .Ret<F32>()  // dbias
                                  .Ret<F32>()  // dresidual (x's shape; (1,) when none)
                                  .Attr<int64_t>("relu")
                                  .Attr<int64_t>("residual")
                                  .Attr<float>("eps")
                                  .Attr<int64_t>("threads"));

#pragma GCC visibility pop
