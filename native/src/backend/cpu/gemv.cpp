// Matrix-vector kernels of the CPU backend (gemv.h): BF16, int8 and int4 weights read in place, one block
// body per ISA (their block shapes follow each register file; see simd.h).
#include "gemv.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "rustasr/engine.h"
#include "simd.h"
#include "vecops.h"

namespace rustasr {
namespace cpu {

namespace {
// a * b + c in the portable kernels, fused exactly where the CPU fuses cheaply (aarch64): written out, so that
// the compiler's contraction of a * b + c (which may differ between the instantiations of one kernel for 1 and
// for 4 activation rows) cannot make a row's result depend on the other rows of the call.
inline float madd(float a, float b, float c) {
#if defined(__FP_FAST_FMAF)
  return std::fmaf(a, b, c);
#else
  return a * b + c;
#endif
}
}  // namespace

// ------------------------------------------------------------------------------------------------
// Activation preparation.

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
        for (int m = 0; m < M; ++m) acc[i][m][k] = madd(wv, in.x[m * in.ldx + c + k], acc[i][m][k]);
      }
  for (; c < cols; ++c)
    RUSTASR_UNROLL
    for (int i = 0; i < R; ++i) {
      const float wv = bf16_to_f32(w[i][c]);
      RUSTASR_UNROLL
      for (int m = 0; m < M; ++m) acc[i][m][0] = madd(wv, in.x[m * in.ldx + c], acc[i][m][0]);
    }
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i)
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m)
      y[m * ldy + r + i] = (acc[i][m][0] + acc[i][m][1]) + (acc[i][m][2] + acc[i][m][3]);
}

#if defined(RUSTASR_X86)



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
  // The next block of R rows (contiguous in memory), prefetched in step with this one where kPrefetchAvx2.
  const char* next = reinterpret_cast<const char*>(W + (r + R) * cols);
  for (; c + 8 * U <= cols; c += 8 * U) {
    // No software prefetch on AVX2 by default: one row at a time is a single sequential stream, which the
    // hardware prefetchers follow; on Zen 3 the prefetch instructions held the loads back (a 0.6B-shaped
    // sweep of 28 layers + lm_head in 2 MiB pages, 2 threads, alternating builds: 1.13-1.50, median ~1.2x the
    // time of a plain read of the same bytes, against 1.26-1.74, median ~1.36x, with them). The 4-row int8 /
    // int4 kernels keep theirs (without them, same sweep: int8 2.2-3.0x instead of 1.2-1.5x, int4 3.3-4.4x
    // instead of 1.8-3.5x).
    if constexpr (kPrefetchAvx2)
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
      for (int64_t k = c; k < cols; ++k) t = std::fmaf(bf16_to_f32(w[i][k]), x[m * ldx + k], t);
      y[m * ldy + r + i] = t;
    }
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
  // Two accumulators per (weight row, activation row) for every R used (1, and 3 for several activation rows
  // against wide weights, see gemv_rows): a row's sums depend on neither R nor M, so batched rows are
  // bit-identical to a row alone. (Four for R = 1 measured no faster for decode, and 3 x 4 x 4 would not
  // fit the 32 registers.)
  blk_avx512_core<R, M, (R <= 4) ? 2 : 1>(in.x, in.ldx, W, cols, r, y, ldy);
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
      for (int64_t k = c; k < cols; ++k) t = std::fmaf(bf16_to_f32(w[i][k]), x[m * ldx + k], t);
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
          for (int m = 0; m < M; ++m) acc[i][m][k] = madd(wv, in.x[m * in.ldx + c + k], acc[i][m][k]);
        }
    for (; c < c1; ++c)
      RUSTASR_UNROLL
      for (int i = 0; i < R; ++i) {
        const float wv = static_cast<float>(W[(r + i) * cols + c]);
        RUSTASR_UNROLL
        for (int m = 0; m < M; ++m) acc[i][m][0] = madd(wv, in.x[m * in.ldx + c], acc[i][m][0]);
      }
    RUSTASR_UNROLL
    for (int i = 0; i < R; ++i) {
      const float sc = S[(r + i) * gpr + g];
      RUSTASR_UNROLL
      for (int m = 0; m < M; ++m)
        tot[i][m] = madd(sc, (acc[i][m][0] + acc[i][m][1]) + (acc[i][m][2] + acc[i][m][3]), tot[i][m]);
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

// kTail: the group size is not a multiple of 8 (each group ends in a scalar tail). Without it the per-group
// code is the scale FMA alone; the tail sums stay 0, so y = hsum + 0 as with them.
template <int R, int M, bool kTail>
T256 void blk_i8_avx2_body(const GemvInput& in, const int8_t* W, const float* S, int64_t cols, int64_t group,
                           int64_t r, float* y, int64_t ldy) {
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
        __m256 xv = _mm256_loadu_ps(x + m * ldx + c);
        // One load of x for the R rows: left to itself the compiler folds it into every FMA (R loads).
        if constexpr (M > 1) RUSTASR_IN_REGISTER(xv);
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
        if constexpr (kTail) {
          float t = 0.f;
          for (int64_t k = c; k < c1; ++k) t = std::fmaf(static_cast<float>(w[i][k]), x[m * ldx + k], t);
          tail[i][m] = std::fmaf(sc, t, tail[i][m]);
        }
      }
    }
  }
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i)
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m) y[m * ldy + r + i] = hsum256(tot[i][m]) + tail[i][m];
}

template <int R, int M>
T256 void blk_i8_avx2(const GemvInput& in, const int8_t* W, const float* S, int64_t cols, int64_t group, int64_t r,
                      float* y, int64_t ldy) {
  if constexpr (R == 4 && M >= 3) {
    // 16 ymm registers: 4 rows x 3-4 activations would spill the accumulators; two 2-row blocks instead.
    blk_i8_avx2<2, M>(in, W, S, cols, group, r, y, ldy);
    blk_i8_avx2<2, M>(in, W, S, cols, group, r + 2, y, ldy);
    return;
  }
  if (group % 8 == 0)
    blk_i8_avx2_body<R, M, false>(in, W, S, cols, group, r, y, ldy);
  else
    blk_i8_avx2_body<R, M, true>(in, W, S, cols, group, r, y, ldy);
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
        for (int64_t k = c; k < c1; ++k) t = std::fmaf(static_cast<float>(w[i][k]), x[m * ldx + k], t);
        tail[i][m] = std::fmaf(sc, t, tail[i][m]);
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
          for (int k = 0; k < 4; ++k) acc[k] = madd(q[c + k], xg[c + k], acc[k]);
        tot[i][m] = madd(sc, (acc[0] + acc[1]) + (acc[2] + acc[3]), tot[i][m]);
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

// Blocks of 32 columns on 256-bit vectors: bytes 0-7 and 8-15 of a block zero-extended to 8 lanes each
// (vpmovzxbd from memory); the low nibbles are columns 0-15, the high ones (after a shift by 4) columns 16-31;
// q = nibble - 8 as exact integers, converted exactly to float32. Per (weight row, activation row) and block:
// one multiply and three FMAs in column order, then tot += blocksum * scale (8 lanes), one horizontal sum at
// the end: the same instructions in the same order for every R and M, so a row's result depends on neither.
template <int R, int M>
T256 void blk_i4_avx2(const GemvInput& in, const uint8_t* W, const float* S, int64_t cols, int64_t group, int64_t r,
                      float* y, int64_t ldy) {
  if constexpr (R == 4 && M >= 3) {
    // 16 ymm registers: 4 x 3-4 accumulators beside the decoded block would spill; two 2-row blocks instead.
    blk_i4_avx2<2, M>(in, W, S, cols, group, r, y, ldy);
    blk_i4_avx2<2, M>(in, W, S, cols, group, r + 2, y, ldy);
    return;
  }
  (void)group;  // 32 (the dispatcher checks)
  const int64_t gpr = cols / 32, rb = cols / 2;
  const float* x = in.x;
  const int64_t ldx = in.ldx;
  const __m256i low4 = _mm256_set1_epi32(15), eight = _mm256_set1_epi32(8);
  const uint8_t* w[R];
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i) w[i] = W + (r + i) * rb;
  const char* next = reinterpret_cast<const char*>(W + (r + R) * rb);
  __m256 tot[R][M];
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i)
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m) tot[i][m] = _mm256_setzero_ps();
  for (int64_t g = 0; g < gpr; ++g) {
    // Software prefetch of the next R rows, one line of each every 4 blocks (measured: helps from memory).
    if ((g & 3) == 0)
      RUSTASR_UNROLL
      for (int i = 0; i < R; ++i) _mm_prefetch(next + i * rb + g * 16, kPrefetchHint);
    RUSTASR_UNROLL
    for (int i = 0; i < R; ++i) {
      const uint8_t* b = w[i] + g * 16;
      const __m256i z0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b)));
      const __m256i z1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 8)));
      const __m256 q0 = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(z0, low4), eight));  // columns 0-7
      const __m256 q1 = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(z1, low4), eight));  // 8-15
      const __m256 q2 = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(z0, 4), eight));    // 16-23
      const __m256 q3 = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(z1, 4), eight));    // 24-31
      const __m256 sv = _mm256_set1_ps(S[(r + i) * gpr + g]);
      RUSTASR_UNROLL
      for (int m = 0; m < M; ++m) {
        const float* xg = x + m * ldx + g * 32;
        __m256 acc = _mm256_mul_ps(q0, _mm256_loadu_ps(xg));
        acc = _mm256_fmadd_ps(q1, _mm256_loadu_ps(xg + 8), acc);
        acc = _mm256_fmadd_ps(q2, _mm256_loadu_ps(xg + 16), acc);
        acc = _mm256_fmadd_ps(q3, _mm256_loadu_ps(xg + 24), acc);
        tot[i][m] = _mm256_fmadd_ps(acc, sv, tot[i][m]);
      }
    }
  }
  RUSTASR_UNROLL
  for (int i = 0; i < R; ++i)
    RUSTASR_UNROLL
    for (int m = 0; m < M; ++m) y[m * ldy + r + i] = hsum256(tot[i][m]);
}
#endif  // RUSTASR_X86

#define RUSTASR_I4_TABLE(fn)                                                                   \
  static const BlockI4Fn kTable_##fn[2][kGemvMaxRows] = {                                      \
      {fn<4, 1>, fn<4, 2>, fn<4, 3>, fn<4, 4>}, {fn<1, 1>, fn<1, 2>, fn<1, 3>, fn<1, 4>}};

RUSTASR_I4_TABLE(blk_i4_scalar)
#if defined(RUSTASR_X86)
RUSTASR_I4_TABLE(blk_i4_avx2)
RUSTASR_I4_TABLE(blk_i4_avx512)
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
    if (isa == Isa::kAvx2 && w.group == 32) t4 = kTable_blk_i4_avx2;
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
  // sequential stream per thread); measured faster than 4-row blocks (31 vs 40-50 ms per 0.6B step here).
  // The AVX512-BF16 path keeps its 4-row blocks, which measured faster for it.
  // Several activation rows (sessions decoding together, tiny prefills): one weight row at a time, with the
  // accumulators of the one-row kernel for each activation row, so that a row's result does not depend on
  // the other rows of the call (batched decoding is bit-identical to decoding alone; the kernels' unroll
  // depends on R only). Where the activation rows no longer sit comfortably in L1 beside the weight stream
  // (more than 16 KiB: 4 rows of more than 1024 columns, the 0.6B's o and down projections), AVX-512F takes
  // three weight rows at a time so that each load of x serves three: in the 4-row 0.6B step this cut the
  // o + MLP time from 22.7-25.7 to 18.1-22.0 ms (1-row: 14.2-17.5), while three rows at 1024 columns were
  // slower than one (q/k/v 7.5 vs 6.3 ms).
#if defined(RUSTASR_X86)
  const int64_t x_bytes = in.m * w.cols * static_cast<int64_t>(sizeof(float));
  if (isa == Isa::kAvx512f && in.m > 1 && x_bytes > (int64_t(16) << 10)) {
    static const BlockFn kThree[kGemvMaxRows] = {blk_avx512<3, 1>, blk_avx512<3, 2>, blk_avx512<3, 3>,
                                                 blk_avx512<3, 4>};
    const BlockFn three = kThree[in.m - 1];
    for (; r + 3 <= r1; r += 3) three(in, W, w.cols, r, y, ldy);
  }
#endif
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
