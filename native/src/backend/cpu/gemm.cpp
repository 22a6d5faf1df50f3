#include "gemm.h"

#include <algorithm>
#include <mutex>
#include <vector>

#include "rustasr/engine.h"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define RUSTASR_GEMM_X86 1
#include <immintrin.h>
#define TG512 __attribute__((target("avx512f,avx512bw,avx512vl")))
#endif

#if defined(__clang__)
#define RUSTASR_GEMM_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define RUSTASR_GEMM_UNROLL _Pragma("GCC unroll 16")
#else
#define RUSTASR_GEMM_UNROLL
#endif

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
// Packed AVX-512 GEMM (the float32-FMA path of the AVX-512 kernels). The weight is the "B" operand:
// a block of kNc output rows x kKc columns is upcast to float32 and transposed into micro-panels
// bp[k][32] (32 consecutive output rows per k), which stay in L1/L2 while every 1..12-row tile of x
// streams past them. The micro-kernel keeps a 12 x 32 tile of y in 24 zmm accumulators and, per k,
// loads two weight vectors and broadcasts 12 x values: 24 FMAs per 14 loads, no horizontal sums, and
// y rows are written contiguously. Every product is an exact float32 FMA of the upcast weight, as on
// the gemv paths; only the summation order differs.

constexpr int kMr = 12;       // x rows per micro-tile
constexpr int kNr = 32;       // output rows (y columns) per micro-panel
constexpr int64_t kKc = 256;  // k block: a micro-panel is kKc * 32 * 4 = 32 KiB
constexpr int64_t kNcMax = 8 * kNr;  // output rows packed at once (256 KiB of float32 at kKc = 256)

// (The maskz forms avoid GCC 12's false -Wmaybe-uninitialized on the _mm512_undefined_* in the plain ones.)
constexpr __mmask16 kAll16 = static_cast<__mmask16>(0xFFFF);
constexpr __mmask8 kAll8 = static_cast<__mmask8>(0xFF);

// 16 x 16 float32 transpose of r[0..15] in place.
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

// bp[k * 32 + j] = W[r0 + j, k0 + k] for j < nr (0 for nr <= j < 32), k < kc.
TG512 void pack_panel(const Weight& w, int64_t r0, int nr, int64_t k0, int64_t kc, float* bp) {
  const int64_t cols = w.cols;
  int64_t k = 0;
  if (w.dtype == DType::kBF16) {
    const uint16_t* W = static_cast<const uint16_t*>(w.data);
    for (; k + 16 <= kc; k += 16) {
      for (int jb = 0; jb < kNr; jb += 16) {
        __m512 r[16];
        for (int j = 0; j < 16; ++j)
          r[j] = (jb + j < nr) ? bf16x16_to_f32(W + (r0 + jb + j) * cols + k0 + k) : _mm512_setzero_ps();
        transpose16(r);
        for (int i = 0; i < 16; ++i) _mm512_storeu_ps(bp + (k + i) * kNr + jb, r[i]);
      }
    }
  } else if (w.dtype == DType::kI8 && w.group % 16 == 0) {
    const int8_t* W = static_cast<const int8_t*>(w.data);
    const int64_t gpr = cols / w.group;
    for (; k + 16 <= kc; k += 16) {
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
  }
  for (; k < kc; ++k)
    for (int j = 0; j < kNr; ++j) bp[k * kNr + j] = j < nr ? weight_at(w, (r0 + j) * cols + k0 + k) : 0.f;
}

// y[m, 0..31] (+)= sum_k x[m, k] * bp[k, 0..31] for m < M; columns masked by (m0, m1).
template <int M>
TG512 void ukr(const float* x, int64_t ldx, const float* bp, int64_t kc, float* y, int64_t ldy, bool acc_in,
               __mmask16 m0, __mmask16 m1) {
  __m512 a0[M], a1[M];
  RUSTASR_GEMM_UNROLL
  for (int m = 0; m < M; ++m) {
    a0[m] = _mm512_setzero_ps();
    a1[m] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_loadu_ps(bp + k * kNr);
    const __m512 b1 = _mm512_loadu_ps(bp + k * kNr + 16);
    RUSTASR_GEMM_UNROLL
    for (int m = 0; m < M; ++m) {
      const __m512 xv = _mm512_set1_ps(x[m * ldx + k]);
      a0[m] = _mm512_fmadd_ps(b0, xv, a0[m]);
      a1[m] = _mm512_fmadd_ps(b1, xv, a1[m]);
    }
  }
  RUSTASR_GEMM_UNROLL
  for (int m = 0; m < M; ++m) {
    float* yr = y + m * ldy;
    if (acc_in) {
      a0[m] = _mm512_add_ps(a0[m], _mm512_maskz_loadu_ps(m0, yr));
      a1[m] = _mm512_add_ps(a1[m], _mm512_maskz_loadu_ps(m1, yr + 16));
    }
    _mm512_mask_storeu_ps(yr, m0, a0[m]);
    _mm512_mask_storeu_ps(yr + 16, m1, a1[m]);
  }
}

using UkrFn = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, bool, __mmask16, __mmask16);
const UkrFn kUkr[kMr + 1] = {nullptr,  ukr<1>, ukr<2>, ukr<3>,  ukr<4>,  ukr<5>, ukr<6>,
                             ukr<7>,   ukr<8>, ukr<9>, ukr<10>, ukr<11>, ukr<12>};

// Output rows [p0 * 32, p1 * 32) (clipped to w.rows), all of x and k.
// Software prefetch of the weight bytes the next pack will read, spread over the micro-kernel calls of
// the current block so that the (DRAM-bound) weight stream overlaps the (compute-bound) products.
struct NextBlockPrefetch {
  const char* base = nullptr;  // weight bytes
  int64_t row_bytes = 0;       // cols * element size
  int64_t r0 = 0, r1 = 0;      // rows of the next block
  int64_t off = 0, len = 0;    // byte range inside each row
  int64_t lines_per_row = 0, total = 0, done = 0, per_call = 0;

  void set(const Weight& w, int64_t rows_b, int64_t rows_e, int64_t k0, int64_t kc, int64_t calls) {
    const int64_t es = static_cast<int64_t>(dtype_size(w.dtype));
    base = static_cast<const char*>(w.data);
    row_bytes = w.cols * es;
    r0 = rows_b;
    r1 = rows_e;
    off = k0 * es;
    len = kc * es;
    lines_per_row = (len + 63) / 64;
    total = (r1 > r0) ? (r1 - r0) * lines_per_row : 0;
    done = 0;
    per_call = calls > 0 ? (total + calls - 1) / calls : total;
  }
  void step() {
    const int64_t end = std::min(total, done + per_call);
    for (; done < end; ++done) {
      const int64_t r = r0 + done / lines_per_row, l = done % lines_per_row;
      _mm_prefetch(base + r * row_bytes + off + l * 64, _MM_HINT_T1);
    }
  }
};

// Output rows [p0 * 32, p1 * 32) (clipped to w.rows), all of x and k.
void packed_range(const float* x, int64_t n, const Weight& w, float* y, int64_t p0, int64_t p1,
                  std::vector<float>& buf) {
  const int64_t rows = w.rows, cols = w.cols;
  const int64_t kc_max = std::min(kKc, cols);
  buf.resize(static_cast<size_t>(kNcMax * kc_max));
  float* bp = buf.data();
  const int64_t pn_max = kNcMax / kNr;
  const int64_t tiles = (n + kMr - 1) / kMr;
  NextBlockPrefetch pf;
  for (int64_t pb = p0; pb < p1; pb += pn_max) {
    const int64_t pe = std::min(p1, pb + pn_max);
    for (int64_t k0 = 0; k0 < cols; k0 += kKc) {
      const int64_t kc = std::min(kKc, cols - k0);
      for (int64_t p = pb; p < pe; ++p) {
        const int nr = static_cast<int>(std::min<int64_t>(kNr, rows - p * kNr));
        pack_panel(w, p * kNr, nr, k0, kc, bp + (p - pb) * kNr * kc);
      }
      // The block packed next: the next k range of these rows, else the first k range of the next rows.
      const int64_t calls = tiles * (pe - pb);
      if (k0 + kKc < cols) {
        pf.set(w, pb * kNr, std::min(rows, pe * kNr), k0 + kKc, std::min(kKc, cols - k0 - kKc), calls);
      } else if (pe < p1) {
        const int64_t pe2 = std::min(p1, pe + pn_max);
        pf.set(w, pe * kNr, std::min(rows, pe2 * kNr), 0, std::min(kKc, cols), calls);
      } else {
        pf.set(w, 0, 0, 0, 0, calls);
      }
      for (int64_t i0 = 0; i0 < n; i0 += kMr) {
        const int M = static_cast<int>(std::min<int64_t>(kMr, n - i0));
        const UkrFn fn = kUkr[M];
        for (int64_t p = pb; p < pe; ++p) {
          const int nr = static_cast<int>(std::min<int64_t>(kNr, rows - p * kNr));
          const __mmask16 m0 = nr >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << nr) - 1);
          const __mmask16 m1 = nr >= 32 ? static_cast<__mmask16>(0xFFFF)
                               : nr > 16 ? static_cast<__mmask16>((1u << (nr - 16)) - 1)
                                         : static_cast<__mmask16>(0);
          fn(x + i0 * cols + k0, cols, bp + (p - pb) * kNr * kc, kc, y + i0 * rows + p * kNr, rows, k0 > 0, m0,
             m1);
          pf.step();
        }
      }
    }
  }
}

void gemm_packed512(ThreadPool& pool, const float* x, int64_t n, const Weight& w, float* y) {
  const int64_t panels = (w.rows + kNr - 1) / kNr;
  // Output rows split evenly over the threads (each packs its own weight rows: the weight is read once).
  // With few panels per thread, x is split too so that every thread has work.
  const int64_t T = pool.size();
  const int64_t tiles = (n + kMr - 1) / kMr;
  const int64_t pt = std::min<int64_t>(panels, T);
  const int64_t xs = std::max<int64_t>(1, std::min<int64_t>(tiles, T / pt));
  const int64_t tasks = pt * xs;
  pool.parallel_for(
      tasks,
      [&](int64_t tb, int64_t te) {
        thread_local std::vector<float> buf;
        for (int64_t t = tb; t < te; ++t) {
          const int64_t pi = t / xs, xi = t % xs;
          const int64_t p0 = panels * pi / pt, p1 = panels * (pi + 1) / pt;
          // x split in multiples of the micro-tile height.
          const int64_t i0 = tiles * xi / xs * kMr, i1 = std::min(n, tiles * (xi + 1) / xs * kMr);
          if (i0 >= i1 || p0 >= p1) continue;
          packed_range(x + i0 * w.cols, i1 - i0, w, y + i0 * w.rows, p0, p1, buf);
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
          int64_t panel_rows) {
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
    const bool own = (isa == Isa::kAvx512f || isa == Isa::kAvx512bf16) &&
                     (w.dtype == DType::kBF16 || w.dtype == DType::kI8);
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
  if (isa == Isa::kAvx512f || isa == Isa::kAvx512bf16) return gemm_packed512(pool, x, n, w, y);
#endif
  gemm_own(pool, isa, x, n, w, y);
}

}  // namespace cpu
}  // namespace rustasr
