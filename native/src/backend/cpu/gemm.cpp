#include "gemm.h"

#include <algorithm>
#include <mutex>
#include <vector>

#include "rustasr/engine.h"

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
    const bool own = (isa == Isa::kAvx512f || isa == Isa::kAvx512bf16) && w.dtype == DType::kBF16 &&
                     (w.cols <= 2048 || n <= 64);
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
  gemm_own(pool, isa, x, n, w, y);
}

}  // namespace cpu
}  // namespace rustasr
