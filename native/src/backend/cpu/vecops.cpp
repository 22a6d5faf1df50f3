// Float32 vector helpers (vecops.h). dot and axpy are one body for every ISA (vecops_body.inc, the scheme of
// simd.h); GELU and SiLU have an AVX-512 vector form beside libm's; the weight-row upcasts are per ISA.
#include "vecops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "rustasr/engine.h"
#include "simd.h"

namespace rustasr {
namespace cpu {

// ---- one body per op: the ISA regions ----

namespace vec_scalar {
// Eight lanes in a plain array (the compiler vectorises what it can).
struct S {
  struct V {
    float v[8];
  };
  static constexpr int W = 8;
  static inline V zero() { return V{}; }
  static inline V set1(float a) {
    V r;
    for (float& x : r.v) x = a;
    return r;
  }
  static inline V load(const float* p) {
    V r;
    std::memcpy(r.v, p, sizeof r.v);
    return r;
  }
  static inline V loadn(const float* p, int64_t n) {
    V r{};
    std::memcpy(r.v, p, static_cast<size_t>(std::min<int64_t>(n, W)) * sizeof(float));
    return r;
  }
  static inline void store(float* p, const V& v) { std::memcpy(p, v.v, sizeof v.v); }
  static inline void storen(float* p, const V& v, int64_t n) {
    std::memcpy(p, v.v, static_cast<size_t>(std::min<int64_t>(n, W)) * sizeof(float));
  }
  static inline V fma(const V& a, const V& b, const V& c) {
    V r;
    for (int i = 0; i < W; ++i) r.v[i] = a.v[i] * b.v[i] + c.v[i];
    return r;
  }
  static inline V add(const V& a, const V& b) {
    V r;
    for (int i = 0; i < W; ++i) r.v[i] = a.v[i] + b.v[i];
    return r;
  }
  static inline float hsum(const V& v) {
    return ((v.v[0] + v.v[1]) + (v.v[2] + v.v[3])) + ((v.v[4] + v.v[5]) + (v.v[6] + v.v[7]));
  }
};
#include "vecops_body.inc"
}  // namespace vec_scalar

#if defined(RUSTASR_X86)
RUSTASR_BEGIN_AVX512
namespace vec_avx512 {
struct S {
  using V = __m512;
  static constexpr int W = 16;
  static inline V zero() { return _mm512_setzero_ps(); }
  static inline V set1(float a) { return _mm512_set1_ps(a); }
  static inline V load(const float* p) { return _mm512_loadu_ps(p); }
  static inline V loadn(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(lanes16(n), p); }
  static inline void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static inline void storen(float* p, V v, int64_t n) { _mm512_mask_storeu_ps(p, lanes16(n), v); }
  static inline V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static inline V add(V a, V b) { return _mm512_add_ps(a, b); }
  static inline float hsum(V v) { return hsum512(v); }
};
#include "vecops_body.inc"
}  // namespace vec_avx512
RUSTASR_END_TARGET

RUSTASR_BEGIN_AVX2
namespace vec_avx2 {
struct S {
  using V = __m256;
  static constexpr int W = 8;
  static inline __m256i mask(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::min<int64_t>(n, W))), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static inline V zero() { return _mm256_setzero_ps(); }
  static inline V set1(float a) { return _mm256_set1_ps(a); }
  static inline V load(const float* p) { return _mm256_loadu_ps(p); }
  static inline V loadn(const float* p, int64_t n) { return _mm256_maskload_ps(p, mask(n)); }
  static inline void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static inline void storen(float* p, V v, int64_t n) { _mm256_maskstore_ps(p, mask(n), v); }
  static inline V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static inline V add(V a, V b) { return _mm256_add_ps(a, b); }
  static inline float hsum(V v) { return hsum256(v); }
};
#include "vecops_body.inc"
}  // namespace vec_avx2
RUSTASR_END_TARGET
#endif

#if defined(__aarch64__)
namespace vec_neon {
struct S {
  using V = float32x4_t;
  static constexpr int W = 4;
  static inline V zero() { return vdupq_n_f32(0.f); }
  static inline V set1(float a) { return vdupq_n_f32(a); }
  static inline V load(const float* p) { return vld1q_f32(p); }
  static inline V loadn(const float* p, int64_t n) {
    float t[4] = {0.f, 0.f, 0.f, 0.f};
    std::memcpy(t, p, static_cast<size_t>(std::min<int64_t>(n, W)) * sizeof(float));
    return vld1q_f32(t);
  }
  static inline void store(float* p, V v) { vst1q_f32(p, v); }
  static inline void storen(float* p, V v, int64_t n) {
    float t[4];
    vst1q_f32(t, v);
    std::memcpy(p, t, static_cast<size_t>(std::min<int64_t>(n, W)) * sizeof(float));
  }
  static inline V fma(V a, V b, V c) { return vfmaq_f32(c, a, b); }
  static inline V add(V a, V b) { return vaddq_f32(a, b); }
  static inline float hsum(V v) { return vaddvq_f32(v); }
};
#include "vecops_body.inc"
}  // namespace vec_neon
#endif

// ---- per-ISA forms ----

namespace {

#if defined(RUSTASR_X86)
// GELU (the exact, erf form: 0.5 x (1 + erf(x / sqrt 2))) on 16 lanes. erf by Abramowitz & Stegun 7.1.26:
// erf(a) = 1 - t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) exp(-a^2), t = 1 / (1 + p a), a = |z|, within 1.5e-7
// of erf, so the GELU within 0.75e-7 |x| of the libm form (the golden encoder tolerance is 1e-4 relative;
// the parity checks measure the difference).
T512 inline __m512 gelu16(__m512 v) {
  const __m512 z = _mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752440f));
  const __m512 a = _mm512_abs_ps(z);
  const __m512 t =
      _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(a, _mm512_set1_ps(0.3275911f), _mm512_set1_ps(1.0f)));
  __m512 p = _mm512_set1_ps(1.061405429f);
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
  p = _mm512_mul_ps(p, t);
  const __m512 e = exp512_nonpos(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(a, a)));
  const __m512 erf_abs = _mm512_fnmadd_ps(p, e, _mm512_set1_ps(1.0f));
  // erf(z) = sign(z) erf(|z|): the sign bit of z onto erf_abs (>= 0).
  const __m512 erf = _mm512_castsi512_ps(_mm512_or_si512(
      _mm512_castps_si512(erf_abs),
      _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32(static_cast<int>(0x80000000u)))));
  return _mm512_mul_ps(_mm512_mul_ps(v, _mm512_set1_ps(0.5f)), _mm512_add_ps(erf, _mm512_set1_ps(1.0f)));
}
T512 void gelu_avx512(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, gelu16(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(x + i, k, gelu16(_mm512_maskz_loadu_ps(k, x + i)));
  }
}

// silu(g) * u on 16 lanes: g * sigmoid(g), sigmoid from e = exp(-|g|) (an argument <= 0, so exp512_nonpos):
// 1 / (1 + e) for g >= 0, e / (1 + e) below; within a few ulp of g / (1 + expf(-g)).
T512 inline __m512 silu_mul16(__m512 g, __m512 u) {
  const __m512 e = exp512_nonpos(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(g)));
  const __m512 den = _mm512_add_ps(_mm512_set1_ps(1.0f), e);
  const __mmask16 neg = _mm512_cmp_ps_mask(g, _mm512_setzero_ps(), _CMP_LT_OQ);
  const __m512 num = _mm512_mask_blend_ps(neg, _mm512_set1_ps(1.0f), e);
  return _mm512_mul_ps(_mm512_mul_ps(g, _mm512_div_ps(num, den)), u);
}
T512 void silu_mul_avx512(const float* gate, const float* up, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, silu_mul16(_mm512_loadu_ps(gate + i), _mm512_loadu_ps(up + i)));
  if (i < n) {
    const __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(out + i, k, silu_mul16(_mm512_maskz_loadu_ps(k, gate + i), _mm512_maskz_loadu_ps(k, up + i)));
  }
}

// The same GELU and silu * u on 8 lanes (AVX2), with exp256_nonpos; the tails through a masked load / store.
T256 inline __m256 gelu8(__m256 v) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 z = _mm256_mul_ps(v, _mm256_set1_ps(0.70710678118654752440f));
  const __m256 a = _mm256_andnot_ps(sign, z);
  const __m256 t =
      _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(a, _mm256_set1_ps(0.3275911f), _mm256_set1_ps(1.0f)));
  __m256 p = _mm256_set1_ps(1.061405429f);
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
  p = _mm256_mul_ps(p, t);
  const __m256 e = exp256_nonpos(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(a, a)));
  const __m256 erf_abs = _mm256_fnmadd_ps(p, e, _mm256_set1_ps(1.0f));
  const __m256 erf = _mm256_or_ps(erf_abs, _mm256_and_ps(z, sign));
  return _mm256_mul_ps(_mm256_mul_ps(v, _mm256_set1_ps(0.5f)), _mm256_add_ps(erf, _mm256_set1_ps(1.0f)));
}
T256 void gelu_avx2(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, gelu8(_mm256_loadu_ps(x + i)));
  if (i < n) {
    const __m256i k = vec_avx2::S::mask(n - i);
    _mm256_maskstore_ps(x + i, k, gelu8(_mm256_maskload_ps(x + i, k)));
  }
}
T256 inline __m256 silu_mul8(__m256 g, __m256 u) {
  const __m256 e = exp256_nonpos(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_andnot_ps(_mm256_set1_ps(-0.0f), g)));
  const __m256 den = _mm256_add_ps(_mm256_set1_ps(1.0f), e);
  const __m256 neg = _mm256_cmp_ps(g, _mm256_setzero_ps(), _CMP_LT_OQ);
  const __m256 num = _mm256_blendv_ps(_mm256_set1_ps(1.0f), e, neg);
  return _mm256_mul_ps(_mm256_mul_ps(g, _mm256_div_ps(num, den)), u);
}
T256 void silu_mul_avx2(const float* gate, const float* up, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, silu_mul8(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
  if (i < n) {
    const __m256i k = vec_avx2::S::mask(n - i);
    _mm256_maskstore_ps(out + i, k, silu_mul8(_mm256_maskload_ps(gate + i, k), _mm256_maskload_ps(up + i, k)));
  }
}

T512 void bf16_row_avx512(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, ld16_bf16(src + i));
  if (i < n) {
    const __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(dst + i, k, ld16_bf16_mask(src + i, k));
  }
}
T256 void bf16_row_avx2(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, ld8_bf16(src + i));
  for (; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}
TF16C void f16_row_f16c(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}
#endif

#if defined(__aarch64__)
void f16_row_neon(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(src + i))));
  for (; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}
#endif

}  // namespace

float dot_f32(Isa isa, const float* a, const float* b, int64_t n) {
  switch (isa) {
#if defined(RUSTASR_X86)
    case Isa::kAvx2: return vec_avx2::dot(a, b, n);
    case Isa::kAvx512f:
    case Isa::kAvx512bf16: return vec_avx512::dot(a, b, n);
#endif
#if defined(__aarch64__)
    case Isa::kNeon: return vec_neon::dot(a, b, n);
#endif
    default: return vec_scalar::dot(a, b, n);
  }
}

void axpy_f32(Isa isa, float a, const float* x, float* y, int64_t n) {
  switch (isa) {
#if defined(RUSTASR_X86)
    case Isa::kAvx2: return vec_avx2::axpy(a, x, y, n);
    case Isa::kAvx512f:
    case Isa::kAvx512bf16: return vec_avx512::axpy(a, x, y, n);
#endif
#if defined(__aarch64__)
    case Isa::kNeon: return vec_neon::axpy(a, x, y, n);
#endif
    default: return vec_scalar::axpy(a, x, y, n);
  }
}

void gelu_f32(Isa isa, float* x, int64_t n) {
#if defined(RUSTASR_X86)
  if (isa == Isa::kAvx512f || isa == Isa::kAvx512bf16) return gelu_avx512(x, n);
  if (isa == Isa::kAvx2) return gelu_avx2(x, n);
#else
  (void)isa;
#endif
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] * 0.5f * (1.0f + std::erf(x[i] * 0.70710678118654752440f));
}

void silu_mul_f32(Isa isa, const float* gate, const float* up, int64_t n, float* out) {
#if defined(RUSTASR_X86)
  if (isa == Isa::kAvx512f || isa == Isa::kAvx512bf16) return silu_mul_avx512(gate, up, n, out);
  if (isa == Isa::kAvx2) return silu_mul_avx2(gate, up, n, out);
#else
  (void)isa;
#endif
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = (g / (1.0f + std::exp(-g))) * up[i];
  }
}

void convert_to_f32(const Weight& w, int64_t offset, int64_t n, float* out) {
  switch (w.dtype) {
    case DType::kF32:
      std::memcpy(out, static_cast<const float*>(w.data) + offset, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::kBF16: {
      const uint16_t* src = static_cast<const uint16_t*>(w.data) + offset;
#if defined(RUSTASR_X86)
      static const bool avx512 = cpu_has_avx512(), avx2 = cpu_has_avx2();
      if (avx512) return bf16_row_avx512(src, out, n);
      if (avx2) return bf16_row_avx2(src, out, n);
#endif
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(src[i]);
      return;
    }
    case DType::kI4:
      for (int64_t i = 0; i < n; ++i) out[i] = weight_at(w, offset + i);
      return;
    case DType::kI8: {
      // Runs of one group share a scale: out = q * scale.
      const int8_t* src = static_cast<const int8_t*>(w.data);
      const int64_t gpr = w.cols / w.group;
      int64_t i = 0;
      while (i < n) {
        const int64_t e = offset + i, row = e / w.cols, col = e % w.cols;
        const int64_t run = std::min(n - i, w.group - col % w.group);
        const float sc = w.scales[row * gpr + col / w.group];
        for (int64_t k = 0; k < run; ++k) out[i + k] = static_cast<float>(src[e + k]) * sc;
        i += run;
      }
      return;
    }
    case DType::kF16: {
      const uint16_t* src = static_cast<const uint16_t*>(w.data) + offset;
#if defined(RUSTASR_X86)
      static const bool f16c = cpu_has_f16c();
      if (f16c) return f16_row_f16c(src, out, n);
#elif defined(__aarch64__)
      return f16_row_neon(src, out, n);
#endif
      for (int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(src[i]);
      return;
    }
  }
}

}  // namespace cpu
}  // namespace rustasr
