// The op interface the model code is written against. Each backend (CPU now; CUDA and Metal later)
// implements every op; model code never branches on the backend.
//
// Conventions: activations are float32, row-major. "n" is the number of rows (tokens). A Linear weight W
// is [out, in]; linear computes y[n, out] = x[n, in] * W^T (+ bias). Buffers passed to ops are owned by the
// caller; on the CPU backend they are plain host memory.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "../util/tensor.h"

namespace rustasr {

struct BackendOptions {
  int threads = 0;              // 0 = hardware concurrency
  std::string kernel = "auto";  // matrix-vector kernel: auto | avx512bf16 | avx512f | avx2 | neon | scalar
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string name() const = 0;    // "cpu", "cuda", ...
  virtual std::string kernel() const = 0;  // the matrix-vector kernel in use, e.g. "avx512bf16"
  virtual int threads() const = 0;

  // y[n, W.rows] = x[n, W.cols] * W^T + bias (bias may be empty). n == 1 is the decode (matrix-vector) case.
  virtual void linear(const float* x, int64_t n, const Weight& w, const Weight& bias, float* y) = 0;
  // Several bias-free linears of the same input (ys[i][n, ws[i].rows] = x * ws[i]^T), e.g. q/k/v or
  // gate/up: a backend may run them as one pass. The default runs them one by one.
  virtual void linear_multi(const float* x, int64_t n, const Weight* const* ws, float* const* ys, int count) {
    for (int i = 0; i < count; ++i) linear(x, n, *ws[i], Weight{}, ys[i]);
  }

  // 2-D convolution, kernel 3x3, stride 2, padding 1, with bias, followed by exact (erf) GELU.
  // in: [cin, h, w]; weight: [cout, cin*9] (PyTorch [cout, cin, 3, 3] viewed 2-D); out: [cout, ceil(h/2), ceil(w/2)].
  virtual void conv3x3s2_gelu(const float* in, int64_t cin, int64_t h, int64_t w, const Weight& weight,
                              const Weight& bias, float* out) = 0;

  // LayerNorm over the last dim (size d), with weight and bias: y = (x - mean) / sqrt(var + eps) * g + b.
  virtual void layer_norm(const float* x, int64_t n, int64_t d, const Weight& g, const Weight& b, float eps,
                          float* y) = 0;
  // RMSNorm over rows of size d: y = x * rsqrt(mean(x^2) + eps) * g. Used per token (d = hidden) and per
  // head (rows = n * heads, d = head_dim). x and y may alias.
  virtual void rms_norm(const float* x, int64_t rows, int64_t d, const Weight& g, float eps, float* y) = 0;

  virtual void gelu(float* x, int64_t count) = 0;                 // exact erf GELU, in place
  // out[i, j] = silu(gate_up[i, j]) * gate_up[i, inter + j], gate_up: [n, 2*inter]. (Or separate buffers.)
  virtual void silu_mul(const float* gate, const float* up, int64_t count, float* out) = 0;
  virtual void add(float* y, const float* x, int64_t count) = 0;  // y += x

  // NeoX (rotate-half) RoPE in place on x: [n, heads, head_dim], positions pos0 .. pos0+n-1,
  // inv_freq[i] = 1 / theta^(2i/head_dim) computed in float32.
  virtual void rope(float* x, int64_t n, int64_t heads, int64_t head_dim, int64_t pos0, float theta) = 0;

  // Scaled dot-product attention, float32.
  //   q: [nq, q_heads, head_dim] (query rows are positions q_pos0 .. q_pos0+nq-1)
  //   k, v: [nk, kv_heads, head_dim], k row j is position j; q_heads = kv_heads * g (GQA: kv head
  //   h / g serves query head h).
  //   causal: query at position p sees keys 0..p. Otherwise all nk keys.
  //   out: [nq, q_heads, head_dim]. scale = 1/sqrt(head_dim).
  // k_stride / v_stride: distance in floats between consecutive key rows (lets the KV cache be larger
  // than nk).
  virtual void attention(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v,
                         int64_t nk, int64_t kv_stride, int64_t q_heads, int64_t kv_heads,
                         int64_t head_dim, bool causal, float* out) = 0;

  // out[i, :] = embedding row ids[i] (upcast to float32). table: [vocab, d].
  virtual void embed(const Weight& table, const int32_t* ids, int64_t n, float* out) = 0;
};

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& options);

}  // namespace rustasr
