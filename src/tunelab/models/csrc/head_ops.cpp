// The quantized lm_head's candidate search and exact rescoring (models/quant.py RescoredHead), registered as
// TORCH_LIBRARY_FRAGMENT(tunelab_quant, m) in the same extension as quant_gemv*.cpp (models/quant_kernels.py).
//
// head_topk(y, k): the k largest logits of each row of y (T, V), as a set, in two passes over the row:
//
//   keys   u = order-preserving unsigned image of each value (NaN largest, -0 == +0, as torch.topk)
//   pass 1 group maxima: V / S groups of S values (lane-strided within chunks of W * S values)
//          t0 = the k-th largest group maximum: k groups hold a value >= t0, so the k-th largest
//               value t is >= t0, and every one of the k largest is >= t0
//   pass 2 candidates: the values >= t0, in index order (a few more than k)
//          t = the k-th largest candidate: take every u > t, then the lowest indices with u == t
//
// Ties at the k-th value go to the lowest indices (torch.topk's choice among them depends on its heap);
// the indices come out ascending, so the rescoring reads the embedding front to back.
//
// head_rescore_(y, x, exact, idx): y[t, i] = dot(exact[i], x[t]) in fp32 for i in idx[t], rounded to
// y's dtype in place: the gather of k rows (T * k * H copied) and the bmm of the torch path in one
// read of the rows. The sums take 16 fp32 lanes, then the lanes in order; oneDNN's bf16 bmm sums in
// fp32 too, in another order (1 of 8192 bf16 logits 1 ulp apart on Gemma 3's head shapes).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace tunelab_quant {
namespace {

constexpr int64_t LANES = 16;  // fp32 partial sums of a rescored dot product
constexpr int64_t PREFETCH_ROWS = 4;  // embedding rows fetched ahead (2..16 measured alike, none +20%)

// Order-preserving unsigned keys of bf16 / fp32 bits (branch-free, so the passes vectorize).
inline uint16_t sort_key(uint16_t b) {
  uint16_t k = (b & 0x8000) ? static_cast<uint16_t>(~b) : static_cast<uint16_t>(b | 0x8000);
  k = b == 0x8000 ? static_cast<uint16_t>(0x8000) : k;           // -0 ties with +0
  return (b & 0x7FFF) > 0x7F80 ? static_cast<uint16_t>(0xFFFF) : k;  // every NaN above +inf
}

inline uint32_t sort_key(uint32_t b) {
  uint32_t k = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  k = b == 0x80000000u ? 0x80000000u : k;
  return (b & 0x7FFFFFFFu) > 0x7F800000u ? 0xFFFFFFFFu : k;
}

// The k-th largest of n unsigned keys (1 <= k <= n): radix select, a byte at a time from the top
// (Gemma 3's 8192 group maxima: 60 -> 16 us a row against std::nth_element).
template <typename U>
U kth_largest(const U* v, int64_t n, int64_t k) {
  U prefix = 0, mask = 0;  // the high bytes fixed so far
  for (int shift = 8 * int(sizeof(U)) - 8; shift >= 0; shift -= 8) {
    uint32_t hist[256] = {};
    for (int64_t i = 0; i < n; ++i) hist[(v[i] >> shift) & 0xFF] += (v[i] & mask) == prefix;
    int b = 255;
    for (; b > 0 && hist[b] < k; --b) k -= hist[b];
    prefix |= static_cast<U>(static_cast<U>(b) << shift);
    mask |= static_cast<U>(static_cast<U>(0xFF) << shift);
  }
  return prefix;
}

// The k largest of one row of V values (bits U) -> out[0..k) ascending indices.
#if defined(__AVX512BW__)
// sort_key for a 512-bit vector of bf16 / fp32 bits, their maximum and the lanes >= t.
inline __m512i keys512(const uint16_t* p) {
  const __m512i b = _mm512_loadu_si512(p);
  __m512i k = _mm512_xor_si512(b, _mm512_or_si512(_mm512_srai_epi16(b, 15), _mm512_set1_epi16(static_cast<short>(0x8000))));
  k = _mm512_mask_mov_epi16(k, _mm512_cmpeq_epi16_mask(b, _mm512_set1_epi16(static_cast<short>(0x8000))), _mm512_set1_epi16(static_cast<short>(0x8000)));
  const __m512i mag = _mm512_and_si512(b, _mm512_set1_epi16(0x7FFF));
  return _mm512_mask_mov_epi16(k, _mm512_cmpgt_epu16_mask(mag, _mm512_set1_epi16(0x7F80)), _mm512_set1_epi16(-1));
}

inline __m512i keys512(const uint32_t* p) {
  const __m512i b = _mm512_loadu_si512(p);
  __m512i k = _mm512_xor_si512(b, _mm512_or_si512(_mm512_srai_epi32(b, 31), _mm512_set1_epi32(static_cast<int>(0x80000000u))));
  k = _mm512_mask_mov_epi32(k, _mm512_cmpeq_epi32_mask(b, _mm512_set1_epi32(static_cast<int>(0x80000000u))), _mm512_set1_epi32(static_cast<int>(0x80000000u)));
  const __m512i mag = _mm512_and_si512(b, _mm512_set1_epi32(0x7FFFFFFF));
  return _mm512_mask_mov_epi32(k, _mm512_cmpgt_epu32_mask(mag, _mm512_set1_epi32(0x7F800000)), _mm512_set1_epi32(-1));
}

inline __m512i max512(__m512i a, __m512i b, uint16_t) { return _mm512_max_epu16(a, b); }
inline __m512i max512(__m512i a, __m512i b, uint32_t) { return _mm512_max_epu32(a, b); }
inline uint64_t ge512(__m512i k, uint16_t t) { return _mm512_cmpge_epu16_mask(k, _mm512_set1_epi16(static_cast<short>(t))); }
inline uint64_t ge512(__m512i k, uint32_t t) { return _mm512_cmpge_epu32_mask(k, _mm512_set1_epi32(static_cast<int>(t))); }
#endif

template <typename U>
void topk_row(const U* y, int64_t V, int64_t k, int64_t* out) {
  constexpr int64_t W = 64 / sizeof(U);  // one 512-bit vector of keys
  if (k >= V) {
    for (int64_t i = 0; i < V; ++i) out[i] = i;
    return;
  }
  // S values per group: about 8 groups per wanted value keeps t0 close to t (few extra candidates).
  int64_t S = 1;
  while (S < 32 && V / (2 * S) >= 8 * k) S *= 2;
  const int64_t chunk = W * S, whole = V / chunk * chunk;
  std::vector<U> maxima;
  maxima.reserve(whole / S + (V - whole));
  for (int64_t c = 0; c < whole; c += chunk) {
    U m[W];
#if defined(__AVX512BW__)
    __m512i mv = keys512(y + c);
    for (int64_t s = 1; s < S; ++s) mv = max512(mv, keys512(y + c + s * W), U{});
    _mm512_storeu_si512(m, mv);
#else
    for (int64_t l = 0; l < W; ++l) m[l] = sort_key(y[c + l]);
    for (int64_t s = 1; s < S; ++s)
      for (int64_t l = 0; l < W; ++l) m[l] = std::max(m[l], sort_key(y[c + s * W + l]));
#endif
    maxima.insert(maxima.end(), m, m + W);
  }
  for (int64_t i = whole; i < V; ++i) maxima.push_back(sort_key(y[i]));  // the tail: one group each
  U t0 = 0;
  if (static_cast<int64_t>(maxima.size()) >= k) t0 = kth_largest(maxima.data(), maxima.size(), k);
  std::vector<int64_t> cand;
  std::vector<U> ckey;
  cand.reserve(4 * k);
  ckey.reserve(4 * k);
  int64_t c = 0;
#if defined(__AVX512BW__)
  for (; c + W <= V; c += W) {
    uint64_t mask = ge512(keys512(y + c), t0);
    for (; mask; mask &= mask - 1) {
      const int64_t l = __builtin_ctzll(mask);
      cand.push_back(c + l);
      ckey.push_back(sort_key(y[c + l]));
    }
  }
#endif
  for (; c < V; c += W) {
    const int64_t n = std::min(W, V - c);
    U u[W];
    bool any = false;
    for (int64_t l = 0; l < n; ++l) {
      u[l] = sort_key(y[c + l]);
      any |= u[l] >= t0;
    }
    if (!any) continue;
    for (int64_t l = 0; l < n; ++l)
      if (u[l] >= t0) {
        cand.push_back(c + l);
        ckey.push_back(u[l]);
      }
  }
  // k <= candidates (see above); the k-th largest of them is the row's k-th largest
  const U t = kth_largest(ckey.data(), ckey.size(), k);
  int64_t ties = k - std::count_if(ckey.begin(), ckey.end(), [t](U u) { return u > t; });
  int64_t n = 0;
  for (size_t j = 0; j < cand.size() && n < k; ++j)
    if (ckey[j] > t || (ckey[j] == t && ties-- > 0)) out[n++] = cand[j];
}

at::Tensor head_topk(const at::Tensor& y, int64_t k) {
  TORCH_CHECK(y.dim() == 2 && y.is_contiguous() && y.device().is_cpu(), "head_topk: y must be a contiguous (T, V) CPU tensor");
  TORCH_CHECK(y.scalar_type() == at::kBFloat16 || y.scalar_type() == at::kFloat, "head_topk: y must be bf16 or fp32, not ", y.scalar_type());
  TORCH_CHECK(k >= 1, "head_topk: k must be positive, not ", k);
  const int64_t T = y.size(0), V = y.size(1), kk = std::min(k, V);
  auto idx = at::empty({T, kk}, y.options().dtype(at::kLong));
  int64_t* out = idx.data_ptr<int64_t>();
  const bool half = y.scalar_type() == at::kBFloat16;
  const char* base = static_cast<const char*>(y.data_ptr());
  at::parallel_for(0, T, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      if (half) topk_row(reinterpret_cast<const uint16_t*>(base) + t * V, V, kk, out + t * kk);
      else topk_row(reinterpret_cast<const uint32_t*>(base) + t * V, V, kk, out + t * kk);
    }
  });
  return idx;
}

inline float as_float(float v) { return v; }
inline float as_float(at::BFloat16 v) { return static_cast<float>(v); }

template <typename T>
void rescore_impl(at::Tensor& y, const at::Tensor& x, const at::Tensor& exact, const at::Tensor& idx) {
  const int64_t rows = idx.size(0), k = idx.size(1), V = y.size(1), H = x.size(1);
  std::vector<float> xf(rows * H);  // the activations once in fp32 (bf16 -> fp32 is exact)
  const T* xp = x.data_ptr<T>();
  for (int64_t i = 0; i < rows * H; ++i) xf[i] = as_float(xp[i]);
  const T* w = exact.data_ptr<T>();
  const int64_t* ip = idx.data_ptr<int64_t>();
  T* out = y.data_ptr<T>();
  at::parallel_for(0, rows * k, 256, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      if (j + PREFETCH_ROWS < end) {  // the rows lie far apart: no hardware prefetcher finds the next one
        const char* next = reinterpret_cast<const char*>(w + ip[j + PREFETCH_ROWS] * H);
        for (int64_t b = 0; b < H * static_cast<int64_t>(sizeof(T)); b += 64) _mm_prefetch(next + b, _MM_HINT_T0);
      }
      const int64_t t = j / k, i = ip[j];
      const T* a = w + i * H;
      const float* b = xf.data() + t * H;
      float acc[LANES] = {};
      int64_t h = 0;
      for (; h + LANES <= H; h += LANES)
        for (int64_t l = 0; l < LANES; ++l) acc[l] += as_float(a[h + l]) * b[h + l];
      for (; h < H; ++h) acc[h % LANES] += as_float(a[h]) * b[h];
      float s = 0.f;
      for (int64_t l = 0; l < LANES; ++l) s += acc[l];
      out[t * V + i] = static_cast<T>(s);
    }
  });
}

void head_rescore_(at::Tensor y, const at::Tensor& x, const at::Tensor& exact, const at::Tensor& idx) {
  TORCH_CHECK(y.dim() == 2 && x.dim() == 2 && exact.dim() == 2 && idx.dim() == 2, "head_rescore_: 2-d tensors only");
  TORCH_CHECK(y.is_contiguous() && x.is_contiguous() && exact.is_contiguous() && idx.is_contiguous(),
              "head_rescore_: contiguous tensors only");
  TORCH_CHECK(y.scalar_type() == x.scalar_type() && x.scalar_type() == exact.scalar_type(),
              "head_rescore_: y, x and exact must share a dtype");
  TORCH_CHECK(idx.scalar_type() == at::kLong, "head_rescore_: idx must be int64");
  TORCH_CHECK(y.size(0) == x.size(0) && idx.size(0) == x.size(0) && exact.size(1) == x.size(1) && exact.size(0) == y.size(1),
              "head_rescore_: shapes y (T, V), x (T, H), exact (V, H), idx (T, k) do not match");
  if (idx.numel() > 0) {
    const int64_t lo = idx.min().item<int64_t>(), hi = idx.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < y.size(1), "head_rescore_: an index is outside 0..", y.size(1) - 1);
  }
  if (y.scalar_type() == at::kBFloat16) rescore_impl<at::BFloat16>(y, x, exact, idx);
  else if (y.scalar_type() == at::kFloat) rescore_impl<float>(y, x, exact, idx);
  else TORCH_CHECK(false, "head_rescore_: bf16 or fp32 only, not ", y.scalar_type());
}

}  // namespace
}  // namespace tunelab_quant

TORCH_LIBRARY_FRAGMENT(tunelab_quant, m) {
  m.def("head_topk(Tensor y, int k) -> Tensor", &tunelab_quant::head_topk);
  m.def("head_rescore_(Tensor(a!) y, Tensor x, Tensor exact, Tensor idx) -> ()", &tunelab_quant::head_rescore_);
}
