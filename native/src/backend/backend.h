// The op interface the model code is written against. Each backend (CPU; CUDA in native/src/backend/cuda;
// Metal in native/src/backend/metal) implements every op; model code never branches on the backend.
//
// Memory. Every float pointer an op takes is *backend memory*: memory from alloc() (or an offset into it).
// On the CPU backend that is plain host memory; on CUDA it is device memory; on Metal it is shared
// (unified) memory inside an MTLBuffer. Model code never reads or writes backend memory directly: host data
// goes in with upload() and comes out with download(). Buffers are owned through DeviceBuffer (below).
// Weights are read-only views of the memory-mapped checkpoint; prepare_weight() lets a backend make its own
// copy once at load (a GPU uploads it and records the device address in Weight::dev / dev_scales).
//
// Conventions: activations are float32, row-major. "n" is the number of rows (tokens). A Linear weight W
// is [out, in]; linear computes y[n, out] = x[n, in] * W^T (+ bias).
//
// Threads: one Backend is shared by every Session of a Model, and Sessions may run on different threads at
// the same time. Ops on distinct buffers from different threads must be safe. Ops called from one thread
// are ordered (a GPU backend may queue them, but download() returns only once the data is on the host).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <rustasr/engine.h>

#include "../util/tensor.h"

namespace rustasr {

struct BackendOptions {
  int threads = 0;              // 0 = hardware concurrency
  std::string kernel = "auto";  // CPU matrix-vector kernel: auto | avx512bf16 | avx512f | avx2 | neon | scalar
  int device_index = 0;         // GPU backends: which device (CUDA ordinal)
  // Batched products (encoder, prefill): "f32" (float32 activations times exactly upcast weights: the
  // golden-exact numerics) or "bf16" (activations rounded to BF16, the CPU's BF16 dot product where it has
  // one; see ModelParams::precision).
  std::string precision = "f32";
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string name() const = 0;    // "cpu", "cuda", ...
  virtual std::string kernel() const = 0;  // the matrix-vector kernel in use, e.g. "avx512bf16"
  virtual int threads() const = 0;
  // For GPUs, the device's name (e.g. "NVIDIA H100 80GB HBM3"); the CPU backend returns "".
  virtual std::string device_name() const { return std::string(); }
  // True when every row-wise op (linear with up to 4 rows, norms, elementwise ops) computes each row with the
  // same arithmetic whatever the other rows of the call: sessions can then decode together, bit-identical to
  // decoding alone (model/batch.h). The CPU backend promises it; the GPU backends do not.
  virtual bool rows_independent() const { return false; }
  // The arithmetic of the batched products in use: "f32", or "bf16" (BackendOptions::precision, where this
  // backend and CPU can run it).
  virtual std::string precision() const { return "f32"; }

  // ---- memory ----
  // count float32 elements of backend memory (uninitialised); alloc(0) may return nullptr. Throws
  // Error(kInternal) when out of memory (kUnsupportedDevice on a GPU that went away).
  virtual float* alloc(int64_t count) = 0;
  virtual void free(float* p) = 0;  // p from alloc (nullptr allowed)
  virtual void upload(float* dst, const float* host, int64_t count) = 0;    // host -> backend
  virtual void download(float* host, const float* src, int64_t count) = 0;  // backend -> host, synchronous
  virtual void copy(float* dst, const float* src, int64_t count) = 0;       // backend -> backend
  // A buffer of new_count floats whose first old_count are those of p (p from alloc or realloc_keep, or
  // nullptr with old_count 0), for buffers that grow (the KV cache). p is freed on success; when this
  // throws, p is left as it was. Default: alloc, prefault the kept part, copy, free. The CPU backend on
  // Linux moves the pages instead (mremap): no copy and no page faults for the kept part.
  virtual float* realloc_keep(float* p, int64_t old_count, int64_t new_count) {
    float* q = alloc(new_count);
    if (p && old_count > 0) {
      try {
        prefault(q, old_count);
        copy(q, p, old_count);
      } catch (...) {
        free(q);
        throw;
      }
    }
    free(p);
    return q;
  }
  // Called once per weight at load, before any op uses it. The CPU backend reads the mapping in place.
  virtual void prepare_weight(Weight& w) { (void)w; }
  // A hint: the `count` floats at p (inside a buffer from alloc or realloc_keep) are about to be written.
  // The CPU backend maps large ranges in one call (MADV_POPULATE_WRITE) instead of taking one page fault
  // per 4 KiB page (on the reference VM a fault costs 11-15 us: ~70k of them for a 60 s prompt's
  // activations and KV cache). Never fails.
  virtual void prefault(float* p, int64_t count) { (void)p, (void)count; }

  // ---- ops ----

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

  // Decode attention of several sessions at once (batched decoding): row i is one query row at position
  // pos, causal, over its own cache (k, v: pos + 1 rows), exactly as attention(q, 1, pos, k, v, pos + 1,
  // ...) computes it alone, bit for bit. The CPU backend runs every row's cache blocks in one pool pass.
  struct AttentionRow {
    const float* q;
    int64_t pos;
    const float* k;
    const float* v;
    float* out;
  };
  virtual void attention_rows(const AttentionRow* rows, int n, int64_t kv_stride, int64_t q_heads, int64_t kv_heads,
                              int64_t head_dim) {
    for (int i = 0; i < n; ++i)
      attention(rows[i].q, 1, rows[i].pos, rows[i].k, rows[i].v, rows[i].pos + 1, kv_stride, q_heads, kv_heads,
                head_dim, true, rows[i].out);
  }

  // out[i, :] = embedding row ids[i] (upcast to float32). table: [vocab, d]. ids are HOST memory, checked
  // against the table (kInvalidArgument).
  virtual void embed(const Weight& table, const int32_t* ids, int64_t n, float* out) = 0;

  // out[c, r] = in[r, c] for in: [rows, cols]; out: [cols, rows].
  virtual void transpose(const float* in, int64_t rows, int64_t cols, float* out) = 0;
};

// A growable float32 buffer of backend memory, owned (freed through its backend). get(n) returns at least n
// elements, reallocating without keeping the contents; grow_keep(n) keeps the first size() elements.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(Backend* backend) : be_(backend) {}
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : be_(o.be_), p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      be_ = o.be_;
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }

  void bind(Backend* backend) {
    if (backend != be_) {
      reset();
      be_ = backend;
    }
  }
  float* get(int64_t n) {
    if (n > n_) {
      reset();
      p_ = be_->alloc(n);
      n_ = n;
      be_->prefault(p_, n);
    }
    return p_;
  }
  float* grow_keep(int64_t n) {
    if (n > n_) {
      p_ = be_->realloc_keep(p_, n_, n);  // when it throws, p_ stays as it was
      n_ = n;
    }
    return p_;
  }
  float* data() const { return p_; }
  int64_t size() const { return n_; }
  void reset() {
    if (p_ && be_) be_->free(p_);
    p_ = nullptr;
    n_ = 0;
  }

 private:
  Backend* be_ = nullptr;
  float* p_ = nullptr;
  int64_t n_ = 0;
};

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& options);

// Probes cpu, cuda and metal (in that order; DeviceStatus is engine.h's). Never throws.
std::vector<DeviceStatus> probe_devices();

// The backend for `device` ("cpu", "cuda" or "metal"). Throws Error(kUnsupportedDevice) saying why when the
// device cannot be used here (not built in, no GPU or driver, initialisation failed).
std::unique_ptr<Backend> make_backend(const std::string& device, const BackendOptions& options);

// The backend for ModelParams::device: "cpu", "cuda", "metal", or "auto" (CUDA if usable, else Metal if usable,
// else the CPU). With "auto", a GPU that probes as present but fails to start falls back to the CPU and
// *fallback says why. The one place the device choice is made.
std::unique_ptr<Backend> choose_backend(const std::string& device, const BackendOptions& options, std::string* fallback);

}  // namespace rustasr
