// AVX2 matrix-vector kernels for tunelab's weight-only quantized linears (models/quant_kernels.py).
//
// Activations are quantized per block of 32 inputs to int8 (d = max|x| / 127, like llama.cpp's
// Q8_0), so the inner products run on integers (maddubs: u8 x s8 pairs -> i16) and each block's
// sum is scaled once:
//
//   int8 weights, per output row n:  y_n = s_n * sum_b d_b * sum_{k in b} w_nk q_k
//   int4 weights, per group g:        y_n = sum_g [ s_gn * sum_b d_b * sum_{k in b} c_nk q_k
//                                                  + (z_gn - 8 s_gn) * sum_{k in b} x_k ]
//
// The AVX-512 kernels (quant_gemv512.cpp) take the same arithmetic; the ops below dispatch to
// them when asked (int8: `wide`, int4: torch's 64-row packing).
//
// The int4 kernel reads torch's AVX2 packing (_convert_weight_to_int4pack_for_cpu) as it is: per
// block of 32 output rows, K rows of 16 bytes, byte j = c[j] | c[j + 16] << 4; scales and zeros
// (groups, N, 2). The block sums of x in the zero-point term are exact (fp32).
#include "quant_gemv.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

namespace tunelab_quant {
namespace {

// Per 4 inputs k..k+3, 32 bytes: lane 0 repeats (q_k, q_k+2), lane 1 (q_k+1, q_k+3), matching two
// 32-byte loads of the int4 layout (rows k, k+1 and k+2, k+3) interleaved byte by byte.
std::vector<__m256i> pair_table(const int8_t* q, int64_t n) {
  std::vector<__m256i> tab(n / 4);
  for (int64_t j = 0; j < n / 4; ++j) {
    const int8_t* c = q + 4 * j;
    auto pair = [](int8_t a, int8_t b) { return static_cast<short>(static_cast<uint8_t>(a) | (static_cast<uint8_t>(b) << 8)); };
    tab[j] = _mm256_set_m128i(_mm_set1_epi16(pair(c[1], c[3])), _mm_set1_epi16(pair(c[0], c[2])));
  }
  return tab;
}

// 8 (scale, zero) pairs -> scale and zero - 8 scale, fp32.
inline void scale_pairs(const at::BFloat16* p, __m256& s, __m256& m) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  s = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  const __m256 z = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(static_cast<int>(0xFFFF0000u))));
  m = _mm256_fnmadd_ps(_mm256_set1_ps(8.f), s, z);
}

inline void scale_pairs(const float* p, __m256& s, __m256& m) {
  const __m256i idx = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  const __m256 a = _mm256_permutevar8x32_ps(_mm256_loadu_ps(p), idx);
  const __m256 b = _mm256_permutevar8x32_ps(_mm256_loadu_ps(p + 8), idx);
  s = _mm256_permute2f128_ps(a, b, 0x20);
  m = _mm256_fnmadd_ps(_mm256_set1_ps(8.f), s, _mm256_permute2f128_ps(a, b, 0x31));
}

inline void store8(float* y, __m256 v) { _mm256_storeu_ps(y, v); }

inline void store8(at::BFloat16* y, __m256 v) {  // round to nearest even, as torch's conversion
  __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  u = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), lsb)), 16);
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(u, u), 0x08);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(y), _mm256_castsi256_si128(packed));
}

inline __m256 widen_lanes(__m256i a16) {  // 16 i16 (lane 0 and lane 1: the same 8 outputs) -> 8 fp32
  const __m256i lo = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(a16));
  const __m256i hi = _mm256_cvtepi16_epi32(_mm256_extracti128_si256(a16, 1));
  return _mm256_cvtepi32_ps(_mm256_add_epi32(lo, hi));
}

// One block of 32 output rows for one activation row: y[0..32).
template <typename T>
void int4_block(const uint8_t* w, const T* sz, int64_t N, int64_t K, int64_t group, const __m256i* xtab,
                const float* d, const float* xsum, T* y) {
  const __m256i mask = _mm256_set1_epi8(0x0F);
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t g = 0; g < K / group; ++g) {
    __m256 s[4], m[4];
    for (int i = 0; i < 4; ++i) scale_pairs(sz + (g * N + 8 * i) * 2, s[i], m[i]);
    for (int64_t b = g * group / QB; b < (g + 1) * group / QB; ++b) {
      __m256i a16[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
      const uint8_t* wb = w + b * QB * 16;
      for (int j = 0; j < 8; ++j) {  // 8 x 4 inputs; i16 sums stay below 8 * 2 * 15 * 127 < 2^15
        const __m256i A = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + 64 * j));
        const __m256i C = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + 64 * j + 32));
        const __m256i xv = xtab[b * 8 + j];
        const __m256i la = _mm256_and_si256(A, mask), lc = _mm256_and_si256(C, mask);
        const __m256i ha = _mm256_and_si256(_mm256_srli_epi16(A, 4), mask);
        const __m256i hc = _mm256_and_si256(_mm256_srli_epi16(C, 4), mask);
        a16[0] = _mm256_add_epi16(a16[0], _mm256_maddubs_epi16(_mm256_unpacklo_epi8(la, lc), xv));
        a16[1] = _mm256_add_epi16(a16[1], _mm256_maddubs_epi16(_mm256_unpackhi_epi8(la, lc), xv));
        a16[2] = _mm256_add_epi16(a16[2], _mm256_maddubs_epi16(_mm256_unpacklo_epi8(ha, hc), xv));
        a16[3] = _mm256_add_epi16(a16[3], _mm256_maddubs_epi16(_mm256_unpackhi_epi8(ha, hc), xv));
      }
      const __m256 db = _mm256_set1_ps(d[b]), sb = _mm256_set1_ps(xsum[b]);
      for (int i = 0; i < 4; ++i) {
        acc[i] = _mm256_fmadd_ps(_mm256_mul_ps(s[i], db), widen_lanes(a16[i]), acc[i]);
        acc[i] = _mm256_fmadd_ps(m[i], sb, acc[i]);
      }
    }
  }
  for (int i = 0; i < 4; ++i) store8(y + 8 * i, acc[i]);
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// R output rows (R <= 4) of an int8 weight for one activation row.
template <int R, typename T>
void int8_rows(const int8_t* w, int64_t K, const int8_t* q, const float* d, const T* scale, T* y) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t b = 0; b < K / QB; ++b) {
    const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + b * QB));
    const __m256 db = _mm256_set1_ps(d[b]);
    for (int r = 0; r < R; ++r) {
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + r * K + b * QB));
      const __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv));
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)), db, acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) y[r] = static_cast<T>(hsum(acc[r]) * to_float(scale[r]));
}

template <typename T>
at::Tensor int4_impl(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& sz, int64_t group) {
  const int64_t rows = x.size(0), K = x.size(1), N = packed.size(0);
  auto y = at::empty({rows, N}, x.options());
  const QuantX qx = quantize_x(x.data_ptr<T>(), rows * K);
  const std::vector<__m256i> tab = pair_table(qx.q.data(), rows * K);
  const uint8_t* w = packed.data_ptr<uint8_t>();
  const T* s = sz.data_ptr<T>();
  T* out = y.data_ptr<T>();
  at::parallel_for(0, N / 32, std::max<int64_t>(1, 4096 / K), [&](int64_t begin, int64_t end) {
    for (int64_t nb = begin; nb < end; ++nb) {
      for (int64_t t = 0; t < rows; ++t) {
        int4_block(w + nb * K * 16, s + nb * 32 * 2, N, K, group, tab.data() + t * K / 4, qx.d.data() + t * K / QB,
                   qx.sum.data() + t * K / QB, out + t * N + nb * 32);
      }
    }
  });
  return y;
}

template <typename T>
at::Tensor int8_impl(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scales) {
  const int64_t rows = x.size(0), K = x.size(1), N = weight.size(0);
  auto y = at::empty({rows, N}, x.options());
  const QuantX qx = quantize_x(x.data_ptr<T>(), rows * K);
  const int8_t* w = weight.data_ptr<int8_t>();
  const T* s = scales.data_ptr<T>();
  T* out = y.data_ptr<T>();
  at::parallel_for(0, (N + 3) / 4, std::max<int64_t>(1, 16384 / K), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = 4 * i;
      for (int64_t t = 0; t < rows; ++t) {
        const int8_t* q = qx.q.data() + t * K;
        const float* d = qx.d.data() + t * K / QB;
        T* yt = out + t * N + n;
        switch (std::min<int64_t>(4, N - n)) {
          case 4: int8_rows<4>(w + n * K, K, q, d, s + n, yt); break;
          case 3: int8_rows<3>(w + n * K, K, q, d, s + n, yt); break;
          case 2: int8_rows<2>(w + n * K, K, q, d, s + n, yt); break;
          default: int8_rows<1>(w + n * K, K, q, d, s + n, yt);
        }
      }
    }
  });
  return y;
}

void check_x(const at::Tensor& x, const at::Tensor& scales) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.device().is_cpu(), "x: a contiguous (T, K) CPU tensor");
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kFloat, "x: bfloat16 or float32");
  TORCH_CHECK(scales.scalar_type() == x.scalar_type() && scales.is_contiguous(), "scales: contiguous, x's dtype");
  TORCH_CHECK(x.size(1) % QB == 0, "K must be a multiple of 32");
}

at::Tensor int4_gemv(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales_zeros, int64_t group,
                     int64_t block) {
  check_x(x, scales_zeros);
  const int64_t K = x.size(1), N = packed.size(0);
  TORCH_CHECK(block == 32 || (block == 64 && have_avx512()), "block: 32 (AVX2 packing), or 64 (AVX512) in an AVX-512 build");
  TORCH_CHECK(packed.scalar_type() == at::kByte && packed.is_contiguous() && packed.size(1) * 2 == K && N % block == 0,
              "packed: (N, K / 2) uint8, N a multiple of the block");
  TORCH_CHECK(group % QB == 0 && K % group == 0, "group: a multiple of 32 dividing K");
  TORCH_CHECK(scales_zeros.dim() == 3 && scales_zeros.size(0) == K / group && scales_zeros.size(1) == N, "scales_zeros: (K / group, N, 2)");
  if (block == 64) return int4_gemv512(x, packed, scales_zeros, group);
  if (x.scalar_type() == at::kBFloat16) return int4_impl<at::BFloat16>(x, packed, scales_zeros, group);
  return int4_impl<float>(x, packed, scales_zeros, group);
}

at::Tensor int8_gemv(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scales, bool wide) {
  check_x(x, scales);
  TORCH_CHECK(weight.scalar_type() == at::kChar && weight.is_contiguous() && weight.size(1) == x.size(1), "weight: (N, K) int8");
  TORCH_CHECK(scales.numel() == weight.size(0), "scales: (N,)");
  TORCH_CHECK(!wide || have_avx512(), "wide: this build has no AVX-512 kernels");
  if (wide) return int8_gemv512(x, weight, scales);
  if (x.scalar_type() == at::kBFloat16) return int8_impl<at::BFloat16>(x, weight, scales);
  return int8_impl<float>(x, weight, scales);
}

int64_t vector_bits() { return have_avx512() ? 512 : 256; }

bool vnni() { return have_vnni(); }

}  // namespace
}  // namespace tunelab_quant

TORCH_LIBRARY(tunelab_quant, m) {
  m.def("int4_gemv(Tensor x, Tensor packed, Tensor scales_zeros, int group, int block) -> Tensor", &tunelab_quant::int4_gemv);
  m.def("int8_gemv(Tensor x, Tensor weight, Tensor scales, bool wide) -> Tensor", &tunelab_quant::int8_gemv);
  m.def("vector_bits() -> int", &tunelab_quant::vector_bits);
  m.def("vnni() -> bool", &tunelab_quant::vnni);
}
