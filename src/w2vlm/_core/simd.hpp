// Portable vector types and vectorised float32 arithmetic shared by the native kernels (logits.cpp's exp, the
// VAD's recurrent layer in lstm.cpp). GCC's and Clang's vector extensions: one algorithm compiles to SSE2 or NEON
// and, inside functions compiled for it (target("avx2,fma"), chosen at run time by avx2_fma()), to AVX2 + FMA.
#pragma once

#include <cstdint>
#include <cstring>

namespace w2vlm {

#if defined(__GNUC__)
#define W2VLM_ALWAYS_INLINE __attribute__((always_inline)) inline
// vectors of 16 bytes (the width of SSE2 and NEON registers, which GCC and Clang compile without emulation); the
// attribute has to name a concrete type, not a template parameter
template <class T>
struct Vec16;
template <>
struct Vec16<float> {
  using type = float __attribute__((vector_size(16)));
};
template <>
struct Vec16<double> {
  using type = double __attribute__((vector_size(16)));
};
template <>
struct Vec16<int32_t> {
  using type = int32_t __attribute__((vector_size(16)));
};
#if defined(__x86_64__)
// 32 bytes: AVX2's registers
using F8 = float __attribute__((vector_size(32)));
using I8 = int32_t __attribute__((vector_size(32)));
// whether this CPU runs AVX2 and FMA (functions compiled with target("avx2,fma") may be called)
inline bool avx2_fma() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#endif
#else
#define W2VLM_ALWAYS_INLINE inline
#endif

// exp of float32 values, a vector at a time: Cody-Waite reduction x = k ln2 + r (|r| <= ln2/2), Cephes' polynomial
// for e^r, scaled by 2^k in two halves so that subnormal results are rounded once; at most 1 ulp from the true
// value. numpy's float32 exp took ~4 ns a value on the 2-core VM of the benchmarks and was a third of the decoding
// time with 1,000 labels; this one takes ~2.6 ns there with SSE2 (4 lanes) and ~1.8 ns with AVX2 + FMA (8 lanes,
// chosen at run time; FMA rounds once where SSE2 rounds twice, so the last bit may differ between the two kinds of
// CPU). Below -110 (-inf included) gives 0, above 88.8 +inf; NaN stays NaN. F is a float type or a vector of
// floats, I the integers of the same shape: one algorithm for vectors and for single values.
template <class F, class I>
W2VLM_ALWAYS_INLINE void exp_lanes(F& x) {
  x = x < -110.0f ? F{} - 110.0f : x;
  x = x > 88.8f ? F{} + 88.8f : x;
  // round x / ln2 to the nearest integer by adding 1.5 * 2^23: the integer is then the low bits of the sum
  const F shifted = x * 1.44269504088896341f + 12582912.0f;
  const F k = shifted - 12582912.0f;
  I ki;
  std::memcpy(&ki, &shifted, sizeof ki);
  ki = ki - 0x4B400000;
  F r = x - k * 0.693359375f;  // ln2's high part has 10 bits: k times it is exact
  r = r - k * -2.12194440e-4f;
  F p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = (p * (r * r) + r) + 1.0f;
  const I k1 = ki >> 1, k2 = ki - k1;
  const I b1 = (k1 + 127) << 23, b2 = (k2 + 127) << 23;
  F s1, s2;
  std::memcpy(&s1, &b1, sizeof s1);
  std::memcpy(&s2, &b2, sizeof s2);
  x = (p * s1) * s2;
}

}  // namespace w2vlm
