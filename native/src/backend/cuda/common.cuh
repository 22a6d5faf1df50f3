// Shared pieces of the CUDA backend: error checking, the device form of a weight, small device helpers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "rustasr/engine.h"

namespace rustasr {
namespace cuda {

// Throws rustasr::Error for a failed CUDA call: kUnsupportedDevice when the device or driver is gone or
// unusable, kInternal otherwise, with the CUDA error name and string.
[[noreturn]] void throw_cuda(cudaError_t e, const char* what, const char* file, int line);

#define RUSTASR_CK(call)                                                                   \
  do {                                                                                     \
    const cudaError_t rustasr_e_ = (call);                                                 \
    if (rustasr_e_ != cudaSuccess) ::rustasr::cuda::throw_cuda(rustasr_e_, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: launch-configuration errors (and earlier sticky errors) surface here.
#define RUSTASR_CK_LAUNCH() RUSTASR_CK(cudaGetLastError())

// Every op runs on the calling host thread's default stream (the plugin is built with
// --default-stream per-thread; the handle is also passed explicitly).
inline cudaStream_t stream() { return cudaStreamPerThread; }

// How a weight lies in device memory (Backend::prepare_weight; see cuda_backend.cu):
//   kBF16 - BF16 matrices (rows > 1) as in the checkpoint;
//   kI8   - int8 values + float32 scales per `group` columns (DType::kI8);
//   kF32  - everything else converted to float32: F16 / F32 matrices and every 1-D vector (norm weights,
//           biases), whatever its checkpoint dtype.
enum class DevKind { kBF16, kI8, kF32 };

struct DevWeight {
  const void* p = nullptr;        // device data (nullptr for an absent weight)
  const float* scales = nullptr;  // kI8: device scales, [rows, cols / group]
  DevKind kind = DevKind::kF32;
  int64_t rows = 0, cols = 0, group = 0;
  __host__ __device__ const float* f32() const { return static_cast<const float*>(p); }
};

// ---- device helpers ------------------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// BF16 bits -> float (exact).
__device__ __forceinline__ float bf16_bits_to_f32(uint32_t h) { return __uint_as_float(h << 16); }

// Element (r, c) of a weight as float32 (the slow, general path).
__device__ __forceinline__ float load_w(const DevWeight& w, int64_t r, int64_t c) {
  const int64_t i = r * w.cols + c;
  switch (w.kind) {
    case DevKind::kBF16: return bf16_bits_to_f32(static_cast<const uint16_t*>(w.p)[i]);
    case DevKind::kI8:
      return static_cast<float>(static_cast<const int8_t*>(w.p)[i]) * w.scales[r * (w.cols / w.group) + c / w.group];
    case DevKind::kF32: break;
  }
  return static_cast<const float*>(w.p)[i];
}

// Grid size for a grid-stride loop over `count` items with `threads` per block.
inline unsigned grid_for(int64_t count, int threads, int64_t cap = 65535LL * 16) {
  int64_t b = (count + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > cap) b = cap;
  return static_cast<unsigned>(b);
}

// ---- launchers (kernels.cu, gemm.cu, attention.cu) -----------------------------------------------------

// y[n, w.rows] = x[n, w.cols] * W^T + bias (bias: device float32 [w.rows] or nullptr). n <= 4: gemv.
// tensor_cores: the device has compute capability >= 8.0 (BF16 mma).
void linear(const float* x, int64_t n, const DevWeight& w, const float* bias, float* y, bool tensor_cores);

void attention(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v, int64_t nk,
               int64_t kv_stride, int64_t q_heads, int64_t kv_heads, int64_t head_dim, bool causal, float* out,
               float* partial, int64_t partial_floats, int sm_count);
// Floats of scratch `attention` needs for split-KV partial results (0: none).
int64_t attention_scratch(int64_t nq, int64_t nk, int64_t q_pos0, bool causal, int64_t q_heads, int64_t head_dim,
                          int sm_count);

void layer_norm(const float* x, int64_t n, int64_t d, const float* g, const float* b, float eps, float* y);
void rms_norm(const float* x, int64_t rows, int64_t d, const float* g, float eps, float* y);
void gelu(float* x, int64_t count);
void silu_mul(const float* gate, const float* up, int64_t count, float* out);
void add(float* y, const float* x, int64_t count);
// inv: host array of head_dim / 2 inverse frequencies (head_dim <= 2 * kRopeMaxHalf).
constexpr int kRopeMaxHalf = 512;
void rope(float* x, int64_t n, int64_t heads, int64_t head_dim, int64_t pos0, const float* inv);
void embed(const DevWeight& table, const int32_t* ids_dev, int64_t n, float* out);
// out[c, r] = f(in[r, c]), f = identity or exact GELU.
void transpose(const float* in, int64_t rows, int64_t cols, float* out, bool gelu);
// col[p, ci*9 + ky*3 + kx] = in[ci, 2*oy + ky - 1, 2*ox + kx - 1] (zero outside), p = oy * ow + ox.
void im2col3x3s2(const float* in, int64_t cin, int64_t h, int64_t w, float* col);

}  // namespace cuda
}  // namespace rustasr
