// Matrix-vector kernels of the CPU backend: y[m, rows] = x[m, cols] * W^T for a few activation rows
// (m <= kGemvMaxRows), reading the weight in place in its checkpoint dtype (never a float32 copy).
//
// Paths (BackendOptions.kernel):
//   avx512f    - BF16 upcast to f32 by a 16-bit shift (exact), f32 FMA with f32 x: float32 accuracy.
//   avx512bf16 - vdpbf16ps with x split into three bf16 parts (x = hi + mid + lo exactly to ~2^-24):
//                the products W*part are exact, so the result has float32 accuracy too.
//   avx2       - BF16 upcast + FMA on 256-bit vectors, with software prefetch.
//   neon       - aarch64: BF16 upcast + FMA on 128-bit vectors.
//   scalar     - portable C++.
// F16 and F32 weights take a generic path (row converted to a small buffer, then an f32 dot product).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../../util/tensor.h"
#include "threadpool.h"

namespace rustasr {
namespace cpu {

enum class Isa { kScalar, kAvx2, kAvx512f, kAvx512bf16, kNeon };

constexpr int kGemvMaxRows = 4;  // activation rows one kernel pass serves

const char* isa_name(Isa isa);
bool isa_supported(Isa isa);
// The best path this CPU supports ("auto").
Isa best_isa();
// "auto" | "avx512bf16" | "avx512f" | "avx2" | "neon" | "scalar". Throws Error(kInvalidArgument) for an
// unknown name and Error(kUnsupportedDevice) for a path this CPU (or build) cannot run.
Isa parse_kernel(const std::string& name);

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

// Vector helpers used by the other ops, on the best path of `isa`.
float dot_f32(Isa isa, const float* a, const float* b, int64_t n);
void axpy_f32(Isa isa, float a, const float* x, float* y, int64_t n);  // y += a * x
// Attention of `group` query heads (q: group * head_dim floats, head after head) sharing one KV head,
// against `limit` key/value rows (rows kv_stride floats apart): out[g * head_dim ..] = softmax(q_g . k_j *
// scale) . v_j, with the scores and the output kept in registers where the ISA allows and each key/value
// row read once for the group. Returns false (nothing written) when this ISA / head_dim has no such
// kernel: the caller then runs the generic loop. scratch: group * `limit` floats.
bool attend_f32(Isa isa, const float* q, const float* k, const float* v, int64_t limit, int64_t kv_stride,
                int64_t head_dim, int64_t group, float scale, float* scratch, float* out);

// Decode attention split by position: one query row of every head (q_heads, kv_heads KV heads), over the
// key/value rows [j0, j1), all heads of a row at once (the rows are read in order, as one block). Per
// query head h: m[h] = max score, sum[h] = sum of exp(score - m[h]), o[h * head_dim ..] = the
// exp-weighted sum of value rows (not divided by sum). The caller combines the parts. Returns false
// (nothing written) when attend_part_available says no. sc: q_heads * (j1 - j0) floats.
bool attend_part_available(Isa isa, int64_t head_dim, int64_t q_heads, int64_t kv_heads);
bool attend_part_f32(Isa isa, const float* q, const float* k, const float* v, int64_t j0, int64_t j1,
                     int64_t kv_stride, int64_t q_heads, int64_t kv_heads, int64_t head_dim, float scale, float* sc,
                     float* o, float* m, double* sum);

// x = GELU(x) in place, the exact (erf) form: libm's erf, or on the AVX-512 paths a vector erf within 1.5e-7.
void gelu_f32(Isa isa, float* x, int64_t n);

// out = silu(gate) * up (out may alias gate): libm's exp, or on the AVX-512 paths a vector exp (a few ulp).
void silu_mul_f32(Isa isa, const float* gate, const float* up, int64_t n, float* out);

// out[0 .. n) = weight elements [offset, offset + n) as float32 (vectorised BF16/F16 upcast).
void convert_to_f32(const Weight& w, int64_t offset, int64_t n, float* out);

}  // namespace cpu
}  // namespace rustasr
