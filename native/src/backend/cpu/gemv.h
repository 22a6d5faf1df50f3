// Matrix-vector kernels of the CPU backend: y[m, rows] = x[m, cols] * W^T for a few activation rows
// (m <= kGemvMaxRows), reading the weight in place in its checkpoint dtype (never a float32 copy). Each
// activation row is computed with the same arithmetic whatever the other rows of the call (batched decoding
// relies on it: model/batch.h). ISA detection is in isa.h, the vector helpers in vecops.h, attention in
// attention.h.
//
// Paths (BackendOptions.kernel):
//   avx512f    - BF16 upcast to f32 by a 16-bit shift (exact), f32 FMA with f32 x: float32 accuracy.
//   avx512bf16 - vdpbf16ps with x split into three bf16 parts (x = hi + mid + lo exactly to ~2^-24):
//                the products W*part are exact, so the result has float32 accuracy too.
//   avx2       - BF16 upcast + FMA on 256-bit vectors, with software prefetch.
//   neon       - aarch64: BF16 upcast + FMA on 128-bit vectors.
//   scalar     - portable C++.
// int8 and int4 weights (quant "int8" / "int4"): float32 activations times the exact integers, summed per
// block and scaled (AVX-512, AVX2 and NEON kernels for int8; AVX-512, AVX2 and portable ones for int4).
// F16 and F32 weights take a generic path (row converted to a small buffer, then an f32 dot product).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../../util/tensor.h"
#include "isa.h"
#include "threadpool.h"

namespace rustasr {
namespace cpu {

constexpr int kGemvMaxRows = 4;  // activation rows one kernel pass serves

// Activations prepared for one kernel pass over up to kGemvMaxRows rows (the avx512bf16 path needs x
// split into bf16 parts; the other paths read x directly).
class GemvInput {
 public:
  void prepare(Isa isa, const float* x, int64_t ldx, int m, int64_t cols);
  const float* x = nullptr;
  int64_t ldx = 0;
  int m = 0;
  int64_t cols = 0;
  int64_t cols_pad = 0;          // avx512bf16: part row length (multiple of 32)
  std::vector<uint16_t> parts;   // avx512bf16: [m][3][cols_pad]
};

// Single-threaded: rows [r0, r1) of y[i, r] (i < in.m, y row stride ldy) for any weight dtype.
void gemv_rows(Isa isa, const GemvInput& in, const Weight& w, int64_t r0, int64_t r1, float* y, int64_t ldy);

// y[n, w.rows] = x[n, w.cols] * W^T (no bias), output rows split across the pool. Any n works (rows of
// x are taken kGemvMaxRows at a time, re-reading W each pass): meant for small n.
void gemv(ThreadPool& pool, Isa isa, const float* x, int64_t n, const Weight& w, float* y);

// gemv of several weights with the same cols against the same x (e.g. q, k, v): one pass over the pool
// with the output rows of all of them shared out together (one wake-up, longer contiguous streams).
void gemv_multi(ThreadPool& pool, Isa isa, const float* x, int64_t n, const Weight* const* ws, float* const* ys,
                int count);

}  // namespace cpu
}  // namespace rustasr
