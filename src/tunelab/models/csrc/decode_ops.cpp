// Fused small CPU ops of a decode step (RMSNorm, residual add + norm, per-head q/k norm + rotary,
// gated activations), registered as TORCH_LIBRARY_FRAGMENT(tunelab_quant, m) in the same extension
// as quant_gemv*.cpp (models/quant_kernels.py); models/decode_ops.py says when they are used.
//
// A one-row decode step is bound by per-op overhead: torch's CPU rms_norm is seven ops (~36 us a
// row). Each op here is one call that gives torch's results bit for bit, because it repeats torch's
// arithmetic in the same order:
//   - sum of squares: x*x rounded, then summed as aten's cascade_sum does (SumKernel.cpp: 8 lanes
//     a vector, 4 vectors interleaved, cascade levels of 16, tail scalars first, lanes in order);
//   - mean = sum / D, + eps, rsqrt = 1 / sqrt, x * r, then gain (fp32, before the cast: Gemma) or the
//     cast then gain (in the output dtype: Llama); bf16 rounding is round-to-nearest-even;
//   - rotary: x*cos + roll(x)*sin, each product rounded; activations: torch's formulas with the same
//     Sleef functions torch's vectorized kernels call (exported by libtorch_cpu), scalar tails with libm.
// Nothing here may be contracted into FMAs, which would round differently: hence the pragmas.
#include <ATen/ATen.h>
#include <immintrin.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

extern "C" {
__m256 Sleef_tanhf8_u10(__m256);
__m256 Sleef_expf8_u10(__m256);
#ifdef __AVX512F__
__m512 Sleef_tanhf16_u10(__m512);
__m512 Sleef_expf16_u10(__m512);
#endif
}

namespace tunelab_quant {
namespace {

using at::BFloat16;
using at::Tensor;

inline float load(float v) { return v; }
inline float load(BFloat16 v) { return static_cast<float>(v); }

inline uint16_t bf16_bits(float f) {  // c10's round_to_nearest_even
  if (std::isnan(f)) return 0x7FC0;
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += ((u >> 16) & 1) + 0x7FFF;
  return static_cast<uint16_t>(u >> 16);
}

inline float round_to(float f, float*) { return f; }
inline float round_to(float f, BFloat16*) {
  uint32_t u = static_cast<uint32_t>(bf16_bits(f)) << 16;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}
inline void store(float* p, float f) { *p = f; }
inline void store(BFloat16* p, float f) {
  const uint16_t b = bf16_bits(f);
  std::memcpy(p, &b, 2);
}

int64_t ceil_log2(int64_t x) {  // aten/native/cpu/utils.h CeilLog2
  if (x <= 2) return 1;
  int64_t last = 63 - __builtin_clzll(static_cast<uint64_t>(x - 1));
  return last + 1;
}

// sum(v) as aten's vectorized_inner_sum (n >= L) or scalar_inner_sum (L = 1) adds it, with L lanes.
template <int L>
float cascade_sum(const float* v, int64_t n) {
  const int64_t nvec = n / L, rows = nvec / 4;
  float acc[4][4][L] = {};  // [level][ilp][lane]
  const int64_t power = std::max<int64_t>(4, ceil_log2(rows) / 4), step = int64_t(1) << power, mask = step - 1;
  auto add_row = [&](int64_t i) {
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < L; ++l) acc[0][k][l] += v[(i * 4 + k) * L + l];
  };
  int64_t i = 0;
  for (; i + step <= rows;) {
    for (int64_t j = 0; j < step; ++j, ++i) add_row(i);
    for (int j = 1; j < 4; ++j) {
      for (int k = 0; k < 4; ++k)
        for (int l = 0; l < L; ++l) { acc[j][k][l] += acc[j - 1][k][l]; acc[j - 1][k][l] = 0.f; }
      if ((i & (mask << (j * power))) != 0) break;
    }
  }
  for (; i < rows; ++i) add_row(i);
  for (int j = 1; j < 4; ++j)
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < L; ++l) acc[0][k][l] += acc[j][k][l];
  float* p = acc[0][0];  // row_sum: partial_sums[0] += leftover vectors, then += partial_sums[1..3]
  for (int64_t r = rows * 4; r < nvec; ++r)
    for (int l = 0; l < L; ++l) p[l] += v[r * L + l];
  for (int k = 1; k < 4; ++k)
    for (int l = 0; l < L; ++l) p[l] += acc[0][k][l];
  float total = 0.f;
  for (int64_t t = nvec * L; t < n; ++t) total += v[t];  // tail scalars, then the lanes
  for (int l = 0; l < L; ++l) total += p[l];
  return total;
}

// rsqrt(mean(x^2) + eps) of one row, x already in fp32.
constexpr int SUM_LANES = 8;

float inv_rms(const float* x, float* sq, int64_t n, float eps) {
  for (int64_t i = 0; i < n; ++i) sq[i] = x[i] * x[i];
  // aten's float sum takes 8-lane vectors under AVX2 and AVX512 alike (measured: 16 lanes differ)
  const float s = n < SUM_LANES ? cascade_sum<1>(sq, n) : cascade_sum<SUM_LANES>(sq, n);
  const float mean = s / static_cast<float>(n);
  return 1.f / std::sqrt(mean + eps);
}

// One row normed: out = round(x * r * g) (gain_fp32) or round(round(x * r) * g), g in T.
template <typename T>
void norm_row(const float* x, float* sq, float* out, int64_t n, float eps,
              const void* gain, bool gain_fp32) {
  const float r = inv_rms(x, sq, n, eps);
  if (gain_fp32) {
    const float* g = static_cast<const float*>(gain);
    for (int64_t i = 0; i < n; ++i) out[i] = round_to((x[i] * r) * g[i], (T*)nullptr);
  } else {
    const T* g = static_cast<const T*>(gain);
    for (int64_t i = 0; i < n; ++i) out[i] = round_to(load(g[i]) * round_to(x[i] * r, (T*)nullptr), (T*)nullptr);
  }
}

template <typename T>
void to_f32(const T* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = load(src[i]);
}

template <typename T>
void from_f32(const float* src, T* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) store(dst + i, src[i]);
}

void check(const Tensor& x, int64_t dim) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == dim && x.stride(-1) == 1, "decode_ops: a CPU tensor of ", dim,
              " dims with a contiguous last dim expected");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, "decode_ops: fp32 or bf16 expected");
}

const void* gain_ptr(const Tensor& g, const Tensor& x, bool gain_fp32, int64_t n) {
  TORCH_CHECK(g.is_contiguous() && g.numel() % n == 0, "decode_ops: gain (G, D) contiguous expected");
  TORCH_CHECK(g.scalar_type() == (gain_fp32 ? at::kFloat : x.scalar_type()), "decode_ops: gain dtype");
  return g.data_ptr();
}

template <typename F>
void dispatch(at::ScalarType t, F&& f) {  // the two dtypes check() admits
  if (t == at::kBFloat16) f(BFloat16{}); else f(float{});
}

const char* gain_row(const void* g, int64_t row, int64_t groups, int64_t n, size_t item) {
  return static_cast<const char*>(g) + (row % groups) * n * item;
}

// x (R, D) -> rms_norm per row with gain (G, D): row r takes gain row r % G.
Tensor rms_norm(const Tensor& x, const Tensor& gain, double eps, bool gain_fp32) {
  check(x, 2);
  const int64_t rows = x.size(0), n = x.size(1), groups = gain.numel() / n;
  const void* g = gain_ptr(gain, x, gain_fp32, n);
  Tensor out = at::empty({rows, n}, x.options());
  std::vector<float> buf(3 * n);
  float *xf = buf.data(), *sq = xf + n, *o = sq + n;
  dispatch(x.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    const size_t item = gain_fp32 ? sizeof(float) : sizeof(scalar_t);
    for (int64_t r = 0; r < rows; ++r) {
      to_f32(x.data_ptr<scalar_t>() + r * x.stride(0), xf, n);
      norm_row<scalar_t>(xf, sq, o, n, static_cast<float>(eps), gain_row(g, r, groups, n, item), gain_fp32);
      from_f32(o, out.data_ptr<scalar_t>() + r * n, n);
    }
  });
  return out;
}

// x + norm(h, post) (or x + h without `post`), then norm(sum, next) where `next` is given: the
// residual add of a decoder layer and the next norm in one pass. -> (sum, normed or empty).
std::tuple<Tensor, Tensor> residual_norm(const Tensor& x, const Tensor& h, const std::optional<Tensor>& post,
                                         const std::optional<Tensor>& next, double eps, bool gain_fp32) {
  check(x, 2);
  check(h, 2);
  TORCH_CHECK(x.sizes() == h.sizes() && x.scalar_type() == h.scalar_type(), "residual_norm: x and h differ");
  const int64_t rows = x.size(0), n = x.size(1);
  const void* gp = post ? gain_ptr(*post, x, gain_fp32, n) : nullptr;
  const void* gn = next ? gain_ptr(*next, x, gain_fp32, n) : nullptr;
  Tensor sum = at::empty({rows, n}, x.options());
  Tensor normed = next ? at::empty({rows, n}, x.options()) : at::empty({0}, x.options());
  std::vector<float> buf(4 * n);
  float *xf = buf.data(), *hf = xf + n, *sq = hf + n, *o = sq + n;
  dispatch(x.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    const size_t item = gain_fp32 ? sizeof(float) : sizeof(scalar_t);
    for (int64_t r = 0; r < rows; ++r) {
      to_f32(x.data_ptr<scalar_t>() + r * x.stride(0), xf, n);
      to_f32(h.data_ptr<scalar_t>() + r * h.stride(0), hf, n);
      if (gp) {
        norm_row<scalar_t>(hf, sq, o, n, static_cast<float>(eps), gain_row(gp, 0, 1, n, item), gain_fp32);
        std::swap(hf, o);
      }
      for (int64_t i = 0; i < n; ++i) xf[i] = round_to(xf[i] + hf[i], (scalar_t*)nullptr);
      from_f32(xf, sum.data_ptr<scalar_t>() + r * n, n);
      if (gn) {
        norm_row<scalar_t>(xf, sq, o, n, static_cast<float>(eps), gain_row(gn, 0, 1, n, item), gain_fp32);
        from_f32(o, normed.data_ptr<scalar_t>() + r * n, n);
      }
    }
  });
  return {sum, normed};
}

// qk (T, H, D), heads contiguous (rows of T may be strided) -> per-head norm with gain (H, D), then
// rotary with cos / signed sin (T, D) fp32: out = x*cos + roll(x, D/2)*sin. -> (T, H, D) contiguous.
Tensor norm_rotary(const Tensor& qk, const Tensor& gain, double eps, bool gain_fp32, const Tensor& cos,
                   const Tensor& sin) {
  check(qk, 3);
  const int64_t t = qk.size(0), heads = qk.size(1), d = qk.size(2), half = d / 2;
  TORCH_CHECK(qk.stride(1) == d && d % 2 == 0, "norm_rotary: heads of even size, side by side expected");
  TORCH_CHECK(cos.scalar_type() == at::kFloat && sin.scalar_type() == at::kFloat && cos.is_contiguous() &&
              sin.is_contiguous() && cos.numel() == t * d && sin.numel() == t * d, "norm_rotary: cos/sin (T, D) fp32");
  const void* g = gain_ptr(gain, qk, gain_fp32, d);
  const int64_t groups = gain.numel() / d;
  Tensor out = at::empty({t, heads, d}, qk.options());
  std::vector<float> buf(3 * d);
  float *xf = buf.data(), *sq = xf + d, *o = sq + d;
  dispatch(qk.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    const size_t item = gain_fp32 ? sizeof(float) : sizeof(scalar_t);
    for (int64_t i = 0; i < t; ++i) {
      const float *c = cos.data_ptr<float>() + i * d, *s = sin.data_ptr<float>() + i * d;
      for (int64_t hd = 0; hd < heads; ++hd) {
        to_f32(qk.data_ptr<scalar_t>() + i * qk.stride(0) + hd * d, xf, d);
        norm_row<scalar_t>(xf, sq, o, d, static_cast<float>(eps), gain_row(g, hd, groups, d, item), gain_fp32);
        scalar_t* dst = out.data_ptr<scalar_t>() + (i * heads + hd) * d;
        for (int64_t j = 0; j < d; ++j) {
          const float rolled = o[j < half ? j + half : j - half];
          store(dst + j, (o[j] * c[j]) + (rolled * s[j]));
        }
      }
    }
  });
  return out;
}

constexpr float kBeta = float(M_SQRT2 * M_2_SQRTPI * 0.5), kKappa = float(0.044715);

// torch's Activation.cpp formulas around Sleef's tanh (gelu) or exp (silu), as its vectorized kernels
// compute them; its scalar tail (libm) is left to torch, so rows are whole chunks (decode_ops.py).
inline float gelu_inner(float x) { return kBeta * (x + kKappa * (x * x * x)); }
inline float gelu_outer(float x, float th) { return 0.5f * x * (1.f + th); }

template <int W>
void sleef(float* v, bool tanh) {  // v[0..W) = tanh(v) or exp(v), W lanes of torch's Vectorized<float>
#ifdef __AVX512F__
  if constexpr (W == 16) {
    __m512 a = _mm512_loadu_ps(v);
    _mm512_storeu_ps(v, tanh ? Sleef_tanhf16_u10(a) : Sleef_expf16_u10(a));
    return;
  }
#endif
  if constexpr (W == 8) {
    __m256 a = _mm256_loadu_ps(v);
    _mm256_storeu_ps(v, tanh ? Sleef_tanhf8_u10(a) : Sleef_expf8_u10(a));
  } else {
    TORCH_CHECK(false, "gated_act: no ", W, "-lane Sleef in this build");
  }
}

template <int W>
void act_block(const float* x, float* out, bool gelu) {  // W values
  float tmp[W];
  for (int i = 0; i < W; ++i) tmp[i] = gelu ? gelu_inner(x[i]) : -x[i];
  sleef<W>(tmp, gelu);
  for (int i = 0; i < W; ++i) out[i] = gelu ? gelu_outer(x[i], tmp[i]) : x[i] / (1.f + tmp[i]);
}

// gate_up (T, 2I) bf16 -> act(gate) * up (T, I), rounded to bf16 where torch's two ops round.
Tensor gated_act(const Tensor& gu, bool gelu, int64_t lanes) {
  check(gu, 2);
  const int64_t t = gu.size(0), inter = gu.size(1) / 2;
  TORCH_CHECK((lanes == 8 || lanes == 16) && gu.scalar_type() == at::kBFloat16 && inter % (4 * lanes) == 0,
              "gated_act: bf16 with I a multiple of 4 x lanes (8 or 16) expected");
  Tensor out = at::empty({t, inter}, gu.options());
  std::vector<float> buf(2 * inter);
  float *a = buf.data(), *o = a + inter;
  for (int64_t r = 0; r < t; ++r) {
    const BFloat16* row = gu.data_ptr<BFloat16>() + r * gu.stride(0);
    to_f32(row, a, inter);
    for (int64_t i = 0; i < inter; i += lanes)
      lanes == 16 ? act_block<16>(a + i, o + i, gelu) : act_block<8>(a + i, o + i, gelu);
    BFloat16* dst = out.data_ptr<BFloat16>() + r * inter;
    for (int64_t j = 0; j < inter; ++j) store(dst + j, round_to(o[j], (BFloat16*)nullptr) * load(row[inter + j]));
  }
  return out;
}

}  // namespace
}  // namespace tunelab_quant

TORCH_LIBRARY_FRAGMENT(tunelab_quant, m) {
  m.def("rms_norm(Tensor x, Tensor gain, float eps, bool gain_fp32) -> Tensor", &tunelab_quant::rms_norm);
  m.def("residual_norm(Tensor x, Tensor h, Tensor? post, Tensor? next, float eps, bool gain_fp32) -> (Tensor, Tensor)",
        &tunelab_quant::residual_norm);
  m.def("norm_rotary(Tensor qk, Tensor gain, float eps, bool gain_fp32, Tensor cos, Tensor sin) -> Tensor",
        &tunelab_quant::norm_rotary);
  m.def("gated_act(Tensor gate_up, bool gelu, int lanes) -> Tensor", &tunelab_quant::gated_act);
}
