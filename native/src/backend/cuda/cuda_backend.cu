// The CUDA backend (rustasr_cuda.so): every op of backend.h on device memory, plus the plugin's C entry
// points (plugin_api.h). See docs/cuda.md for the design; the kernels are in kernels.cu, gemm.cu and
// attention.cu.
//
// Memory: alloc = cudaMalloc, upload / download / copy = cudaMemcpyAsync on the calling thread's default
// stream (the plugin is built with --default-stream per-thread), download waits for the stream.
// Weights: prepare_weight uploads each weight once (deduplicated by host pointer, so a tied lm_head shares
// embed_tokens' copy): BF16 matrices stay BF16, int8 stays int8 with its scales, everything else (F16 / F32
// matrices, every 1-D vector) becomes float32. A weight that was never prepared (tests calling ops
// directly) is uploaded to per-thread scratch for the duration of the op.
// Threads: ops from different host threads run on different streams; per-thread scratch (ids, attention
// partials, conv im2col) lives in a map keyed by thread id.
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "../backend.h"
#include "common.cuh"
#include "plugin_api.h"

namespace rustasr {
namespace cuda {

// The CUDA version this plugin needs from the driver (cudaDriverGetVersion), and the driver branch that
// provides it on Linux (CUDA 13.0 release notes: 580.65.06 or newer).
constexpr int kNeedDriverCuda = (CUDART_VERSION / 1000) * 1000;
constexpr const char* kMinDriver = "R580 (580.65.06) or newer";

bool is_device_lost(cudaError_t e) {
  switch (e) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorDevicesUnavailable:
    case cudaErrorDeviceUninitialized:
    case cudaErrorSystemNotReady:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
    case cudaErrorInvalidDevice:
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion:
      return true;
    default:
      return false;
  }
}

void throw_cuda(cudaError_t e, const char* what, const char* file, int line) {
  const char* base = std::strrchr(file, '/');
  std::string msg = std::string("cuda: ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ") in " + what +
                    " at " + (base ? base + 1 : file) + ":" + std::to_string(line);
  if (e == cudaErrorMemoryAllocation) msg = "cuda: out of device memory (" + std::string(what) + ")";
  throw Error(is_device_lost(e) ? ErrorCode::kUnsupportedDevice : ErrorCode::kInternal, msg);
}

namespace {

void copy_str(char* dst, size_t len, const std::string& s) {
  if (!dst || len == 0) return;
  const size_t n = std::min(len - 1, s.size());
  std::memcpy(dst, s.data(), n);
  dst[n] = '\0';
}

// The probe, shared by rustasr_plugin_probe and the backend's constructor. Returns "" when usable.
std::string probe_device(int index, std::string* name, int* cc_major, int* cc_minor, int* sm_count) {
  // Without libcuda.so.1 the runtime reports "insufficient driver": say what is really missing.
  void* drv = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!drv) {
    const char* why = dlerror();
    return std::string("no NVIDIA driver (libcuda.so.1 cannot be loaded: ") + (why ? why : "not found") + ")";
  }
  // (Kept loaded: the runtime opens it too.)
  int drv_version = 0;
  cudaError_t e = cudaDriverGetVersion(&drv_version);
  if (e != cudaSuccess) return std::string("cannot query the NVIDIA driver: ") + cudaGetErrorString(e);
  if (drv_version == 0) return "no NVIDIA driver is installed";
  if (drv_version < kNeedDriverCuda) {
    char b[256];
    std::snprintf(b, sizeof b,
                  "the NVIDIA driver supports CUDA %d.%d, this build needs CUDA %d.%d: update the driver to %s",
                  drv_version / 1000, (drv_version % 1000) / 10, kNeedDriverCuda / 1000, (kNeedDriverCuda % 1000) / 10,
                  kMinDriver);
    return b;
  }
  int count = 0;
  e = cudaGetDeviceCount(&count);
  if (e == cudaErrorNoDevice || (e == cudaSuccess && count == 0)) return "no CUDA device found";
  if (e == cudaErrorInsufficientDriver)
    return std::string("the NVIDIA driver is too old for this CUDA ") + std::to_string(CUDART_VERSION / 1000) + "." +
           std::to_string((CUDART_VERSION % 1000) / 10) + " build (need " + kMinDriver + ")";
  if (e != cudaSuccess) return std::string("CUDA initialisation failed: ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
  if (index < 0 || index >= count)
    return "CUDA device index " + std::to_string(index) + " out of range (" + std::to_string(count) + " device" +
           (count == 1 ? "" : "s") + ")";
  cudaDeviceProp prop;
  e = cudaGetDeviceProperties(&prop, index);
  if (e != cudaSuccess) return std::string("cannot query CUDA device ") + std::to_string(index) + ": " + cudaGetErrorString(e);
  if (name) *name = prop.name;
  if (cc_major) *cc_major = prop.major;
  if (cc_minor) *cc_minor = prop.minor;
  if (sm_count) *sm_count = prop.multiProcessorCount;
  if (prop.major < 7 || (prop.major == 7 && prop.minor < 5))
    return std::string(prop.name) + " has compute capability " + std::to_string(prop.major) + "." +
           std::to_string(prop.minor) + "; the CUDA backend needs 7.5 or newer";
  return std::string();
}

// A growable device buffer (bytes); growing waits for the calling thread's stream first, since queued
// kernels may still read the old block.
struct Scratch {
  void* p = nullptr;
  size_t bytes = 0;
  void* get(size_t n) {
    if (n <= bytes) return p;
    const size_t want = std::max(n, bytes + bytes / 2);
    RUSTASR_CK(cudaStreamSynchronize(stream()));
    if (p) cudaFree(p);
    p = nullptr;
    bytes = 0;
    RUSTASR_CK(cudaMalloc(&p, want));
    bytes = want;
    return p;
  }
  ~Scratch() {
    if (p) cudaFree(p);
  }
};

enum Slot { kIds, kPartial, kCol, kTmp, kW0, kW0Scales, kW1, kW1Scales, kSlots };
struct ThreadScratch {
  Scratch slot[kSlots];
};

struct WeightKey {
  const void* data;
  int dtype;
  int64_t rows, cols;
  const float* scales;
  int64_t group;
  bool operator<(const WeightKey& o) const {
    return std::tie(data, dtype, rows, cols, scales, group) < std::tie(o.data, o.dtype, o.rows, o.cols, o.scales, o.group);
  }
};
struct DevCopy {
  void* data = nullptr;
  float* scales = nullptr;
};

DevKind kind_of(const Weight& w) {
  if (w.dtype == DType::kI8) return DevKind::kI8;
  if (w.dtype == DType::kBF16 && w.rows > 1) return DevKind::kBF16;
  return DevKind::kF32;
}

size_t dev_bytes(const Weight& w) {
  switch (kind_of(w)) {
    case DevKind::kBF16: return static_cast<size_t>(w.numel()) * 2;
    case DevKind::kI8: return static_cast<size_t>(w.numel());
    case DevKind::kF32: break;
  }
  return static_cast<size_t>(w.numel()) * 4;
}

void check_i8(const Weight& w) {
  if (w.dtype == DType::kI8 && (w.group <= 0 || w.cols % w.group != 0 || !w.scales))
    throw Error(ErrorCode::kInvalidArgument, "int8 weight " + w.name + " has no valid scale groups");
}

// Copies a weight's data into device memory at dst in its device form; scales_dst for int8.
void upload_weight(const Weight& w, void* dst, float* scales_dst) {
  const int64_t n = w.numel();
  switch (kind_of(w)) {
    case DevKind::kBF16:
      RUSTASR_CK(cudaMemcpyAsync(dst, w.data, static_cast<size_t>(n) * 2, cudaMemcpyHostToDevice, stream()));
      return;
    case DevKind::kI8:
      RUSTASR_CK(cudaMemcpyAsync(dst, w.data, static_cast<size_t>(n), cudaMemcpyHostToDevice, stream()));
      RUSTASR_CK(cudaMemcpyAsync(scales_dst, w.scales, static_cast<size_t>(w.rows * (w.cols / w.group)) * 4,
                                 cudaMemcpyHostToDevice, stream()));
      return;
    case DevKind::kF32:
      break;
  }
  if (w.dtype == DType::kF32 && (reinterpret_cast<uintptr_t>(w.data) & 3u) == 0) {
    RUSTASR_CK(cudaMemcpyAsync(dst, w.data, static_cast<size_t>(n) * 4, cudaMemcpyHostToDevice, stream()));
    return;
  }
  // Converted on the host in chunks (weight_to_f32 handles every dtype and misaligned data).
  constexpr int64_t kChunk = int64_t(1) << 22;
  std::vector<float> buf(static_cast<size_t>(std::min(n, kChunk)));
  for (int64_t off = 0; off < n; off += kChunk) {
    const int64_t len = std::min(kChunk, n - off);
    weight_to_f32(w, off, len, buf.data());
    // Synchronous with respect to buf (pageable host memory is staged before the call returns).
    RUSTASR_CK(cudaMemcpyAsync(static_cast<float*>(dst) + off, buf.data(), static_cast<size_t>(len) * 4,
                               cudaMemcpyHostToDevice, stream()));
  }
  RUSTASR_CK(cudaStreamSynchronize(stream()));
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const BackendOptions& o) : dev_(o.device_index) {
    int major = 0, minor = 0;
    const std::string why = probe_device(dev_, &device_name_, &major, &minor, &sm_count_);
    if (!why.empty()) throw Error(ErrorCode::kUnsupportedDevice, "cuda: " + why);
    RUSTASR_CK(cudaSetDevice(dev_));
    RUSTASR_CK(cudaFree(nullptr));  // create the context now: errors surface here, not in the first op
    tensor_cores_ = major >= 8;
    kernel_ = "sm" + std::to_string(major) + std::to_string(minor) + (tensor_cores_ ? "-wmma-bf16x2" : "-simt-f32");
    threads_ = o.threads > 0 ? o.threads : std::max(1u, std::thread::hardware_concurrency());
  }

  ~CudaBackend() override {
    // Best effort: errors at teardown (driver shutting down) are ignored.
    cudaSetDevice(dev_);
    cudaDeviceSynchronize();
    scratch_.clear();
    for (auto& kv : weights_) {
      cudaFree(kv.second.data);
      if (kv.second.scales) cudaFree(kv.second.scales);
    }
  }

  std::string name() const override { return "cuda"; }
  std::string kernel() const override { return kernel_; }
  int threads() const override { return threads_; }
  std::string device_name() const override { return device_name_; }

  float* alloc(int64_t count) override {
    if (count <= 0) return nullptr;
    use();
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, static_cast<size_t>(count) * sizeof(float));
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // not sticky: clear it
      throw Error(ErrorCode::kInternal, "cuda: out of device memory allocating " +
                                            std::to_string(static_cast<size_t>(count) * sizeof(float)) + " bytes");
    }
    if (e != cudaSuccess) throw_cuda(e, "cudaMalloc", __FILE__, __LINE__);
    return static_cast<float*>(p);
  }
  void free(float* p) override {
    if (!p) return;
    use();
    // Queued kernels of this thread may still use p (cudaFree also waits for the device).
    cudaStreamSynchronize(stream());
    cudaFree(p);
  }
  void upload(float* dst, const float* host, int64_t count) override {
    if (count <= 0) return;
    use();
    RUSTASR_CK(cudaMemcpyAsync(dst, host, static_cast<size_t>(count) * 4, cudaMemcpyHostToDevice, stream()));
  }
  void download(float* host, const float* src, int64_t count) override {
    if (count <= 0) return;
    use();
    RUSTASR_CK(cudaMemcpyAsync(host, src, static_cast<size_t>(count) * 4, cudaMemcpyDeviceToHost, stream()));
    RUSTASR_CK(cudaStreamSynchronize(stream()));
  }
  void copy(float* dst, const float* src, int64_t count) override {
    if (count <= 0 || dst == src) return;
    use();
    RUSTASR_CK(cudaMemcpyAsync(dst, src, static_cast<size_t>(count) * 4, cudaMemcpyDeviceToDevice, stream()));
  }

  void prepare_weight(Weight& w) override {
    if (w.empty() || w.numel() <= 0) return;
    check_i8(w);
    use();
    const WeightKey key{w.data, static_cast<int>(w.dtype), w.rows, w.cols, w.scales, w.group};
    std::lock_guard<std::mutex> lock(weights_mu_);
    auto it = weights_.find(key);
    if (it == weights_.end()) {
      DevCopy c;
      RUSTASR_CK(cudaMalloc(&c.data, dev_bytes(w)));
      try {
        if (w.dtype == DType::kI8)
          RUSTASR_CK(cudaMalloc(reinterpret_cast<void**>(&c.scales), static_cast<size_t>(w.rows * (w.cols / w.group)) * 4));
        upload_weight(w, c.data, c.scales);
        RUSTASR_CK(cudaStreamSynchronize(stream()));
      } catch (...) {
        cudaFree(c.data);
        if (c.scales) cudaFree(c.scales);
        throw;
      }
      it = weights_.emplace(key, c).first;
    }
    w.dev = it->second.data;
    w.dev_scales = it->second.scales;
  }

  // ---- ops ----

  void linear(const float* x, int64_t n, const Weight& w, const Weight& bias, float* y) override {
    if (n <= 0) return;
    use();
    check_vector(bias, w.rows, "linear bias");
    ThreadScratch& ts = scratch();
    const DevWeight dw = resolve(w, ts, kW0);
    const float* b = bias.empty() ? nullptr : resolve(bias, ts, kW1).f32();
    cuda::linear(x, n, dw, b, y, tensor_cores_);
  }

  void conv3x3s2_gelu(const float* in, int64_t cin, int64_t h, int64_t w, const Weight& weight, const Weight& bias,
                      float* out) override {
    const int64_t oh = (h + 1) / 2, ow = (w + 1) / 2, P = oh * ow, K = cin * 9, cout = weight.rows;
    if (weight.cols != K)
      throw Error(ErrorCode::kInvalidArgument, "conv weight " + weight.name + " has " + std::to_string(weight.cols) +
                                                   " columns, expected " + std::to_string(K));
    check_vector(bias, cout, "conv bias");
    if (P <= 0 || cout <= 0) return;
    use();
    ThreadScratch& ts = scratch();
    const DevWeight dw = resolve(weight, ts, kW0);
    const float* b = bias.empty() ? nullptr : resolve(bias, ts, kW1).f32();
    float* col = static_cast<float*>(ts.slot[kCol].get(static_cast<size_t>(P * K) * 4));
    float* tmp = static_cast<float*>(ts.slot[kTmp].get(static_cast<size_t>(P * cout) * 4));
    cuda::im2col3x3s2(in, cin, h, w, col);
    cuda::linear(col, P, dw, b, tmp, tensor_cores_);
    cuda::transpose(tmp, P, cout, out, true);  // [P, cout] -> [cout, P] with GELU
  }

  void layer_norm(const float* x, int64_t n, int64_t d, const Weight& g, const Weight& b, float eps,
                  float* y) override {
    check_vector(g, d, "layer_norm weight");
    check_vector(b, d, "layer_norm bias");
    use();
    ThreadScratch& ts = scratch();
    const float* gp = g.empty() ? nullptr : resolve(g, ts, kW0).f32();
    const float* bp = b.empty() ? nullptr : resolve(b, ts, kW1).f32();
    cuda::layer_norm(x, n, d, gp, bp, eps, y);
  }

  void rms_norm(const float* x, int64_t rows, int64_t d, const Weight& g, float eps, float* y) override {
    check_vector(g, d, "rms_norm weight");
    use();
    ThreadScratch& ts = scratch();
    const float* gp = g.empty() ? nullptr : resolve(g, ts, kW0).f32();
    cuda::rms_norm(x, rows, d, gp, eps, y);
  }

  void gelu(float* x, int64_t count) override {
    use();
    cuda::gelu(x, count);
  }
  void silu_mul(const float* gate, const float* up, int64_t count, float* out) override {
    use();
    cuda::silu_mul(gate, up, count, out);
  }
  void add(float* y, const float* x, int64_t count) override {
    use();
    cuda::add(y, x, count);
  }

  void rope(float* x, int64_t n, int64_t heads, int64_t head_dim, int64_t pos0, float theta) override {
    if (head_dim % 2 != 0) throw Error(ErrorCode::kInvalidArgument, "rope: odd head_dim");
    const int64_t half = head_dim / 2;
    if (half > kRopeMaxHalf)
      throw Error(ErrorCode::kInvalidArgument, "rope: head_dim " + std::to_string(head_dim) + " above the CUDA limit");
    use();
    // The inverse frequencies exactly as the CPU backend computes them (float32 std::pow on the host).
    float inv[kRopeMaxHalf];
    for (int64_t i = 0; i < half; ++i) {
      const float e = static_cast<float>(2 * i) / static_cast<float>(head_dim);
      inv[i] = 1.0f / std::pow(theta, e);
    }
    cuda::rope(x, n, heads, head_dim, pos0, inv);
  }

  void attention(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v, int64_t nk,
                 int64_t kv_stride, int64_t q_heads, int64_t kv_heads, int64_t head_dim, bool causal,
                 float* out) override {
    if (nq <= 0 || q_heads <= 0) return;
    if (kv_heads <= 0 || q_heads % kv_heads != 0)
      throw Error(ErrorCode::kInvalidArgument, "attention: q_heads must be a multiple of kv_heads");
    use();
    const int64_t need = cuda::attention_scratch(nq, nk, q_pos0, causal, q_heads, head_dim, sm_count_);
    float* partial = nullptr;
    if (need > 0) partial = static_cast<float*>(scratch().slot[kPartial].get(static_cast<size_t>(need) * 4));
    cuda::attention(q, nq, q_pos0, k, v, nk, kv_stride, q_heads, kv_heads, head_dim, causal, out, partial, need,
                    sm_count_);
  }

  void embed(const Weight& table, const int32_t* ids, int64_t n, float* out) override {
    if (n <= 0) return;
    for (int64_t i = 0; i < n; ++i)
      if (ids[i] < 0 || ids[i] >= table.rows)
        throw Error(ErrorCode::kInvalidArgument, "embed: token id " + std::to_string(ids[i]) + " out of range");
    use();
    ThreadScratch& ts = scratch();
    const DevWeight dt = resolve(table, ts, kW0);
    int32_t* dids = static_cast<int32_t*>(ts.slot[kIds].get(static_cast<size_t>(n) * 4));
    // Pageable source: staged before the call returns, so `ids` may be reused at once.
    RUSTASR_CK(cudaMemcpyAsync(dids, ids, static_cast<size_t>(n) * 4, cudaMemcpyHostToDevice, stream()));
    cuda::embed(dt, dids, n, out);
  }

  void transpose(const float* in, int64_t rows, int64_t cols, float* out) override {
    use();
    cuda::transpose(in, rows, cols, out, false);
  }

 private:
  // Makes this backend's device current on the calling thread.
  void use() {
    thread_local int current = -1;
    if (current != dev_) {
      RUSTASR_CK(cudaSetDevice(dev_));
      current = dev_;
    }
  }

  static void check_vector(const Weight& v, int64_t n, const char* what) {
    if (!v.empty() && v.numel() != n)
      throw Error(ErrorCode::kInvalidArgument, std::string(what) + " " + v.name + " has " + std::to_string(v.numel()) +
                                                   " elements, expected " + std::to_string(n));
  }

  ThreadScratch& scratch() {
    std::lock_guard<std::mutex> lock(scratch_mu_);
    std::unique_ptr<ThreadScratch>& s = scratch_[std::this_thread::get_id()];
    if (!s) s.reset(new ThreadScratch());
    return *s;
  }

  // The device form of a weight: its prepared copy, else a temporary upload into the thread's scratch
  // slots `slot` (data) and `slot + 1` (int8 scales).
  DevWeight resolve(const Weight& w, ThreadScratch& ts, int slot) {
    DevWeight d;
    d.kind = kind_of(w);
    d.rows = w.rows;
    d.cols = w.cols;
    d.group = w.group;
    if (w.empty()) return d;
    check_i8(w);
    if (w.dev) {
      d.p = w.dev;
      d.scales = w.dev_scales;
      if (d.kind == DevKind::kI8 && !d.scales)
        throw Error(ErrorCode::kInternal, "int8 weight " + w.name + " prepared without scales");
      return d;
    }
    void* data = ts.slot[slot].get(dev_bytes(w));
    float* scales = nullptr;
    if (d.kind == DevKind::kI8)
      scales = static_cast<float*>(ts.slot[slot + 1].get(static_cast<size_t>(w.rows * (w.cols / w.group)) * 4));
    upload_weight(w, data, scales);
    d.p = data;
    d.scales = scales;
    return d;
  }

  int dev_;
  int sm_count_ = 1;
  bool tensor_cores_ = false;
  int threads_ = 1;
  std::string device_name_, kernel_;
  std::mutex weights_mu_;
  std::map<WeightKey, DevCopy> weights_;
  std::mutex scratch_mu_;
  std::unordered_map<std::thread::id, std::unique_ptr<ThreadScratch>> scratch_;
};

}  // namespace
}  // namespace cuda
}  // namespace rustasr

// ---- plugin entry points (the only exported symbols) ------------------------------------------------------

#define RUSTASR_PLUGIN_EXPORT extern "C" __attribute__((visibility("default")))

RUSTASR_PLUGIN_EXPORT int rustasr_plugin_abi(void) { return RUSTASR_CUDA_PLUGIN_ABI; }

RUSTASR_PLUGIN_EXPORT int rustasr_plugin_probe(int index, char* name, size_t name_len, char* reason,
                                               size_t reason_len) {
  try {
    std::string dev_name;
    const std::string why = rustasr::cuda::probe_device(index, &dev_name, nullptr, nullptr, nullptr);
    rustasr::cuda::copy_str(name, name_len, why.empty() ? dev_name : std::string());
    rustasr::cuda::copy_str(reason, reason_len, why);
    return why.empty() ? 1 : 0;
  } catch (const std::exception& e) {
    rustasr::cuda::copy_str(name, name_len, "");
    rustasr::cuda::copy_str(reason, reason_len, std::string("CUDA probe failed: ") + e.what());
  } catch (...) {
    rustasr::cuda::copy_str(name, name_len, "");
    rustasr::cuda::copy_str(reason, reason_len, "CUDA probe failed");
  }
  return 0;
}

RUSTASR_PLUGIN_EXPORT rustasr::Backend* rustasr_plugin_create(const rustasr::BackendOptions* options, char* err,
                                                             size_t err_len) {
  try {
    const rustasr::BackendOptions o = options ? *options : rustasr::BackendOptions();
    rustasr::Backend* b = new rustasr::cuda::CudaBackend(o);
    rustasr::cuda::copy_str(err, err_len, "");
    return b;
  } catch (const std::exception& e) {
    rustasr::cuda::copy_str(err, err_len, e.what());
  } catch (...) {
    rustasr::cuda::copy_str(err, err_len, "cuda: unknown error creating the backend");
  }
  return nullptr;
}
