// Attention kernels (attention.h): the AVX-512 and AVX2 forms; other ISAs take the generic loop of cpu_backend.cpp.
#include "attention.h"

#include <algorithm>
#include <cmath>

#include "simd.h"

namespace rustasr {
namespace cpu {

#if defined(RUSTASR_X86)
namespace {

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


// The AVX2 form of attend_avx512: G query heads sharing one KV head, head_dim = 8 * NV (NV vectors of 8).
// Bit-identical to the generic loop of cpu_backend.cpp on AVX2 (dot_f32 / axpy_f32 per key and head), only
// without its per-key calls and the load / store of the output per key:
//   - scores: per key and head vec_avx2::dot's arithmetic (two accumulators over 16 lanes, an 8-lane tail into
//     the first, hsum256 of their sum) times `scale`; R = 4 / G keys at a time share the loads of q;
//   - softmax as the generic loop (float exp, double sum, in key order);
//   - the weighted sum of value rows in registers, CW vectors of every head per pass over the keys (16 ymm
//     cannot hold a 128-wide head), each output element the same FMAs in key order as axpy from 0.
constexpr int64_t kPrefetchRows256 = 8;
template <int G, int R>
T256 inline void scores_avx2(const float* q, const float* k, int64_t j, int64_t limit, int64_t kv_stride, int NV,
                             float scale, float* sc) {
  const int HD = 8 * NV;
  __m256 s0[R][G], s1[R][G];
  RUSTASR_UNROLL
  for (int r = 0; r < R; ++r) {
    RUSTASR_UNROLL
    for (int g = 0; g < G; ++g) s0[r][g] = s1[r][g] = _mm256_setzero_ps();
  }
  int i = 0;
  for (; i + 16 <= HD; i += 16) {
    __m256 qa[G], qb[G];
    RUSTASR_UNROLL
    for (int g = 0; g < G; ++g) qa[g] = _mm256_loadu_ps(q + g * HD + i), qb[g] = _mm256_loadu_ps(q + g * HD + i + 8);
    RUSTASR_UNROLL
    for (int r = 0; r < R; ++r) {
      const float* kr = k + (j + r) * kv_stride;
      const __m256 ka = _mm256_loadu_ps(kr + i), kb = _mm256_loadu_ps(kr + i + 8);
      RUSTASR_UNROLL
      for (int g = 0; g < G; ++g) {
        s0[r][g] = _mm256_fmadd_ps(qa[g], ka, s0[r][g]);
        s1[r][g] = _mm256_fmadd_ps(qb[g], kb, s1[r][g]);
      }
    }
  }
  if (i < HD) {  // an 8-lane tail, into the first accumulator
    RUSTASR_UNROLL
    for (int r = 0; r < R; ++r) {
      const __m256 ka = _mm256_loadu_ps(k + (j + r) * kv_stride + i);
      RUSTASR_UNROLL
      for (int g = 0; g < G; ++g) s0[r][g] = _mm256_fmadd_ps(_mm256_loadu_ps(q + g * HD + i), ka, s0[r][g]);
    }
  }
  RUSTASR_UNROLL
  for (int r = 0; r < R; ++r) {
    RUSTASR_UNROLL
    for (int g = 0; g < G; ++g) sc[g * limit + j + r] = hsum256(_mm256_add_ps(s0[r][g], s1[r][g])) * scale;
  }
}

// Output vectors [c0, c0 + CW) of every head: sum over the keys in order of p_j * v_j[..], then times inv[g].
template <int G, int CW>
T256 inline void pv_pass_avx2(const float* v, int64_t limit, int64_t kv_stride, int HD, int c0, const float* sc,
                              const float* inv, float* o) {
  __m256 acc[G][CW];
  RUSTASR_UNROLL
  for (int g = 0; g < G; ++g) {
    RUSTASR_UNROLL
    for (int c = 0; c < CW; ++c) acc[g][c] = _mm256_setzero_ps();
  }
  for (int64_t j = 0; j < limit; ++j) {
    const float* vr = v + j * kv_stride + 8 * c0;
    if (c0 == 0 && j + kPrefetchRows256 < limit) {
      for (int b = 0; b < HD; b += 16) _mm_prefetch(reinterpret_cast<const char*>(vr + kPrefetchRows256 * kv_stride + b), _MM_HINT_T0);
    }
    __m256 p[G];
    RUSTASR_UNROLL
    for (int g = 0; g < G; ++g) p[g] = _mm256_set1_ps(sc[g * limit + j]);
    RUSTASR_UNROLL
    for (int c = 0; c < CW; ++c) {
      const __m256 x = _mm256_loadu_ps(vr + 8 * c);
      RUSTASR_UNROLL
      for (int g = 0; g < G; ++g) acc[g][c] = _mm256_fmadd_ps(p[g], x, acc[g][c]);
    }
  }
  RUSTASR_UNROLL
  for (int g = 0; g < G; ++g) {
    const __m256 iv = _mm256_set1_ps(inv[g]);
    RUSTASR_UNROLL
    for (int c = 0; c < CW; ++c) _mm256_storeu_ps(o + g * HD + 8 * (c0 + c), _mm256_mul_ps(acc[g][c], iv));
  }
}

template <int G>
T256 void attend_avx2(const float* q, const float* k, const float* v, int64_t limit, int64_t kv_stride, int NV,
                      float scale, float* sc, float* o) {
  constexpr int R = 4 / G;
  const int HD = 8 * NV;
  int64_t j = 0;
  for (; j + R <= limit; j += R) {
    if (j + kPrefetchRows256 + R <= limit) {
      for (int r = 0; r < R; ++r)
        for (int b = 0; b < HD; b += 16)
          _mm_prefetch(reinterpret_cast<const char*>(k + (j + kPrefetchRows256 + r) * kv_stride + b), _MM_HINT_T0);
    }
    scores_avx2<G, R>(q, k, j, limit, kv_stride, NV, scale, sc);
  }
  for (; j < limit; ++j) scores_avx2<G, 1>(q, k, j, limit, kv_stride, NV, scale, sc);
  float inv[G];
  for (int g = 0; g < G; ++g) inv[g] = static_cast<float>(1.0 / softmax_exp(sc + g * limit, limit));
  constexpr int CW = 8 / G;
  int c = 0;
  for (; c + CW <= NV; c += CW) pv_pass_avx2<G, CW>(v, limit, kv_stride, HD, c, sc, inv, o);
  for (; c < NV; ++c) pv_pass_avx2<G, 1>(v, limit, kv_stride, HD, c, sc, inv, o);
}

}  // namespace
#endif

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

double softmax_exp(float* s, int64_t n) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < n; ++j) mx = std::max(mx, s[j]);
  double sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    const float e = std::exp(s[j] - mx);
    s[j] = e;
    sum += e;
  }
  return sum;
}

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
  if (isa == Isa::kAvx2 && head_dim % 8 == 0 && head_dim <= 256) {
    const int nv = static_cast<int>(head_dim / 8);
    if (group == 1) attend_avx2<1>(q, k, v, limit, kv_stride, nv, scale, scratch, out);
    else if (group == 2) attend_avx2<2>(q, k, v, limit, kv_stride, nv, scale, scratch, out);
    else if (group == 4) attend_avx2<4>(q, k, v, limit, kv_stride, nv, scale, scratch, out);
    else
      for (int64_t g = 0; g < group; ++g)
        attend_avx2<1>(q + g * head_dim, k, v, limit, kv_stride, nv, scale, scratch, out + g * head_dim);
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

}  // namespace cpu
}  // namespace rustasr
