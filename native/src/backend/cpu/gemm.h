// Matrix-matrix product for many activation rows (encoder, prefill): y[n, W.rows] = x[n, W.cols] * W^T.
//
// On the AVX-512 paths (avx512f, avx512bf16) kAuto and kOwn take the packed GEMM (gemm.cpp,
// gemm_packed512): blocks of 32 weight rows x 256 columns are upcast (BF16) or dequantised (int8) to
// float32 and transposed into L1-sized micro-panels, and a 12 x 32 register-tile micro-kernel runs every
// x row past them (float32 FMA, float32 accuracy); each weight element is read from memory once per
// call, and the next block's bytes are prefetched while the current one is multiplied.
// Elsewhere, with a BLAS (RUSTASR_HAVE_CBLAS: OpenBLAS; RUSTASR_HAVE_ACCELERATE: Apple Accelerate) the
// weight is upcast to float32 one panel of output rows at a time into a per-thread scratch buffer and
// multiplied by cblas_sgemm, panels spread over the pool with the BLAS single-threaded (a float32 copy of
// a whole weight never exists); without one, kOwn is a blocked GEMM on the gemv micro-kernels.
#pragma once

#include <cstdint>

#include "../../util/tensor.h"
#include "gemv.h"
#include "threadpool.h"

namespace rustasr {
namespace cpu {

enum class GemmImpl {
  kAuto,          // see above: packed on AVX-512, else BLAS panels when there is a BLAS, else kOwn
  kBlasPanels,    // panels spread over the pool, BLAS single-threaded (needs a BLAS)
  kBlasThreaded,  // panels in sequence, BLAS multi-threaded (needs a BLAS; for measurement)
  kOwn,           // no BLAS: the packed GEMM on AVX-512, the blocked gemv-kernel GEMM elsewhere
};

bool gemm_has_blas();

// No bias. `panel_rows` = 0 picks the default panel height.
void gemm(ThreadPool& pool, Isa isa, const float* x, int64_t n, const Weight& w, float* y,
          GemmImpl impl = GemmImpl::kAuto, int64_t panel_rows = 0);

}  // namespace cpu
}  // namespace rustasr
