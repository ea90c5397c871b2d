// AVX-512 matrix-vector kernels for tunelab's weight-only quantized linears (see quant_gemv.cpp for
// the maths). Built only where the CPU has AVX-512 BW/VL/DQ and VBMI (models/quant_kernels.flags);
// the 4-byte integer dots take VNNI's vpdpbusd where the CPU has it, else maddubs + madd.
//
// int4 reads torch's AVX512 packing (_convert_weight_to_int4pack_for_cpu with 512-bit vectors): per
// block of 64 output rows, K rows of 32 bytes, byte j = c[j] | c[j + 32] << 4. One two-source byte
// permute (vpermt2b) of inputs k..k+3 gathers each row's 4 codes into one 32-bit lane, so the
// lanes of the dot products are output rows in order:
//
//   bytes k, k+1 | k+2, k+3 (2 x 64) --vpermt2b--> rows 0..15 (lo) / 32..47 (hi), 4 codes a lane
//                                   --vpermt2b--> rows 16..31 (lo) / 48..63 (hi)
#include "quant_gemv.h"

#include <ATen/Parallel.h>

namespace tunelab_quant {

#if defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__) && defined(__AVX512VBMI__)

bool have_avx512() { return true; }

namespace {

// Software prefetch ahead of the loads: from memory (a decode step streams every weight once) the
// kernels are bound by the misses in flight; the int4 scales of one block lie in `groups` far-apart
// rows, which no hardware prefetcher follows (262k x 640 head, 1 thread, under load: 11-16 -> 7-9 ms).
constexpr int64_t INT8_PREFETCH_BYTES = 4096;  // int8: 1.0 / 4.0 KB ahead: 6.2 / 6.9 GB/s (sum(): ~8.6)
constexpr int64_t PREFETCH_BYTES = 2048;       // int4: bytes ahead within the packed block

inline __m512i dot4(__m512i acc, __m512i u8, __m512i s8) {  // acc += 4-byte dots, u8 x s8 per 32-bit lane
#ifdef __AVX512VNNI__
  return _mm512_dpbusd_epi32(acc, u8, s8);
#else  // pairs of products stay within i16: 2 * 127 * 127 < 2^15
  return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u8, s8), _mm512_set1_epi16(1)));
#endif
}

inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }

inline __m512 load16(const at::BFloat16* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}

// quantize_x (quant_gemv.h) in 512-bit vectors: the same codes (round to nearest even), scales and sums.
template <typename T>
QuantX quantize_x512(const T* x, int64_t n) {
  QuantX out;
  out.q.resize(n);
  out.d.resize(n / QB);
  out.sum.resize(n / QB);
  for (int64_t b = 0; b < n / QB; ++b) {
    const __m512 v0 = load16(x + b * QB), v1 = load16(x + b * QB + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const float d = amax / 127.f, inv = d > 0.f ? 1.f / d : 0.f;
    const __m512 vi = _mm512_set1_ps(inv);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out.q.data() + b * QB), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v0, vi))));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out.q.data() + b * QB + 16), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v1, vi))));
    out.d[b] = d;
    out.sum[b] = _mm512_reduce_add_ps(_mm512_add_ps(v0, v1));
  }
  return out;
}

inline void store16(float* y, __m512 v) { _mm512_storeu_ps(y, v); }

inline void store16(at::BFloat16* y, __m512 v) {  // round to nearest even, as torch's conversion
  __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  u = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), lsb)), 16);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(y), _mm512_cvtepi32_epi16(u));
}

// 16 (scale, zero) pairs of rows r..r+16 -> scale and zero - 8 scale, fp32.
inline void scale_pairs(const at::BFloat16* p, __m512& s, __m512& m) {
  const __m512i v = _mm512_loadu_si512(p);
  s = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  const __m512 z = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
  m = _mm512_fnmadd_ps(_mm512_set1_ps(8.f), s, z);
}

inline void scale_pairs(const float* p, __m512& s, __m512& m) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512 a = _mm512_loadu_ps(p), b = _mm512_loadu_ps(p + 16);
  s = _mm512_permutex2var_ps(a, even, b);
  m = _mm512_fnmadd_ps(_mm512_set1_ps(8.f), s, _mm512_permutex2var_ps(a, odd, b));
}

// vpermt2b indices: output lane r (4 bytes) = row r0 + r of inputs k, k+1 (first source), k+2, k+3.
inline __m512i gather_index(int r0) {
  alignas(64) uint8_t idx[64];
  for (int r = 0; r < 16; ++r) {
    idx[4 * r] = static_cast<uint8_t>(r0 + r);
    idx[4 * r + 1] = static_cast<uint8_t>(32 + r0 + r);
    idx[4 * r + 2] = static_cast<uint8_t>(64 + r0 + r);
    idx[4 * r + 3] = static_cast<uint8_t>(96 + r0 + r);
  }
  return _mm512_load_si512(idx);
}

// One block of 64 output rows for activation rows t0..t0+nt (nt <= 16): y[t][0..64).
template <typename T>
void int4_block(const uint8_t* w, const T* sz, int64_t N, int64_t K, int64_t group, const QuantX& qx,
                int64_t t0, int64_t nt, T* y) {
  const __m512i mask = _mm512_set1_epi8(0x0F), lo_rows = gather_index(0), hi_rows = gather_index(16);
  __m512 acc[16][4];
  for (int64_t t = 0; t < nt; ++t)
    for (int a = 0; a < 4; ++a) acc[t][a] = _mm512_setzero_ps();
  __m512i wt[8][4];  // one activation block (32 inputs) of the weight, rows 16a..16a+15 in wt[j][a]
  for (int64_t g = 0; g < K / group; ++g) {
    __m512 s[4], m[4];
    for (int a = 0; a < 4; ++a) scale_pairs(sz + (g * N + 16 * a) * 2, s[a], m[a]);
    for (int i = 0; i < 2 * int(sizeof(T)); ++i)  // the next block's 64 (scale, zero) pairs of this group
      _mm_prefetch(reinterpret_cast<const char*>(sz + (g * N + 64) * 2) + 64 * i, _MM_HINT_T0);
    for (int64_t b = g * group / QB; b < (g + 1) * group / QB; ++b) {
      const uint8_t* wb = w + b * QB * 32;
      for (int j = 0; j < 8; ++j) {
        _mm_prefetch(reinterpret_cast<const char*>(wb + 128 * j + PREFETCH_BYTES), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(wb + 128 * j + 64 + PREFETCH_BYTES), _MM_HINT_T0);
        const __m512i A = _mm512_loadu_si512(wb + 128 * j), C = _mm512_loadu_si512(wb + 128 * j + 64);
        const __m512i p0 = _mm512_permutex2var_epi8(A, lo_rows, C), p1 = _mm512_permutex2var_epi8(A, hi_rows, C);
        wt[j][0] = _mm512_and_si512(p0, mask);
        wt[j][1] = _mm512_and_si512(p1, mask);
        wt[j][2] = _mm512_and_si512(_mm512_srli_epi16(p0, 4), mask);
        wt[j][3] = _mm512_and_si512(_mm512_srli_epi16(p1, 4), mask);
      }
      for (int64_t t = 0; t < nt; ++t) {
        const int32_t* xq = reinterpret_cast<const int32_t*>(qx.q.data() + (t0 + t) * K + b * QB);
        __m512i dots[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
        for (int j = 0; j < 8; ++j) {
          const __m512i xv = _mm512_set1_epi32(xq[j]);  // codes of inputs 4j..4j+3, as the lanes hold the weight's
          for (int a = 0; a < 4; ++a) dots[a] = dot4(dots[a], wt[j][a], xv);
        }
        const __m512 d = _mm512_set1_ps(qx.d[(t0 + t) * K / QB + b]), xs = _mm512_set1_ps(qx.sum[(t0 + t) * K / QB + b]);
        for (int a = 0; a < 4; ++a) {
          acc[t][a] = _mm512_fmadd_ps(_mm512_mul_ps(s[a], d), _mm512_cvtepi32_ps(dots[a]), acc[t][a]);
          acc[t][a] = _mm512_fmadd_ps(m[a], xs, acc[t][a]);
        }
      }
    }
  }
  for (int64_t t = 0; t < nt; ++t)
    for (int a = 0; a < 4; ++a) store16(y + (t0 + t) * N + 16 * a, acc[t][a]);
}

// One weight row against RT activation rows, its 64-byte chunks in order: y[t] = s * sum_c d_tc . dots.
// A row at a time keeps the weight one sequential stream (4-row tiles streamed at half the rate).
template <int RT, typename T>
void int8_row(const int8_t* w, int64_t K, const int8_t* q, const float* dx, const T* scale, T* y, int64_t N) {
  const int64_t chunks = (K + 63) / 64;
  __m512 acc[RT];
  for (int t = 0; t < RT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t c = 0; c < chunks; ++c) {
    const __mmask64 valid = 64 * c + 64 <= K ? ~0ULL : 0xFFFFFFFFULL;  // K % 64 == 32: half a chunk
    _mm_prefetch(reinterpret_cast<const char*>(w + 64 * c + INT8_PREFETCH_BYTES), _MM_HINT_T0);
    const __m512i wv = _mm512_maskz_loadu_epi8(valid, w + 64 * c);
    const __m512i aw = _mm512_abs_epi8(wv);  // |w| x sign(w) x: vpdpbusd takes one unsigned operand
    const __mmask64 neg = _mm512_movepi8_mask(wv);
    for (int t = 0; t < RT; ++t) {
      const __m512i xv = _mm512_maskz_loadu_epi8(valid, q + t * K + 64 * c);
      const __m512i sx = _mm512_mask_sub_epi8(xv, neg, _mm512_setzero_si512(), xv);
      const __m512 d = _mm512_loadu_ps(dx + (t * chunks + c) * 16);
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot4(_mm512_setzero_si512(), aw, sx)), d, acc[t]);
    }
  }
  for (int t = 0; t < RT; ++t) y[t * N] = static_cast<T>(_mm512_reduce_add_ps(acc[t]) * to_float(*scale));
}

template <typename T>
void int8_rows(const int8_t* w, int64_t K, const QuantX& qx, const float* dx, int64_t rows, const T* s, T* y, int64_t N) {
  const int64_t chunks = (K + 63) / 64;
  for (int64_t t = 0; t < rows; t += 4) {
    const int8_t* q = qx.q.data() + t * K;
    const float* d = dx + t * chunks * 16;
    switch (std::min<int64_t>(4, rows - t)) {
      case 4: int8_row<4>(w, K, q, d, s, y + t * N, N); break;
      case 3: int8_row<3>(w, K, q, d, s, y + t * N, N); break;
      case 2: int8_row<2>(w, K, q, d, s, y + t * N, N); break;
      default: int8_row<1>(w, K, q, d, s, y + t * N, N);
    }
  }
}

template <typename T>
at::Tensor int8_impl(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scales) {
  const int64_t rows = x.size(0), K = x.size(1), N = weight.size(0), chunks = (K + 63) / 64;
  auto y = at::empty({rows, N}, x.options());
  const QuantX qx = quantize_x512(x.data_ptr<T>(), rows * K);
  std::vector<float> dx(rows * chunks * 16, 0.f);  // per 64 inputs: 8 lanes of each block's scale
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t b = 0; b < K / QB; ++b) std::fill_n(dx.data() + (t * chunks + b / 2) * 16 + 8 * (b % 2), 8, qx.d[t * K / QB + b]);
  const int8_t* w = weight.data_ptr<int8_t>();
  const T* s = scales.data_ptr<T>();
  T* out = y.data_ptr<T>();
  at::parallel_for(0, N, std::max<int64_t>(1, 65536 / K), [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) int8_rows(w + n * K, K, qx, dx.data(), rows, s + n, out + n, N);
  });
  return y;
}

template <typename T>
at::Tensor int4_impl(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& sz, int64_t group) {
  const int64_t rows = x.size(0), K = x.size(1), N = packed.size(0);
  auto y = at::empty({rows, N}, x.options());
  const QuantX qx = quantize_x512(x.data_ptr<T>(), rows * K);
  const uint8_t* w = packed.data_ptr<uint8_t>();
  const T* s = sz.data_ptr<T>();
  T* out = y.data_ptr<T>();
  at::parallel_for(0, N / 64, std::max<int64_t>(1, 2048 / K), [&](int64_t begin, int64_t end) {
    for (int64_t nb = begin; nb < end; ++nb)
      for (int64_t t0 = 0; t0 < rows; t0 += 16)
        int4_block(w + nb * K * 32, s + nb * 64 * 2, N, K, group, qx, t0, std::min<int64_t>(16, rows - t0), out + nb * 64);
  });
  return y;
}

}  // namespace

#ifdef __AVX512VNNI__
bool have_vnni() { return true; }
#else
bool have_vnni() { return false; }
#endif

at::Tensor int8_gemv512(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scales) {
  if (x.scalar_type() == at::kBFloat16) return int8_impl<at::BFloat16>(x, weight, scales);
  return int8_impl<float>(x, weight, scales);
}

at::Tensor int4_gemv512(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales_zeros, int64_t group) {
  if (x.scalar_type() == at::kBFloat16) return int4_impl<at::BFloat16>(x, packed, scales_zeros, group);
  return int4_impl<float>(x, packed, scales_zeros, group);
}

#else  // built without AVX-512: the AVX2 kernels serve, and torch's where its int4 packing is the 64-row one

bool have_avx512() { return false; }
bool have_vnni() { return false; }

at::Tensor int8_gemv512(const at::Tensor&, const at::Tensor&, const at::Tensor&) {
  TORCH_CHECK(false, "tunelab_quant was built without AVX-512");
}

at::Tensor int4_gemv512(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t) {
  TORCH_CHECK(false, "tunelab_quant was built without AVX-512");
}

#endif

}  // namespace tunelab_quant
