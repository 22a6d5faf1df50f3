// Element-wise, normalisation, RoPE, embedding, transpose and im2col kernels of the CUDA backend. The
// arithmetic follows the CPU backend (cpu_backend.cpp) operation by operation: norms accumulate in double,
// GELU is the exact erf form, RoPE takes the CPU's float32 inverse frequencies.
#include "common.cuh"

namespace rustasr {
namespace cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float gelu_erf(float x) { return x * 0.5f * (1.0f + erff(x * 0.70710678118654752440f)); }

__global__ void gelu_kernel(float* __restrict__ x, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] = gelu_erf(x[i]);
}

// gate / up / out may alias element-wise (out == gate in the model).
__global__ void silu_mul_kernel(const float* gate, const float* up, int64_t count, float* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    out[i] = (g / (1.0f + expf(-g))) * up[i];
  }
}

__global__ void add_kernel(float* y, const float* x, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] += x[i];
}

// One warp per row. x and y may alias: every element is read and written by the same lane, and all reads
// of a row happen before its writes within that lane.
__global__ void layer_norm_kernel(const float* x, int64_t n, int64_t d, const float* __restrict__ g,
                                  const float* __restrict__ b, float eps, float* y) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = blockDim.x / 32;
  for (int64_t r = blockIdx.x * warps + threadIdx.x / 32; r < n; r += static_cast<int64_t>(gridDim.x) * warps) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    double sum = 0;
    for (int64_t i = lane; i < d; i += 32) sum += xr[i];
    sum = warp_sum_d(sum);
    const double mean = sum / static_cast<double>(d);
    double sq = 0;
    for (int64_t i = lane; i < d; i += 32) {
      const double t = xr[i] - mean;
      sq += t * t;
    }
    sq = warp_sum_d(sq);
    const double var = sq / static_cast<double>(d);
    const double inv = 1.0 / sqrt(var + static_cast<double>(eps));
    const float rstd = static_cast<float>(inv);
    const float shift = static_cast<float>(-mean * inv);
    for (int64_t i = lane; i < d; i += 32) {
      const float gi = g ? g[i] : 1.0f;
      const float bi = b ? b[i] : 0.0f;
      yr[i] = (xr[i] * rstd + shift) * gi + bi;
    }
  }
}

__global__ void rms_norm_kernel(const float* x, int64_t rows, int64_t d, const float* __restrict__ g, float eps,
                                float* y) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = blockDim.x / 32;
  for (int64_t r = blockIdx.x * warps + threadIdx.x / 32; r < rows; r += static_cast<int64_t>(gridDim.x) * warps) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    double sq = 0;
    for (int64_t i = lane; i < d; i += 32) sq += static_cast<double>(xr[i]) * xr[i];
    sq = warp_sum_d(sq);
    const float var = static_cast<float>(sq / static_cast<double>(d));
    const float scale = 1.0f / sqrtf(var + eps);
    for (int64_t i = lane; i < d; i += 32) {
      const float gi = g ? g[i] : 1.0f;
      yr[i] = gi * (xr[i] * scale);
    }
  }
}

struct InvFreq {
  float v[kRopeMaxHalf];
};

// One thread per (token, head, i < half): rotates the pair (i, i + half).
__global__ void rope_kernel(float* x, int64_t n, int64_t heads, int64_t head_dim, int64_t pos0, InvFreq inv) {
  const int64_t half = head_dim / 2;
  const int64_t total = n * heads * half;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx % half;
    const int64_t th = idx / half;  // t * heads + h
    const int64_t t = th / heads;
    const float pos = static_cast<float>(pos0 + t);
    const float a = pos * inv.v[i];
    const float c = cosf(a), s = sinf(a);
    float* v = x + th * head_dim;
    const float x1 = v[i], x2 = v[i + half];
    v[i] = x1 * c - x2 * s;
    v[i + half] = x2 * c + x1 * s;
  }
}

__global__ void embed_kernel(DevWeight table, const int32_t* __restrict__ ids, int64_t n, float* __restrict__ out) {
  const int64_t d = table.cols;
  const int64_t total = n * d;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx / d, c = idx % d;
    out[idx] = load_w(table, ids[i], c);
  }
}

// 32 x 32 tiles through shared memory (+1 column against bank conflicts); blocks of 32 x 8 threads.
// Tile loops cover grids larger than the launch limits.
template <bool GELU>
__global__ void transpose_kernel(const float* __restrict__ in, int64_t rows, int64_t cols, float* __restrict__ out) {
  __shared__ float tile[32][33];
  const int64_t tiles_c = (cols + 31) / 32, tiles_r = (rows + 31) / 32;
  for (int64_t tr = blockIdx.y; tr < tiles_r; tr += gridDim.y)
    for (int64_t tc = blockIdx.x; tc < tiles_c; tc += gridDim.x) {
      const int64_t r0 = tr * 32, c0 = tc * 32;
      for (int j = threadIdx.y; j < 32; j += blockDim.y) {
        const int64_t r = r0 + j, c = c0 + threadIdx.x;
        if (r < rows && c < cols) tile[j][threadIdx.x] = in[r * cols + c];
      }
      __syncthreads();
      for (int j = threadIdx.y; j < 32; j += blockDim.y) {
        const int64_t c = c0 + j, r = r0 + threadIdx.x;  // out[c, r]
        if (r < rows && c < cols) {
          const float v = tile[threadIdx.x][j];
          out[c * rows + r] = GELU ? gelu_erf(v) : v;
        }
      }
      __syncthreads();
    }
}

__global__ void im2col_kernel(const float* __restrict__ in, int64_t cin, int64_t h, int64_t w, int64_t oh,
                              int64_t ow, float* __restrict__ col) {
  const int64_t K = cin * 9;
  const int64_t total = oh * ow * K;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t p = idx / K, k = idx % K;
    const int64_t ci = k / 9, kk = k % 9, ky = kk / 3, kx = kk % 3;
    const int64_t oy = p / ow, ox = p % ow;
    const int64_t iy = 2 * oy + ky - 1, ix = 2 * ox + kx - 1;
    col[idx] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? in[(ci * h + iy) * w + ix] : 0.f;
  }
}

// Rows per block for the warp-per-row kernels.
constexpr int kRowWarps = kThreads / 32;

}  // namespace

void gelu(float* x, int64_t count) {
  if (count <= 0) return;
  gelu_kernel<<<grid_for(count, kThreads), kThreads, 0, stream()>>>(x, count);
  RUSTASR_CK_LAUNCH();
}

void silu_mul(const float* gate, const float* up, int64_t count, float* out) {
  if (count <= 0) return;
  silu_mul_kernel<<<grid_for(count, kThreads), kThreads, 0, stream()>>>(gate, up, count, out);
  RUSTASR_CK_LAUNCH();
}

void add(float* y, const float* x, int64_t count) {
  if (count <= 0) return;
  add_kernel<<<grid_for(count, kThreads), kThreads, 0, stream()>>>(y, x, count);
  RUSTASR_CK_LAUNCH();
}

void layer_norm(const float* x, int64_t n, int64_t d, const float* g, const float* b, float eps, float* y) {
  if (n <= 0 || d <= 0) return;
  layer_norm_kernel<<<grid_for(n, kRowWarps), kThreads, 0, stream()>>>(x, n, d, g, b, eps, y);
  RUSTASR_CK_LAUNCH();
}

void rms_norm(const float* x, int64_t rows, int64_t d, const float* g, float eps, float* y) {
  if (rows <= 0 || d <= 0) return;
  rms_norm_kernel<<<grid_for(rows, kRowWarps), kThreads, 0, stream()>>>(x, rows, d, g, eps, y);
  RUSTASR_CK_LAUNCH();
}

void rope(float* x, int64_t n, int64_t heads, int64_t head_dim, int64_t pos0, const float* inv) {
  const int64_t half = head_dim / 2;
  if (n <= 0 || heads <= 0 || half <= 0) return;
  if (half > kRopeMaxHalf)
    throw Error(ErrorCode::kInvalidArgument, "rope: head_dim " + std::to_string(head_dim) + " above the CUDA limit " +
                                                 std::to_string(2 * kRopeMaxHalf));
  InvFreq f{};
  for (int64_t i = 0; i < half; ++i) f.v[i] = inv[i];
  rope_kernel<<<grid_for(n * heads * half, kThreads), kThreads, 0, stream()>>>(x, n, heads, head_dim, pos0, f);
  RUSTASR_CK_LAUNCH();
}

void embed(const DevWeight& table, const int32_t* ids_dev, int64_t n, float* out) {
  if (n <= 0 || table.cols <= 0) return;
  embed_kernel<<<grid_for(n * table.cols, kThreads), kThreads, 0, stream()>>>(table, ids_dev, n, out);
  RUSTASR_CK_LAUNCH();
}

void transpose(const float* in, int64_t rows, int64_t cols, float* out, bool gelu) {
  if (rows <= 0 || cols <= 0) return;
  const int64_t tc = (cols + 31) / 32, tr = (rows + 31) / 32;
  const dim3 grid(static_cast<unsigned>(tc < 65535 ? tc : 65535), static_cast<unsigned>(tr < 65535 ? tr : 65535));
  const dim3 block(32, 8);
  if (gelu)
    transpose_kernel<true><<<grid, block, 0, stream()>>>(in, rows, cols, out);
  else
    transpose_kernel<false><<<grid, block, 0, stream()>>>(in, rows, cols, out);
  RUSTASR_CK_LAUNCH();
}

void im2col3x3s2(const float* in, int64_t cin, int64_t h, int64_t w, float* col) {
  const int64_t oh = (h + 1) / 2, ow = (w + 1) / 2;
  const int64_t total = oh * ow * cin * 9;
  if (total <= 0) return;
  im2col_kernel<<<grid_for(total, kThreads), kThreads, 0, stream()>>>(in, cin, h, w, oh, ow, col);
  RUSTASR_CK_LAUNCH();
}

}  // namespace cuda
}  // namespace rustasr
