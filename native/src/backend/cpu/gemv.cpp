#include "gemv.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "rustasr/engine.h"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define RUSTASR_X86 1
#include <cpuid.h>
#include <immintrin.h>
#define T256 __attribute__((target("avx2,fma")))
#define T512 __attribute__((target("avx512f,avx512bw,avx512vl")))
#define T512BF __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define TF16C __attribute__((target("avx,f16c")))
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

namespace rustasr {
namespace cpu {

// ------------------------------------------------------------------------------------------------
// CPU feature detection.

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512f: return "avx512f";
    case Isa::kAvx512bf16: return "avx512bf16";
    case Isa::kNeon: return "neon";
  }
  return "scalar";
}

namespace {
#if defined(RUSTASR_X86)
bool has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
bool has_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}
bool has_avx512bf16() { return has_avx512() && __builtin_cpu_supports("avx512bf16"); }
bool has_f16c() {
  // (Not every compiler knows __builtin_cpu_supports("f16c"): read CPUID.1:ECX bit 29 directly.)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__builtin_cpu_supports("avx") || !__get_cpuid(1, &a, &b, &c, &d)) return false;
  return (c & (1u << 29)) != 0;
}
#endif
}  // namespace

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return true;
#if defined(RUSTASR_X86)
    case Isa::kAvx2: return has_avx2();
    case Isa::kAvx512f: return has_avx512();
    case Isa::kAvx512bf16: return has_avx512bf16();
#else
    case Isa::kAvx2:
    case Isa::kAvx512f:
    case Isa::kAvx512bf16: return false;
#endif
    case Isa::kNeon:
#if defined(__aarch64__)
      return true;
#else
      return false;
#endif
  }
  return false;
}

Isa best_isa() {
  // avx512f and avx512bf16 both give float32 accuracy and both saturate memory bandwidth on decode;
  // avx512f is preferred (fewer instructions per byte, no activation split).
  for (Isa isa : {Isa::kAvx512f, Isa::kAvx512bf16, Isa::kAvx2, Isa::kNeon})
    if (isa_supported(isa)) return isa;
  return Isa::kScalar;
}

Isa parse_kernel(const std::string& name) {
  if (name.empty() || name == "auto") return best_isa();
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512f, Isa::kAvx512bf16, Isa::kNeon}) {
    if (name == isa_name(isa)) {
      if (!isa_supported(isa))
        throw Error(ErrorCode::kUnsupportedDevice,
                    "kernel \"" + name + "\" is not supported on this CPU or build");
      return isa;
    }
  }
  throw Error(ErrorCode::kInvalidArgument, "unknown kernel \"" + name +
                                               "\" (expected auto, avx512bf16, avx512f, avx2, neon or scalar)");
}

// ------------------------------------------------------------------------------------------------
// Activation preparation.

namespace {
inline uint16_t f32_to_bf16_rne(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
}  // namespace

void GemvInput::prepare(Isa isa, const float* x_, int64_t ldx_, int m_, int64_t cols_) {
  x = x_;
  ldx = ldx_;
  m = m_;
  cols = cols_;
  cols_pad = 0;
  if (isa != Isa::kAvx512bf16) return;
  cols_pad = (cols + 31) & ~int64_t(31);
  parts.assign(static_cast<size_t>(m * 3 * cols_pad), 0);
  for (int i = 0; i < m; ++i) {
    uint16_t* hi = parts.data() + (i * 3 + 0) * cols_pad;
    uint16_t* mid = parts.data() + (i * 3 + 1) * cols_pad;
    uint16_t* lo = parts.data() + (i * 3 + 2) * cols_pad;
    const float* xi = x + i * ldx;
    for (int64_t c = 0; c < cols; ++c) {
      // x = hi + mid + lo exactly (each subtraction is exact): the bf16 products W*part are exact.
      const float v = xi[c];
      hi[c] = f32_to_bf16_rne(v);
      const float r1 = v - bf16_to_f32(hi[c]);
      mid[c] = f32_to_bf16_rne(r1);
      const float r2 = r1 - bf16_to_f32(mid[c]);
      lo[c] = f32_to_bf16_rne(r2);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// BF16 kernels. Each computes a block of R weight rows (starting at r) against M activation rows.

namespace {

using BlockFn = void (*)(const GemvInput& in, const uint16_t* W, int64_t cols, int64_t r, float* y,
                         int64_t ldy);

template <int R, int M>
void blk_scalar(const GemvInput& in, const uint16_t* W, int64_t cols, int64_t r, float* y, int64_t ldy) {
  float acc[R][M][4] = {};
  const uint16_t* w[R];
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i) w[i] = W + (r + i) * cols;
  int64_t c = 0;
  for (; c + 4 <= cols; c += 4)
    RUSTASR_UNROLL
    for (int i = 0; i < R; ++i)
      RUSTASR_UNROLL
      for (int k = 0; k < 4; ++k) {
        const float wv = bf16_to_f32(w[i][c + k]);
        RUSTASR_UNROLL
        for (int m = 0; m < M; ++m) acc[i][m][k] += wv * in.x[m * in.ldx + c + k];
      }
  for (; c < cols; ++c)
    RUSTASR_UNROLL
    for (int i = 0; i < R; ++i) {
      const float wv = bf16_to_f32(w[i][c]);
      RUSTASR_UNROLL
      for (int m = 0; m < M; ++m) acc[i][m][0] += wv * in.x[m * in.ldx + c];
    }
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i)
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m)
      y[m * ldy + r + i] = (acc[i][m][0] + acc[i][m][1]) + (acc[i][m][2] + acc[i][m][3]);
}

#if defined(RUSTASR_X86)

#ifndef RUSTASR_PREFETCH_HINT
#define RUSTASR_PREFETCH_HINT _MM_HINT_T0
#endif
#ifndef RUSTASR_PREFETCH_AVX512
#define RUSTASR_PREFETCH_AVX512 1
#endif
constexpr auto kPrefetchHint = RUSTASR_PREFETCH_HINT;
constexpr bool kPrefetchAvx512 = RUSTASR_PREFETCH_AVX512;

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

template <int R, int M>
T256 void blk_avx2(const GemvInput& in, const uint16_t* W, int64_t cols, int64_t r, float* y, int64_t ldy) {
  if constexpr (R == 4 && M >= 3) {
    // 16 ymm registers: 4 rows x 3-4 activations would spill; run two 2-row blocks instead.
    blk_avx2<2, M>(in, W, cols, r, y, ldy);
    blk_avx2<2, M>(in, W, cols, r + 2, y, ldy);
    return;
  }
  constexpr int U = (R == 1) ? 4 : (R <= 4) ? 2 : 1;  // by R only: a row's sums do not depend on M
  __m256 acc[U][R][M];
  RUSTASR_UNROLL
  for (int u = 0; u < U; ++u)
    RUSTASR_UNROLL
    for (int i = 0; i < R; ++i)
      RUSTASR_UNROLL
      for (int m = 0; m < M; ++m) acc[u][i][m] = _mm256_setzero_ps();
  const uint16_t* w[R];
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i) w[i] = W + (r + i) * cols;
  const float* x = in.x;
  const int64_t ldx = in.ldx;
  int64_t c = 0;
  // Software prefetch of the next block of R rows (contiguous in memory), in step with this one.
  const char* next = reinterpret_cast<const char*>(W + (r + R) * cols);
  for (; c + 8 * U <= cols; c += 8 * U) {
    RUSTASR_UNROLL
    for (int l = 0; l < R * 8 * U * 2; l += 64) _mm_prefetch(next + R * c * 2 + l, kPrefetchHint);
    RUSTASR_UNROLL
    for (int u = 0; u < U; ++u) {
      __m256 wv[R];
      RUSTASR_UNROLL
      for (int i = 0; i < R; ++i) wv[i] = ld8_bf16(w[i] + c + 8 * u);
      RUSTASR_UNROLL
      for (int m = 0; m < M; ++m) {
        const __m256 xv = _mm256_loadu_ps(x + m * ldx + c + 8 * u);
        RUSTASR_UNROLL
        for (int i = 0; i < R; ++i) acc[u][i][m] = _mm256_fmadd_ps(wv[i], xv, acc[u][i][m]);
      }
    }
  }
  for (; c + 8 <= cols; c += 8) {
    __m256 wv[R];
    RUSTASR_UNROLL
    for (int i = 0; i < R; ++i) wv[i] = ld8_bf16(w[i] + c);
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m) {
      const __m256 xv = _mm256_loadu_ps(x + m * ldx + c);
      RUSTASR_UNROLL
      for (int i = 0; i < R; ++i) acc[0][i][m] = _mm256_fmadd_ps(wv[i], xv, acc[0][i][m]);
    }
  }
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i)
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m) {
      __m256 s = acc[0][i][m];
      RUSTASR_UNROLL
      for (int u = 1; u < U; ++u) s = _mm256_add_ps(s, acc[u][i][m]);
      float t = hsum256(s);
      for (int64_t k = c; k < cols; ++k) t += bf16_to_f32(w[i][k]) * x[m * ldx + k];
      y[m * ldy + r + i] = t;
    }
}

// (The maskz forms avoid GCC 12's false -Wuninitialized on the _mm512_undefined_* inside the plain ones.)
T512 inline __m512 ld16_bf16(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(static_cast<__mmask16>(0xFFFF), 
      _mm512_maskz_cvtepu16_epi32(static_cast<__mmask16>(0xFFFF),
                                  _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))),
      16));
}
T512 inline float hsum512(__m512 v) {
  const __m512d d = _mm512_castps_pd(v);
  const __m256 lo = _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(static_cast<__mmask8>(0xFF), d, 0));
  const __m256 hi = _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(static_cast<__mmask8>(0xFF), d, 1));
  const __m256 s8 = _mm256_add_ps(lo, hi);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
T512 inline __m512 ld16_bf16_mask(const uint16_t* p, __mmask16 k) {
  return _mm512_castsi512_ps(
      _mm512_maskz_slli_epi32(static_cast<__mmask16>(0xFFFF), _mm512_maskz_cvtepu16_epi32(static_cast<__mmask16>(0xFFFF), _mm256_maskz_loadu_epi16(k, p)), 16));
}

// R weight rows x M activation rows (x rows ldx apart), U accumulators per (weight row, activation row).
template <int R, int M, int U>
T512 void blk_avx512_core(const float* x, int64_t ldx, const uint16_t* W, int64_t cols, int64_t r, float* y,
                          int64_t ldy) {
  __m512 acc[U][R][M];
  RUSTASR_UNROLL
  for (int u = 0; u < U; ++u)
    RUSTASR_UNROLL
    for (int i = 0; i < R; ++i)
      RUSTASR_UNROLL
      for (int m = 0; m < M; ++m) acc[u][i][m] = _mm512_setzero_ps();
  const uint16_t* w[R];
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i) w[i] = W + (r + i) * cols;
  int64_t c = 0;
  const char* next = reinterpret_cast<const char*>(W + (r + R) * cols);
  for (; c + 16 * U <= cols; c += 16 * U) {
    if (kPrefetchAvx512) {
      RUSTASR_UNROLL
      for (int l = 0; l < R * 16 * U * 2; l += 64) _mm_prefetch(next + R * c * 2 + l, kPrefetchHint);
    }
    RUSTASR_UNROLL
    for (int u = 0; u < U; ++u) {
      __m512 wv[R];
      RUSTASR_UNROLL
      for (int i = 0; i < R; ++i) wv[i] = ld16_bf16(w[i] + c + 16 * u);
      RUSTASR_UNROLL
      for (int m = 0; m < M; ++m) {
        const __m512 xv = _mm512_loadu_ps(x + m * ldx + c + 16 * u);
        RUSTASR_UNROLL
        for (int i = 0; i < R; ++i) acc[u][i][m] = _mm512_fmadd_ps(wv[i], xv, acc[u][i][m]);
      }
    }
  }
  for (; c < cols; c += 16) {
    const int64_t left = cols - c;
    const __mmask16 k = left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
    __m512 wv[R];
    RUSTASR_UNROLL
    for (int i = 0; i < R; ++i) wv[i] = ld16_bf16_mask(w[i] + c, k);
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m) {
      const __m512 xv = _mm512_maskz_loadu_ps(k, x + m * ldx + c);
      RUSTASR_UNROLL
      for (int i = 0; i < R; ++i) acc[0][i][m] = _mm512_fmadd_ps(wv[i], xv, acc[0][i][m]);
    }
  }
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i)
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m) {
      __m512 s = acc[0][i][m];
      RUSTASR_UNROLL
      for (int u = 1; u < U; ++u) s = _mm512_add_ps(s, acc[u][i][m]);
      y[m * ldy + r + i] = hsum512(s);
    }
}

template <int R, int M>
T512 void blk_avx512(const GemvInput& in, const uint16_t* W, int64_t cols, int64_t r, float* y, int64_t ldy) {
  // U by R only: a row's sums do not depend on M.
  blk_avx512_core<R, M, (R == 1) ? 4 : (R <= 4) ? 2 : 1>(in.x, in.ldx, W, cols, r, y, ldy);
}

template <int R, int M>
T512BF void blk_avx512bf16(const GemvInput& in, const uint16_t* W, int64_t cols, int64_t r, float* y,
                           int64_t ldy) {
  // One accumulator set per activation part (R <= 4), to hide latency; by R only: a row's sums do not depend on M.
  constexpr int NA = (R <= 4) ? 3 : 1;
  __m512 acc[NA][R][M];
  RUSTASR_UNROLL
  for (int a = 0; a < NA; ++a)
    RUSTASR_UNROLL
    for (int i = 0; i < R; ++i)
      RUSTASR_UNROLL
      for (int m = 0; m < M; ++m) acc[a][i][m] = _mm512_setzero_ps();
  const uint16_t* w[R];
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i) w[i] = W + (r + i) * cols;
  const uint16_t* xp = in.parts.data();
  const int64_t cp = in.cols_pad;
  const char* next = reinterpret_cast<const char*>(W + (r + R) * cols);
  for (int64_t c = 0; c < cols; c += 32) {
    if (kPrefetchAvx512) {
      RUSTASR_UNROLL
      for (int l = 0; l < R * 32 * 2; l += 64) _mm_prefetch(next + R * c * 2 + l, kPrefetchHint);
    }
    const int64_t left = cols - c;
    __m512i wv[R];
    if (left >= 32) {
      RUSTASR_UNROLL
      for (int i = 0; i < R; ++i) wv[i] = _mm512_loadu_si512(w[i] + c);
    } else {
      const __mmask32 k = static_cast<__mmask32>((1u << left) - 1);
      RUSTASR_UNROLL
      for (int i = 0; i < R; ++i) wv[i] = _mm512_maskz_loadu_epi16(k, w[i] + c);
    }
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m)
      RUSTASR_UNROLL
      for (int p = 2; p >= 0; --p) {  // small parts first
        const __m512i xv = _mm512_loadu_si512(xp + (m * 3 + p) * cp + c);
        RUSTASR_UNROLL
        for (int i = 0; i < R; ++i)
          acc[p % NA][i][m] = _mm512_dpbf16_ps(acc[p % NA][i][m], (__m512bh)wv[i], (__m512bh)xv);
      }
  }
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i)
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m) {
      __m512 s = acc[NA - 1][i][m];
      RUSTASR_UNROLL
      for (int a = NA - 2; a >= 0; --a) s = _mm512_add_ps(s, acc[a][i][m]);
      y[m * ldy + r + i] = hsum512(s);
    }
}

#endif  // RUSTASR_X86

#if defined(__aarch64__)
template <int R, int M>
void blk_neon(const GemvInput& in, const uint16_t* W, int64_t cols, int64_t r, float* y, int64_t ldy) {
  constexpr int NA = (R <= 4) ? 2 : 1;  // by R only: a row's sums do not depend on M
  float32x4_t acc[NA][R][M];
  RUSTASR_UNROLL
  for (int a = 0; a < NA; ++a)
    RUSTASR_UNROLL
    for (int i = 0; i < R; ++i)
      RUSTASR_UNROLL
      for (int m = 0; m < M; ++m) acc[a][i][m] = vdupq_n_f32(0.f);
  const uint16_t* w[R];
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i) w[i] = W + (r + i) * cols;
  const float* x = in.x;
  const int64_t ldx = in.ldx;
  int64_t c = 0;
  for (; c + 8 <= cols; c += 8) {
    float32x4_t wlo[R], whi[R];
    RUSTASR_UNROLL
    for (int i = 0; i < R; ++i) {
      const uint16x8_t v = vld1q_u16(w[i] + c);
      wlo[i] = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(v), 16));
      whi[i] = vreinterpretq_f32_u32(vshll_high_n_u16(v, 16));
    }
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m) {
      const float32x4_t xlo = vld1q_f32(x + m * ldx + c);
      const float32x4_t xhi = vld1q_f32(x + m * ldx + c + 4);
      RUSTASR_UNROLL
      for (int i = 0; i < R; ++i) {
        acc[0][i][m] = vfmaq_f32(acc[0][i][m], wlo[i], xlo);
        acc[NA - 1][i][m] = vfmaq_f32(acc[NA - 1][i][m], whi[i], xhi);
      }
    }
  }
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i)
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m) {
      float32x4_t s = acc[0][i][m];
      if (NA > 1) s = vaddq_f32(s, acc[NA - 1][i][m]);
      float t = vaddvq_f32(s);
      for (int64_t k = c; k < cols; ++k) t += bf16_to_f32(w[i][k]) * x[m * ldx + k];
      y[m * ldy + r + i] = t;
    }
}
#endif

#define RUSTASR_BLOCK_TABLE(fn)                                                              \
  static const BlockFn kTable_##fn[2][kGemvMaxRows] = {                                      \
      {fn<4, 1>, fn<4, 2>, fn<4, 3>, fn<4, 4>}, {fn<1, 1>, fn<1, 2>, fn<1, 3>, fn<1, 4>}};

RUSTASR_BLOCK_TABLE(blk_scalar)
#if defined(RUSTASR_X86)
RUSTASR_BLOCK_TABLE(blk_avx2)
RUSTASR_BLOCK_TABLE(blk_avx512)
RUSTASR_BLOCK_TABLE(blk_avx512bf16)
#endif
#if defined(__aarch64__)
RUSTASR_BLOCK_TABLE(blk_neon)
#endif

const BlockFn (*block_table(Isa isa))[kGemvMaxRows] {
  switch (isa) {
#if defined(RUSTASR_X86)
    case Isa::kAvx2: return kTable_blk_avx2;
    case Isa::kAvx512f: return kTable_blk_avx512;
    case Isa::kAvx512bf16: return kTable_blk_avx512bf16;
#endif
#if defined(__aarch64__)
    case Isa::kNeon: return kTable_blk_neon;
#endif
    default: return kTable_blk_scalar;
  }
}

// ------------------------------------------------------------------------------------------------
// int8 kernels (DType::kI8: per-group scales). Float32 activations times the exact int8 values, summed
// per group in float32, then scaled: sum_g scale[r, g] * sum_{c in g} q[r, c] * x[c].

using BlockI8Fn = void (*)(const GemvInput& in, const int8_t* W, const float* S, int64_t cols, int64_t group,
                           int64_t r, float* y, int64_t ldy);

template <int R, int M>
void blk_i8_scalar(const GemvInput& in, const int8_t* W, const float* S, int64_t cols, int64_t group, int64_t r,
                   float* y, int64_t ldy) {
  const int64_t gpr = cols / group;
  float tot[R][M] = {};
  for (int64_t g = 0; g < gpr; ++g) {
    float acc[R][M][4] = {};
    const int64_t c0 = g * group, c1 = c0 + group;
    int64_t c = c0;
    for (; c + 4 <= c1; c += 4)
      RUSTASR_UNROLL
      for (int i = 0; i < R; ++i)
        RUSTASR_UNROLL
        for (int k = 0; k < 4; ++k) {
          const float wv = static_cast<float>(W[(r + i) * cols + c + k]);
          RUSTASR_UNROLL
          for (int m = 0; m < M; ++m) acc[i][m][k] += wv * in.x[m * in.ldx + c + k];
        }
    for (; c < c1; ++c)
      RUSTASR_UNROLL
      for (int i = 0; i < R; ++i) {
        const float wv = static_cast<float>(W[(r + i) * cols + c]);
        RUSTASR_UNROLL
        for (int m = 0; m < M; ++m) acc[i][m][0] += wv * in.x[m * in.ldx + c];
      }
    RUSTASR_UNROLL
    for (int i = 0; i < R; ++i) {
      const float sc = S[(r + i) * gpr + g];
      RUSTASR_UNROLL
      for (int m = 0; m < M; ++m)
        tot[i][m] += sc * ((acc[i][m][0] + acc[i][m][1]) + (acc[i][m][2] + acc[i][m][3]));
    }
  }
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i)
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m) y[m * ldy + r + i] = tot[i][m];
}

#if defined(RUSTASR_X86)
T256 inline __m256 ld8_i8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

template <int R, int M>
T256 void blk_i8_avx2(const GemvInput& in, const int8_t* W, const float* S, int64_t cols, int64_t group, int64_t r,
                      float* y, int64_t ldy) {
  if constexpr (R == 4 && M >= 3) {
    blk_i8_avx2<2, M>(in, W, S, cols, group, r, y, ldy);
    blk_i8_avx2<2, M>(in, W, S, cols, group, r + 2, y, ldy);
    return;
  }
  const int64_t gpr = cols / group;
  const float* x = in.x;
  const int64_t ldx = in.ldx;
  const int8_t* w[R];
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i) w[i] = W + (r + i) * cols;
  const char* next = reinterpret_cast<const char*>(W + (r + R) * cols);
  __m256 tot[R][M];
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i)
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m) tot[i][m] = _mm256_setzero_ps();
  float tail[R][M] = {};
  for (int64_t g = 0; g < gpr; ++g) {
    const int64_t c0 = g * group, c1 = c0 + group;
    __m256 acc[R][M];
    RUSTASR_UNROLL
    for (int i = 0; i < R; ++i)
      RUSTASR_UNROLL
      for (int m = 0; m < M; ++m) acc[i][m] = _mm256_setzero_ps();
    int64_t c = c0;
    for (; c + 8 <= c1; c += 8) {
      if ((c & 15) == 0)
        RUSTASR_UNROLL
        for (int l = 0; l < R * 16; l += 64) _mm_prefetch(next + R * c + l, kPrefetchHint);
      __m256 wv[R];
      RUSTASR_UNROLL
      for (int i = 0; i < R; ++i) wv[i] = ld8_i8(w[i] + c);
      RUSTASR_UNROLL
      for (int m = 0; m < M; ++m) {
        const __m256 xv = _mm256_loadu_ps(x + m * ldx + c);
        RUSTASR_UNROLL
        for (int i = 0; i < R; ++i) acc[i][m] = _mm256_fmadd_ps(wv[i], xv, acc[i][m]);
      }
    }
    RUSTASR_UNROLL
    for (int i = 0; i < R; ++i) {
      const float sc = S[(r + i) * gpr + g];
      const __m256 sv = _mm256_set1_ps(sc);
      RUSTASR_UNROLL
      for (int m = 0; m < M; ++m) {
        tot[i][m] = _mm256_fmadd_ps(acc[i][m], sv, tot[i][m]);
        float t = 0.f;
        for (int64_t k = c; k < c1; ++k) t += static_cast<float>(w[i][k]) * x[m * ldx + k];
        tail[i][m] += sc * t;
      }
    }
  }
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i)
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m) y[m * ldy + r + i] = hsum256(tot[i][m]) + tail[i][m];
}

T512 inline __m512 ld16_i8_mask(const int8_t* p, __mmask16 k) {
  return _mm512_maskz_cvtepi32_ps(static_cast<__mmask16>(0xFFFF), _mm512_maskz_cvtepi8_epi32(static_cast<__mmask16>(0xFFFF), _mm_maskz_loadu_epi8(k, p)));
}

template <int R, int M>
T512 void blk_i8_avx512(const GemvInput& in, const int8_t* W, const float* S, int64_t cols, int64_t group,
                        int64_t r, float* y, int64_t ldy) {
  const int64_t gpr = cols / group;
  const float* x = in.x;
  const int64_t ldx = in.ldx;
  const int8_t* w[R];
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i) w[i] = W + (r + i) * cols;
  const char* next = reinterpret_cast<const char*>(W + (r + R) * cols);
  __m512 tot[R][M];
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i)
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m) tot[i][m] = _mm512_setzero_ps();
  for (int64_t g = 0; g < gpr; ++g) {
    const int64_t c0 = g * group, c1 = c0 + group;
    __m512 acc[R][M];
    RUSTASR_UNROLL
    for (int i = 0; i < R; ++i)
      RUSTASR_UNROLL
      for (int m = 0; m < M; ++m) acc[i][m] = _mm512_setzero_ps();
    for (int64_t c = c0; c < c1; c += 16) {
      if (kPrefetchAvx512 && (R * 16 >= 64 || (c & 63) == 0))
        RUSTASR_UNROLL
        for (int l = 0; l < R * 16; l += 64) _mm_prefetch(next + R * c + l, kPrefetchHint);
      const int64_t left = c1 - c;
      const __mmask16 k = left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
      __m512 wv[R];
      RUSTASR_UNROLL
      for (int i = 0; i < R; ++i) wv[i] = ld16_i8_mask(w[i] + c, k);
      RUSTASR_UNROLL
      for (int m = 0; m < M; ++m) {
        const __m512 xv = _mm512_maskz_loadu_ps(k, x + m * ldx + c);
        RUSTASR_UNROLL
        for (int i = 0; i < R; ++i) acc[i][m] = _mm512_fmadd_ps(wv[i], xv, acc[i][m]);
      }
    }
    RUSTASR_UNROLL
    for (int i = 0; i < R; ++i) {
      const __m512 sv = _mm512_set1_ps(S[(r + i) * gpr + g]);
      RUSTASR_UNROLL
      for (int m = 0; m < M; ++m) tot[i][m] = _mm512_fmadd_ps(acc[i][m], sv, tot[i][m]);
    }
  }
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i)
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m) y[m * ldy + r + i] = hsum512(tot[i][m]);
}
#endif  // RUSTASR_X86

#if defined(__aarch64__)
template <int R, int M>
void blk_i8_neon(const GemvInput& in, const int8_t* W, const float* S, int64_t cols, int64_t group, int64_t r,
                 float* y, int64_t ldy) {
  const int64_t gpr = cols / group;
  const float* x = in.x;
  const int64_t ldx = in.ldx;
  const int8_t* w[R];
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i) w[i] = W + (r + i) * cols;
  float32x4_t tot[R][M];
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i)
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m) tot[i][m] = vdupq_n_f32(0.f);
  float tail[R][M] = {};
  for (int64_t g = 0; g < gpr; ++g) {
    const int64_t c0 = g * group, c1 = c0 + group;
    float32x4_t acc[R][M];
    RUSTASR_UNROLL
    for (int i = 0; i < R; ++i)
      RUSTASR_UNROLL
      for (int m = 0; m < M; ++m) acc[i][m] = vdupq_n_f32(0.f);
    int64_t c = c0;
    for (; c + 8 <= c1; c += 8) {
      float32x4_t wlo[R], whi[R];
      RUSTASR_UNROLL
      for (int i = 0; i < R; ++i) {
        const int16x8_t v = vmovl_s8(vld1_s8(w[i] + c));
        wlo[i] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(v)));
        whi[i] = vcvtq_f32_s32(vmovl_high_s16(v));
      }
      RUSTASR_UNROLL
      for (int m = 0; m < M; ++m) {
        const float32x4_t xlo = vld1q_f32(x + m * ldx + c);
        const float32x4_t xhi = vld1q_f32(x + m * ldx + c + 4);
        RUSTASR_UNROLL
        for (int i = 0; i < R; ++i) {
          acc[i][m] = vfmaq_f32(acc[i][m], wlo[i], xlo);
          acc[i][m] = vfmaq_f32(acc[i][m], whi[i], xhi);
        }
      }
    }
    RUSTASR_UNROLL
    for (int i = 0; i < R; ++i) {
      const float sc = S[(r + i) * gpr + g];
      RUSTASR_UNROLL
      for (int m = 0; m < M; ++m) {
        tot[i][m] = vfmaq_n_f32(tot[i][m], acc[i][m], sc);
        float t = 0.f;
        for (int64_t k = c; k < c1; ++k) t += static_cast<float>(w[i][k]) * x[m * ldx + k];
        tail[i][m] += sc * t;
      }
    }
  }
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i)
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m) y[m * ldy + r + i] = vaddvq_f32(tot[i][m]) + tail[i][m];
}
#endif

#define RUSTASR_I8_TABLE(fn)                                                                   \
  static const BlockI8Fn kTable_##fn[2][kGemvMaxRows] = {                                      \
      {fn<4, 1>, fn<4, 2>, fn<4, 3>, fn<4, 4>}, {fn<1, 1>, fn<1, 2>, fn<1, 3>, fn<1, 4>}};

RUSTASR_I8_TABLE(blk_i8_scalar)
#if defined(RUSTASR_X86)
RUSTASR_I8_TABLE(blk_i8_avx2)
RUSTASR_I8_TABLE(blk_i8_avx512)
#endif
#if defined(__aarch64__)
RUSTASR_I8_TABLE(blk_i8_neon)
#endif

const BlockI8Fn (*block_table_i8(Isa isa))[kGemvMaxRows] {
  switch (isa) {
#if defined(RUSTASR_X86)
    case Isa::kAvx2: return kTable_blk_i8_avx2;
    case Isa::kAvx512f:
    case Isa::kAvx512bf16: return kTable_blk_i8_avx512;
#endif
#if defined(__aarch64__)
    case Isa::kNeon: return kTable_blk_i8_neon;
#endif
    default: return kTable_blk_i8_scalar;
  }
}

// ------------------------------------------------------------------------------------------------
// int4 kernels (DType::kI4: blocks of `group` columns, one float32 scale each; layout in util/tensor.h).
// Float32 activations times the exact small integers q (-7 .. 7), summed per block in float32, then scaled:
// sum_g scale[r, g] * sum_{c in g} q[r, c] * x[c]. Each (weight row, activation row) has its own sums, so a
// row's result does not depend on the other rows of the call.

using BlockI4Fn = void (*)(const GemvInput& in, const uint8_t* W, const float* S, int64_t cols, int64_t group,
                           int64_t r, float* y, int64_t ldy);

template <int R, int M>
void blk_i4_scalar(const GemvInput& in, const uint8_t* W, const float* S, int64_t cols, int64_t group, int64_t r,
                   float* y, int64_t ldy) {
  const int64_t gpr = cols / group, half = group / 2, rb = cols / 2;
  float tot[R][M] = {};
  float q[32];
  for (int64_t g = 0; g < gpr; ++g) {
    RUSTASR_UNROLL
    for (int i = 0; i < R; ++i) {
      const uint8_t* b = W + (r + i) * rb + g * half;
      for (int64_t j = 0; j < half; ++j) {
        q[j] = static_cast<float>((b[j] & 15) - 8);
        q[half + j] = static_cast<float>((b[j] >> 4) - 8);
      }
      const float sc = S[(r + i) * gpr + g];
      RUSTASR_UNROLL
      for (int m = 0; m < M; ++m) {
        const float* xg = in.x + m * in.ldx + g * group;
        float acc[4] = {};
        for (int64_t c = 0; c < group; c += 4)
          RUSTASR_UNROLL
          for (int k = 0; k < 4; ++k) acc[k] += q[c + k] * xg[c + k];
        tot[i][m] += sc * ((acc[0] + acc[1]) + (acc[2] + acc[3]));
      }
    }
  }
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i)
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m) y[m * ldy + r + i] = tot[i][m];
}

#if defined(RUSTASR_X86)
// Blocks of 32 columns: 16 bytes zero-extended to 16 lanes; vpermps looks the low 4 bits of each lane up in a
// table of q = nibble - 8 (the low nibbles as they are, the high ones after a shift by 4: vpermps ignores the
// upper bits of its indices), two FMAs per block and activation row.
template <int R, int M>
T512 void blk_i4_avx512(const GemvInput& in, const uint8_t* W, const float* S, int64_t cols, int64_t group, int64_t r,
                        float* y, int64_t ldy) {
  (void)group;  // 32 (the dispatcher checks)
  const int64_t gpr = cols / 32, rb = cols / 2;
  const float* x = in.x;
  const int64_t ldx = in.ldx;
  const __m512 table = _mm512_setr_ps(-8.f, -7.f, -6.f, -5.f, -4.f, -3.f, -2.f, -1.f, 0.f, 1.f, 2.f, 3.f, 4.f, 5.f, 6.f, 7.f);
  const uint8_t* w[R];
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i) w[i] = W + (r + i) * rb;
  const char* next = reinterpret_cast<const char*>(W + (r + R) * rb);
  __m512 tot[R][M];
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i)
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m) tot[i][m] = _mm512_setzero_ps();
  for (int64_t g = 0; g < gpr; ++g) {
    if (kPrefetchAvx512 && (g & 3) == 0)
      RUSTASR_UNROLL
      for (int i = 0; i < R; ++i) _mm_prefetch(next + i * rb + g * 16, kPrefetchHint);
    __m512 lo[R], hi[R];
    RUSTASR_UNROLL
    for (int i = 0; i < R; ++i) {
      // (The maskz forms avoid GCC 12's false -Wmaybe-uninitialized on the _mm512_undefined_* in the plain ones.)
      constexpr __mmask16 all = static_cast<__mmask16>(0xFFFF);
      const __m512i z = _mm512_maskz_cvtepu8_epi32(all, _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[i] + g * 16)));
      lo[i] = _mm512_maskz_permutexvar_ps(all, z, table);
      hi[i] = _mm512_maskz_permutexvar_ps(all, _mm512_maskz_srli_epi32(all, z, 4), table);
    }
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m) {
      const __m512 xl = _mm512_loadu_ps(x + m * ldx + g * 32);
      const __m512 xh = _mm512_loadu_ps(x + m * ldx + g * 32 + 16);
      RUSTASR_UNROLL
      for (int i = 0; i < R; ++i) {
        __m512 acc = _mm512_mul_ps(lo[i], xl);
        acc = _mm512_fmadd_ps(hi[i], xh, acc);
        tot[i][m] = _mm512_fmadd_ps(acc, _mm512_set1_ps(S[(r + i) * gpr + g]), tot[i][m]);
      }
    }
  }
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i)
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m) y[m * ldy + r + i] = hsum512(tot[i][m]);
}
#endif  // RUSTASR_X86

#define RUSTASR_I4_TABLE(fn)                                                                   \
  static const BlockI4Fn kTable_##fn[2][kGemvMaxRows] = {                                      \
      {fn<4, 1>, fn<4, 2>, fn<4, 3>, fn<4, 4>}, {fn<1, 1>, fn<1, 2>, fn<1, 3>, fn<1, 4>}};

RUSTASR_I4_TABLE(blk_i4_scalar)
#if defined(RUSTASR_X86)
RUSTASR_I4_TABLE(blk_i4_avx512)
#endif

// ------------------------------------------------------------------------------------------------
// Float32 vector helpers.

float dot_scalar(const float* a, const float* b, int64_t n) {
  float s[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    RUSTASR_UNROLL
    for (int k = 0; k < 8; ++k) s[k] += a[i + k] * b[i + k];
  for (; i < n; ++i) s[0] += a[i] * b[i];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

#if defined(RUSTASR_X86)
T256 float dot_avx2(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float t = hsum256(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) t += a[i] * b[i];
  return t;
}
T256 void axpy_avx2(float a, const float* x, float* y, int64_t n) {
  const __m256 av = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}
T512 float dot_avx512(const float* a, const float* b, int64_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
  }
  for (; i < n; i += 16) {
    const int64_t left = n - i;
    const __mmask16 k = left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
    s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, a + i), _mm512_maskz_loadu_ps(k, b + i), s0);
  }
  return hsum512(_mm512_add_ps(s0, s1));
}
T512 void axpy_avx512(float a, const float* x, float* y, int64_t n) {
  const __m512 av = _mm512_set1_ps(a);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  if (i < n) {
    const __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, k, _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(k, x + i), _mm512_maskz_loadu_ps(k, y + i)));
  }
}
// Attention of G query heads that share one KV head (GQA), head_dim = 16 * NC: scores (per head the same
// two-accumulator dot as dot_avx512, so the same bits), softmax, then the weighted sum of value rows kept
// in NC * G registers instead of a load/store of the output per key (the axpy form). Each key and value
// row is read once for all G heads. The rows of a KV cache are kv_stride floats apart (often a page or
// more), which the hardware's stream prefetcher does not follow across pages: rows kPrefetchRows ahead
// are prefetched in software. sc: G * `limit` floats of scratch.
constexpr int64_t kPrefetchRows = 8;
template <int NC>
T512 inline void prefetch_row(const float* r) {
  RUSTASR_UNROLL
  for (int c = 0; c < NC; ++c) _mm_prefetch(reinterpret_cast<const char*>(r + 16 * c), _MM_HINT_T0);
}
template <int NC, int G>
T512 void attend_avx512(const float* q, const float* k, const float* v, int64_t limit, int64_t kv_stride,
                        float scale, float* sc, float* o) {
  constexpr int HD = 16 * NC;
  float mx[G];
  for (int g = 0; g < G; ++g) mx[g] = -INFINITY;
  for (int64_t j = 0; j < limit; ++j) {
    const float* kr = k + j * kv_stride;
    if (j + kPrefetchRows < limit) prefetch_row<NC>(kr + kPrefetchRows * kv_stride);
    __m512 s0[G], s1[G];
    RUSTASR_UNROLL
    for (int g = 0; g < G; ++g) s0[g] = s1[g] = _mm512_setzero_ps();
    RUSTASR_UNROLL
    for (int c = 0; c + 1 < NC; c += 2) {
      const __m512 k0 = _mm512_loadu_ps(kr + 16 * c), k1 = _mm512_loadu_ps(kr + 16 * c + 16);
      RUSTASR_UNROLL
      for (int g = 0; g < G; ++g) {
        s0[g] = _mm512_fmadd_ps(_mm512_loadu_ps(q + g * HD + 16 * c), k0, s0[g]);
        s1[g] = _mm512_fmadd_ps(_mm512_loadu_ps(q + g * HD + 16 * c + 16), k1, s1[g]);
      }
    }
    if constexpr (NC % 2 == 1) {
      const __m512 kl = _mm512_loadu_ps(kr + 16 * (NC - 1));
      RUSTASR_UNROLL
      for (int g = 0; g < G; ++g) s0[g] = _mm512_fmadd_ps(_mm512_loadu_ps(q + g * HD + 16 * (NC - 1)), kl, s0[g]);
    }
    RUSTASR_UNROLL
    for (int g = 0; g < G; ++g) {
      const float sj = hsum512(_mm512_add_ps(s0[g], s1[g])) * scale;
      sc[g * limit + j] = sj;
      mx[g] = std::max(mx[g], sj);
    }
  }
  double sum[G];
  for (int g = 0; g < G; ++g) {
    float* sg = sc + g * limit;
    double s = 0;
    for (int64_t j = 0; j < limit; ++j) {
      const float e = std::exp(sg[j] - mx[g]);
      sg[j] = e;
      s += e;
    }
    sum[g] = s;
  }
  __m512 acc[G][NC];
  RUSTASR_UNROLL
  for (int g = 0; g < G; ++g) {
    RUSTASR_UNROLL
    for (int c = 0; c < NC; ++c) acc[g][c] = _mm512_setzero_ps();
  }
  for (int64_t j = 0; j < limit; ++j) {
    const float* vr = v + j * kv_stride;
    if (j + kPrefetchRows < limit) prefetch_row<NC>(vr + kPrefetchRows * kv_stride);
    RUSTASR_UNROLL
    for (int c = 0; c < NC; ++c) {
      const __m512 x = _mm512_loadu_ps(vr + 16 * c);
      RUSTASR_UNROLL
      for (int g = 0; g < G; ++g) acc[g][c] = _mm512_fmadd_ps(_mm512_set1_ps(sc[g * limit + j]), x, acc[g][c]);
    }
  }
  RUSTASR_UNROLL
  for (int g = 0; g < G; ++g) {
    const __m512 inv = _mm512_set1_ps(static_cast<float>(1.0 / sum[g]));
    RUSTASR_UNROLL
    for (int c = 0; c < NC; ++c) _mm512_storeu_ps(o + g * HD + 16 * c, _mm512_mul_ps(acc[g][c], inv));
  }
}

// All-lanes masks: the maskz forms of the intrinsics below avoid GCC 12's false -Wmaybe-uninitialized on
// the _mm512_undefined_* inside the plain forms.
constexpr __mmask16 kAll16 = 0xFFFF;
constexpr __mmask8 kAll8 = 0xFF;

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

// The 8 sums of the 16 lanes of a[0..7], in one 8-lane vector (lane i = sum of a[i]).
T512 inline __m256 reduce8x16(const __m512* a) {
  __m512 l1[4], l2[2];
  for (int i = 0; i < 4; ++i)
    l1[i] = _mm512_add_ps(_mm512_maskz_unpacklo_ps(kAll16, a[2 * i], a[2 * i + 1]),
                          _mm512_maskz_unpackhi_ps(kAll16, a[2 * i], a[2 * i + 1]));
  for (int i = 0; i < 2; ++i) {
    const __m512d x = _mm512_castps_pd(l1[2 * i]), y = _mm512_castps_pd(l1[2 * i + 1]);
    l2[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_maskz_unpacklo_pd(kAll8, x, y)),
                          _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(kAll8, x, y)));
  }
  // l2[i], per 128-bit lane L: the lane-L partial sums of a[4i .. 4i+3]. l3 = [a0..3 (L0+L1), a0..3 (L2+L3),
  // a4..7 (L0+L1), a4..7 (L2+L3)]; p reorders it to [a0..3 (L0+L1), a4..7 (L0+L1), a0..3 (L2+L3), a4..7 (L2+L3)].
  const __m512 l3 = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(kAll16, l2[0], l2[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_maskz_shuffle_f32x4(kAll16, l2[0], l2[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512d p = _mm512_castps_pd(_mm512_maskz_shuffle_f32x4(kAll16, l3, l3, _MM_SHUFFLE(3, 1, 2, 0)));
  return _mm256_add_ps(_mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(kAll8, p, 0)),
                       _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(kAll8, p, 1)));
}

// Decode attention of one query row of 16 heads (G query heads per KV head, head_dim 16 * NC) over the
// key/value rows [j0, j1): the part one thread does when the cache is split by position (flash-decoding).
// The part is read in blocks of kPartBlock rows (512 KiB of keys at 8 KV heads of 128: they stay in L2
// while every head reads its slice), the next block prefetched while this one is used, so each part reads
// one contiguous range of the cache (a head-by-head walk over the whole cache reads 512 bytes per 4 KiB
// row, which the hardware prefetchers do not stream). Measured on Zen 5 at 860 cached rows x 28 layers:
// 8.0 ms per step with per-head tasks, 5.1 ms with this kernel (a plain read of the bytes: 2.9 ms); 32-row
// blocks took 6.2 ms. Per KV head the G query rows stay in
// registers and 8 / G key rows are scored at once, reduced together (reduce8x16). Per head: m = max
// score, sum = sum of exp(score - m) (double, in row order), o = the exp-weighted sum of value rows (not
// yet divided). sc: 16 * (j1 - j0) floats, row-major (a row's 16 head scores together).
constexpr int64_t kPartBlock = 128;
template <int NC, int G>
T512 void attend_part16_avx512(const float* q, const float* k, const float* v, int64_t j0, int64_t j1,
                               int64_t kv_stride, float scale, float* sc, float* o, float* m, double* sum) {
  constexpr int HD = 16 * NC, H = 16, KVH = H / G, R = 8 / G;
  static_assert(R * G == 8, "8 accumulators per step");
  const int64_t len = j1 - j0;
  // Prefetches the rows of the next block, one row per call, spread over the steps of this block.
  auto prefetch_next = [&](const float* base, int64_t b_end, int64_t& next_row) {
    if (next_row < j1 && next_row < b_end + kPartBlock) {
      prefetch_row<H * NC>(base + next_row * kv_stride);
      ++next_row;
    }
  };
  for (int64_t b = j0; b < j1; b += kPartBlock) {
    const int64_t be = std::min(j1, b + kPartBlock);
    int64_t next_row = be;
    for (int kh = 0; kh < KVH; ++kh) {
      __m512 qr[G][NC];
      RUSTASR_UNROLL
      for (int g = 0; g < G; ++g) {
        RUSTASR_UNROLL
        for (int c = 0; c < NC; ++c) qr[g][c] = _mm512_loadu_ps(q + (kh * G + g) * HD + 16 * c);
      }
      int64_t j = b;
      for (; j + R <= be; j += R) {
        prefetch_next(k, be, next_row);
        __m512 acc[8];
        RUSTASR_UNROLL
        for (int a = 0; a < 8; ++a) acc[a] = _mm512_setzero_ps();
        RUSTASR_UNROLL
        for (int r = 0; r < R; ++r) {
          const float* kp = k + (j + r) * kv_stride + kh * HD;
          RUSTASR_UNROLL
          for (int c = 0; c < NC; ++c) {
            const __m512 kv = _mm512_loadu_ps(kp + 16 * c);
            RUSTASR_UNROLL
            for (int g = 0; g < G; ++g) acc[r * G + g] = _mm512_fmadd_ps(qr[g][c], kv, acc[r * G + g]);
          }
        }
        alignas(32) float out8[8];
        _mm256_store_ps(out8, _mm256_mul_ps(reduce8x16(acc), _mm256_set1_ps(scale)));
        RUSTASR_UNROLL
        for (int r = 0; r < R; ++r) {
          RUSTASR_UNROLL
          for (int g = 0; g < G; ++g) sc[(j + r - j0) * H + kh * G + g] = out8[r * G + g];
        }
      }
      for (; j < be; ++j) {  // the block's last rows, one at a time
        const float* kp = k + j * kv_stride + kh * HD;
        RUSTASR_UNROLL
        for (int g = 0; g < G; ++g) {
          __m512 a = _mm512_setzero_ps();
          RUSTASR_UNROLL
          for (int c = 0; c < NC; ++c) a = _mm512_fmadd_ps(qr[g][c], _mm512_loadu_ps(kp + 16 * c), a);
          sc[(j - j0) * H + kh * G + g] = hsum512(a) * scale;
        }
      }
    }
  }
  __m512 mx = _mm512_set1_ps(-INFINITY);
  for (int64_t i = 0; i < len; ++i) mx = _mm512_maskz_max_ps(kAll16, mx, _mm512_loadu_ps(sc + i * H));
  _mm512_storeu_ps(m, mx);
  __m512d sum_lo = _mm512_setzero_pd(), sum_hi = _mm512_setzero_pd();
  for (int64_t i = 0; i < len; ++i) {
    const __m512 e = exp512_nonpos(_mm512_sub_ps(_mm512_loadu_ps(sc + i * H), mx));
    _mm512_storeu_ps(sc + i * H, e);
    const __m512d ed = _mm512_castps_pd(e);
    sum_lo = _mm512_add_pd(sum_lo, _mm512_maskz_cvtps_pd(kAll8, _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(kAll8, ed, 0))));
    sum_hi = _mm512_add_pd(sum_hi, _mm512_maskz_cvtps_pd(kAll8, _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(kAll8, ed, 1))));
  }
  _mm512_storeu_pd(sum, sum_lo);
  _mm512_storeu_pd(sum + 8, sum_hi);
  std::fill(o, o + H * HD, 0.f);
  for (int64_t b = j0; b < j1; b += kPartBlock) {
    const int64_t be = std::min(j1, b + kPartBlock);
    int64_t next_row = be;
    for (int kh = 0; kh < KVH; ++kh) {
      __m512 acc[G][NC];
      RUSTASR_UNROLL
      for (int g = 0; g < G; ++g) {
        RUSTASR_UNROLL
        for (int c = 0; c < NC; ++c) acc[g][c] = _mm512_loadu_ps(o + (kh * G + g) * HD + 16 * c);
      }
      for (int64_t j = b; j < be; ++j) {
        if (((j - b) & 1) == 0) prefetch_next(v, be, next_row);
        const float* vp = v + j * kv_stride + kh * HD;
        __m512 p[G];
        RUSTASR_UNROLL
        for (int g = 0; g < G; ++g) p[g] = _mm512_set1_ps(sc[(j - j0) * H + kh * G + g]);
        RUSTASR_UNROLL
        for (int c = 0; c < NC; ++c) {
          const __m512 x = _mm512_loadu_ps(vp + 16 * c);
          RUSTASR_UNROLL
          for (int g = 0; g < G; ++g) acc[g][c] = _mm512_fmadd_ps(p[g], x, acc[g][c]);
        }
      }
      RUSTASR_UNROLL
      for (int g = 0; g < G; ++g) {
        RUSTASR_UNROLL
        for (int c = 0; c < NC; ++c) _mm512_storeu_ps(o + (kh * G + g) * HD + 16 * c, acc[g][c]);
      }
    }
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
float dot_neon(const float* a, const float* b, int64_t n) {
  float32x4_t s0 = vdupq_n_f32(0.f), s1 = vdupq_n_f32(0.f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
    s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
  }
  float t = vaddvq_f32(vaddq_f32(s0, s1));
  for (; i < n; ++i) t += a[i] * b[i];
  return t;
}
void axpy_neon(float a, const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vld1q_f32(x + i), a));
  for (; i < n; ++i) y[i] += a * x[i];
}
void f16_row_neon(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(src + i))));
  for (; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}
#endif

// Generic path for F16 / F32 weights: one row at a time as float32, dotted with each activation row.
void rows_generic(Isa isa, const GemvInput& in, const Weight& w, int64_t r0, int64_t r1, float* y,
                  int64_t ldy) {
  const int64_t cols = w.cols;
  thread_local std::vector<float> buf;
  if (w.dtype != DType::kF32 && static_cast<int64_t>(buf.size()) < cols) buf.resize(static_cast<size_t>(cols));
  for (int64_t r = r0; r < r1; ++r) {
    const float* row;
    if (w.dtype == DType::kF32) {
      row = static_cast<const float*>(w.data) + r * cols;
    } else {
      convert_to_f32(w, r * cols, cols, buf.data());
      row = buf.data();
    }
    for (int m = 0; m < in.m; ++m) y[m * ldy + r] = dot_f32(isa, in.x + m * in.ldx, row, cols);
  }
}

}  // namespace

float dot_f32(Isa isa, const float* a, const float* b, int64_t n) {
  switch (isa) {
#if defined(RUSTASR_X86)
    case Isa::kAvx2: return dot_avx2(a, b, n);
    case Isa::kAvx512f:
    case Isa::kAvx512bf16: return dot_avx512(a, b, n);
#endif
#if defined(__aarch64__)
    case Isa::kNeon: return dot_neon(a, b, n);
#endif
    default: return dot_scalar(a, b, n);
  }
}

#if defined(RUSTASR_X86)
namespace {
template <int G>
T512 bool attend_avx512_dispatch(const float* q, const float* k, const float* v, int64_t limit, int64_t kv_stride,
                                 int64_t head_dim, float scale, float* scratch, float* out) {
  switch (head_dim) {
    case 16: attend_avx512<1, G>(q, k, v, limit, kv_stride, scale, scratch, out); return true;
    case 32: attend_avx512<2, G>(q, k, v, limit, kv_stride, scale, scratch, out); return true;
    case 48: attend_avx512<3, G>(q, k, v, limit, kv_stride, scale, scratch, out); return true;
    case 64: attend_avx512<4, G>(q, k, v, limit, kv_stride, scale, scratch, out); return true;
    case 80: attend_avx512<5, G>(q, k, v, limit, kv_stride, scale, scratch, out); return true;
    case 96: attend_avx512<6, G>(q, k, v, limit, kv_stride, scale, scratch, out); return true;
    case 128: attend_avx512<8, G>(q, k, v, limit, kv_stride, scale, scratch, out); return true;
    case 256:
      if constexpr (G == 1) {
        attend_avx512<16, 1>(q, k, v, limit, kv_stride, scale, scratch, out);
        return true;
      }
      return false;  // 32 accumulators: more than the register file
    default: return false;  // the generic loop
  }
}
}  // namespace
#endif

bool attend_f32(Isa isa, const float* q, const float* k, const float* v, int64_t limit, int64_t kv_stride,
                int64_t head_dim, int64_t group, float scale, float* scratch, float* out) {
  if (limit <= 0 || group <= 0) return false;
#if defined(RUSTASR_X86)
  if (isa == Isa::kAvx512f || isa == Isa::kAvx512bf16) {
    if (group == 2 && attend_avx512_dispatch<2>(q, k, v, limit, kv_stride, head_dim, scale, scratch, out)) return true;
    // Other group sizes (and head_dim 256 with two heads): one head at a time.
    if (!attend_avx512_dispatch<1>(q, k, v, limit, kv_stride, head_dim, scale, scratch, out)) return false;
    for (int64_t g = 1; g < group; ++g)
      attend_avx512_dispatch<1>(q + g * head_dim, k, v, limit, kv_stride, head_dim, scale, scratch,
                                out + g * head_dim);
    return true;
  }
#else
  (void)isa, (void)q, (void)k, (void)v, (void)kv_stride, (void)head_dim, (void)group, (void)scale, (void)scratch,
      (void)out;
#endif
  return false;
}

bool attend_part_available(Isa isa, int64_t head_dim, int64_t q_heads, int64_t kv_heads) {
#if defined(RUSTASR_X86)
  return (isa == Isa::kAvx512f || isa == Isa::kAvx512bf16) && q_heads == 16 && (kv_heads == 16 || kv_heads == 8) &&
         (head_dim == 64 || head_dim == 128);
#else
  (void)isa, (void)head_dim, (void)q_heads, (void)kv_heads;
  return false;
#endif
}

bool attend_part_f32(Isa isa, const float* q, const float* k, const float* v, int64_t j0, int64_t j1,
                     int64_t kv_stride, int64_t q_heads, int64_t kv_heads, int64_t head_dim, float scale, float* sc,
                     float* o, float* m, double* sum) {
  if (j1 <= j0 || !attend_part_available(isa, head_dim, q_heads, kv_heads)) return false;
#if defined(RUSTASR_X86)
  const bool g1 = kv_heads == 16;
  if (head_dim == 64) {
    if (g1) attend_part16_avx512<4, 1>(q, k, v, j0, j1, kv_stride, scale, sc, o, m, sum);
    else attend_part16_avx512<4, 2>(q, k, v, j0, j1, kv_stride, scale, sc, o, m, sum);
  } else {
    if (g1) attend_part16_avx512<8, 1>(q, k, v, j0, j1, kv_stride, scale, sc, o, m, sum);
    else attend_part16_avx512<8, 2>(q, k, v, j0, j1, kv_stride, scale, sc, o, m, sum);
  }
  return true;
#else
  (void)q, (void)k, (void)v, (void)kv_stride, (void)scale, (void)sc, (void)o, (void)m, (void)sum;
  return false;
#endif
}

void gelu_f32(Isa isa, float* x, int64_t n) {
#if defined(RUSTASR_X86)
  if (isa == Isa::kAvx512f || isa == Isa::kAvx512bf16) return gelu_avx512(x, n);
#else
  (void)isa;
#endif
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] * 0.5f * (1.0f + std::erf(x[i] * 0.70710678118654752440f));
}

void silu_mul_f32(Isa isa, const float* gate, const float* up, int64_t n, float* out) {
#if defined(RUSTASR_X86)
  if (isa == Isa::kAvx512f || isa == Isa::kAvx512bf16) return silu_mul_avx512(gate, up, n, out);
#else
  (void)isa;
#endif
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = (g / (1.0f + std::exp(-g))) * up[i];
  }
}

void axpy_f32(Isa isa, float a, const float* x, float* y, int64_t n) {
  switch (isa) {
#if defined(RUSTASR_X86)
    case Isa::kAvx2: axpy_avx2(a, x, y, n); return;
    case Isa::kAvx512f:
    case Isa::kAvx512bf16: axpy_avx512(a, x, y, n); return;
#endif
#if defined(__aarch64__)
    case Isa::kNeon: axpy_neon(a, x, y, n); return;
#endif
    default:
      for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
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
      static const bool avx512 = has_avx512(), avx2 = has_avx2();
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
      static const bool f16c = has_f16c();
      if (f16c) return f16_row_f16c(src, out, n);
#elif defined(__aarch64__)
      return f16_row_neon(src, out, n);
#endif
      for (int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(src[i]);
      return;
    }
  }
}

// ------------------------------------------------------------------------------------------------

void gemv_rows(Isa isa, const GemvInput& in, const Weight& w, int64_t r0, int64_t r1, float* y, int64_t ldy) {
  if (in.m <= 0 || r0 >= r1) return;
  if (w.dtype == DType::kI8) {
    const BlockI8Fn(*t8)[kGemvMaxRows] = block_table_i8(isa);
    const BlockI8Fn four8 = t8[0][in.m - 1], one8 = t8[1][in.m - 1];
    const int8_t* W8 = static_cast<const int8_t*>(w.data);
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) four8(in, W8, w.scales, w.cols, w.group, r, y, ldy);
    for (; r < r1; ++r) one8(in, W8, w.scales, w.cols, w.group, r, y, ldy);
    return;
  }
  if (w.dtype == DType::kI4) {
    const BlockI4Fn(*t4)[kGemvMaxRows] = kTable_blk_i4_scalar;
#if defined(RUSTASR_X86)
    if ((isa == Isa::kAvx512f || isa == Isa::kAvx512bf16) && w.group == 32) t4 = kTable_blk_i4_avx512;
#endif
    const BlockI4Fn four4 = t4[0][in.m - 1], one4 = t4[1][in.m - 1];
    const uint8_t* W4 = static_cast<const uint8_t*>(w.data);
    int64_t r = r0;
    // Four weight rows per block for one activation row; several: one weight row at a time (registers).
    if (in.m == 1)
      for (; r + 4 <= r1; r += 4) four4(in, W4, w.scales, w.cols, w.group, r, y, ldy);
    for (; r < r1; ++r) one4(in, W4, w.scales, w.cols, w.group, r, y, ldy);
    return;
  }
  if (w.dtype != DType::kBF16) return rows_generic(isa, in, w, r0, r1, y, ldy);
  const BlockFn(*table)[kGemvMaxRows] = block_table(isa);
  const BlockFn four = table[0][in.m - 1], one = table[1][in.m - 1];
  const uint16_t* W = static_cast<const uint16_t*>(w.data);
  int64_t r = r0;
  // One activation row (decode): the AVX-512F and AVX2 paths read one weight row at a time (a single
  // sequential stream per thread, 4x unrolled); measured faster than 4-row blocks (31 vs 40-50 ms per 0.6B
  // step here). The AVX512-BF16 path keeps its 4-row blocks, which measured faster for it.
  // Several activation rows (sessions decoding together, tiny prefills): one weight row at a time, with the
  // accumulators of the one-row kernel for each activation row, so that a row's result does not depend on
  // the other rows of the call (batched decoding is bit-identical to decoding alone; the kernels' unroll
  // depends on R only).
  const bool single_stream = in.m > 1 || isa == Isa::kAvx512f || isa == Isa::kAvx2;
  if (!single_stream)
    for (; r + 4 <= r1; r += 4) four(in, W, w.cols, r, y, ldy);

  for (; r < r1; ++r) one(in, W, w.cols, r, y, ldy);
}

namespace {
// Pieces per decode product: several per thread, handed out dynamically, so a thread the OS preempts (a
// shared machine) holds up at most a small piece while the others take the rest. RUSTASR_GEMV_CHUNKS
// overrides it (for experiments).
int64_t gemv_chunks(const ThreadPool& pool) {
  static const int64_t per_thread = [] {
    const char* e = std::getenv("RUSTASR_GEMV_CHUNKS");
    const long v = e ? std::strtol(e, nullptr, 10) : 0;
    return v > 0 ? static_cast<int64_t>(v) : int64_t(4);
  }();
  return per_thread * pool.size();
}
}  // namespace

void gemv_multi(ThreadPool& pool, Isa isa, const float* x, int64_t n, const Weight* const* ws, float* const* ys,
                int count) {
  if (n <= 0 || count <= 0) return;
  const int64_t cols = ws[0]->cols;
  for (int i = 0; i < count; ++i)
    if (ws[i]->cols != cols || cols == 0) {
      for (int j = 0; j < count; ++j) gemv(pool, isa, x, n, *ws[j], ys[j]);
      return;
    }
  const int64_t nblk = (n + kGemvMaxRows - 1) / kGemvMaxRows;
  std::vector<GemvInput> ins(static_cast<size_t>(nblk));
  for (int64_t b = 0; b < nblk; ++b) {
    const int m = static_cast<int>(std::min<int64_t>(kGemvMaxRows, n - b * kGemvMaxRows));
    ins[static_cast<size_t>(b)].prepare(isa, x + b * kGemvMaxRows * cols, cols, m, cols);
  }
  // Groups of 4 output rows of every weight, numbered one weight after the other.
  int64_t first[9] = {0};
  const int cnt = std::min(count, 8);
  for (int i = 0; i < cnt; ++i) first[i + 1] = first[i] + (ws[i]->rows + 3) / 4;
  int64_t bytes = 0;
  for (int i = 0; i < cnt; ++i) bytes += ws[i]->rows * cols * static_cast<int64_t>(dtype_size(ws[i]->dtype));
  const int64_t groups = first[cnt];
  const int64_t grain = std::max<int64_t>(1, (64 * 1024) / std::max<int64_t>(1, bytes * nblk / std::max<int64_t>(1, groups)));
  pool.parallel_for(
      groups,
      [&](int64_t gb, int64_t ge) {
        for (int i = 0; i < cnt; ++i) {
          const int64_t b0 = std::max(gb, first[i]), b1 = std::min(ge, first[i + 1]);
          if (b0 >= b1) continue;
          const Weight& w = *ws[i];
          const int64_t r0 = (b0 - first[i]) * 4, r1 = std::min(w.rows, (b1 - first[i]) * 4);
          for (int64_t b = 0; b < nblk; ++b)
            gemv_rows(isa, ins[static_cast<size_t>(b)], w, r0, r1, ys[i] + b * kGemvMaxRows * w.rows, w.rows);
        }
      },
      grain, gemv_chunks(pool));
  for (int i = cnt; i < count; ++i) gemv(pool, isa, x, n, *ws[i], ys[i]);
}

void gemv(ThreadPool& pool, Isa isa, const float* x, int64_t n, const Weight& w, float* y) {
  if (n <= 0 || w.rows <= 0) return;
  const int64_t cols = w.cols;
  if (cols == 0) {
    std::fill(y, y + n * w.rows, 0.f);
    return;
  }
  const int64_t nblk = (n + kGemvMaxRows - 1) / kGemvMaxRows;
  std::vector<GemvInput> ins(static_cast<size_t>(nblk));
  for (int64_t b = 0; b < nblk; ++b) {
    const int m = static_cast<int>(std::min<int64_t>(kGemvMaxRows, n - b * kGemvMaxRows));
    ins[static_cast<size_t>(b)].prepare(isa, x + b * kGemvMaxRows * cols, cols, m, cols);
  }
  // Work in groups of 4 rows; at least ~64 KiB of weights per piece so small matrices stay on one thread.
  const int64_t groups = (w.rows + 3) / 4;
  const int64_t bytes_per_group = 4 * cols * static_cast<int64_t>(dtype_size(w.dtype)) * nblk;
  const int64_t grain = std::max<int64_t>(1, (64 * 1024) / std::max<int64_t>(1, bytes_per_group));
  const int64_t rows = w.rows;
  pool.parallel_for(
      groups,
      [&](int64_t gb, int64_t ge) {
        const int64_t r0 = gb * 4, r1 = std::min(rows, ge * 4);
        for (int64_t b = 0; b < nblk; ++b)
          gemv_rows(isa, ins[static_cast<size_t>(b)], w, r0, r1, y + b * kGemvMaxRows * rows, rows);
      },
      grain, gemv_chunks(pool));
}

}  // namespace cpu
}  // namespace rustasr
