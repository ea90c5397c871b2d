// Shared by the AVX2 (quant_gemv.cpp) and AVX-512 (quant_gemv512.cpp) matrix-vector kernels:
// the activations quantized per block of 32 inputs (llama.cpp's Q8_0) and the entry points.
#pragma once

#include <ATen/ATen.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace tunelab_quant {

constexpr int64_t QB = 32;  // inputs per activation block

inline float to_float(float v) { return v; }
inline float to_float(at::BFloat16 v) { return static_cast<float>(v); }

struct QuantX {
  std::vector<int8_t> q;      // (T, K) codes
  std::vector<float> d, sum;  // (T, K / 32) scale (max|x| / 127) and exact sum per block
};

template <typename T>
QuantX quantize_x(const T* x, int64_t n) {
  QuantX out;
  out.q.resize(n);
  out.d.resize(n / QB);
  out.sum.resize(n / QB);
  for (int64_t b = 0; b < n / QB; ++b) {
    float v[QB], amax = 0.f, s = 0.f;
    for (int64_t i = 0; i < QB; ++i) {
      v[i] = to_float(x[b * QB + i]);
      amax = std::max(amax, std::fabs(v[i]));
      s += v[i];
    }
    const float d = amax / 127.f, inv = d > 0.f ? 1.f / d : 0.f;
    for (int64_t i = 0; i < QB; ++i) out.q[b * QB + i] = static_cast<int8_t>(std::nearbyint(v[i] * inv));
    out.d[b] = d;
    out.sum[b] = s;
  }
  return out;
}

// Whether quant_gemv512.cpp was compiled with AVX-512 (BW, VL, DQ, VBMI; VNNI where the CPU has it).
bool have_avx512();
bool have_vnni();
// x (T, K) contiguous in bf16 or fp32 against an int8 (N, K) weight with (N,) scales -> (T, N).
at::Tensor int8_gemv512(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scales);
// x (T, K) against torch's AVX512 int4 packing (64-row blocks) with (K / group, N, 2) scales and zeros.
at::Tensor int4_gemv512(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales_zeros, int64_t group);

}  // namespace tunelab_quant
