#include "gemm.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <vector>

#include "rustasr/engine.h"

#include "simd.h"
#include "vecops.h"

#if defined(RUSTASR_X86)
#define RUSTASR_GEMM_X86 1
#define TG512 T512
#define TG512BF T512BF
#endif
#define RUSTASR_GEMM_UNROLL RUSTASR_UNROLL

#if defined(RUSTASR_HAVE_ACCELERATE)
#include <Accelerate/Accelerate.h>
#define RUSTASR_BLAS 1
#elif defined(RUSTASR_HAVE_CBLAS)
#include <cblas.h>
#define RUSTASR_BLAS 1
#endif

namespace rustasr {
namespace cpu {

bool gemm_has_blas() {
#if defined(RUSTASR_BLAS)
  return true;
#else
  return false;
#endif
}

namespace {

// Blocked GEMM on the gemv micro-kernels: a task is a panel of weight rows (kept hot in L2) run against
// every 4-row block of x (hot in L1), so each weight row is read from memory once per call.
void gemm_own(ThreadPool& pool, Isa isa, const float* x, int64_t n, const Weight& w, float* y) {
  const int64_t cols = w.cols, rows = w.rows;
  const int64_t nblk = (n + kGemvMaxRows - 1) / kGemvMaxRows;
  std::vector<GemvInput> ins(static_cast<size_t>(nblk));
  for (int64_t b = 0; b < nblk; ++b) {
    const int m = static_cast<int>(std::min<int64_t>(kGemvMaxRows, n - b * kGemvMaxRows));
    ins[static_cast<size_t>(b)].prepare(isa, x + b * kGemvMaxRows * cols, cols, m, cols);
  }
  // Panel height: ~128 KiB of weights, a multiple of 4 rows.
  int64_t ph = (128 * 1024) / std::max<int64_t>(1, cols * static_cast<int64_t>(dtype_size(w.dtype)));
  ph = std::max<int64_t>(4, ph & ~int64_t(3));
  const int64_t panels = (rows + ph - 1) / ph;
  // Split x too when there are few panels, so every thread gets work.
  const int64_t xsplit = std::max<int64_t>(1, std::min<int64_t>(nblk, (2 * pool.size() + panels - 1) / panels));
  pool.parallel_for(
      panels * xsplit,
      [&](int64_t tb, int64_t te) {
        for (int64_t t = tb; t < te; ++t) {
          const int64_t p = t / xsplit, xs = t % xsplit;
          const int64_t r0 = p * ph, r1 = std::min(rows, r0 + ph);
          const int64_t b0 = nblk * xs / xsplit, b1 = nblk * (xs + 1) / xsplit;
          for (int64_t b = b0; b < b1; ++b)
            gemv_rows(isa, ins[static_cast<size_t>(b)], w, r0, r1, y + b * kGemvMaxRows * rows, rows);
        }
      },
      1, panels * xsplit);
}

#if defined(RUSTASR_GEMM_X86)
// ------------------------------------------------------------------------------------------------
// Packed AVX-512 GEMM. C[M, N] (+)= A[M, K] * B[K, N] with a register tile of kMr rows of C (A values
// broadcast) x kNr = 32 columns of C (two zmm of B), 24 zmm accumulators. Both operands are packed into
// the layouts the micro-kernel streams, so every load is sequential:
//   A: ap[k * kMr + m] (float32; rows m >= the tile's height are zero), or for the BF16-activation mode
//      ap2[kp * kMr + m] = the BF16 pair (A[m, 2kp], A[m, 2kp + 1]) as one 32-bit word;
//   B: bp[k * 32 + j] (float32), or for BF16 weights bp2[kp * 32 + j] = the BF16 pair (B[2kp, j],
//      B[2kp + 1, j]): the weight's own bits, transposed 32 bits at a time, half the bytes of float32 and
//      no conversion while packing; the micro-kernel splits a pair into two exact float32 vectors with one
//      shift and one mask (2 integer ops per 24 FMAs).
// Every product is an exact float32 FMA of the upcast weight (as on the gemv paths); only the summation
// order differs from a plain loop. The BF16-activation mode (Precision::kBf16, AVX512-BF16) rounds the
// activations to BF16 once and uses vdpbf16ps (two products per lane and instruction).
//
// linear: y[n, w.rows] = x[n, w.cols] * W^T is C = y with A = x and B = W^T (C's columns are W's rows).
// conv:   out[cout, P] = Wc[cout, cin * 9] * im2col^T is C = out with A = Wc and B gathered from the
//         input image straight into the packed layout (no im2col buffer, no transposed output).

constexpr int kMr = 12;              // rows of C per micro-tile
constexpr int kNr = 32;              // columns of C per micro-panel
// k per block (even): a BF16 micro-panel is 32 x 512 x 2 = 32 KiB, an A tile 12 x 512 x 4 = 24 KiB. Measured
// on Zen 5 (one thread, CPU time, prefill and encoder shapes): 512 gives 84-94% of the FMA peak, 256 82-89%.
constexpr int64_t kKc = 512;

// 16 x 16 32-bit transpose of r[0..15] in place.
TG512 inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_maskz_unpacklo_ps(kAll16, r[i], r[i + 1]);
    t[i + 1] = _mm512_maskz_unpackhi_ps(kAll16, r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(kAll8, _mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 1] = _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(kAll8, _mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 2] = _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(kAll8, _mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    r[i + 3] = _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(kAll8, _mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
  }
  // r[4q + j] now holds, in each 128-bit lane L, elements (k = 4L + j) of rows 4q..4q+3 of lane L's
  // quarter. Gather lanes: first pairs of quads, then quads of quads.
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_maskz_shuffle_f32x4(kAll16, r[i], r[i + 4], 0x88);          // lanes 0,2 of r[i] | 0,2 of r[i+4]
    t[i + 4] = _mm512_maskz_shuffle_f32x4(kAll16, r[i], r[i + 4], 0xDD);      // lanes 1,3 | 1,3
    t[i + 8] = _mm512_maskz_shuffle_f32x4(kAll16, r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_maskz_shuffle_f32x4(kAll16, r[i + 8], r[i + 12], 0xDD);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_maskz_shuffle_f32x4(kAll16, t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_maskz_shuffle_f32x4(kAll16, t[i], t[i + 8], 0xDD);
    r[i + 4] = _mm512_maskz_shuffle_f32x4(kAll16, t[i + 4], t[i + 12], 0x88);
    r[i + 12] = _mm512_maskz_shuffle_f32x4(kAll16, t[i + 4], t[i + 12], 0xDD);
  }
}

TG512 inline __m512 bf16x16_to_f32(const uint16_t* p) {
  return _mm512_castsi512_ps(
      _mm512_maskz_slli_epi32(kAll16, _mm512_maskz_cvtepu16_epi32(kAll16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}

// ---- packing ----

// B from a BF16 weight, pairs: bp2[kp * 32 + j] = W[r0 + j, k0 + 2kp] | W[r0 + j, k0 + 2kp + 1] << 16 for
// j < nr (0 above), kp < (kc + 1) / 2 (an odd kc's last pair has a zero high half).
TG512 void pack_b_pairs(const Weight& w, int64_t r0, int nr, int64_t k0, int64_t kc, uint32_t* bp) {
  const int64_t cols = w.cols;
  const uint16_t* W = static_cast<const uint16_t*>(w.data);
  const int64_t kcp = (kc + 1) / 2;
  int64_t kp = 0;
  // 16 pairs (32 columns) of 16 rows at a time: a 16 x 16 transpose of 32-bit words. A weight row starts at
  // an even column (cols even) for the 32-bit loads to be whole pairs; odd cols take the scalar path.
  if ((cols & 1) == 0 && (k0 & 1) == 0) {
    for (; kp + 16 <= kc / 2; kp += 16) {
      for (int jb = 0; jb < kNr; jb += 16) {
        __m512 r[16];
        for (int j = 0; j < 16; ++j)
          r[j] = (jb + j < nr) ? _mm512_loadu_ps(reinterpret_cast<const float*>(W + (r0 + jb + j) * cols + k0 + 2 * kp))
                               : _mm512_setzero_ps();
        transpose16(r);
        for (int i = 0; i < 16; ++i) _mm512_storeu_ps(reinterpret_cast<float*>(bp + (kp + i) * kNr + jb), r[i]);
      }
    }
  }
  for (; kp < kcp; ++kp)
    for (int j = 0; j < kNr; ++j) {
      uint32_t v = 0;
      if (j < nr) {
        const uint16_t* row = W + (r0 + j) * cols + k0;
        v = row[2 * kp];
        if (2 * kp + 1 < kc) v |= static_cast<uint32_t>(row[2 * kp + 1]) << 16;
      }
      bp[kp * kNr + j] = v;
    }
}

// B from any other weight dtype, float32: bp[k * 32 + j] = W[r0 + j, k0 + k] (0 for j >= nr).
TG512 void pack_b_f32(const Weight& w, int64_t r0, int nr, int64_t k0, int64_t kc, float* bp) {
  const int64_t cols = w.cols;
  int64_t k = 0;
  if (w.dtype == DType::kI8 && w.group % 16 == 0) {
    const int8_t* W = static_cast<const int8_t*>(w.data);
    const int64_t gpr = cols / w.group;
    for (; k + 16 <= kc && (k0 + k) % 16 == 0; k += 16) {
      for (int jb = 0; jb < kNr; jb += 16) {
        __m512 r[16];
        for (int j = 0; j < 16; ++j) {
          if (jb + j < nr) {
            const int64_t row = r0 + jb + j;
            const __m512 q = _mm512_maskz_cvtepi32_ps(kAll16, _mm512_maskz_cvtepi8_epi32(
                kAll16, _mm_loadu_si128(reinterpret_cast<const __m128i*>(W + row * cols + k0 + k))));
            r[j] = _mm512_mul_ps(q, _mm512_set1_ps(w.scales[row * gpr + (k0 + k) / w.group]));
          } else {
            r[j] = _mm512_setzero_ps();
          }
        }
        transpose16(r);
        for (int i = 0; i < 16; ++i) _mm512_storeu_ps(bp + (k + i) * kNr + jb, r[i]);
      }
    }
  } else if (w.dtype == DType::kI4 && w.group == 32 && k0 % 16 == 0) {
    // 16 columns = one half of a 32-column block: its 16 bytes, low or high nibbles, looked up as q = nibble - 8.
    const uint8_t* W = static_cast<const uint8_t*>(w.data);
    const int64_t gpr = cols / 32, rb = cols / 2;
    const __m512 table = _mm512_setr_ps(-8.f, -7.f, -6.f, -5.f, -4.f, -3.f, -2.f, -1.f, 0.f, 1.f, 2.f, 3.f, 4.f, 5.f, 6.f, 7.f);
    for (; k + 16 <= kc; k += 16) {
      const int64_t c = k0 + k, g = c / 32;
      const int shift = (c % 32) == 16 ? 4 : 0;
      for (int jb = 0; jb < kNr; jb += 16) {
        __m512 r[16];
        for (int j = 0; j < 16; ++j) {
          if (jb + j < nr) {
            const int64_t row = r0 + jb + j;
            __m512i z = _mm512_maskz_cvtepu8_epi32(kAll16, _mm_loadu_si128(reinterpret_cast<const __m128i*>(W + row * rb + g * 16)));
            if (shift) z = _mm512_maskz_srli_epi32(kAll16, z, 4);
            r[j] = _mm512_mul_ps(_mm512_maskz_permutexvar_ps(kAll16, z, table), _mm512_set1_ps(w.scales[row * gpr + g]));
          } else {
            r[j] = _mm512_setzero_ps();
          }
        }
        transpose16(r);
        for (int i = 0; i < 16; ++i) _mm512_storeu_ps(bp + (k + i) * kNr + jb, r[i]);
      }
    }
  } else if (w.dtype == DType::kF32) {
    const float* W = static_cast<const float*>(w.data);
    for (; k + 16 <= kc; k += 16) {
      for (int jb = 0; jb < kNr; jb += 16) {
        __m512 r[16];
        for (int j = 0; j < 16; ++j)
          r[j] = (jb + j < nr) ? _mm512_loadu_ps(W + (r0 + jb + j) * cols + k0 + k) : _mm512_setzero_ps();
        transpose16(r);
        for (int i = 0; i < 16; ++i) _mm512_storeu_ps(bp + (k + i) * kNr + jb, r[i]);
      }
    }
  }
  for (; k < kc; ++k)
    for (int j = 0; j < kNr; ++j) bp[k * kNr + j] = j < nr ? weight_at(w, (r0 + j) * cols + k0 + k) : 0.f;
}

// A from activation rows: ap[k * kMr + m] = x[m * ldx + k0 + k] for m < mr (0 for mr <= m < kMr), k < kcr
// (kcr >= kc: columns past kc are 0).
TG512 void pack_a_f32(const float* x, int64_t ldx, int mr, int64_t k0, int64_t kc, int64_t kcr, float* ap) {
  constexpr __mmask16 kTile = static_cast<__mmask16>((1u << kMr) - 1);
  int64_t k = 0;
  for (; k + 16 <= kc; k += 16) {
    __m512 r[16];
    for (int m = 0; m < 16; ++m) r[m] = m < mr ? _mm512_loadu_ps(x + m * ldx + k0 + k) : _mm512_setzero_ps();
    transpose16(r);
    for (int i = 0; i < 16; ++i) _mm512_mask_storeu_ps(ap + (k + i) * kMr, kTile, r[i]);
  }
  for (; k < kcr; ++k)
    for (int m = 0; m < kMr; ++m) ap[k * kMr + m] = (m < mr && k < kc) ? x[m * ldx + k0 + k] : 0.f;
}

// A from activation rows for the BF16 mode: ap2[kp * kMr + m] = bf16(x[m, k0 + 2kp]) | bf16(x[m, k0 + 2kp + 1]) << 16
// (round to nearest even; 0 past kc and for m >= mr).
TG512 void pack_a_pairs(const float* x, int64_t ldx, int mr, int64_t k0, int64_t kc, uint32_t* ap) {
  const int64_t kcp = (kc + 1) / 2;
  for (int64_t kp = 0; kp < kcp; ++kp)
    for (int m = 0; m < kMr; ++m) {
      uint32_t v = 0;
      if (m < mr) {
        const float* row = x + m * ldx + k0;
        v = f32_to_bf16_rne(row[2 * kp]);
        if (2 * kp + 1 < kc) v |= static_cast<uint32_t>(f32_to_bf16_rne(row[2 * kp + 1])) << 16;
      }
      ap[kp * kMr + m] = v;
    }
}

// A from weight rows (conv): ap[k * kMr + m] = W[r0 + m, k0 + k] as float32 (0 for m >= mr).
TG512 void pack_a_weight(const Weight& w, int64_t r0, int mr, int64_t k0, int64_t kc, float* ap) {
  constexpr __mmask16 kTile = static_cast<__mmask16>((1u << kMr) - 1);
  const int64_t cols = w.cols;
  int64_t k = 0;
  if (w.dtype == DType::kBF16) {
    const uint16_t* W = static_cast<const uint16_t*>(w.data);
    for (; k + 16 <= kc; k += 16) {
      __m512 r[16];
      for (int m = 0; m < 16; ++m) r[m] = m < mr ? bf16x16_to_f32(W + (r0 + m) * cols + k0 + k) : _mm512_setzero_ps();
      transpose16(r);
      for (int i = 0; i < 16; ++i) _mm512_mask_storeu_ps(ap + (k + i) * kMr, kTile, r[i]);
    }
  }
  for (; k < kc; ++k)
    for (int m = 0; m < kMr; ++m) ap[k * kMr + m] = m < mr ? weight_at(w, (r0 + m) * cols + k0 + k) : 0.f;
}

// ---- micro-kernels: C[0..M, 0..32) (+)= A tile * B panel, C rows ldc apart, columns masked by (c0, c1) ----

template <int M>
TG512 inline void ukr_store(__m512 (&a0)[M], __m512 (&a1)[M], float* c, int64_t ldc, bool acc_in, __mmask16 c0,
                            __mmask16 c1) {
  RUSTASR_GEMM_UNROLL
  for (int m = 0; m < M; ++m) {
    float* cr = c + m * ldc;
    if (acc_in) {
      a0[m] = _mm512_add_ps(a0[m], _mm512_maskz_loadu_ps(c0, cr));
      a1[m] = _mm512_add_ps(a1[m], _mm512_maskz_loadu_ps(c1, cr + 16));
    }
    _mm512_mask_storeu_ps(cr, c0, a0[m]);
    _mm512_mask_storeu_ps(cr + 16, c1, a1[m]);
  }
}

template <int M>
TG512 inline void prefetch_c(const float* c, int64_t ldc) {
  RUSTASR_GEMM_UNROLL
  for (int m = 0; m < M; ++m) {
    _mm_prefetch(reinterpret_cast<const char*>(c + m * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + m * ldc + 16), _MM_HINT_T0);
  }
}

// A float32 [k][kMr], B float32 [k][32].
template <int M>
TG512 void ukr_f32(const float* ap, const void* bpv, int64_t kc, float* c, int64_t ldc, bool acc_in, __mmask16 c0,
                   __mmask16 c1) {
  const float* bp = static_cast<const float*>(bpv);
  prefetch_c<M>(c, ldc);
  __m512 a0[M], a1[M];
  RUSTASR_GEMM_UNROLL
  for (int m = 0; m < M; ++m) a0[m] = a1[m] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_loadu_ps(bp + k * kNr);
    const __m512 b1 = _mm512_loadu_ps(bp + k * kNr + 16);
    RUSTASR_GEMM_UNROLL
    for (int m = 0; m < M; ++m) {
      const __m512 xv = _mm512_set1_ps(ap[k * kMr + m]);
      a0[m] = _mm512_fmadd_ps(b0, xv, a0[m]);
      a1[m] = _mm512_fmadd_ps(b1, xv, a1[m]);
    }
  }
  ukr_store<M>(a0, a1, c, ldc, acc_in, c0, c1);
}

// A float32 [k][kMr] (k padded to even), B BF16 pairs [kp][32]: each pair split into two exact float32
// vectors (the low half shifted up, the high half masked), then the same FMAs in the same k order as ukr_f32.
template <int M>
TG512 void ukr_w16(const float* ap, const void* bpv, int64_t kc, float* c, int64_t ldc, bool acc_in, __mmask16 c0,
                   __mmask16 c1) {
  const uint32_t* bp = static_cast<const uint32_t*>(bpv);
  prefetch_c<M>(c, ldc);
  const __m512i hi_mask = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  __m512 a0[M], a1[M];
  RUSTASR_GEMM_UNROLL
  for (int m = 0; m < M; ++m) a0[m] = a1[m] = _mm512_setzero_ps();
  const int64_t kcp = (kc + 1) / 2;
  for (int64_t kp = 0; kp < kcp; ++kp) {
    const __m512i p0 = _mm512_loadu_si512(bp + kp * kNr);
    const __m512i p1 = _mm512_loadu_si512(bp + kp * kNr + 16);
    const __m512 e0 = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(kAll16, p0, 16));
    const __m512 e1 = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(kAll16, p1, 16));
    const __m512 o0 = _mm512_castsi512_ps(_mm512_and_si512(p0, hi_mask));
    const __m512 o1 = _mm512_castsi512_ps(_mm512_and_si512(p1, hi_mask));
    const float* a = ap + 2 * kp * kMr;
    RUSTASR_GEMM_UNROLL
    for (int m = 0; m < M; ++m) {
      const __m512 xv = _mm512_set1_ps(a[m]);
      a0[m] = _mm512_fmadd_ps(e0, xv, a0[m]);
      a1[m] = _mm512_fmadd_ps(e1, xv, a1[m]);
    }
    RUSTASR_GEMM_UNROLL
    for (int m = 0; m < M; ++m) {
      const __m512 xv = _mm512_set1_ps(a[kMr + m]);
      a0[m] = _mm512_fmadd_ps(o0, xv, a0[m]);
      a1[m] = _mm512_fmadd_ps(o1, xv, a1[m]);
    }
  }
  ukr_store<M>(a0, a1, c, ldc, acc_in, c0, c1);
}

// BF16 mode: A BF16 pairs [kp][kMr], B BF16 pairs [kp][32], vdpbf16ps.
template <int M>
TG512BF void ukr_dp(const float* apv, const void* bpv, int64_t kc, float* c, int64_t ldc, bool acc_in, __mmask16 c0,
                    __mmask16 c1) {
  const uint32_t* ap = reinterpret_cast<const uint32_t*>(apv);
  const uint32_t* bp = static_cast<const uint32_t*>(bpv);
  prefetch_c<M>(c, ldc);
  __m512 a0[M], a1[M];
  RUSTASR_GEMM_UNROLL
  for (int m = 0; m < M; ++m) a0[m] = a1[m] = _mm512_setzero_ps();
  const int64_t kcp = (kc + 1) / 2;
  for (int64_t kp = 0; kp < kcp; ++kp) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp + kp * kNr);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(bp + kp * kNr + 16);
    RUSTASR_GEMM_UNROLL
    for (int m = 0; m < M; ++m) {
      const __m512bh xv = (__m512bh)_mm512_set1_epi32(static_cast<int>(ap[kp * kMr + m]));
      a0[m] = _mm512_dpbf16_ps(a0[m], b0, xv);
      a1[m] = _mm512_dpbf16_ps(a1[m], b1, xv);
    }
  }
  ukr_store<M>(a0, a1, c, ldc, acc_in, c0, c1);
}

using UkrFn = void (*)(const float*, const void*, int64_t, float*, int64_t, bool, __mmask16, __mmask16);
#define RUSTASR_UKR_TABLE(fn)                                                                             \
  const UkrFn kTable_##fn[kMr + 1] = {nullptr, fn<1>, fn<2>, fn<3>, fn<4>,  fn<5>, fn<6>,                 \
                                      fn<7>,   fn<8>, fn<9>, fn<10>, fn<11>, fn<12>};
RUSTASR_UKR_TABLE(ukr_f32)
RUSTASR_UKR_TABLE(ukr_w16)
RUSTASR_UKR_TABLE(ukr_dp)

// Software prefetch of the weight bytes the next B pack will read, spread over the micro-kernel calls of
// the current block so that the (DRAM-bound) weight stream overlaps the (compute-bound) products.
struct NextBlockPrefetch {
  const char* base = nullptr;  // weight bytes
  int64_t row_bytes = 0;       // cols * element size
  int64_t r0 = 0, r1 = 0;      // rows of the next block
  int64_t off = 0, len = 0;    // byte range inside each row
  int64_t lines_per_row = 0, total = 0, done = 0, per_call = 0;

  void set(const Weight& w, int64_t rows_b, int64_t rows_e, int64_t k0, int64_t kc, int64_t calls) {
    base = static_cast<const char*>(w.data);
    row_bytes = weight_row_bytes(w);
    r0 = rows_b;
    r1 = rows_e;
    if (w.dtype == DType::kI4) {  // two columns per byte
      off = k0 / 2;
      len = (kc + 1) / 2;
    } else {
      const int64_t es = static_cast<int64_t>(dtype_size(w.dtype));
      off = k0 * es;
      len = kc * es;
    }
    lines_per_row = (len + 63) / 64;
    total = (r1 > r0) ? (r1 - r0) * lines_per_row : 0;
    done = 0;
    row = line = 0;
    per_call = calls > 0 ? (total + calls - 1) / calls : total;
  }
  int64_t row = 0, line = 0;  // the next line to prefetch (row - r0, line within the row)
  void step() {
    const int64_t end = std::min(total, done + per_call);
    for (; done < end; ++done) {
      _mm_prefetch(base + (r0 + row) * row_bytes + off + line * 64, _MM_HINT_T1);
      if (++line == lines_per_row) line = 0, ++row;
    }
  }
};

inline void col_masks(int64_t ncols, __mmask16* c0, __mmask16* c1) {
  *c0 = lanes16(ncols);
  *c1 = lanes16(ncols - 16);
}


// ---- convolution geometry (3x3, stride 2, padding 1): out[cout, P] = Wc[cout, cin * 9] * B ----

struct ConvGeom {
  const float* in;
  int64_t cin, h, w, oh, ow, P;
};

// Per pixel p of a panel: the offset of its 3x3 window's top-left tap in a channel plane, and for each of the 9
// taps the panel's lanes whose tap lies inside the image (bit j: pixel q * NR + j; pixels >= P have no bits).
template <int NR>
inline void conv_panel_taps(const ConvGeom& g, int64_t q, int32_t* base, uint32_t* tap_mask) {
  for (int t = 0; t < 9; ++t) tap_mask[t] = 0;
  for (int j = 0; j < NR; ++j) {
    const int64_t p = q * NR + j;
    base[j] = 0;
    if (p >= g.P) continue;
    const int64_t oy = p / g.ow, ox = p % g.ow;
    base[j] = static_cast<int32_t>((2 * oy - 1) * g.w + (2 * ox - 1));
    for (int ky = 0; ky < 3; ++ky)
      for (int kx = 0; kx < 3; ++kx) {
        const int64_t iy = 2 * oy + ky - 1, ix = 2 * ox + kx - 1;
        if (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w) tap_mask[ky * 3 + kx] |= 1u << j;
      }
  }
}

// bp[k * 32 + j] = in[ci, 2 oy + ky - 1, 2 ox + kx - 1] for k = k0 .. k0 + kc - 1 = ci * 9 + ky * 3 + kx and
// pixel p = q * 32 + j = oy * ow + ox (0 outside the image and for p >= P): two masked gathers per k.
TG512 void gather_b_conv(const ConvGeom& g, int64_t q, int64_t k0, int64_t kc, float* bp) {
  alignas(64) int32_t base[kNr];
  uint32_t tap_mask[9];
  conv_panel_taps<kNr>(g, q, base, tap_mask);
  const __m512i b_lo = _mm512_load_si512(base), b_hi = _mm512_load_si512(base + 16);
  const int64_t hw = g.h * g.w;
  for (int64_t k = 0; k < kc; ++k) {
    const int64_t kk = k0 + k, ci = kk / 9, t = kk % 9;
    const float* src = g.in + ci * hw + (t / 3) * g.w + (t % 3);
    const __mmask16 m_lo = static_cast<__mmask16>(tap_mask[t] & 0xFFFF);
    const __mmask16 m_hi = static_cast<__mmask16>(tap_mask[t] >> 16);
    _mm512_storeu_ps(bp + k * kNr, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m_lo, b_lo, src, 4));
    _mm512_storeu_ps(bp + k * kNr + 16, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m_hi, b_hi, src, 4));
  }
}

// ------------------------------------------------------------------------------------------------
// Packed AVX2 GEMM (FMA3, 16 ymm registers): the same scheme as the AVX-512 one above, with a register tile
// of 6 rows of C x 16 columns (two ymm of B), 12 accumulators. Every weight dtype is packed as float32 (BF16
// upcast while packing: once per block, not once per x tile), so one micro-kernel serves all of them, and a
// 16 x 256 micro-panel (16 KiB) and a 6 x 256 x tile (6 KiB) both stay in a 32 KiB L1. Each C element is
// summed in the same order as on the AVX-512 path (k ascending inside a block of kKc, the block's sum then
// added to C), so the two paths give the same float32 results wherever their k blocks agree.
namespace v256 {

constexpr int kMr = 6;
constexpr int kNr = 16;
constexpr int64_t kKc = 256;

// 8 x 8 32-bit transpose of r[0..7] in place.
T256 inline void transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

// The first kMr = 6 lanes of each of 8 transposed vectors to ap[i * 6 ..] (rows k .. k + 7 of a packed tile).
T256 inline void store_tile(const __m256 r[8], float* ap) {
  for (int i = 0; i < 8; ++i) {
    _mm_storeu_ps(ap + i * kMr, _mm256_castps256_ps128(r[i]));
    _mm_storel_pi(reinterpret_cast<__m64*>(ap + i * kMr + 4), _mm256_extractf128_ps(r[i], 1));
  }
}
// Lanes of 8 from the low 8 bits of `bits`.
T256 inline __m256i bits8(uint32_t bits) {
  const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(bits)), bit), bit);
}

// Row `row` of an int8 weight, columns [c, c + 8) (within one scale group), dequantised to float32.
T256 inline __m256 i8_row8(const Weight& w, int64_t row, int64_t c) {
  const int8_t* p = static_cast<const int8_t*>(w.data) + row * w.cols + c;
  const __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  return _mm256_mul_ps(q, _mm256_set1_ps(w.scales[row * (w.cols / w.group) + c / w.group]));
}

// Row `row` of a weight, columns [c, c + 8), as float32 (weight_at's values); false where this dtype / column
// has no vector form (the caller then goes element by element).
T256 inline bool weight8(const Weight& w, int64_t row, int64_t c, __m256* out) {
  const int64_t cols = w.cols;
  switch (w.dtype) {
    case DType::kBF16:
      *out = ld8_bf16(static_cast<const uint16_t*>(w.data) + row * cols + c);
      return true;
    case DType::kF32:
      *out = _mm256_loadu_ps(static_cast<const float*>(w.data) + row * cols + c);
      return true;
    case DType::kI8: {
      if (w.group % 8 != 0 || c % 8 != 0) return false;
      *out = i8_row8(w, row, c);
      return true;
    }
    case DType::kI4: {
      const int64_t half = w.group / 2;
      if (half % 8 != 0 || c % 8 != 0) return false;
      const int64_t g = c / w.group, j = c % w.group;
      const uint8_t* p = static_cast<const uint8_t*>(w.data) + row * (cols / 2) + g * half + j % half;
      __m256i z = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
      z = j < half ? _mm256_and_si256(z, _mm256_set1_epi32(15)) : _mm256_srli_epi32(z, 4);
      const __m256 q = _mm256_cvtepi32_ps(_mm256_sub_epi32(z, _mm256_set1_epi32(8)));
      *out = _mm256_mul_ps(q, _mm256_set1_ps(w.scales[row * (cols / w.group) + g]));
      return true;
    }
    default:
      return false;
  }
}

// A full panel (16 rows, kc a multiple of 8) of BF16 or int8 (group a multiple of 8) weights: each 8 x 8
// block loaded, converted and transposed in registers, with no per-row dtype switch or bounds check (the
// general loop below kept the block on the stack: 10 % of a prefill's time in perf, against 77 % in the
// micro-kernel). The same values as weight8.
template <bool kInt8>
T256 inline void pack_b_full(const Weight& w, int64_t r0, int64_t k0, int64_t kc, float* bp) {
  const int64_t cols = w.cols;
  for (int64_t k = 0; k < kc; k += 8) {
    RUSTASR_GEMM_UNROLL
    for (int jb = 0; jb < kNr; jb += 8) {
      __m256 r[8];
      RUSTASR_GEMM_UNROLL
      for (int j = 0; j < 8; ++j) {
        const int64_t row = r0 + jb + j;
        if constexpr (kInt8) {
          r[j] = i8_row8(w, row, k0 + k);
        } else {
          r[j] = ld8_bf16(static_cast<const uint16_t*>(w.data) + row * cols + k0 + k);
        }
      }
      transpose8(r);
      RUSTASR_GEMM_UNROLL
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(bp + (k + i) * kNr + jb, r[i]);
    }
  }
}

// B from a weight, float32: bp[k * 16 + j] = W[r0 + j, k0 + k] (0 for j >= nr).
T256 void pack_b(const Weight& w, int64_t r0, int nr, int64_t k0, int64_t kc, float* bp) {
  if (nr == kNr && kc % 8 == 0 && k0 % 8 == 0) {
    if (w.dtype == DType::kBF16) return pack_b_full<false>(w, r0, k0, kc, bp);
    if (w.dtype == DType::kI8 && w.group % 8 == 0) return pack_b_full<true>(w, r0, k0, kc, bp);
  }
  int64_t k = 0;
  bool vec = true;
  for (; vec && k + 8 <= kc; k += 8) {
    for (int jb = 0; jb < kNr && vec; jb += 8) {
      __m256 r[8];
      for (int j = 0; j < 8 && vec; ++j)
        if (jb + j < nr) vec = weight8(w, r0 + jb + j, k0 + k, &r[j]);
        else r[j] = _mm256_setzero_ps();
      if (!vec) break;
      transpose8(r);
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(bp + (k + i) * kNr + jb, r[i]);
    }
    if (!vec) break;
  }
  for (; k < kc; ++k)
    for (int j = 0; j < kNr; ++j) bp[k * kNr + j] = j < nr ? weight_at(w, (r0 + j) * w.cols + k0 + k) : 0.f;
}

// A from activation rows: ap[k * 6 + m] = x[m * ldx + k0 + k] for m < mr (0 for mr <= m < 6), k < kcr (0 past kc).
T256 void pack_a(const float* x, int64_t ldx, int mr, int64_t k0, int64_t kc, int64_t kcr, float* ap) {
  int64_t k = 0;
  for (; k + 8 <= kc; k += 8) {
    __m256 r[8];
    for (int m = 0; m < 8; ++m) r[m] = m < mr ? _mm256_loadu_ps(x + m * ldx + k0 + k) : _mm256_setzero_ps();
    transpose8(r);
    store_tile(r, ap + k * kMr);
  }
  for (; k < kcr; ++k)
    for (int m = 0; m < kMr; ++m) ap[k * kMr + m] = (m < mr && k < kc) ? x[m * ldx + k0 + k] : 0.f;
}

// A from weight rows (conv): ap[k * 6 + m] = W[r0 + m, k0 + k] as float32 (0 for m >= mr).
T256 void pack_a_weight(const Weight& w, int64_t r0, int mr, int64_t k0, int64_t kc, float* ap) {
  int64_t k = 0;
  bool vec = true;
  for (; vec && k + 8 <= kc; k += 8) {
    __m256 r[8];
    for (int m = 0; m < 8 && vec; ++m)
      if (m < mr) vec = weight8(w, r0 + m, k0 + k, &r[m]);
      else r[m] = _mm256_setzero_ps();
    if (!vec) break;
    transpose8(r);
    store_tile(r, ap + k * kMr);
  }
  for (; k < kc; ++k)
    for (int m = 0; m < kMr; ++m) ap[k * kMr + m] = m < mr ? weight_at(w, (r0 + m) * w.cols + k0 + k) : 0.f;
}

// The conv stem's B, gathered: as the AVX-512 gather_b_conv, 16 pixels per panel (two 8-lane gathers per k).
T256 void gather_b_conv(const ConvGeom& g, int64_t q, int64_t k0, int64_t kc, float* bp) {
  alignas(32) int32_t base[kNr];
  uint32_t tap_mask[9];
  conv_panel_taps<kNr>(g, q, base, tap_mask);
  const __m256i b_lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(base));
  const __m256i b_hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(base + 8));
  __m256 m_lo[9], m_hi[9];
  for (int t = 0; t < 9; ++t) {
    m_lo[t] = _mm256_castsi256_ps(bits8(tap_mask[t] & 0xFF));
    m_hi[t] = _mm256_castsi256_ps(bits8(tap_mask[t] >> 8));
  }
  const int64_t hw = g.h * g.w;
  for (int64_t k = 0; k < kc; ++k) {
    const int64_t kk = k0 + k, ci = kk / 9, t = kk % 9;
    const float* src = g.in + ci * hw + (t / 3) * g.w + (t % 3);
    _mm256_storeu_ps(bp + k * kNr, _mm256_mask_i32gather_ps(_mm256_setzero_ps(), src, b_lo, m_lo[t], 4));
    _mm256_storeu_ps(bp + k * kNr + 8, _mm256_mask_i32gather_ps(_mm256_setzero_ps(), src, b_hi, m_hi[t], 4));
  }
}

// C[0..M, 0..16) (+)= A tile [k][6] * B panel [k][16], float32 FMAs; columns masked by c0 (bit j: column j).
template <int M>
T256 void ukr(const float* ap, const void* bpv, int64_t kc, float* c, int64_t ldc, bool acc_in, __mmask16 c0,
              __mmask16 c1) {
  (void)c1;
  const float* bp = static_cast<const float*>(bpv);
  RUSTASR_GEMM_UNROLL
  for (int m = 0; m < M; ++m) {
    _mm_prefetch(reinterpret_cast<const char*>(c + m * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + m * ldc + 15), _MM_HINT_T0);
  }
  __m256 a0[M], a1[M];
  RUSTASR_GEMM_UNROLL
  for (int m = 0; m < M; ++m) a0[m] = a1[m] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(bp + k * kNr);
    const __m256 b1 = _mm256_loadu_ps(bp + k * kNr + 8);
    RUSTASR_GEMM_UNROLL
    for (int m = 0; m < M; ++m) {
      const __m256 xv = _mm256_broadcast_ss(ap + k * kMr + m);
      a0[m] = _mm256_fmadd_ps(b0, xv, a0[m]);
      a1[m] = _mm256_fmadd_ps(b1, xv, a1[m]);
    }
  }
  if (c0 == 0xFFFF) {
    RUSTASR_GEMM_UNROLL
    for (int m = 0; m < M; ++m) {
      float* cr = c + m * ldc;
      if (acc_in) {
        a0[m] = _mm256_add_ps(a0[m], _mm256_loadu_ps(cr));
        a1[m] = _mm256_add_ps(a1[m], _mm256_loadu_ps(cr + 8));
      }
      _mm256_storeu_ps(cr, a0[m]);
      _mm256_storeu_ps(cr + 8, a1[m]);
    }
    return;
  }
  // An edge panel (fewer than 16 columns; c0's low bits): through a small buffer, element by element (the same
  // sums; no vmaskmovps, whose 24 unrolled copies valgrind cannot translate).
  const int nc = __builtin_popcount(static_cast<unsigned>(c0));
  alignas(32) float t[kNr];
  RUSTASR_GEMM_UNROLL  // unrolled: a runtime index into a0 / a1 would keep the accumulators in memory
  for (int m = 0; m < M; ++m) {
    float* cr = c + m * ldc;
    _mm256_store_ps(t, a0[m]);
    _mm256_store_ps(t + 8, a1[m]);
    for (int j = 0; j < nc; ++j) cr[j] = acc_in ? t[j] + cr[j] : t[j];
  }
}

const UkrFn kTable[kMr + 1] = {nullptr, ukr<1>, ukr<2>, ukr<3>, ukr<4>, ukr<5>, ukr<6>};

}  // namespace v256

// ---- the two ISAs' packing and micro-kernels, as the drivers below see them ----

struct Pk512 {
  static constexpr int kMr = ::rustasr::cpu::kMr, kNr = ::rustasr::cpu::kNr;
  static constexpr int64_t kKc = ::rustasr::cpu::kKc;
  static constexpr bool kHasPairs = true;  // BF16 weights packed as pairs (and the BF16-activation mode)
  static void pack_a(const float* x, int64_t ldx, int mr, int64_t k0, int64_t kc, int64_t kcr, float* ap) {
    pack_a_f32(x, ldx, mr, k0, kc, kcr, ap);
  }
  static void pack_a_bf16(const float* x, int64_t ldx, int mr, int64_t k0, int64_t kc, uint32_t* ap) {
    pack_a_pairs(x, ldx, mr, k0, kc, ap);
  }
  static void pack_b_bf16(const Weight& w, int64_t r0, int nr, int64_t k0, int64_t kc, uint32_t* bp) {
    pack_b_pairs(w, r0, nr, k0, kc, bp);
  }
  static void pack_b(const Weight& w, int64_t r0, int nr, int64_t k0, int64_t kc, float* bp) {
    pack_b_f32(w, r0, nr, k0, kc, bp);
  }
  static void pack_a_w(const Weight& w, int64_t r0, int mr, int64_t k0, int64_t kc, float* ap) {
    pack_a_weight(w, r0, mr, k0, kc, ap);
  }
  static void gather_conv(const ConvGeom& g, int64_t q, int64_t k0, int64_t kc, float* bp) {
    gather_b_conv(g, q, k0, kc, bp);
  }
  static const UkrFn* table(bool dp, bool pairs) { return dp ? kTable_ukr_dp : pairs ? kTable_ukr_w16 : kTable_ukr_f32; }
  static const UkrFn* table_f32() { return kTable_ukr_f32; }
};

struct Pk256 {
  static constexpr int kMr = v256::kMr, kNr = v256::kNr;
  static constexpr int64_t kKc = v256::kKc;
  static constexpr bool kHasPairs = false;  // no pair packing: linear_range's pair branches are not instantiated
  static void pack_a(const float* x, int64_t ldx, int mr, int64_t k0, int64_t kc, int64_t kcr, float* ap) {
    v256::pack_a(x, ldx, mr, k0, kc, kcr, ap);
  }
  static void pack_b(const Weight& w, int64_t r0, int nr, int64_t k0, int64_t kc, float* bp) {
    v256::pack_b(w, r0, nr, k0, kc, bp);
  }
  static void pack_a_w(const Weight& w, int64_t r0, int mr, int64_t k0, int64_t kc, float* ap) {
    v256::pack_a_weight(w, r0, mr, k0, kc, ap);
  }
  static void gather_conv(const ConvGeom& g, int64_t q, int64_t k0, int64_t kc, float* bp) {
    v256::gather_b_conv(g, q, k0, kc, bp);
  }
  static const UkrFn* table(bool, bool) { return v256::kTable; }
  static const UkrFn* table_f32() { return v256::kTable; }
};

struct PackBufs {
  std::vector<float> a;     // packed A tiles (float32 or BF16 pairs)
  std::vector<uint32_t> b;  // packed B block (float32 bits or BF16 pairs)
};

// linear, one thread's share: C rows (x rows) [i0, i1), C columns (weight rows) [p0 * NR, p1 * NR) clipped
// to w.rows, all of k. k blocks outermost: the A tiles of a block are packed once and serve every B block.
template <class K>
void linear_range(const float* x, int64_t i0, int64_t i1, const Weight& w, float* y, int64_t p0, int64_t p1,
                  Precision prec, PackBufs& buf) {
  constexpr int MR = K::kMr, NR = K::kNr;
  constexpr int64_t KC = K::kKc, NC = 8 * NR;  // columns of C (weight rows) packed at once
  const int64_t rows = w.rows, cols = w.cols;
  const bool pairs = K::kHasPairs && w.dtype == DType::kBF16;
  const bool dp = prec == Precision::kBf16 && pairs;
  const UkrFn* table = K::table(dp, pairs);
  const int64_t n = i1 - i0;
  const int64_t tiles = (n + MR - 1) / MR;
  const int64_t kc_max = std::min(KC, cols);
  const int64_t kcr_max = (kc_max + 1) & ~int64_t(1);
  buf.a.resize(static_cast<size_t>(tiles * MR * kcr_max));
  buf.b.resize(static_cast<size_t>(NC * kcr_max));
  float* abuf = buf.a.data();
  uint32_t* bbuf = buf.b.data();
  const int64_t pn_max = NC / NR;
  NextBlockPrefetch pf;
  for (int64_t k0 = 0; k0 < cols; k0 += KC) {
    const int64_t kc = std::min(KC, cols - k0);
    const int64_t kcr = (kc + 1) & ~int64_t(1);
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t r = i0 + t * MR;
      const int mr = static_cast<int>(std::min<int64_t>(MR, i1 - r));
      if constexpr (K::kHasPairs) {
        if (dp) {
          K::pack_a_bf16(x + r * cols, cols, mr, k0, kc, reinterpret_cast<uint32_t*>(abuf + t * MR * kcr));
          continue;
        }
      }
      K::pack_a(x + r * cols, cols, mr, k0, kc, kcr, abuf + t * MR * kcr);
    }
    for (int64_t pb = p0; pb < p1; pb += pn_max) {
      const int64_t pe = std::min(p1, pb + pn_max);
      for (int64_t p = pb; p < pe; ++p) {
        const int nr = static_cast<int>(std::min<int64_t>(NR, rows - p * NR));
        if constexpr (K::kHasPairs) {
          if (pairs) {
            K::pack_b_bf16(w, p * NR, nr, k0, kc, bbuf + (p - pb) * NR * (kcr / 2));
            continue;
          }
        }
        K::pack_b(w, p * NR, nr, k0, kc, reinterpret_cast<float*>(bbuf) + (p - pb) * NR * kc);
      }
      // The block packed next: the next rows at this k, else the first rows at the next k.
      const int64_t calls = tiles * (pe - pb);
      if (pe < p1)
        pf.set(w, pe * NR, std::min(rows, std::min(p1, pe + pn_max) * NR), k0, kc, calls);
      else if (k0 + KC < cols)
        pf.set(w, p0 * NR, std::min(rows, std::min(p1, p0 + pn_max) * NR), k0 + KC, std::min(KC, cols - k0 - KC), calls);
      else
        pf.set(w, 0, 0, 0, 0, calls);
      const int64_t panel_elems = pairs ? NR * (kcr / 2) : NR * kc;
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t r = i0 + t * MR;
        const int M = static_cast<int>(std::min<int64_t>(MR, i1 - r));
        const UkrFn fn = table[M];
        for (int64_t p = pb; p < pe; ++p) {
          __mmask16 c0, c1;
          col_masks(rows - p * NR, &c0, &c1);
          fn(abuf + t * MR * kcr, bbuf + (p - pb) * panel_elems, kc, y + r * rows + p * NR, rows, k0 > 0, c0, c1);
          pf.step();
        }
      }
    }
  }
}

// Several weights of the same width against one x (q/k/v, gate/up): their output columns (weight rows) are
// shared out together, so the pool wakes once and each thread's share is one run of panels. A thread packs
// the A tiles of x once per task; the weights are read once.
template <class K>
void gemm_packed_multi(ThreadPool& pool, const float* x, int64_t n, const Weight* const* ws, float* const* ys,
                       int count, Precision prec) {
  constexpr int MR = K::kMr, NR = K::kNr;
  std::vector<int64_t> first(static_cast<size_t>(count) + 1, 0);  // first panel of each weight, all numbered
  for (int i = 0; i < count; ++i) first[static_cast<size_t>(i) + 1] = first[static_cast<size_t>(i)] + (ws[i]->rows + NR - 1) / NR;
  const int64_t panels = first[static_cast<size_t>(count)];
  // Output panels split evenly over the threads (each packs its own weight rows: every weight is read once).
  // With few panels per thread, x is split too so that every thread has work.
  const int64_t T = pool.size();
  const int64_t tiles = (n + MR - 1) / MR;
  const int64_t pt = std::min<int64_t>(panels, T);
  const int64_t xs = std::max<int64_t>(1, std::min<int64_t>(tiles, T / pt));
  const int64_t tasks = pt * xs;
  pool.parallel_for(
      tasks,
      [&](int64_t tb, int64_t te) {
        thread_local PackBufs buf;
        for (int64_t t = tb; t < te; ++t) {
          const int64_t pi = t / xs, xi = t % xs;
          const int64_t g0 = panels * pi / pt, g1 = panels * (pi + 1) / pt;
          // x split in multiples of the micro-tile height.
          const int64_t i0 = tiles * xi / xs * MR, i1 = std::min(n, tiles * (xi + 1) / xs * MR);
          if (i0 >= i1) continue;
          for (int i = 0; i < count; ++i) {
            const int64_t p0 = std::max(g0, first[static_cast<size_t>(i)]) - first[static_cast<size_t>(i)];
            const int64_t p1 = std::min(g1, first[static_cast<size_t>(i) + 1]) - first[static_cast<size_t>(i)];
            if (p0 < p1) linear_range<K>(x, i0, i1, *ws[i], ys[i], p0, p1, prec, buf);
          }
        }
      },
      1, tasks);
}

// ---- convolution 3x3, stride 2, padding 1: out[cout, P] = Wc[cout, cin * 9] * B, B[k, p] gathered ----

// The conv weight packed once per call for every task: for each k block (k0 = 0, KC, ...; kc columns) and
// each micro-tile t of MR output channels, ap[tiles * MR * k0 + t * MR * kc + k * MR + m] = W[t * MR + m, k0 + k]
// (0 past cout). Packing it in every task instead (as the pixel panels are split 4 ways per thread) cost 10 %
// of an encoder's time on AVX2. `packed` is the caller's, kept between calls (the encoder's conv weights are
// the same every chunk; a fresh buffer would page-fault every call).
template <class K>
const float* conv_pack_weight(ThreadPool& pool, const Weight& wt, std::vector<float>& packed) {
  constexpr int MR = K::kMr;
  constexpr int64_t KC = K::kKc;
  const int64_t cout = wt.rows, Kd = wt.cols;
  const int64_t tiles = (cout + MR - 1) / MR;
  const int64_t kblocks = (Kd + KC - 1) / KC;
  const size_t need = static_cast<size_t>(tiles * MR * Kd);
  if (packed.size() < need) packed.resize(need);
  float* ap = packed.data();
  pool.parallel_for(kblocks * tiles, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t kb = i / tiles, t = i % tiles;
      const int64_t k0 = kb * KC, kc = std::min(KC, Kd - k0);
      const int64_t r = t * MR;
      K::pack_a_w(wt, r, static_cast<int>(std::min<int64_t>(MR, cout - r)), k0, kc, ap + tiles * MR * k0 + t * MR * kc);
    }
  });
  return ap;
}

// One thread's share: output rows (channels) [c0, c1) (c0 a multiple of MR), pixel panels [q0, q1). k blocks
// outermost: each pixel panel is gathered once per k block and stays in L1 while every weight tile of the
// range runs past it. Bias and GELU are applied per panel once its last k block is done.
template <class K>
void conv_range(const ConvGeom& g, const float* apk, const Weight& wt, const Weight& bias, float* out, int64_t c0,
                int64_t c1, int64_t q0, int64_t q1, Isa isa, PackBufs& buf) {
  constexpr int MR = K::kMr, NR = K::kNr;
  constexpr int64_t KC = K::kKc;
  const int64_t Kd = wt.cols;
  const int64_t all_tiles = (wt.rows + MR - 1) / MR;
  const int64_t t0 = c0 / MR, tiles = (c1 - c0 + MR - 1) / MR;
  buf.b.resize(static_cast<size_t>(NR * std::min(KC, Kd)));
  float* bbuf = reinterpret_cast<float*>(buf.b.data());
  const UkrFn* table = K::table_f32();
  for (int64_t k0 = 0; k0 < Kd; k0 += KC) {
    const int64_t kc = std::min(KC, Kd - k0);
    const float* ablk = apk + all_tiles * MR * k0 + t0 * MR * kc;
    for (int64_t q = q0; q < q1; ++q) {
      K::gather_conv(g, q, k0, kc, bbuf);
      __mmask16 m0, m1;
      col_masks(g.P - q * NR, &m0, &m1);
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t r = c0 + t * MR;
        const int M = static_cast<int>(std::min<int64_t>(MR, c1 - r));
        table[M](ablk + t * MR * kc, bbuf, kc, out + r * g.P + q * NR, g.P, k0 > 0, m0, m1);
      }
    }
  }
  // Epilogue: + bias, GELU.
  const int64_t p_lo = q0 * NR, p_hi = std::min(g.P, q1 * NR);
  for (int64_t co = c0; co < c1; ++co) {
    float* row = out + co * g.P + p_lo;
    const float b = bias.empty() ? 0.f : weight_at(bias, co);
    for (int64_t p = 0; p < p_hi - p_lo; ++p) row[p] += b;
    gelu_f32(isa, row, p_hi - p_lo);
  }
}

template <class K>
void conv_packed(ThreadPool& pool, Isa isa, const ConvGeom& g, const Weight& wt, const Weight& bias, float* out,
                 std::vector<float>& pack) {
  constexpr int MR = K::kMr, NR = K::kNr;
  const int64_t cout = wt.rows;
  const int64_t panels = (g.P + NR - 1) / NR;
  const int64_t T = pool.size();
  const float* apk = conv_pack_weight<K>(pool, wt, pack);
  // Pixel panels split over the threads; with few panels per thread the channels are split too (in whole
  // micro-tiles), so that every thread has work and the shares stay even.
  const int64_t ctiles = (cout + MR - 1) / MR;
  const int64_t cs = panels >= 4 * T ? 1 : std::max<int64_t>(1, std::min<int64_t>(ctiles, (4 * T + panels - 1) / panels));
  const int64_t ps = std::min<int64_t>(panels, std::max<int64_t>(1, (4 * T + cs - 1) / cs));
  const int64_t tasks = ps * cs;
  pool.parallel_for(
      tasks,
      [&](int64_t tb, int64_t te) {
        thread_local PackBufs buf;
        for (int64_t t = tb; t < te; ++t) {
          const int64_t pi = t / cs, ci = t % cs;
          const int64_t q0 = panels * pi / ps, q1 = panels * (pi + 1) / ps;
          const int64_t c0 = std::min(cout, ctiles * ci / cs * MR), c1 = std::min(cout, ctiles * (ci + 1) / cs * MR);
          if (q0 >= q1 || c0 >= c1) continue;
          conv_range<K>(g, apk, wt, bias, out, c0, c1, q0, q1, isa, buf);
        }
      },
      1, tasks);
}
#endif  // RUSTASR_GEMM_X86

#if defined(RUSTASR_BLAS)

void blas_threads(int n) {
#if defined(RUSTASR_HAVE_CBLAS) && !defined(RUSTASR_HAVE_ACCELERATE)
  static std::mutex mu;
  static int current = -1;
  std::lock_guard<std::mutex> lk(mu);
  if (current != n) {
    openblas_set_num_threads(n);
    current = n;
  }
#else
  (void)n;
#endif
}

// y[:, r0:r0+pr] = x * B^T with B = float32 rows [r0, r0+pr) of W (ldb = cols).
inline void sgemm_panel(const float* x, int64_t n, int64_t cols, const float* B, int64_t pr, float* y,
                        int64_t ldy) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(pr),
              static_cast<int>(cols), 1.0f, x, static_cast<int>(cols), B, static_cast<int>(cols), 0.0f, y,
              static_cast<int>(ldy));
}

void gemm_blas(ThreadPool& pool, const float* x, int64_t n, const Weight& w, float* y, bool threaded,
               int64_t ph) {
  const int64_t cols = w.cols, rows = w.rows;
  if (threaded) {
    blas_threads(pool.size());
    if (w.dtype == DType::kF32) return sgemm_panel(x, n, cols, static_cast<const float*>(w.data), rows, y, rows);
    std::vector<float> buf(static_cast<size_t>(std::min(ph, rows) * cols));
    for (int64_t r0 = 0; r0 < rows; r0 += ph) {
      const int64_t pr = std::min(ph, rows - r0);
      pool.parallel_for(pr, [&](int64_t b, int64_t e) {
        convert_to_f32(w, (r0 + b) * cols, (e - b) * cols, buf.data() + b * cols);
      });
      sgemm_panel(x, n, cols, buf.data(), pr, y + r0, rows);
    }
    return;
  }
  blas_threads(1);
  const int64_t panels = (rows + ph - 1) / ph;
  pool.parallel_for(
      panels,
      [&](int64_t pb, int64_t pe) {
        thread_local std::vector<float> buf;
        for (int64_t p = pb; p < pe; ++p) {
          const int64_t r0 = p * ph, pr = std::min(ph, rows - r0);
          const float* B;
          if (w.dtype == DType::kF32) {
            B = static_cast<const float*>(w.data) + r0 * cols;
          } else {
            if (buf.size() < static_cast<size_t>(pr * cols)) buf.resize(static_cast<size_t>(pr * cols));
            convert_to_f32(w, r0 * cols, pr * cols, buf.data());
            B = buf.data();
          }
          sgemm_panel(x, n, cols, B, pr, y + r0, rows);
        }
      },
      1, panels);
}

#endif  // RUSTASR_BLAS

}  // namespace

void gemm(ThreadPool& pool, Isa isa, const float* x, int64_t n, const Weight& w, float* y, GemmImpl impl,
          int64_t panel_rows, Precision prec) {
  if (n <= 0 || w.rows <= 0) return;
  if (w.cols == 0) {
    std::fill(y, y + n * w.rows, 0.f);
    return;
  }
#if defined(RUSTASR_BLAS)
  // BLAS takes int dimensions.
  const bool fits = n < (int64_t(1) << 31) && w.rows < (int64_t(1) << 31) && w.cols < (int64_t(1) << 31);
  if (impl == GemmImpl::kAuto) {
    // Measured on Zen 5 (OpenBLAS with its Haswell/AVX2 kernels): the AVX-512 BF16 micro-kernels beat
    // upcast panels + sgemm while a 4-row block of x stays in L1 (cols <= 2048), and for few rows (the
    // panel upcast then costs more than the product); wide inputs with many rows go to BLAS.
    // The packed AVX-512 kernel (gemm_packed512) beats both everywhere it applies.
    // On AVX2 (Zen 3, measured against OpenBLAS's Zen sgemm on upcast panels) the same holds for the packed
    // AVX2 kernel.
    const bool own = (isa == Isa::kAvx512f || isa == Isa::kAvx512bf16 || isa == Isa::kAvx2) &&
                     (w.dtype == DType::kBF16 || w.dtype == DType::kI8 || w.dtype == DType::kI4);
    impl = (fits && !own) ? GemmImpl::kBlasPanels : GemmImpl::kOwn;
  }
  if (panel_rows <= 0) {
    // ~2 MiB of float32 per panel (256 rows at 1024 columns, 128 at 4096), at least one panel per thread.
    const int64_t per_thread = (w.rows + pool.size() - 1) / pool.size();
    panel_rows = std::min<int64_t>(256, (512 * 1024) / w.cols);
    panel_rows = std::min(panel_rows, (per_thread + 15) & ~int64_t(15));
    panel_rows = std::max<int64_t>(16, panel_rows & ~int64_t(15));
  }
  if (impl == GemmImpl::kBlasPanels || impl == GemmImpl::kBlasThreaded)
    return gemm_blas(pool, x, n, w, y, impl == GemmImpl::kBlasThreaded, panel_rows);
#else
  (void)panel_rows;
  if (impl == GemmImpl::kBlasPanels || impl == GemmImpl::kBlasThreaded)
    throw Error(ErrorCode::kUnsupportedDevice, "this build has no BLAS");
#endif
#if defined(RUSTASR_GEMM_X86)
  if (isa == Isa::kAvx512f || isa == Isa::kAvx512bf16) {
    const Weight* ws[1] = {&w};
    return gemm_packed_multi<Pk512>(pool, x, n, ws, &y, 1, isa_supported(Isa::kAvx512bf16) ? prec : Precision::kF32);
  }
  if (isa == Isa::kAvx2) {
    const Weight* ws[1] = {&w};
    return gemm_packed_multi<Pk256>(pool, x, n, ws, &y, 1, Precision::kF32);
  }
#else
  (void)prec;
#endif
  gemm_own(pool, isa, x, n, w, y);
}

void gemm_multi(ThreadPool& pool, Isa isa, const float* x, int64_t n, const Weight* const* ws, float* const* ys,
                int count, Precision prec) {
  if (n <= 0 || count <= 0) return;
#if defined(RUSTASR_GEMM_X86)
  bool packed = isa == Isa::kAvx512f || isa == Isa::kAvx512bf16 || isa == Isa::kAvx2;
  for (int i = 0; i < count && packed; ++i) packed = ws[i]->cols == ws[0]->cols && ws[i]->cols > 0 && ws[i]->rows > 0;
  // (AVX2 packs F16 element by element: those weights keep the BLAS panels, which upcast them with F16C.)
  for (int i = 0; i < count && packed && isa == Isa::kAvx2; ++i) packed = ws[i]->dtype != DType::kF16;
  if (packed && isa == Isa::kAvx2) return gemm_packed_multi<Pk256>(pool, x, n, ws, ys, count, Precision::kF32);
  if (packed) return gemm_packed_multi<Pk512>(pool, x, n, ws, ys, count, isa_supported(Isa::kAvx512bf16) ? prec : Precision::kF32);
#endif
  for (int i = 0; i < count; ++i) gemm(pool, isa, x, n, *ws[i], ys[i], GemmImpl::kAuto, 0, prec);
}

bool conv3x3s2_gelu_direct(ThreadPool& pool, Isa isa, const float* in, int64_t cin, int64_t h, int64_t w,
                           const Weight& weight, const Weight& bias, float* out, std::vector<float>& pack) {
#if defined(RUSTASR_GEMM_X86)
  if (isa != Isa::kAvx512f && isa != Isa::kAvx512bf16 && isa != Isa::kAvx2) return false;
  const int64_t oh = (h + 1) / 2, ow = (w + 1) / 2;
  // The gather's 32-bit offsets: an input of up to 2^31 - 1 floats.
  if (cin * h * w >= (int64_t(1) << 31) - 2 * w) return false;
  const ConvGeom g{in, cin, h, w, oh, ow, oh * ow};
  if (g.P <= 0 || weight.rows <= 0) return true;
  if (isa == Isa::kAvx2)
    conv_packed<Pk256>(pool, isa, g, weight, bias, out, pack);
  else
    conv_packed<Pk512>(pool, isa, g, weight, bias, out, pack);
  return true;
#else
  (void)pool, (void)isa, (void)in, (void)cin, (void)h, (void)w, (void)weight, (void)bias, (void)out, (void)pack;
  return false;
#endif
}

}  // namespace cpu
}  // namespace rustasr
