// Matrix-matrix product for many activation rows (encoder, prefill): y[n, W.rows] = x[n, W.cols] * W^T.
//
// With a BLAS (RUSTASR_HAVE_CBLAS: OpenBLAS; RUSTASR_HAVE_ACCELERATE: Apple Accelerate) the weight is
// upcast to float32 one panel of output rows at a time into a per-thread scratch buffer and multiplied by
// cblas_sgemm; panels are spread over the pool with the BLAS itself single-threaded. A float32 copy of
// a whole weight never exists. The other path is a blocked GEMM on the gemv micro-kernels (weight panel
// in L2, 4-row blocks of x in L1): it is the only path without a BLAS, and kAuto also picks it for BF16
// weights on the AVX-512 paths when cols <= 2048 or n <= 64, where it measured faster than OpenBLAS's
// sgemm (whose x86 kernels here are AVX2).
#pragma once

#include <cstdint>

#include "../../util/tensor.h"
#include "gemv.h"
#include "threadpool.h"

namespace rustasr {
namespace cpu {

enum class GemmImpl {
  kAuto,          // see above
  kBlasPanels,    // panels spread over the pool, BLAS single-threaded (needs a BLAS)
  kBlasThreaded,  // panels in sequence, BLAS multi-threaded (needs a BLAS; for measurement)
  kOwn,           // blocked gemv-kernel GEMM, no BLAS
};

bool gemm_has_blas();

// No bias. `panel_rows` = 0 picks the default panel height.
void gemm(ThreadPool& pool, Isa isa, const float* x, int64_t n, const Weight& w, float* y,
          GemmImpl impl = GemmImpl::kAuto, int64_t panel_rows = 0);

}  // namespace cpu
}  // namespace rustasr
