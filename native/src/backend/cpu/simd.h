// Internal to the CPU kernels: the instruction-set plumbing the kernel files share.
//
//   * target attributes for the x86 paths compiled into one binary and picked at run time (T256, T512, T512BF,
//     TF16C), and the regions that compile a whole block of code for one instruction set
//     (RUSTASR_BEGIN_AVX512 ... RUSTASR_END_TARGET): the "one kernel body per op across ISAs" scheme, after
//     ggml's CPU backend (ggml-cpu/simd-mappings.h): a body is written once against a small vector type `S`
//     (width, load / masked load / store / fma / add / horizontal sum) and included in each ISA's region with
//     that ISA's `S` (see vecops.cpp). The matrix-vector and GEMM kernels keep one body per ISA: their block
//     shapes follow each register file (32 zmm, 16 ymm, 32 q registers), the AVX-512 ones use masked loads
//     and the BF16 dot product, and they were tuned one by one against the bench.
//   * small helpers many kernels use: horizontal sums, BF16 / int8 loads, exp, all-lane masks.
#pragma once

#include <cstdint>
#include <cstring>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define RUSTASR_X86 1
#include <cpuid.h>
#include <immintrin.h>
#define T256 __attribute__((target("avx2,fma")))
#define T512 __attribute__((target("avx512f,avx512bw,avx512vl")))
#define T512BF __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define TF16C __attribute__((target("avx,f16c")))
#if defined(__clang__)
#define RUSTASR_BEGIN_AVX512 \
  _Pragma("clang attribute push(__attribute__((target(\"avx512f,avx512bw,avx512vl\"))), apply_to = function)")
#define RUSTASR_BEGIN_AVX2 _Pragma("clang attribute push(__attribute__((target(\"avx2,fma\"))), apply_to = function)")
#define RUSTASR_END_TARGET _Pragma("clang attribute pop")
#else
#define RUSTASR_BEGIN_AVX512 _Pragma("GCC push_options") _Pragma("GCC target(\"avx512f,avx512bw,avx512vl\")")
#define RUSTASR_BEGIN_AVX2 _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma\")")
#define RUSTASR_END_TARGET _Pragma("GCC pop_options")
#endif
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

#if defined(__clang__)
#define RUSTASR_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define RUSTASR_UNROLL _Pragma("GCC unroll 16")
#else
#define RUSTASR_UNROLL
#endif

// Keeps a vector in a register: an empty asm that "changes" it, so that the compiler cannot fold its load into
// each instruction that uses it (x86 SIMD registers; nothing elsewhere). No instruction is emitted.
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define RUSTASR_IN_REGISTER(v) __asm__("" : "+x"(v))
#else
#define RUSTASR_IN_REGISTER(v) ((void)0)
#endif

namespace rustasr {
namespace cpu {

inline uint16_t f32_to_bf16_rne(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

#if defined(RUSTASR_X86)

#ifndef RUSTASR_PREFETCH_HINT
#define RUSTASR_PREFETCH_HINT _MM_HINT_T0
#endif
#ifndef RUSTASR_PREFETCH_AVX512
#define RUSTASR_PREFETCH_AVX512 1
#endif
#ifndef RUSTASR_PREFETCH_AVX2  // the BF16 gemv kernel's software prefetch (gemv.cpp blk_avx2): off, measured
#define RUSTASR_PREFETCH_AVX2 0
#endif
constexpr auto kPrefetchHint = RUSTASR_PREFETCH_HINT;
constexpr bool kPrefetchAvx512 = RUSTASR_PREFETCH_AVX512;
constexpr bool kPrefetchAvx2 = RUSTASR_PREFETCH_AVX2;

// All-lanes masks: the maskz forms of the intrinsics avoid GCC 12's false -Wmaybe-uninitialized on the
// _mm512_undefined_* inside the plain forms.
constexpr __mmask16 kAll16 = static_cast<__mmask16>(0xFFFF);
constexpr __mmask8 kAll8 = static_cast<__mmask8>(0xFF);

T256 inline __m256 ld8_bf16(const uint16_t* p) {
  return _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}
T256 inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
T512 inline __m512 ld16_bf16(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(
      kAll16, _mm512_maskz_cvtepu16_epi32(kAll16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}
T512 inline __m512 ld16_bf16_mask(const uint16_t* p, __mmask16 k) {
  return _mm512_castsi512_ps(
      _mm512_maskz_slli_epi32(kAll16, _mm512_maskz_cvtepu16_epi32(kAll16, _mm256_maskz_loadu_epi16(k, p)), 16));
}
T512 inline float hsum512(__m512 v) {
  const __m512d d = _mm512_castps_pd(v);
  const __m256 lo = _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(kAll8, d, 0));
  const __m256 hi = _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(kAll8, d, 1));
  const __m256 s8 = _mm256_add_ps(lo, hi);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline __mmask16 lanes16(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : n <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << n) - 1);
}

// exp(x) for x <= 0 on 16 lanes, within 2 ulp of expf (Cephes' expf: x = n ln2 + r, |r| <= ln2 / 2,
// a degree-6 polynomial in r, then 2^n by scalef, which flushes to 0 below the float range).
T512 inline __m512 exp512_nonpos(__m512 x) {
  x = _mm512_maskz_max_ps(kAll16, x, _mm512_set1_ps(-104.0f));
  const __m512 n = _mm512_maskz_roundscale_ps(kAll16, _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 e = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(kAll16, e, n);
}

// exp(x) for x <= 0 on 8 lanes (AVX2): the same Cephes reduction and polynomial as exp512_nonpos; 2^n is
// built in the exponent bits, so x is clamped to -87.3 (n >= -126, a normal float): below that the result
// is ~1e-38 where expf gives a denormal or 0, a difference that no caller can see next to 1.
T256 inline __m256 exp256_nonpos(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 e = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r), _mm256_set1_ps(1.0f));
  const __m256i pow2n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(e, _mm256_castsi256_ps(pow2n));
}

#endif  // RUSTASR_X86

}  // namespace cpu
}  // namespace rustasr
