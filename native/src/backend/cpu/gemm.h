// Matrix-matrix product for many activation rows (encoder, prefill): y[n, W.rows] = x[n, W.cols] * W^T.
//
// On the AVX-512 paths (avx512f, avx512bf16) kAuto and kOwn take the packed GEMM (gemm.cpp,
// gemm_packed_multi<Pk512>): x is packed into 12-row tiles and the weight, 256 rows x 256 columns at a time, into
// 32-row micro-panels (BF16 weights as their own bits, transposed in pairs of columns and split into exact
// float32 in the micro-kernel; int8 dequantised to float32), and a 12 x 32 register-tile micro-kernel runs
// every x tile past them (float32 FMA, float32 accuracy); each weight element is read from memory once per
// call, and the next block's bytes are prefetched while the current one is multiplied. Precision::kBf16
// (opt-in; CPUs with AVX512-BF16) rounds x to BF16 and multiplies BF16 weights with vdpbf16ps.
// On AVX2 (FMA3) the same driver runs a 6 x 16 register tile (12 ymm accumulators) with every weight dtype
// packed as float32 (BF16 upcast while packing), 256 columns per block; same float32 products and summation
// order as the AVX-512 path. Elsewhere, with a BLAS (RUSTASR_HAVE_CBLAS: OpenBLAS; RUSTASR_HAVE_ACCELERATE:
// Apple Accelerate) the
// weight is upcast to float32 one panel of output rows at a time into a per-thread scratch buffer and
// multiplied by cblas_sgemm, panels spread over the pool with the BLAS single-threaded (a float32 copy of
// a whole weight never exists); without one, kOwn is a blocked GEMM on the gemv micro-kernels.
#pragma once

#include <cstdint>
#include <vector>

#include "../../util/tensor.h"
#include "gemv.h"
#include "threadpool.h"

namespace rustasr {
namespace cpu {

enum class GemmImpl {
  kAuto,          // see above: packed on AVX-512 and AVX2 (BF16 / int8 / int4 weights), else BLAS panels when
                  // there is a BLAS, else kOwn
  kBlasPanels,    // panels spread over the pool, BLAS single-threaded (needs a BLAS)
  kBlasThreaded,  // panels in sequence, BLAS multi-threaded (needs a BLAS; for measurement)
  kOwn,           // no BLAS: the packed GEMM on AVX-512 and AVX2, the blocked gemv-kernel GEMM elsewhere
};

// Arithmetic of the batched products: kF32 (default) multiplies float32 activations by the exactly upcast
// weights; kBf16 rounds the activations to BF16 and multiplies BF16 weights with the CPU's BF16 dot product
// (where it has one: AVX512-BF16; elsewhere kF32 is used).
enum class Precision { kF32, kBf16 };

bool gemm_has_blas();

// No bias. `panel_rows` = 0 picks the default panel height.
void gemm(ThreadPool& pool, Isa isa, const float* x, int64_t n, const Weight& w, float* y,
          GemmImpl impl = GemmImpl::kAuto, int64_t panel_rows = 0, Precision prec = Precision::kF32);

// gemm of several weights of the same width against one x (q/k/v, gate/up), as one pass over the pool.
void gemm_multi(ThreadPool& pool, Isa isa, const float* x, int64_t n, const Weight* const* ws, float* const* ys,
                int count, Precision prec = Precision::kF32);

// 3x3 stride-2 pad-1 convolution with bias and exact GELU (Backend::conv3x3s2_gelu) as one packed product
// with no im2col buffer: the input pixels are gathered straight into the micro-panels and the output is
// written in its [cout, oh * ow] layout. Returns false (nothing done) where there is no such kernel (the
// caller then runs im2col + gemm): the AVX-512 and AVX2 paths. `pack` is the caller's scratch for the weight
// packed once per call (kept between calls: one per backend, used by one call at a time).
bool conv3x3s2_gelu_direct(ThreadPool& pool, Isa isa, const float* in, int64_t cin, int64_t h, int64_t w,
                           const Weight& weight, const Weight& bias, float* out, std::vector<float>& pack);

}  // namespace cpu
}  // namespace rustasr
