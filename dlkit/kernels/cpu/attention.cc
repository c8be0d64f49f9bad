// XLA FFI handlers for scaled dot-product attention on the CPU, FlashAttention-style: forward
// (out and the rows' log-sum-exp) and backward (dq, dk, dv), without forming the (Sq, Sk) weights.
// float32 q (B, Sq, H, D), k and v (B, Sk, Hkv, D), H % Hkv == 0 (grouped-query heads), out
// (B, Sq, H, D), lse (B, H, Sq). Optionally causal: query i sees key j iff j <= i + offset (0 is
// top-left, Sk - Sq bottom-right); a row with no visible key gives zeros (lse = +inf).
//
// Plain C++ with OpenMP, like batch_norm.cc. Per (batch, head) the rows are cut into blocks of
// kBq queries and kBk keys (causal blocks above the diagonal are skipped); each block's products
// are small register-tiled matmuls (Tile) and the softmax runs online (Milakov & Gimelshein; Dao
// et al.). The backward recomputes the weights from lse (FlashAttention-2's loop order: one task
// per (batch, kv head) owns its dk, dv and its heads' dq). Every task runs on one thread in a
// fixed order, so results are bitwise equal for any thread count.

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "onednn_common.h"

namespace ffi = xla::ffi;

namespace {

using dlkit_onednn::Guard;
using dlkit_onednn::ThreadScope;

constexpr int64_t kBq = 64, kBk = 64;  // query and key rows per block
constexpr float kInf = std::numeric_limits<float>::infinity();

#define DLKIT_INLINE inline __attribute__((always_inline))

// The kernels are templates over W, the floats per vector register, compiled three times: W = 16
// (AVX-512F), 8 (AVX2 + FMA) and 4 (baseline x86-64, SSE2); Kernels() picks one at first call.
// Each width keeps its tiles' accumulators within its 32 or 16 vector registers.
template <int W>
struct Simd {
  typedef float V __attribute__((vector_size(4 * W), aligned(4)));  // unaligned access
  typedef int32_t I __attribute__((vector_size(4 * W)));
  static constexpr int kTileVecs = W == 16 ? 4 : 2;  // vectors per row of the widest C tile
  static constexpr int kRows = W == 8 ? 6 : 4;       // rows per C tile
  static constexpr int kNarrowRows = 8;              // rows per C tile when n <= half a tile
  static constexpr int kRowVecs = kBk / W;           // vectors per row of a score block
};
template <int W>
using Vf = typename Simd<W>::V;
template <int W>
using Vi = typename Simd<W>::I;

template <int W>
DLKIT_INLINE Vf<W> Load(const float* p) {
  Vf<W> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <int W>
DLKIT_INLINE void Store(float* p, Vf<W> v) {
  std::memcpy(p, &v, sizeof(v));
}
template <int W>
DLKIT_INLINE Vf<W> Splat(float x) {
  return Vf<W>{} + x;
}

// A row-major matrix view: element (i, j) at p[i * ri + j * rj].
struct Mat {
  const float* p;
  int64_t ri, rj;
  const float* At(int64_t i, int64_t j) const { return p + i * ri + j * rj; }
};

// c[r][0:W*NV] += sum_k a(r, k) * b[k][0:W*NV] for R rows; b row-major with row stride ldb.
template <int W, int R, int NV>
DLKIT_INLINE void Tile(int64_t p, Mat a, const float* b, int64_t ldb, float* c, int64_t ldc) {
  Vf<W> acc[R][NV];  // R * NV accumulators, kept in registers (the loops over them unrolled)
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = Load<W>(c + r * ldc + W * v);
  for (int64_t k = 0; k < p; ++k) {
    Vf<W> bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = Load<W>(b + k * ldb + W * v);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const float s = *a.At(r, k);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] += s * bv[v];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) Store<W>(c + r * ldc + W * v, acc[r][v]);
}

// Rows [i, i + R) of C (m x n) += A (m x p) B (p x n): tiles of 4, 2, 1 vectors, then the rest.
template <int W, int R>
DLKIT_INLINE void Rows(int64_t i, int64_t n, int64_t p, Mat a, const float* b, int64_t ldb,
                       float* c, int64_t ldc) {
  Mat ai{a.At(i, 0), a.ri, a.rj};
  float* ci = c + i * ldc;
  int64_t j = 0;
  if constexpr (Simd<W>::kTileVecs >= 4)
    for (; j + 4 * W <= n; j += 4 * W) Tile<W, R, 4>(p, ai, b + j, ldb, ci + j, ldc);
  for (; j + 2 * W <= n; j += 2 * W) Tile<W, R, 2>(p, ai, b + j, ldb, ci + j, ldc);
  for (; j + W <= n; j += W) Tile<W, R, 1>(p, ai, b + j, ldb, ci + j, ldc);
  for (int r = 0; r < R; ++r)
    for (int64_t jj = j; jj < n; ++jj) {
      float s = 0.f;
      for (int64_t k = 0; k < p; ++k) s += *ai.At(r, k) * b[k * ldb + jj];
      ci[r * ldc + jj] += s;
    }
}

// C (m x n, row stride ldc) += A (m x p) B (p x n, row-major, row stride ldb).
template <int W>
DLKIT_INLINE void Gemm(int64_t m, int64_t n, int64_t p, Mat a, const float* b, int64_t ldb,
                       float* c, int64_t ldc) {
  constexpr int kR = Simd<W>::kRows, kRn = Simd<W>::kNarrowRows;
  int64_t i = 0;
  if (2 * n <= Simd<W>::kTileVecs * W)
    for (; i + kRn <= m; i += kRn) Rows<W, kRn>(i, n, p, a, b, ldb, c, ldc);
  for (; i + kR <= m; i += kR) Rows<W, kR>(i, n, p, a, b, ldb, c, ldc);
  if constexpr (kR > 4)
    for (; i + 4 <= m; i += 4) Rows<W, 4>(i, n, p, a, b, ldb, c, ldc);
  for (; i < m; ++i) Rows<W, 1>(i, n, p, a, b, ldb, c, ldc);
}

template <int W>
DLKIT_INLINE float Max(Vf<W> v) {
  float m = v[0];
  for (int i = 1; i < W; ++i) m = std::max(m, v[i]);
  return m;
}
template <int W>
DLKIT_INLINE float Sum(Vf<W> v) {
  float s = 0.f;
  for (int i = 0; i < W; ++i) s += v[i];
  return s;
}

// sum_c a[c] * b[c] over n floats: W lanes, then the tail.
template <int W>
DLKIT_INLINE float Dot(const float* a, const float* b, int64_t n) {
  Vf<W> acc = Splat<W>(0.f);
  int64_t c = 0;
  for (; c + W <= n; c += W) acc += Load<W>(a + c) * Load<W>(b + c);
  float t = Sum<W>(acc);
  for (; c < n; ++c) t += a[c] * b[c];
  return t;
}

// y[c] = x[c] * f over n floats (y may be x).
template <int W>
DLKIT_INLINE void Scale(const float* x, float f, int64_t n, float* y) {
  int64_t c = 0;
  for (; c + W <= n; c += W) Store<W>(y + c, Load<W>(x + c) * f);
  for (; c < n; ++c) y[c] = x[c] * f;
}

// exp(x) to a few ulp (Cephes' expf: x = n ln2 + r, a degree-6 polynomial in r), 0 below -87.3
// and for -inf; on W lanes (libm's expf does not vectorize).
template <int W>
DLKIT_INLINE Vf<W> Exp(Vf<W> x) {
  const Vf<W> lo = Splat<W>(-88.f), hi = Splat<W>(88.7f), big = Splat<W>(12582912.f);  // 1.5*2^23
  const Vf<W> xc = x < lo ? lo : (x > hi ? hi : x);
  const Vf<W> n = (xc * 1.44269504f + big) - big;  // round to nearest
  const Vf<W> r = xc - n * 0.693359375f + n * 2.12194440e-4f;
  Vf<W> y = Splat<W>(1.9875691500e-4f);
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.f;
  const Vi<W> bits = (__builtin_convertvector(n, Vi<W>) + 127) << 23;
  return x < Splat<W>(-87.3f) ? Splat<W>(0.f) : y * (Vf<W>)bits;
}

template <int W>
DLKIT_INLINE float Exp(float x) {
  return Exp<W>(Splat<W>(x))[0];
}

// The geometry of one call.
struct Dims {
  int64_t b, sq, sk, h, hkv, d;
  float scale;
  int64_t causal, offset;
  int64_t Qs() const { return h * d; }    // row stride of q, out, dq
  int64_t Ks() const { return hkv * d; }  // row stride of k, v, dk, dv
  // Keys visible to queries [i0, i1): [0, KeyEnd).
  int64_t KeyEnd(int64_t i1) const {
    return causal ? std::clamp<int64_t>(i1 + offset, 0, sk) : sk;
  }
};

// (d x sk) transpose of the rows of a k or v head (row stride ks) into t.
DLKIT_CLONES void Transpose(const float* x, int64_t sk, int64_t d, int64_t ks, float* t) {
  for (int64_t j = 0; j < sk; ++j)
    for (int64_t c = 0; c < d; ++c) t[c * sk + j] = x[j * ks + c];
}

// Scaled scores of queries [i0, i0 + mq) against keys [j0, j0 + nk) into s (kBq x kBk), masked
// ones and the columns past nk -inf.
template <int W>
DLKIT_INLINE void Scores(const Dims& g, const float* q, const float* kt, int64_t i0, int64_t mq,
                         int64_t j0, int64_t nk, float* s) {
  std::fill(s, s + mq * kBk, 0.f);
  Gemm<W>(mq, nk, g.d, Mat{q + i0 * g.Qs(), g.Qs(), 1}, kt + j0, g.sk, s, kBk);
  Vi<W> iota;
  for (int i = 0; i < W; ++i) iota[i] = i;
  const Vf<W> scale = Splat<W>(g.scale), ninf = Splat<W>(-kInf);
  for (int64_t i = 0; i < mq; ++i) {
    const int64_t last = g.causal ? std::min(i0 + i + g.offset - j0, nk - 1) : nk - 1;
    const Vi<W> cut = Vi<W>{} + static_cast<int32_t>(std::max<int64_t>(last, -1));  // last column
    float* row = s + i * kBk;
#pragma GCC unroll 16
    for (int v = 0; v < Simd<W>::kRowVecs; ++v) {
      const Vf<W> x = Load<W>(row + W * v);
      Store<W>(row + W * v, iota + W * v <= cut ? x * scale : ninf);
    }
  }
}

// Per-thread buffers: the forward's (kt, s, acc, m, l), and the backward's (kt, vt, s, dp, delta).
struct Work {
  std::vector<float> kt, vt, s, dp, acc, m, l, delta;
  Work(const Dims& g, bool backward) : kt(g.d * g.sk), s(kBq * kBk) {
    if (backward) {
      vt.resize(g.d * g.sk), dp.resize(kBq * kBk), delta.resize(kBq);
    } else {
      acc.resize(kBq * g.d), m.resize(kBq), l.resize(kBq);
    }
  }
};

// Forward of one (batch, head): q, o rows of stride Qs, k, v rows of stride Ks, lse (sq,).
template <int W>
DLKIT_INLINE void FwdHead(const Dims& g, const float* q, const float* k, const float* v, float* o,
                          float* lse, Work& w) {
  constexpr int kV = Simd<W>::kRowVecs;
  Transpose(k, g.sk, g.d, g.Ks(), w.kt.data());
  const int64_t d = g.d;
  for (int64_t i0 = 0; i0 < g.sq; i0 += kBq) {
    const int64_t mq = std::min(kBq, g.sq - i0), jend = g.KeyEnd(i0 + mq);
    float *acc = w.acc.data(), *m = w.m.data(), *l = w.l.data(), *s = w.s.data();
    std::fill(acc, acc + mq * d, 0.f);
    std::fill(m, m + mq, -kInf);
    std::fill(l, l + mq, 0.f);
    for (int64_t j0 = 0; j0 < jend; j0 += kBk) {
      const int64_t nk = std::min(kBk, jend - j0);
      Scores<W>(g, q, w.kt.data(), i0, mq, j0, nk, s);
      for (int64_t i = 0; i < mq; ++i) {
        float* row = s + i * kBk;
        Vf<W> x[kV], mv = Splat<W>(m[i]);
#pragma GCC unroll 16
        for (int v = 0; v < kV; ++v) x[v] = Load<W>(row + W * v), mv = x[v] > mv ? x[v] : mv;
        const float mx = Max<W>(mv);
        if (mx == -kInf) continue;  // no visible key yet: the row's P is 0 (all -inf)
        const float alpha = Exp<W>(m[i] - mx);
        Vf<W> sum = Splat<W>(0.f);
#pragma GCC unroll 16
        for (int v = 0; v < kV; ++v) {
          const Vf<W> p = Exp<W>(x[v] - mx);
          Store<W>(row + W * v, p);
          sum += p;
        }
        l[i] = l[i] * alpha + Sum<W>(sum);
        m[i] = mx;
        Scale<W>(acc + i * d, alpha, d, acc + i * d);
      }
      for (int64_t i = 0; i < mq; ++i)  // rows still without a key: P = 0
        if (m[i] == -kInf) std::fill(s + i * kBk, s + i * kBk + kBk, 0.f);
      Gemm<W>(mq, d, nk, Mat{s, kBk, 1}, v + j0 * g.Ks(), g.Ks(), acc, d);
    }
    for (int64_t i = 0; i < mq; ++i) {
      Scale<W>(acc + i * d, l[i] > 0.f ? 1.f / l[i] : 0.f, d, o + (i0 + i) * g.Qs());
      lse[i0 + i] = l[i] > 0.f ? m[i] + std::log(l[i]) : kInf;
    }
  }
}

// Backward of one (batch, head) into dq (this head's rows, zeroed here) and dk, dv (its kv head's
// rows, accumulated): the weights P are recomputed from lse.
template <int W>
DLKIT_INLINE void BwdHead(const Dims& g, const float* q, const float* k, const float* v,
                          const float* o, const float* lse, const float* dout, float* dq,
                          float* dk, float* dv, Work& w) {
  constexpr int kV = Simd<W>::kRowVecs;
  const int64_t d = g.d, qs = g.Qs(), ks = g.Ks();
  for (int64_t i = 0; i < g.sq; ++i) std::fill(dq + i * qs, dq + i * qs + d, 0.f);
  float *s = w.s.data(), *dp = w.dp.data(), *delta = w.delta.data();
  for (int64_t i0 = 0; i0 < g.sq; i0 += kBq) {
    const int64_t mq = std::min(kBq, g.sq - i0), jend = g.KeyEnd(i0 + mq);
    for (int64_t i = 0; i < mq; ++i)  // delta_i = dO_i . O_i
      delta[i] = Dot<W>(dout + (i0 + i) * qs, o + (i0 + i) * qs, d);
    for (int64_t j0 = 0; j0 < jend; j0 += kBk) {
      const int64_t nk = std::min(kBk, jend - j0);
      Scores<W>(g, q, w.kt.data(), i0, mq, j0, nk, s);
      for (int64_t i = 0; i < mq; ++i) {
        float* row = s + i * kBk;
        const Vf<W> li = Splat<W>(lse[i0 + i]);
#pragma GCC unroll 16
        for (int v = 0; v < kV; ++v) Store<W>(row + W * v, Exp<W>(Load<W>(row + W * v) - li));
      }
      // dV_j += P^T dO_i
      Gemm<W>(nk, d, mq, Mat{s, 1, kBk}, dout + i0 * qs, qs, dv + j0 * ks, ks);
      // dP = dO_i V_j^T
      std::fill(dp, dp + mq * kBk, 0.f);
      Gemm<W>(mq, nk, d, Mat{dout + i0 * qs, qs, 1}, w.vt.data() + j0, g.sk, dp, kBk);
      for (int64_t i = 0; i < mq; ++i) {  // dS = P (dP - delta) * scale, into dp
        float *p = s + i * kBk, *r = dp + i * kBk;
        const Vf<W> di = Splat<W>(delta[i]);
#pragma GCC unroll 16
        for (int v = 0; v < kV; ++v)
          Store<W>(r + W * v, Load<W>(p + W * v) * (Load<W>(r + W * v) - di) * g.scale);
      }
      // dQ_i += dS K_j;  dK_j += dS^T Q_i
      Gemm<W>(mq, d, nk, Mat{dp, kBk, 1}, k + j0 * ks, ks, dq + i0 * qs, qs);
      Gemm<W>(nk, d, mq, Mat{dp, 1, kBk}, q + i0 * qs, qs, dk + j0 * ks, ks);
    }
  }
}

// One (batch, head) forward and backward at each width, compiled for its instruction set.
using FwdFn = void (*)(const Dims&, const float*, const float*, const float*, float*, float*,
                       Work&);
using BwdFn = void (*)(const Dims&, const float*, const float*, const float*, const float*,
                       const float*, const float*, float*, float*, float*, Work&);
struct Kernels {
  int width;
  FwdFn fwd;
  BwdFn bwd;
};

__attribute__((target("avx512f"))) void Fwd16(const Dims& g, const float* q, const float* k,
                                                const float* v, float* o, float* lse, Work& w) {
  FwdHead<16>(g, q, k, v, o, lse, w);
}
__attribute__((target("avx2,fma"))) void Fwd8(const Dims& g, const float* q, const float* k,
                                               const float* v, float* o, float* lse, Work& w) {
  FwdHead<8>(g, q, k, v, o, lse, w);
}
void Fwd4(const Dims& g, const float* q, const float* k, const float* v, float* o, float* lse,
          Work& w) {
  FwdHead<4>(g, q, k, v, o, lse, w);
}
__attribute__((target("avx512f"))) void Bwd16(const Dims& g, const float* q, const float* k,
                                                const float* v, const float* o, const float* lse,
                                                const float* dout, float* dq, float* dk,
                                                float* dv, Work& w) {
  BwdHead<16>(g, q, k, v, o, lse, dout, dq, dk, dv, w);
}
__attribute__((target("avx2,fma"))) void Bwd8(const Dims& g, const float* q, const float* k,
                                               const float* v, const float* o, const float* lse,
                                               const float* dout, float* dq, float* dk, float* dv,
                                               Work& w) {
  BwdHead<8>(g, q, k, v, o, lse, dout, dq, dk, dv, w);
}
void Bwd4(const Dims& g, const float* q, const float* k, const float* v, const float* o,
          const float* lse, const float* dout, float* dq, float* dk, float* dv, Work& w) {
  BwdHead<4>(g, q, k, v, o, lse, dout, dq, dk, dv, w);
}

// The widest vectors this CPU runs: 16 (AVX-512F), 8 (AVX2 and FMA) or 4.
int WidestWidth() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return 16;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 8;
  return 4;
}

// The kernels of vector width `width` (0: the widest this CPU runs), or nullptr when the CPU
// lacks its instructions or the width is not one of 4, 8, 16.
const Kernels* KernelsOf(int64_t width) {
  static const Kernels all[] = {{16, Fwd16, Bwd16}, {8, Fwd8, Bwd8}, {4, Fwd4, Bwd4}};
  static const int widest = WidestWidth();
  if (width == 0) width = widest;
  for (const Kernels& k : all)
    if (k.width == width && width <= widest) return &k;
  return nullptr;
}

using F32 = ffi::Buffer<ffi::F32>;
using OutF32 = ffi::ResultBuffer<ffi::F32>;

ffi::Error GetDims(const F32& q, const F32& k, const F32& v, float scale, int64_t causal,
                   int64_t offset, Dims& g) {
  auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions();
  if (qd.size() != 4 || kd.size() != 4 || vd.size() != 4)
    return ffi::Error::InvalidArgument("cpu attention: q, k, v must be (B, S, H, D)");
  g = Dims{qd[0], qd[1], kd[1], qd[2], kd[2], qd[3], scale, causal, offset};
  for (int i = 0; i < 4; ++i)
    if (kd[i] != vd[i]) return ffi::Error::InvalidArgument("cpu attention: k and v differ");
  if (kd[0] != g.b || kd[3] != g.d || g.hkv < 1 || g.h % g.hkv)
    return ffi::Error::InvalidArgument("cpu attention: q and k/v shapes do not match");
  return ffi::Error::Success();
}

ffi::Error WidthError(int64_t width) {
  return ffi::Error::InvalidArgument(
      "cpu attention: vector_width " + std::to_string(width) + " is not one this CPU runs (" +
      std::to_string(KernelsOf(0)->width) + " and narrower of 16, 8, 4; 0 picks the widest)");
}

// Runs body(task, work) for tasks [0, n) on the calling thread's OpenMP team, a Work per thread.
template <class Body>
void ForTasks(const Dims& g, bool backward, int64_t n, const Body& body) {
#pragma omp parallel
  {
    Work w(g, backward);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < n; ++t) body(t, w);
  }
}

ffi::Error AttnFwdImpl(F32 q, F32 k, F32 v, OutF32 o, OutF32 lse, float scale, int64_t causal,
                       int64_t offset, int64_t threads, int64_t vector_width) {
  return Guard("cpu attention fwd", [&]() -> ffi::Error {
    Dims g;
    if (auto e = GetDims(q, k, v, scale, causal, offset, g); e.failure()) return e;
    const Kernels* isa = KernelsOf(vector_width);
    if (!isa) return WidthError(vector_width);
    ThreadScope scope(std::max<int64_t>(1, std::min(threads, g.b * g.h)));
    const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data();
    float *op = o->typed_data(), *lp = lse->typed_data();
    const int64_t group = g.h / g.hkv;
    ForTasks(g, /*backward=*/false, g.b * g.h, [&](int64_t t, Work& w) {
      const int64_t b = t / g.h, h = t % g.h, hk = h / group;
      const int64_t qoff = b * g.sq * g.Qs() + h * g.d, koff = b * g.sk * g.Ks() + hk * g.d;
      isa->fwd(g, qp + qoff, kp + koff, vp + koff, op + qoff, lp + (b * g.h + h) * g.sq, w);
    });
    return ffi::Error::Success();
  });
}

ffi::Error AttnBwdImpl(F32 q, F32 k, F32 v, F32 o, F32 lse, F32 dout, OutF32 dq, OutF32 dk,
                       OutF32 dv, float scale, int64_t causal, int64_t offset, int64_t threads,
                       int64_t vector_width) {
  return Guard("cpu attention bwd", [&]() -> ffi::Error {
    Dims g;
    if (auto e = GetDims(q, k, v, scale, causal, offset, g); e.failure()) return e;
    const Kernels* isa = KernelsOf(vector_width);
    if (!isa) return WidthError(vector_width);
    ThreadScope scope(std::max<int64_t>(1, std::min(threads, g.b * g.hkv)));
    const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data();
    const float *op = o.typed_data(), *lp = lse.typed_data(), *gp = dout.typed_data();
    float *dqp = dq->typed_data(), *dkp = dk->typed_data(), *dvp = dv->typed_data();
    const int64_t group = g.h / g.hkv;
    ForTasks(g, /*backward=*/true, g.b * g.hkv, [&](int64_t t, Work& w) {  // per (batch, kv head)
      const int64_t b = t / g.hkv, hk = t % g.hkv, koff = b * g.sk * g.Ks() + hk * g.d;
      for (int64_t j = 0; j < g.sk; ++j) {
        std::fill(dkp + koff + j * g.Ks(), dkp + koff + j * g.Ks() + g.d, 0.f);
        std::fill(dvp + koff + j * g.Ks(), dvp + koff + j * g.Ks() + g.d, 0.f);
      }
      Transpose(kp + koff, g.sk, g.d, g.Ks(), w.kt.data());
      Transpose(vp + koff, g.sk, g.d, g.Ks(), w.vt.data());
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        const int64_t qoff = b * g.sq * g.Qs() + h * g.d;
        isa->bwd(g, qp + qoff, kp + koff, vp + koff, op + qoff, lp + (b * g.h + h) * g.sq,
                gp + qoff, dqp + qoff, dkp + koff, dvp + koff, w);
      }
    });
    return ffi::Error::Success();
  });
}

}  // namespace

#pragma GCC visibility push(default)

XLA_FFI_DEFINE_HANDLER_SYMBOL(DlkitCpuAttnFwd, AttnFwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()  // q (B, Sq, H, D)
                                  .Arg<F32>()  // k (B, Sk, Hkv, D)
                                  .Arg<F32>()  // v (B, Sk, Hkv, D)
                                  .Ret<F32>()  // out (B, Sq, H, D)
                                  .Ret<F32>()  // lse (B, H, Sq)
                                  .Attr<float>("scale")
                                  .Attr<int64_t>("causal")
                                  .Attr<int64_t>("offset")
                                  .Attr<int64_t>("threads")
                                  .Attr<int64_t>("vector_width"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(DlkitCpuAttnBwd, AttnBwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()  // q
                                  .Arg<F32>()  // k
                                  .Arg<F32>()  // v
                                  .Arg<F32>()  // out
                                  .Arg<F32>()  // lse
                                  .Arg<F32>()  // dout
                                  .Ret<F32>()  // dq
                                  .Ret<F32>()  // dk
                                  .Ret<F32>()  // dv
                                  .Attr<float>("scale")
                                  .Attr<int64_t>("causal")
                                  .Attr<int64_t>("offset")
                                  .Attr<int64_t>("threads")
                                  .Attr<int64_t>("vector_width"));

// The widest vector width (floats) this CPU runs: 16 (AVX-512F), 8 (AVX2 and FMA) or 4; the
// attention kernels' default and what dlkit.kernels.cpu.library.vector_width() reports.
extern "C" int64_t DlkitCpuVectorWidth() { return KernelsOf(0)->width; }

#pragma GCC visibility pop
