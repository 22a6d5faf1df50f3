// The Metal backend (macOS, Apple-silicon GPUs): every op of backend.h as an MSL compute kernel.
//
// UNVERIFIED: written without a Mac; it has never been compiled or run (docs/devices.md). Objective-C++ with
// ARC ON (binding.gyp sets CLANG_ENABLE_OBJC_ARC; the #error below refuses a build without it).
//
// Design (mirrors the CUDA backend, native/src/backend/cuda/common.cuh):
//   * Kernels: one MSL source string (kSource), compiled at backend creation with newLibraryWithSource,
//     fast math off (precise exp / sin / cos; MSL has no erf, so GELU uses an erfc fit with < 1.2e-7
//     relative error). Activations are float32 everywhere, accumulation float32 (Metal has no double: the
//     CPU's double-accumulated norms become float tree reductions).
//   * Linears: own MSL kernels that read the checkpoint's BF16 weights directly (exact bf16 -> f32), a
//     simdgroup-per-row gemv for n <= 4 (decode) and a 16x16-tiled gemm above. Not MPSMatrixMultiplication:
//     MPS has no bf16 matrix type, and feeding it would need a float32 (2x memory) or float16 copy of every
//     weight next to the bf16 one that the memory-bound decode gemv wants; the golden tolerances are also
//     easiest to keep with the same bf16 x f32 -> f32 arithmetic as the CPU.
//   * Memory: storageModeShared MTLBuffers. alloc() returns the buffer's contents pointer; an ordered map
//     from base address to buffer resolves any pointer (base + offset, as model code uses) to
//     (buffer, byte offset) for kernel arguments. Weights are copied once at prepare_weight into their own
//     buffers: BF16 matrices as BF16, int8 matrices with their float32 scales, every 1-D vector and every
//     F16 / F32 tensor converted to float32 (so norm weights and biases are plain float buffers). Copies are
//     deduplicated by source address (tied embeddings / lm_head share one).
//   * Ordering: each host thread has its own command queue and open command buffer + compute encoder (serial
//     dispatch: each kernel sees the previous one's writes). Ops only encode; the buffer is committed every
//     kOpsPerCommit dispatches (so the GPU starts early) and committed + waited for by download(),
//     upload() (host writes must not overtake queued kernels) and overlapping copies. Every Session call ends
//     with a download, so a session that continues on another libuv thread finds its data complete.
#import <Foundation/Foundation.h>
#import <Metal/Metal.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "../backend.h"
#include "rustasr/engine.h"

#if !__has_feature(objc_arc)
#error "metal_backend.mm must be compiled with ARC (-fobjc-arc / CLANG_ENABLE_OBJC_ARC)"
#endif

namespace rustasr {
namespace mtl {
namespace {

// ---------------------------------------------------------------------------------------------- kernels
//
// Argument structs hold only 32-bit fields; the host copies (below) must keep the same order and types.
// Threadgroups are 256 threads = 8 SIMD groups of 32 (checked at creation: Apple GPUs are 32 wide).
const char* const kSource = R"MSL(
#include <metal_stdlib>
using namespace metal;

#define W_BF16 0u
#define W_I8 1u
#define W_F32 2u

struct WDesc { uint kind; uint rows; uint cols; uint group; };
struct LinArgs { uint n; uint k; uint rows; uint has_bias; WDesc w; };
struct NormArgs { uint d; float eps; uint has_g; uint has_b; };
struct CountArgs { uint count; };
struct RopeArgs { uint n; uint heads; uint head_dim; uint pos0; };
struct AttnArgs { uint nq; uint q_pos0; uint nk; uint kv_stride; uint q_heads; uint kv_heads; uint head_dim; uint causal; float scale; };
struct EmbedArgs { uint n; uint d; WDesc w; };
struct TransArgs { uint rows; uint cols; uint gelu; };
struct Im2colArgs { uint cin; uint h; uint w; uint oh; uint ow; };

inline float bf16f(ushort h) { return as_type<float>(uint(h) << 16); }

// Element (r, c) of a weight as float32.
inline float load_w(device const uchar* w, device const float* scales, WDesc d, uint r, uint c) {
  const ulong i = ulong(r) * d.cols + c;
  if (d.kind == W_BF16) return bf16f(((device const ushort*)w)[i]);
  if (d.kind == W_I8) return float(((device const char*)w)[i]) * scales[ulong(r) * (d.cols / d.group) + c / d.group];
  return ((device const float*)w)[i];
}

// erfc(z) for z >= 0: Chebyshev fit with fractional error < 1.2e-7 (MSL has no erf).
inline float erfc_pos(float z) {
  const float t = 1.0f / (1.0f + 0.5f * z);
  const float p = t * (1.00002368f + t * (0.37409196f + t * (0.09678418f + t * (-0.18628806f + t * (0.27886807f +
                  t * (-1.13520398f + t * (1.48851587f + t * (-0.82215223f + t * 0.17087277f))))))));
  return t * precise::exp(-z * z - 1.26551223f + p);
}
// Exact-erf GELU: 0.5 x (1 + erf(x / sqrt 2)), with 1 + erf(z) = erfc(-z).
inline float gelu_erf(float x) {
  const float z = x * 0.70710678118654752f;
  const float one_plus_erf = z >= 0.0f ? 2.0f - erfc_pos(z) : erfc_pos(-z);
  return 0.5f * x * one_plus_erf;
}

// Sum over a 256-thread threadgroup; every thread gets the total. `part` holds 8 floats.
inline float block_sum(float v, threadgroup float* part, uint sg, uint lane) {
  v = simd_sum(v);
  if (lane == 0) part[sg] = v;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  float t = 0.0f;
  for (uint i = 0; i < 8; ++i) t += part[i];
  threadgroup_barrier(mem_flags::mem_threadgroup);  // part is reused by the next call
  return t;
}

// y[m, r] = x[m, :] . W[r, :] (+ bias[r]) for m < n <= 4: one SIMD group per output row r.
kernel void rs_gemv(device const float* x [[buffer(0)]], device const uchar* w [[buffer(1)]],
                 device const float* scales [[buffer(2)]], device const float* bias [[buffer(3)]],
                 device float* y [[buffer(4)]], constant LinArgs& a [[buffer(5)]],
                 uint tg [[threadgroup_position_in_grid]], uint sg [[simdgroup_index_in_threadgroup]],
                 uint lane [[thread_index_in_simdgroup]]) {
  const uint r = tg * 8 + sg;
  if (r >= a.rows) return;  // the whole SIMD group leaves together
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (uint c = lane; c < a.k; c += 32) {
    const float wv = load_w(w, scales, a.w, r, c);
    for (uint m = 0; m < a.n; ++m) acc[m] += x[ulong(m) * a.k + c] * wv;
  }
  for (uint m = 0; m < a.n; ++m) {
    const float s = simd_sum(acc[m]);
    if (lane == 0) y[ulong(m) * a.rows + r] = s + (a.has_bias != 0 ? bias[r] : 0.0f);
  }
}

// y[n, rows] = x[n, k] * W^T (+ bias): 16 x 16 output tiles, K in steps of 16 through threadgroup memory.
kernel void rs_gemm(device const float* x [[buffer(0)]], device const uchar* w [[buffer(1)]],
                 device const float* scales [[buffer(2)]], device const float* bias [[buffer(3)]],
                 device float* y [[buffer(4)]], constant LinArgs& a [[buffer(5)]],
                 uint2 tg [[threadgroup_position_in_grid]], uint2 t [[thread_position_in_threadgroup]]) {
  threadgroup float xs[16][17];
  threadgroup float ws[16][17];
  const uint row = tg.y * 16 + t.y;  // activation row
  const uint col = tg.x * 16 + t.x;  // output feature
  const uint wrow = tg.x * 16 + t.y; // the weight row this thread stages
  float acc = 0.0f;
  for (uint k0 = 0; k0 < a.k; k0 += 16) {
    const uint kx = k0 + t.x;
    xs[t.y][t.x] = (row < a.n && kx < a.k) ? x[ulong(row) * a.k + kx] : 0.0f;
    ws[t.y][t.x] = (wrow < a.rows && kx < a.k) ? load_w(w, scales, a.w, wrow, kx) : 0.0f;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (uint kk = 0; kk < 16; ++kk) acc += xs[t.y][kk] * ws[t.x][kk];
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
  if (row < a.n && col < a.rows) y[ulong(row) * a.rows + col] = acc + (a.has_bias != 0 ? bias[col] : 0.0f);
}

// One threadgroup per row: y = (x - mean) / sqrt(var + eps) * g + b.
kernel void rs_layer_norm(device const float* x [[buffer(0)]], device const float* g [[buffer(1)]],
                       device const float* b [[buffer(2)]], device float* y [[buffer(3)]],
                       constant NormArgs& a [[buffer(4)]], uint row [[threadgroup_position_in_grid]],
                       uint t [[thread_position_in_threadgroup]], uint sg [[simdgroup_index_in_threadgroup]],
                       uint lane [[thread_index_in_simdgroup]]) {
  threadgroup float part[8];
  device const float* xr = x + ulong(row) * a.d;
  device float* yr = y + ulong(row) * a.d;
  float s = 0.0f;
  for (uint i = t; i < a.d; i += 256) s += xr[i];
  const float mean = block_sum(s, part, sg, lane) / float(a.d);
  float q = 0.0f;
  for (uint i = t; i < a.d; i += 256) {
    const float v = xr[i] - mean;
    q += v * v;
  }
  const float var = block_sum(q, part, sg, lane) / float(a.d);
  const float rstd = 1.0f / precise::sqrt(var + a.eps);
  for (uint i = t; i < a.d; i += 256) {
    const float v = (xr[i] - mean) * rstd;
    yr[i] = v * (a.has_g != 0 ? g[i] : 1.0f) + (a.has_b != 0 ? b[i] : 0.0f);
  }
}

// One threadgroup per row: y = x * rsqrt(mean(x^2) + eps) * g. x and y may alias (each element is read
// and then written by the same thread, after the reduction).
kernel void rs_rms_norm(device const float* x [[buffer(0)]], device const float* g [[buffer(1)]],
                     device float* y [[buffer(2)]], constant NormArgs& a [[buffer(3)]],
                     uint row [[threadgroup_position_in_grid]], uint t [[thread_position_in_threadgroup]],
                     uint sg [[simdgroup_index_in_threadgroup]], uint lane [[thread_index_in_simdgroup]]) {
  threadgroup float part[8];
  device const float* xr = x + ulong(row) * a.d;
  device float* yr = y + ulong(row) * a.d;
  float q = 0.0f;
  for (uint i = t; i < a.d; i += 256) q += xr[i] * xr[i];
  const float var = block_sum(q, part, sg, lane) / float(a.d);
  const float scale = 1.0f / precise::sqrt(var + a.eps);
  for (uint i = t; i < a.d; i += 256) yr[i] = (a.has_g != 0 ? g[i] : 1.0f) * (xr[i] * scale);
}

kernel void rs_gelu(device float* x [[buffer(0)]], constant CountArgs& a [[buffer(1)]],
                 uint i [[thread_position_in_grid]]) {
  if (i < a.count) x[i] = gelu_erf(x[i]);
}

kernel void rs_silu_mul(device const float* gate [[buffer(0)]], device const float* up [[buffer(1)]],
                     device float* out [[buffer(2)]], constant CountArgs& a [[buffer(3)]],
                     uint i [[thread_position_in_grid]]) {
  if (i >= a.count) return;
  const float g = gate[i];
  out[i] = (g / (1.0f + precise::exp(-g))) * up[i];
}

kernel void rs_add(device float* y [[buffer(0)]], device const float* x [[buffer(1)]],
                constant CountArgs& a [[buffer(2)]], uint i [[thread_position_in_grid]]) {
  if (i < a.count) y[i] += x[i];
}

kernel void rs_copy_f32(device float* dst [[buffer(0)]], device const float* src [[buffer(1)]],
                     constant CountArgs& a [[buffer(2)]], uint i [[thread_position_in_grid]]) {
  if (i < a.count) dst[i] = src[i];
}

// NeoX rotate-half RoPE in place; inv: head_dim / 2 inverse frequencies computed on the host (as the CPU).
kernel void rs_rope(device float* x [[buffer(0)]], constant float* inv [[buffer(1)]],
                 constant RopeArgs& a [[buffer(2)]], uint gid [[thread_position_in_grid]]) {
  const uint hd2 = a.head_dim / 2;
  if (gid >= a.n * a.heads * hd2) return;
  const uint i = gid % hd2;
  const uint th = gid / hd2;  // t * heads + head
  const uint t = th / a.heads;
  const float ang = float(a.pos0 + t) * inv[i];
  const float c = precise::cos(ang), s = precise::sin(ang);
  device float* v = x + ulong(th) * a.head_dim;
  const float x1 = v[i], x2 = v[i + hd2];
  v[i] = x1 * c - x2 * s;
  v[i + hd2] = x2 * c + x1 * s;
}

// One SIMD group per (query row, head), keys in blocks of 32 (one per lane) with an online softmax; each
// lane owns output dims lane, lane + 32, ... (head_dim <= 256).
kernel void rs_attention(device const float* q [[buffer(0)]], device const float* k [[buffer(1)]],
                      device const float* v [[buffer(2)]], device float* out [[buffer(3)]],
                      constant AttnArgs& a [[buffer(4)]], uint tg [[threadgroup_position_in_grid]],
                      uint lane [[thread_index_in_simdgroup]]) {
  const uint i = tg / a.q_heads, h = tg % a.q_heads;
  const uint kh = h / (a.q_heads / a.kv_heads);
  device const float* qv = q + (ulong(i) * a.q_heads + h) * a.head_dim;
  device float* o = out + (ulong(i) * a.q_heads + h) * a.head_dim;
  const uint limit = a.causal != 0 ? min(a.nk, a.q_pos0 + i + 1) : a.nk;
  float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  float m = -INFINITY, l = 0.0f;
  for (uint j0 = 0; j0 < limit; j0 += 32) {
    const uint j = j0 + lane;
    float s = -INFINITY;
    if (j < limit) {
      device const float* kr = k + ulong(j) * a.kv_stride + ulong(kh) * a.head_dim;
      float dot = 0.0f;
      for (uint dd = 0; dd < a.head_dim; ++dd) dot += qv[dd] * kr[dd];
      s = dot * a.scale;
    }
    const float m_new = max(m, simd_max(s));  // finite: key j0 < limit exists
    const float corr = precise::exp(m - m_new);  // 0 on the first block (m = -inf)
    const float p = j < limit ? precise::exp(s - m_new) : 0.0f;
    l = l * corr + simd_sum(p);
    for (uint e = 0; e < 8; ++e) acc[e] *= corr;
    const uint cnt = min(32u, limit - j0);
    for (uint jj = 0; jj < cnt; ++jj) {
      const float pj = simd_shuffle(p, ushort(jj));
      device const float* vr = v + ulong(j0 + jj) * a.kv_stride + ulong(kh) * a.head_dim;
      for (uint e = 0; e < 8; ++e) {
        const uint dd = lane + 32 * e;
        if (dd < a.head_dim) acc[e] += pj * vr[dd];
      }
    }
    m = m_new;
  }
  for (uint e = 0; e < 8; ++e) {
    const uint dd = lane + 32 * e;
    if (dd < a.head_dim) o[dd] = limit > 0 ? acc[e] / l : 0.0f;
  }
}

kernel void rs_embed(device const uchar* table [[buffer(0)]], device const float* scales [[buffer(1)]],
                  device const int* ids [[buffer(2)]], device float* out [[buffer(3)]],
                  constant EmbedArgs& a [[buffer(4)]], uint gid [[thread_position_in_grid]]) {
  if (gid >= a.n * a.d) return;
  out[gid] = load_w(table, scales, a.w, uint(ids[gid / a.d]), gid % a.d);
}

// out[c, r] = f(in[r, c]); f = GELU when a.gelu.
kernel void rs_transpose(device const float* in [[buffer(0)]], device float* out [[buffer(1)]],
                      constant TransArgs& a [[buffer(2)]], uint gid [[thread_position_in_grid]]) {
  if (gid >= a.rows * a.cols) return;
  const uint c = gid / a.rows, r = gid % a.rows;
  const float v = in[ulong(r) * a.cols + c];
  out[gid] = a.gelu != 0 ? gelu_erf(v) : v;
}

// col[p, ci*9 + ky*3 + kx] = in[ci, 2*oy + ky - 1, 2*ox + kx - 1] (zero outside), p = oy * ow + ox.
kernel void rs_im2col(device const float* in [[buffer(0)]], device float* col [[buffer(1)]],
                   constant Im2colArgs& a [[buffer(2)]], uint gid [[thread_position_in_grid]]) {
  const uint K = a.cin * 9;
  if (gid >= a.oh * a.ow * K) return;
  const uint p = gid / K, kk = gid % K;
  const uint ci = kk / 9, ky = (kk % 9) / 3, kx = kk % 3;
  const int iy = int(2 * (p / a.ow) + ky) - 1, ix = int(2 * (p % a.ow) + kx) - 1;
  col[gid] = (iy >= 0 && iy < int(a.h) && ix >= 0 && ix < int(a.w)) ? in[(ulong(ci) * a.h + uint(iy)) * a.w + uint(ix)] : 0.0f;
}
)MSL";

// ------------------------------------------------------------------------------------- host-side mirror

enum : uint32_t { kWBf16 = 0, kWI8 = 1, kWF32 = 2 };
struct WDesc {
  uint32_t kind, rows, cols, group;
};
struct LinArgs {
  uint32_t n, k, rows, has_bias;
  WDesc w;
};
struct NormArgs {
  uint32_t d;
  float eps;
  uint32_t has_g, has_b;
};
struct CountArgs {
  uint32_t count;
};
struct RopeArgs {
  uint32_t n, heads, head_dim, pos0;
};
struct AttnArgs {
  uint32_t nq, q_pos0, nk, kv_stride, q_heads, kv_heads, head_dim, causal;
  float scale;
};
struct EmbedArgs {
  uint32_t n, d;
  WDesc w;
};
struct TransArgs {
  uint32_t rows, cols, gelu;
};
struct Im2colArgs {
  uint32_t cin, h, w, oh, ow;
};

constexpr NSUInteger kGroup = 256;       // threads per threadgroup (8 SIMD groups of 32)
constexpr int64_t kGemvMaxN = 4;         // as the CPU: up to 4 rows use the gemv kernel
constexpr int kOpsPerCommit = 64;        // dispatches per command buffer before an early commit
constexpr int64_t kMaxHeadDim = 256;     // attention: 8 output dims per lane
constexpr int64_t kMaxRopeHalf = 1024;   // rope: inv[] goes through setBytes (4 KiB)

[[noreturn]] void fail(ErrorCode code, const std::string& what) { throw Error(code, "metal: " + what); }

uint32_t u32(int64_t v, const char* what) {
  if (v < 0 || v > static_cast<int64_t>(UINT32_MAX)) fail(ErrorCode::kInvalidArgument, std::string(what) + " out of range");
  return static_cast<uint32_t>(v);
}

std::string ns_str(NSString* s) { return s ? std::string([s UTF8String]) : std::string(); }

// A pointer resolved to the buffer that holds it.
struct Ref {
  id<MTLBuffer> buf = nil;
  NSUInteger off = 0;
};

// A weight as the kernels read it (see the header comment).
struct DevWeight {
  id<MTLBuffer> data = nil;
  id<MTLBuffer> scales = nil;  // kWI8 only
  WDesc desc{};
};

// One host thread's queue and open command buffer.
struct Stream {
  id<MTLCommandQueue> queue = nil;
  id<MTLCommandBuffer> cb = nil;
  id<MTLComputeCommandEncoder> enc = nil;
  id<MTLCommandBuffer> last_committed = nil;  // committed early, not yet waited for
  int ops = 0;
};

const char* const kKernels[] = {"rs_gemv", "rs_gemm",    "rs_layer_norm", "rs_rms_norm",  "rs_gelu",   "rs_silu_mul", "rs_add",
                                "rs_copy_f32", "rs_rope", "rs_attention",  "rs_embed", "rs_transpose", "rs_im2col"};

class MetalBackend final : public Backend {
 public:
  explicit MetalBackend(const BackendOptions& o) {
    @autoreleasepool {
      if (o.device_index != 0)
        fail(ErrorCode::kUnsupportedDevice, "device index " + std::to_string(o.device_index) +
                                                " does not exist (only the default GPU, 0, is used)");
      device_ = MTLCreateSystemDefaultDevice();
      if (device_ == nil) fail(ErrorCode::kUnsupportedDevice, "no Metal device");
      if (![device_ supportsFamily:MTLGPUFamilyApple7])
        fail(ErrorCode::kUnsupportedDevice, ns_str(device_.name) + " is not an Apple-silicon GPU (MTLGPUFamilyApple7)");
      name_ = ns_str(device_.name);
      threads_ = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
      MTLCompileOptions* opts = [[MTLCompileOptions alloc] init];
      opts.fastMathEnabled = NO;  // precise exp / sin / cos / sqrt (golden tolerances)
      NSError* err = nil;
      id<MTLLibrary> lib = [device_ newLibraryWithSource:[NSString stringWithUTF8String:kSource] options:opts error:&err];
      if (lib == nil) fail(ErrorCode::kUnsupportedDevice, "kernel compilation failed: " + ns_str(err.localizedDescription));
      for (const char* k : kKernels) {
        id<MTLFunction> fn = [lib newFunctionWithName:[NSString stringWithUTF8String:k]];
        if (fn == nil) fail(ErrorCode::kInternal, std::string("kernel ") + k + " missing from the library");
        err = nil;
        id<MTLComputePipelineState> ps = [device_ newComputePipelineStateWithFunction:fn error:&err];
        if (ps == nil) fail(ErrorCode::kUnsupportedDevice, std::string("pipeline ") + k + ": " + ns_str(err.localizedDescription));
        if (ps.threadExecutionWidth != 32 || ps.maxTotalThreadsPerThreadgroup < kGroup)
          fail(ErrorCode::kUnsupportedDevice, std::string("pipeline ") + k + ": needs SIMD width 32 and 256 threads per threadgroup");
        pipes_[k] = ps;
      }
    }
  }

  ~MetalBackend() override {
    @autoreleasepool {
      for (auto& kv : streams_) {
        Stream& s = kv.second;
        if (s.enc != nil) [s.enc endEncoding];
        if (s.cb != nil) {
          [s.cb commit];
          [s.cb waitUntilCompleted];
        }
        if (s.last_committed != nil) [s.last_committed waitUntilCompleted];
      }
    }
  }

  std::string name() const override { return "metal"; }
  std::string kernel() const override { return "metal"; }
  int threads() const override { return threads_; }
  std::string device_name() const override { return name_; }

  // ---- memory ----

  float* alloc(int64_t count) override {
    if (count <= 0) return nullptr;
    const NSUInteger bytes = static_cast<NSUInteger>(count) * sizeof(float);
    float* p = nullptr;
    @autoreleasepool {
      if (bytes > device_.maxBufferLength) fail(ErrorCode::kInternal, "out of memory: " + std::to_string(bytes) + " bytes in one buffer");
      id<MTLBuffer> b = [device_ newBufferWithLength:bytes options:MTLResourceStorageModeShared];
      if (b == nil) fail(ErrorCode::kInternal, "out of memory allocating " + std::to_string(bytes) + " bytes");
      p = static_cast<float*>([b contents]);
      std::lock_guard<std::mutex> lock(mem_mu_);
      buffers_[reinterpret_cast<uintptr_t>(p)] = Alloc{b, bytes};
    }
    return p;
  }

  // A command buffer still running retains the buffer, so it lives until that work is done.
  void free(float* p) override {
    if (p == nullptr) return;
    std::lock_guard<std::mutex> lock(mem_mu_);
    buffers_.erase(reinterpret_cast<uintptr_t>(p));
  }

  // Shared memory: the host writes in place, once this thread's queued kernels (which may read or write
  // dst) have run.
  void upload(float* dst, const float* host, int64_t count) override {
    if (count <= 0) return;
    resolve(dst, count);
    sync();
    std::memcpy(dst, host, static_cast<size_t>(count) * sizeof(float));
  }

  void download(float* host, const float* src, int64_t count) override {
    if (count <= 0) return;
    resolve(src, count);
    sync();
    std::memcpy(host, src, static_cast<size_t>(count) * sizeof(float));
  }

  void copy(float* dst, const float* src, int64_t count) override {
    if (count <= 0 || dst == src) return;
    const Ref d = resolve(dst, count), s = resolve(src, count);
    if (d.buf == s.buf && d.off < s.off + static_cast<NSUInteger>(count) * 4 && s.off < d.off + static_cast<NSUInteger>(count) * 4) {
      sync();  // overlapping ranges: memmove semantics on the host
      std::memmove(dst, src, static_cast<size_t>(count) * sizeof(float));
      return;
    }
    const CountArgs a{u32(count, "copy count")};
    encode("rs_copy_f32", [&](id<MTLComputeCommandEncoder> e) {
      bind(e, d, 0);
      bind(e, s, 1);
      [e setBytes:&a length:sizeof(a) atIndex:2];
    }, count);
  }

  void prepare_weight(Weight& w) override {
    if (w.empty()) return;
    const DevWeight& dw = weight(w);
    w.dev = [dw.data contents];
    w.dev_scales = dw.scales != nil ? static_cast<const float*>([dw.scales contents]) : nullptr;
  }

  // ---- ops ----

  void linear(const float* x, int64_t n, const Weight& w, const Weight& bias, float* y) override {
    if (n <= 0) return;
    check_vector(bias, w.rows, "linear bias");
    linear_ref(resolve(x, n * w.cols), n, weight(w), bias.empty() ? nullptr : &vector(bias), resolve(y, n * w.rows));
  }

  void conv3x3s2_gelu(const float* in, int64_t cin, int64_t h, int64_t w, const Weight& weight_, const Weight& bias,
                      float* out) override {
    const int64_t oh = (h + 1) / 2, ow = (w + 1) / 2, P = oh * ow, K = cin * 9, cout = weight_.rows;
    if (weight_.cols != K)
      fail(ErrorCode::kInvalidArgument, "conv weight " + weight_.name + " has " + std::to_string(weight_.cols) +
                                            " columns, expected " + std::to_string(K));
    check_vector(bias, cout, "conv bias");
    if (P <= 0 || cout <= 0) return;
    const Ref src = resolve(in, cin * h * w), dst = resolve(out, cout * P);
    @autoreleasepool {
      // Scratch buffers live as long as the command buffer that uses them (it retains them).
      id<MTLBuffer> col = scratch(P * K), tmp = scratch(P * cout);
      const Im2colArgs ia{u32(cin, "conv cin"), u32(h, "conv h"), u32(w, "conv w"), u32(oh, "conv oh"), u32(ow, "conv ow")};
      encode("rs_im2col", [&](id<MTLComputeCommandEncoder> e) {
        bind(e, src, 0);
        [e setBuffer:col offset:0 atIndex:1];
        [e setBytes:&ia length:sizeof(ia) atIndex:2];
      }, P * K);
      linear_ref(Ref{col, 0}, P, weight(weight_), bias.empty() ? nullptr : &vector(bias), Ref{tmp, 0});
      // [P, cout] -> [cout, P] with GELU.
      const TransArgs ta{u32(P, "conv rows"), u32(cout, "conv cols"), 1};
      encode("rs_transpose", [&](id<MTLComputeCommandEncoder> e) {
        [e setBuffer:tmp offset:0 atIndex:0];
        bind(e, dst, 1);
        [e setBytes:&ta length:sizeof(ta) atIndex:2];
      }, P * cout);
    }
  }

  void layer_norm(const float* x, int64_t n, int64_t d, const Weight& g, const Weight& b, float eps, float* y) override {
    check_vector(g, d, "layer_norm weight");
    check_vector(b, d, "layer_norm bias");
    if (n <= 0 || d <= 0) return;
    const Ref xr = resolve(x, n * d), yr = resolve(y, n * d);
    const NormArgs a{u32(d, "layer_norm d"), eps, g.empty() ? 0u : 1u, b.empty() ? 0u : 1u};
    const DevWeight* gw = g.empty() ? nullptr : &vector(g);
    const DevWeight* bw = b.empty() ? nullptr : &vector(b);
    encode_groups("rs_layer_norm", [&](id<MTLComputeCommandEncoder> e) {
      bind(e, xr, 0);
      [e setBuffer:(gw ? gw->data : xr.buf) offset:(gw ? 0 : xr.off) atIndex:1];
      [e setBuffer:(bw ? bw->data : xr.buf) offset:(bw ? 0 : xr.off) atIndex:2];
      bind(e, yr, 3);
      [e setBytes:&a length:sizeof(a) atIndex:4];
    }, MTLSizeMake(u32(n, "layer_norm rows"), 1, 1), MTLSizeMake(kGroup, 1, 1));
  }

  void rms_norm(const float* x, int64_t rows, int64_t d, const Weight& g, float eps, float* y) override {
    check_vector(g, d, "rms_norm weight");
    if (rows <= 0 || d <= 0) return;
    const Ref xr = resolve(x, rows * d), yr = resolve(y, rows * d);
    const NormArgs a{u32(d, "rms_norm d"), eps, g.empty() ? 0u : 1u, 0u};
    const DevWeight* gw = g.empty() ? nullptr : &vector(g);
    encode_groups("rs_rms_norm", [&](id<MTLComputeCommandEncoder> e) {
      bind(e, xr, 0);
      [e setBuffer:(gw ? gw->data : xr.buf) offset:(gw ? 0 : xr.off) atIndex:1];
      bind(e, yr, 2);
      [e setBytes:&a length:sizeof(a) atIndex:3];
    }, MTLSizeMake(u32(rows, "rms_norm rows"), 1, 1), MTLSizeMake(kGroup, 1, 1));
  }

  void gelu(float* x, int64_t count) override {
    if (count <= 0) return;
    const Ref r = resolve(x, count);
    const CountArgs a{u32(count, "gelu count")};
    encode("rs_gelu", [&](id<MTLComputeCommandEncoder> e) {
      bind(e, r, 0);
      [e setBytes:&a length:sizeof(a) atIndex:1];
    }, count);
  }

  void silu_mul(const float* gate, const float* up, int64_t count, float* out) override {
    if (count <= 0) return;
    const Ref g = resolve(gate, count), u = resolve(up, count), o = resolve(out, count);
    const CountArgs a{u32(count, "silu_mul count")};
    encode("rs_silu_mul", [&](id<MTLComputeCommandEncoder> e) {
      bind(e, g, 0);
      bind(e, u, 1);
      bind(e, o, 2);
      [e setBytes:&a length:sizeof(a) atIndex:3];
    }, count);
  }

  void add(float* y, const float* x, int64_t count) override {
    if (count <= 0) return;
    const Ref yr = resolve(y, count), xr = resolve(x, count);
    const CountArgs a{u32(count, "add count")};
    encode("rs_add", [&](id<MTLComputeCommandEncoder> e) {
      bind(e, yr, 0);
      bind(e, xr, 1);
      [e setBytes:&a length:sizeof(a) atIndex:2];
    }, count);
  }

  void rope(float* x, int64_t n, int64_t heads, int64_t head_dim, int64_t pos0, float theta) override {
    if (head_dim % 2 != 0) fail(ErrorCode::kInvalidArgument, "rope: odd head_dim");
    const int64_t half = head_dim / 2;
    if (half > kMaxRopeHalf) fail(ErrorCode::kInvalidArgument, "rope: head_dim above " + std::to_string(2 * kMaxRopeHalf));
    if (n <= 0 || heads <= 0 || half == 0) return;
    // As the CPU (and torch): inv_freq = 1 / theta^(2i / head_dim), float32, on the host.
    std::vector<float> inv(static_cast<size_t>(half));
    for (int64_t i = 0; i < half; ++i)
      inv[static_cast<size_t>(i)] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(head_dim));
    const Ref r = resolve(x, n * heads * head_dim);
    u32(pos0 + n, "rope position");
    const RopeArgs a{u32(n, "rope n"), u32(heads, "rope heads"), u32(head_dim, "rope head_dim"), u32(pos0, "rope pos0")};
    encode("rs_rope", [&](id<MTLComputeCommandEncoder> e) {
      bind(e, r, 0);
      [e setBytes:inv.data() length:inv.size() * sizeof(float) atIndex:1];
      [e setBytes:&a length:sizeof(a) atIndex:2];
    }, n * heads * half);
  }

  void attention(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v, int64_t nk,
                 int64_t kv_stride, int64_t q_heads, int64_t kv_heads, int64_t head_dim, bool causal,
                 float* out) override {
    if (nq <= 0 || q_heads <= 0) return;
    if (kv_heads <= 0 || q_heads % kv_heads != 0)
      fail(ErrorCode::kInvalidArgument, "attention: q_heads must be a multiple of kv_heads");
    if (head_dim <= 0 || head_dim > kMaxHeadDim)
      fail(ErrorCode::kInvalidArgument, "attention: head_dim " + std::to_string(head_dim) + " (1.." + std::to_string(kMaxHeadDim) + ")");
    const Ref qr = resolve(q, nq * q_heads * head_dim), o = resolve(out, nq * q_heads * head_dim);
    // k / v rows 0 .. nk-1 at kv_stride; with nk == 0 nothing is read (the output is zeros).
    const int64_t kv_span = nk > 0 ? (nk - 1) * kv_stride + kv_heads * head_dim : 1;
    const Ref kr = resolve(k, kv_span), vr = resolve(v, kv_span);
    const AttnArgs a{u32(nq, "attention nq"), u32(q_pos0, "attention q_pos0"), u32(nk, "attention nk"),
                     u32(kv_stride, "attention kv_stride"), u32(q_heads, "attention q_heads"),
                     u32(kv_heads, "attention kv_heads"), u32(head_dim, "attention head_dim"), causal ? 1u : 0u,
                     1.0f / std::sqrt(static_cast<float>(head_dim))};
    encode_groups("rs_attention", [&](id<MTLComputeCommandEncoder> e) {
      bind(e, qr, 0);
      bind(e, kr, 1);
      bind(e, vr, 2);
      bind(e, o, 3);
      [e setBytes:&a length:sizeof(a) atIndex:4];
    }, MTLSizeMake(u32(nq * q_heads, "attention rows"), 1, 1), MTLSizeMake(32, 1, 1));
  }

  void embed(const Weight& table, const int32_t* ids, int64_t n, float* out) override {
    const int64_t d = table.cols;
    for (int64_t i = 0; i < n; ++i) {
      if (ids[i] < 0 || ids[i] >= table.rows)
        throw Error(ErrorCode::kInvalidArgument, "embed: token id " + std::to_string(ids[i]) + " out of range");
    }
    if (n <= 0 || d <= 0) return;
    const DevWeight& t = weight(table);
    const Ref o = resolve(out, n * d);
    const EmbedArgs a{u32(n, "embed n"), u32(d, "embed d"), t.desc};
    @autoreleasepool {
      // ids are host memory: a small buffer of their own, retained by the command buffer.
      id<MTLBuffer> idb = [device_ newBufferWithBytes:ids length:static_cast<NSUInteger>(n) * sizeof(int32_t)
                                              options:MTLResourceStorageModeShared];
      if (idb == nil) fail(ErrorCode::kInternal, "out of memory (embed ids)");
      encode("rs_embed", [&](id<MTLComputeCommandEncoder> e) {
        [e setBuffer:t.data offset:0 atIndex:0];
        [e setBuffer:(t.scales ? t.scales : t.data) offset:0 atIndex:1];
        [e setBuffer:idb offset:0 atIndex:2];
        bind(e, o, 3);
        [e setBytes:&a length:sizeof(a) atIndex:4];
      }, n * d);
    }
  }

  void transpose(const float* in, int64_t rows, int64_t cols, float* out) override {
    if (rows <= 0 || cols <= 0) return;
    const Ref i = resolve(in, rows * cols), o = resolve(out, rows * cols);
    const TransArgs a{u32(rows, "transpose rows"), u32(cols, "transpose cols"), 0};
    encode("rs_transpose", [&](id<MTLComputeCommandEncoder> e) {
      bind(e, i, 0);
      bind(e, o, 1);
      [e setBytes:&a length:sizeof(a) atIndex:2];
    }, rows * cols);
  }

 private:
  struct Alloc {
    id<MTLBuffer> buf = nil;
    NSUInteger bytes = 0;
  };

  static void bind(id<MTLComputeCommandEncoder> e, const Ref& r, NSUInteger index) {
    [e setBuffer:r.buf offset:r.off atIndex:index];
  }

  static void check_vector(const Weight& v, int64_t n, const char* what) {
    if (!v.empty() && v.numel() != n)
      throw Error(ErrorCode::kInvalidArgument, std::string(what) + " " + v.name + " has " + std::to_string(v.numel()) +
                                                   " elements, expected " + std::to_string(n));
  }

  // The buffer and offset of backend memory [p, p + count floats). Throws kInternal for a pointer this
  // backend did not allocate (a host pointer passed as backend memory is a bug in the caller).
  Ref resolve(const float* p, int64_t count) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    std::lock_guard<std::mutex> lock(mem_mu_);
    auto it = buffers_.upper_bound(a);
    if (it != buffers_.begin()) {
      --it;
      const uintptr_t base = it->first;
      const NSUInteger off = static_cast<NSUInteger>(a - base);
      if (off + static_cast<NSUInteger>(std::max<int64_t>(count, 0)) * sizeof(float) <= it->second.bytes)
        return Ref{it->second.buf, off};
    }
    fail(ErrorCode::kInternal, "a pointer that is not Metal backend memory (or a range past its buffer) was passed to an op");
  }

  id<MTLBuffer> scratch(int64_t floats) {
    id<MTLBuffer> b = [device_ newBufferWithLength:static_cast<NSUInteger>(floats) * sizeof(float)
                                           options:MTLResourceStorageModeShared];
    if (b == nil) fail(ErrorCode::kInternal, "out of memory (" + std::to_string(floats * 4) + " bytes of scratch)");
    return b;
  }

  // ---- weights ----

  // The device copy of a weight, made on first use (prepare_weight) and shared by every Weight with the
  // same source data.
  const DevWeight& weight(const Weight& w) {
    if (w.empty()) fail(ErrorCode::kInternal, "an empty weight was passed to an op");
    std::lock_guard<std::mutex> lock(w_mu_);
    auto it = weights_.find(w.data);
    if (it != weights_.end()) return it->second;
    DevWeight dw;
    @autoreleasepool {
      const bool vec = w.rows <= 1;
      dw.desc = WDesc{kWF32, u32(w.rows, "weight rows"), u32(w.cols, "weight cols"), 0};
      if (w.dtype == DType::kBF16 && !vec) {
        dw.desc.kind = kWBf16;
        dw.data = copy_bytes(w.data, static_cast<size_t>(w.numel()) * 2);
      } else if (w.dtype == DType::kI8) {
        if (w.group <= 0 || w.cols % w.group != 0 || w.scales == nullptr)
          fail(ErrorCode::kInternal, "int8 weight " + w.name + " without valid scales");
        dw.desc.kind = kWI8;
        dw.desc.group = u32(w.group, "weight group");
        dw.data = copy_bytes(w.data, static_cast<size_t>(w.numel()));
        dw.scales = copy_bytes(w.scales, static_cast<size_t>(w.rows * (w.cols / w.group)) * sizeof(float));
      } else {
        dw.data = [device_ newBufferWithLength:static_cast<NSUInteger>(std::max<int64_t>(w.numel(), 1)) * sizeof(float)
                                       options:MTLResourceStorageModeShared];
        if (dw.data == nil) fail(ErrorCode::kInternal, "out of memory (weight " + w.name + ")");
        weight_to_f32(w, 0, w.numel(), static_cast<float*>([dw.data contents]));
      }
    }
    return weights_.emplace(w.data, dw).first->second;  // unordered_map nodes never move
  }

  // A 1-D weight (norm weight, bias) as a float32 buffer.
  const DevWeight& vector(const Weight& w) {
    const DevWeight& dw = weight(w);
    if (dw.desc.kind != kWF32) fail(ErrorCode::kInternal, "weight " + w.name + " used as a vector is not 1-D");
    return dw;
  }

  id<MTLBuffer> copy_bytes(const void* src, size_t bytes) {
    id<MTLBuffer> b = [device_ newBufferWithBytes:src length:std::max<size_t>(bytes, 1) options:MTLResourceStorageModeShared];
    if (b == nil) fail(ErrorCode::kInternal, "out of memory copying " + std::to_string(bytes) + " bytes of weights");
    return b;
  }

  // y = x * W^T (+ bias) on resolved buffers; gemv for n <= kGemvMaxN, tiled gemm above.
  void linear_ref(const Ref& x, int64_t n, const DevWeight& w, const DevWeight* bias, const Ref& y) {
    const LinArgs a{u32(n, "linear n"), w.desc.cols, w.desc.rows, bias ? 1u : 0u, w.desc};
    auto args = [&](id<MTLComputeCommandEncoder> e) {
      bind(e, x, 0);
      [e setBuffer:w.data offset:0 atIndex:1];
      [e setBuffer:(w.scales ? w.scales : w.data) offset:0 atIndex:2];
      [e setBuffer:(bias ? bias->data : w.data) offset:0 atIndex:3];
      bind(e, y, 4);
      [e setBytes:&a length:sizeof(a) atIndex:5];
    };
    if (n <= kGemvMaxN) {
      encode_groups("rs_gemv", args, MTLSizeMake((w.desc.rows + 7) / 8, 1, 1), MTLSizeMake(kGroup, 1, 1));
    } else {
      encode_groups("rs_gemm", args, MTLSizeMake((w.desc.rows + 15) / 16, (a.n + 15) / 16, 1), MTLSizeMake(16, 16, 1));
    }
  }

  // ---- encoding ----

  // This thread's stream (created on first use; never erased: libuv's worker threads are few and
  // long-lived).
  Stream& stream() {
    std::lock_guard<std::mutex> lock(streams_mu_);
    Stream& s = streams_[std::this_thread::get_id()];
    if (s.queue == nil) {
      s.queue = [device_ newCommandQueue];
      if (s.queue == nil) fail(ErrorCode::kInternal, "could not create a command queue");
    }
    return s;
  }

  template <typename SetArgs>
  void encode_groups(const char* kernel, SetArgs set_args, MTLSize groups, MTLSize per_group) {
    if (groups.width == 0 || groups.height == 0 || groups.depth == 0) return;
    @autoreleasepool {
      Stream& s = stream();
      if (s.enc == nil) {
        s.cb = [s.queue commandBuffer];
        s.enc = [s.cb computeCommandEncoder];  // serial dispatch: kernels run in encoding order
        if (s.cb == nil || s.enc == nil) fail(ErrorCode::kInternal, "could not create a command buffer");
      }
      [s.enc setComputePipelineState:pipes_.at(kernel)];
      set_args(s.enc);
      [s.enc dispatchThreadgroups:groups threadsPerThreadgroup:per_group];
      if (++s.ops >= kOpsPerCommit) {
        // Let the GPU start; the queue keeps the order, sync() waits for the rest.
        [s.enc endEncoding];
        [s.cb commit];
        id<MTLCommandBuffer> previous = s.last_committed;
        s.last_committed = s.cb;
        s.cb = nil;
        s.enc = nil;
        s.ops = 0;
        check_done(previous);  // at most two early buffers in flight per thread
      }
    }
  }

  // One thread per element, `count` elements.
  template <typename SetArgs>
  void encode(const char* kernel, SetArgs set_args, int64_t count) {
    if (count <= 0) return;
    encode_groups(kernel, set_args, MTLSizeMake(u32((count + kGroup - 1) / kGroup, "grid size"), 1, 1), MTLSizeMake(kGroup, 1, 1));
  }

  void check_done(id<MTLCommandBuffer> cb) {
    if (cb == nil) return;
    [cb waitUntilCompleted];
    if (cb.status == MTLCommandBufferStatusError) {
      NSError* e = cb.error;
      const bool gone = e != nil && e.code == static_cast<NSInteger>(MTLCommandBufferErrorDeviceRemoved);
      fail(gone ? ErrorCode::kUnsupportedDevice : ErrorCode::kInternal,
           "command buffer failed: " + (e ? ns_str(e.localizedDescription) : std::string("unknown error")));
    }
  }

  // Commits this thread's open command buffer and waits for all of its work.
  void sync() {
    @autoreleasepool {
      Stream& s = stream();
      id<MTLCommandBuffer> early = s.last_committed, cb = s.cb;
      s.last_committed = nil;
      if (s.enc != nil) [s.enc endEncoding];
      s.enc = nil;
      s.cb = nil;
      s.ops = 0;
      if (cb != nil) [cb commit];
      check_done(early);
      check_done(cb);
    }
  }

  id<MTLDevice> device_ = nil;
  std::string name_;
  int threads_ = 1;
  std::unordered_map<std::string, id<MTLComputePipelineState>> pipes_;  // written only in the constructor

  std::mutex mem_mu_;
  std::map<uintptr_t, Alloc> buffers_;  // base address -> buffer, for resolve()

  std::mutex w_mu_;
  std::unordered_map<const void*, DevWeight> weights_;  // source data -> device copy

  std::mutex streams_mu_;
  std::unordered_map<std::thread::id, Stream> streams_;
};

}  // namespace
}  // namespace mtl

std::unique_ptr<Backend> make_metal_backend(const BackendOptions& options) {
  return std::make_unique<mtl::MetalBackend>(options);
}

DeviceStatus probe_metal() {
  DeviceStatus d;
  d.kind = "metal";
  @autoreleasepool {
    id<MTLDevice> dev = MTLCreateSystemDefaultDevice();
    if (dev == nil) {
      d.reason = "no Metal device";
    } else if (![dev supportsFamily:MTLGPUFamilyApple7]) {
      d.reason = mtl::ns_str(dev.name) + " is not an Apple-silicon GPU (MTLGPUFamilyApple7)";
    } else {
      d.available = true;
      d.name = mtl::ns_str(dev.name);
    }
  }
  return d;
}

}  // namespace rustasr
