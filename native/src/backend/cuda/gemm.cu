// Linear layers of the CUDA backend: y[n, rows] = x[n, cols] * W^T (+ bias), float32 activations.
//
//   n <= 4 (decode)   gemv: one warp per weight row, 16-byte loads of the weight, fp32 accumulation, the
//                     warp's partial sums reduced by shuffles. Memory-bound: each weight byte is read once.
//   sm_80+, BF16/int8 gemm_tc: 64 x 64 output tiles, 4 warps with 2 x 2 WMMA 16x16x16 BF16 fragments each.
//                     The float32 activations are split into two BF16 parts (x = hi + lo, hi = bf16(x),
//                     lo = bf16(x - hi)), both multiplied by the (exact) BF16 weight with fp32 accumulation:
//                     relative error ~2^-17 per product, float32-class accuracy (plain BF16 activations,
//                     2^-9, would not meet the golden tolerances). int8 weights are dequantised into BF16
//                     (q * scale rounded to BF16) while the tile is staged.
//   otherwise         gemm_simt: 64 x 64 tiles, 256 threads with 4 x 4 fp32 outputs each (sm_75, and
//                     float32 weights everywhere).
#include <mma.h>

#include "common.cuh"

namespace rustasr {
namespace cuda {
namespace {

constexpr int kGemvMaxN = 4;

// ---------------------------------------------------------------------------------------------------------
// gemv

constexpr int kGemvWarps = 4;  // weight rows per block

__device__ __forceinline__ void bf16x8_to_f32(const uint4& u, float* f) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
  // Weights are read once per call: keep them out of L1.
  return __ldcs(p);
}

// VEC: 16-byte loads (needs cols % 8 == 0 for BF16, % 4 for F32, % 16 and group % 16 for int8, and x
// 16-byte aligned); otherwise one element per lane per step.
template <DevKind KIND, int M, bool VEC>
__global__ void __launch_bounds__(kGemvWarps * 32)
    gemv_kernel(const float* __restrict__ x, DevWeight w, const float* __restrict__ bias, float* __restrict__ y) {
  const int lane = threadIdx.x & 31;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kGemvWarps + threadIdx.x / 32;
  if (r >= w.rows) return;
  const int64_t K = w.cols;
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.f;

  if constexpr (VEC && KIND == DevKind::kBF16) {
    const uint4* wr = reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(w.p) + r * K);
    const int64_t chunks = K / 8;
#pragma unroll 4
    for (int64_t c = lane; c < chunks; c += 32) {
      float wf[8];
      bf16x8_to_f32(ld_stream(wr + c), wf);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const float4* xp = reinterpret_cast<const float4*>(x + m * K + c * 8);
        const float4 a = __ldg(xp), b = __ldg(xp + 1);
        acc[m] += wf[0] * a.x + wf[1] * a.y + wf[2] * a.z + wf[3] * a.w + wf[4] * b.x + wf[5] * b.y + wf[6] * b.z +
                  wf[7] * b.w;
      }
    }
  } else if constexpr (VEC && KIND == DevKind::kI8) {
    // group % 16 == 0: a 16-byte chunk lies inside one scale group.
    const uint4* wr = reinterpret_cast<const uint4*>(static_cast<const int8_t*>(w.p) + r * K);
    const float* sr = w.scales + r * (K / w.group);
    const int64_t chunks = K / 16;
#pragma unroll 2
    for (int64_t c = lane; c < chunks; c += 32) {
      const uint4 u = ld_stream(wr + c);
      const float s = sr[(c * 16) / w.group];
      const uint32_t words[4] = {u.x, u.y, u.z, u.w};
      float wf[16];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int b = 0; b < 4; ++b) wf[4 * i + b] = static_cast<float>(static_cast<int8_t>((words[i] >> (8 * b)) & 0xffu));
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const float4* xp = reinterpret_cast<const float4*>(x + m * K + c * 16);
        float part = 0.f;
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const float4 a = __ldg(xp + q);
          part += wf[4 * q] * a.x + wf[4 * q + 1] * a.y + wf[4 * q + 2] * a.z + wf[4 * q + 3] * a.w;
        }
        acc[m] += s * part;
      }
    }
  } else if constexpr (VEC && KIND == DevKind::kF32) {
    const float4* wr = reinterpret_cast<const float4*>(w.f32() + r * K);
    const int64_t chunks = K / 4;
#pragma unroll 4
    for (int64_t c = lane; c < chunks; c += 32) {
      const float4 wv = __ldcs(wr + c);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const float4 a = __ldg(reinterpret_cast<const float4*>(x + m * K) + c);
        acc[m] += wv.x * a.x + wv.y * a.y + wv.z * a.z + wv.w * a.w;
      }
    }
  } else {
    for (int64_t c = lane; c < K; c += 32) {
      const float wv = load_w(w, r, c);
#pragma unroll
      for (int m = 0; m < M; ++m) acc[m] += wv * x[m * K + c];
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m) {
    const float s = warp_sum(acc[m]);
    if (lane == 0) y[m * w.rows + r] = s + (bias ? bias[r] : 0.f);
  }
}

template <DevKind KIND, bool VEC>
void gemv_launch(const float* x, int64_t n, const DevWeight& w, const float* bias, float* y) {
  const int64_t blocks = (w.rows + kGemvWarps - 1) / kGemvWarps;
  if (blocks > 0x7fffffffLL) throw Error(ErrorCode::kInvalidArgument, "linear: too many weight rows");
  const dim3 grid(static_cast<unsigned>(blocks)), block(kGemvWarps * 32);
  switch (n) {
    case 1: gemv_kernel<KIND, 1, VEC><<<grid, block, 0, stream()>>>(x, w, bias, y); break;
    case 2: gemv_kernel<KIND, 2, VEC><<<grid, block, 0, stream()>>>(x, w, bias, y); break;
    case 3: gemv_kernel<KIND, 3, VEC><<<grid, block, 0, stream()>>>(x, w, bias, y); break;
    default: gemv_kernel<KIND, 4, VEC><<<grid, block, 0, stream()>>>(x, w, bias, y); break;
  }
  RUSTASR_CK_LAUNCH();
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

void gemv(const float* x, int64_t n, const DevWeight& w, const float* bias, float* y) {
  const int64_t K = w.cols;
  const bool xa = aligned16(x) && aligned16(w.p);
  switch (w.kind) {
    case DevKind::kBF16:
      if (xa && K % 8 == 0) return gemv_launch<DevKind::kBF16, true>(x, n, w, bias, y);
      return gemv_launch<DevKind::kBF16, false>(x, n, w, bias, y);
    case DevKind::kI8:
      if (xa && K % 16 == 0 && w.group % 16 == 0) return gemv_launch<DevKind::kI8, true>(x, n, w, bias, y);
      return gemv_launch<DevKind::kI8, false>(x, n, w, bias, y);
    case DevKind::kF32:
      if (xa && K % 4 == 0) return gemv_launch<DevKind::kF32, true>(x, n, w, bias, y);
      return gemv_launch<DevKind::kF32, false>(x, n, w, bias, y);
  }
}

// ---------------------------------------------------------------------------------------------------------
// gemm_tc (sm_80+)

constexpr int kTcBM = 64, kTcBN = 64, kTcBK = 32, kTcLd = kTcBK + 8, kTcLdc = kTcBN + 4;

struct TcTiles {
  __nv_bfloat16 a_hi[kTcBM][kTcLd];
  __nv_bfloat16 a_lo[kTcBM][kTcLd];
  __nv_bfloat16 b[kTcBN][kTcLd];
};
union TcSmem {
  TcTiles t;
  float c[kTcBM][kTcLdc];
};

// X: [N, K] float32 (rows m0.. of this launch), W: [M, K]. Block (bx, by) computes Y rows by*64.., columns
// bx*64...
template <DevKind KIND>
__global__ void __launch_bounds__(128)
    gemm_tc_kernel(const float* __restrict__ X, int64_t N, DevWeight w, const float* __restrict__ bias,
                   float* __restrict__ Y, bool vec_a, bool vec_b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  __shared__ __align__(128) TcSmem sm;
  const int64_t K = w.cols, M = w.rows;
  const int tid = threadIdx.x, warp = tid / 32;
  const int wm = warp / 2, wn = warp % 2;  // this warp's 32 x 32 sub-tile
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTcBM, n0 = static_cast<int64_t>(blockIdx.x) * kTcBN;

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);

  for (int64_t k0 = 0; k0 < K; k0 += kTcBK) {
    // A tile: 64 rows x 32 floats = 512 groups of 4; 4 per thread.
#pragma unroll
    for (int it = 0; it < 4; ++it) {
      const int idx = tid + it * 128;
      const int row = idx / 8, c4 = (idx % 8) * 4;
      const int64_t gr = m0 + row, gc = k0 + c4;
      float v[4] = {0.f, 0.f, 0.f, 0.f};
      if (gr < N) {
        const float* src = X + gr * K + gc;
        if (vec_a && gc + 4 <= K) {
          const float4 f = __ldg(reinterpret_cast<const float4*>(src));
          v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
        } else {
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (gc + e < K) v[e] = src[e];
        }
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const __nv_bfloat16 hi = __float2bfloat16_rn(v[e]);
        sm.t.a_hi[row][c4 + e] = hi;
        sm.t.a_lo[row][c4 + e] = __float2bfloat16_rn(v[e] - __bfloat162float(hi));
      }
    }
    // B tile: 64 weight rows x 32 columns.
    if constexpr (KIND == DevKind::kBF16) {
      const uint16_t* W = static_cast<const uint16_t*>(w.p);
#pragma unroll
      for (int it = 0; it < 2; ++it) {
        const int idx = tid + it * 128;  // 256 chunks of 8
        const int row = idx / 4, c8 = (idx % 4) * 8;
        const int64_t gr = n0 + row, gc = k0 + c8;
        uint4 u = make_uint4(0, 0, 0, 0);
        if (gr < M) {
          if (vec_b && gc + 8 <= K) {
            u = __ldg(reinterpret_cast<const uint4*>(W + gr * K + gc));
          } else {
            uint16_t h[8];
#pragma unroll
            for (int e = 0; e < 8; ++e) h[e] = (gc + e < K) ? W[gr * K + gc + e] : uint16_t(0);
            u.x = h[0] | (uint32_t(h[1]) << 16);
            u.y = h[2] | (uint32_t(h[3]) << 16);
            u.z = h[4] | (uint32_t(h[5]) << 16);
            u.w = h[6] | (uint32_t(h[7]) << 16);
          }
        }
        *reinterpret_cast<uint4*>(&sm.t.b[row][c8]) = u;
      }
    } else {
      // int8: 64 rows x 32 columns = 128 chunks of 16; one per thread.
      const int8_t* W = static_cast<const int8_t*>(w.p);
      const int row = tid / 2, c16 = (tid % 2) * 16;
      const int64_t gr = n0 + row, gc = k0 + c16;
      const int64_t gpr = K / w.group;
#pragma unroll
      for (int e = 0; e < 16; ++e) {
        float f = 0.f;
        if (gr < M && gc + e < K)
          f = static_cast<float>(W[gr * K + gc + e]) * w.scales[gr * gpr + (gc + e) / w.group];
        sm.t.b[row][c16 + e] = __float2bfloat16_rn(f);
      }
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTcBK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> ahi[2], alo[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> bf[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        wmma::load_matrix_sync(ahi[i], &sm.t.a_hi[wm * 32 + i * 16][kk], kTcLd);
        wmma::load_matrix_sync(alo[i], &sm.t.a_lo[wm * 32 + i * 16][kk], kTcLd);
      }
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(bf[j], &sm.t.b[wn * 32 + j * 16][kk], kTcLd);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          wmma::mma_sync(acc[i][j], alo[i], bf[j], acc[i][j]);
          wmma::mma_sync(acc[i][j], ahi[i], bf[j], acc[i][j]);
        }
    }
    __syncthreads();
  }
  // Epilogue through shared memory (reusing the tiles: the loop ended with a barrier).
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(&sm.c[wm * 32 + i * 16][wn * 32 + j * 16], acc[i][j], kTcLdc, wmma::mem_row_major);
  __syncthreads();
  for (int idx = tid; idx < kTcBM * kTcBN; idx += 128) {
    const int row = idx / kTcBN, col = idx % kTcBN;
    const int64_t gr = m0 + row, gc = n0 + col;
    if (gr < N && gc < M) Y[gr * M + gc] = sm.c[row][col] + (bias ? bias[gc] : 0.f);
  }
#else
  (void)X, (void)N, (void)w, (void)bias, (void)Y, (void)vec_a, (void)vec_b;
  __trap();  // never launched below sm_80 (the host checks the compute capability)
#endif
}

// ---------------------------------------------------------------------------------------------------------
// gemm_simt (any architecture, any weight kind)

constexpr int kSBM = 64, kSBN = 64, kSBK = 16, kSLd = 64 + 4;

template <DevKind KIND>
__global__ void __launch_bounds__(256)
    gemm_simt_kernel(const float* __restrict__ X, int64_t N, DevWeight w, const float* __restrict__ bias,
                     float* __restrict__ Y) {
  __shared__ __align__(16) float As[kSBK][kSLd];  // As[k][m]
  __shared__ __align__(16) float Bs[kSBK][kSLd];  // Bs[k][n]
  const int64_t K = w.cols, M = w.rows;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kSBM, n0 = static_cast<int64_t>(blockIdx.x) * kSBN;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < K; k0 += kSBK) {
#pragma unroll
    for (int it = 0; it < 4; ++it) {
      const int idx = tid + it * 256;  // 0 .. 1023
      const int row = idx / kSBK, k = idx % kSBK;
      const int64_t gk = k0 + k;
      const int64_t gm = m0 + row, gn = n0 + row;
      As[k][row] = (gm < N && gk < K) ? X[gm * K + gk] : 0.f;
      Bs[k][row] = (gn < M && gk < K) ? load_w(w, gn, gk) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kSBK; ++k) {
      const float4 a = *reinterpret_cast<const float4*>(&As[k][ty * 4]);
      const float4 b = *reinterpret_cast<const float4*>(&Bs[k][tx * 4]);
      const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t gm = m0 + ty * 4 + i;
    if (gm >= N) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t gn = n0 + tx * 4 + j;
      if (gn < M) Y[gm * M + gn] = acc[i][j] + (bias ? bias[gn] : 0.f);
    }
  }
}

// Launches over row chunks so that gridDim.y stays within 65535.
template <typename F>
void over_row_chunks(int64_t n, int64_t bm, F&& launch) {
  const int64_t max_rows = 65535 * bm;
  for (int64_t r0 = 0; r0 < n; r0 += max_rows) launch(r0, n - r0 < max_rows ? n - r0 : max_rows);
}

void gemm(const float* x, int64_t n, const DevWeight& w, const float* bias, float* y, bool tensor_cores) {
  const int64_t M = w.rows, K = w.cols;
  const int64_t tiles_n = (M + 63) / 64;
  if (tiles_n > 0x7fffffffLL) throw Error(ErrorCode::kInvalidArgument, "linear: too many weight rows");
  if (tensor_cores && (w.kind == DevKind::kBF16 || w.kind == DevKind::kI8)) {
    const bool vec_b = w.kind == DevKind::kBF16 && K % 8 == 0 && aligned16(w.p);
    over_row_chunks(n, kTcBM, [&](int64_t r0, int64_t rows) {
      const float* xs = x + r0 * K;
      const bool vec_a = K % 4 == 0 && aligned16(xs);
      const dim3 grid(static_cast<unsigned>(tiles_n), static_cast<unsigned>((rows + kTcBM - 1) / kTcBM));
      if (w.kind == DevKind::kBF16)
        gemm_tc_kernel<DevKind::kBF16><<<grid, 128, 0, stream()>>>(xs, rows, w, bias, y + r0 * M, vec_a, vec_b);
      else
        gemm_tc_kernel<DevKind::kI8><<<grid, 128, 0, stream()>>>(xs, rows, w, bias, y + r0 * M, vec_a, false);
      RUSTASR_CK_LAUNCH();
    });
    return;
  }
  over_row_chunks(n, kSBM, [&](int64_t r0, int64_t rows) {
    const dim3 grid(static_cast<unsigned>(tiles_n), static_cast<unsigned>((rows + kSBM - 1) / kSBM));
    const float* xs = x + r0 * K;
    float* ys = y + r0 * M;
    switch (w.kind) {
      case DevKind::kBF16: gemm_simt_kernel<DevKind::kBF16><<<grid, 256, 0, stream()>>>(xs, rows, w, bias, ys); break;
      case DevKind::kI8: gemm_simt_kernel<DevKind::kI8><<<grid, 256, 0, stream()>>>(xs, rows, w, bias, ys); break;
      case DevKind::kF32: gemm_simt_kernel<DevKind::kF32><<<grid, 256, 0, stream()>>>(xs, rows, w, bias, ys); break;
    }
    RUSTASR_CK_LAUNCH();
  });
}

}  // namespace

void linear(const float* x, int64_t n, const DevWeight& w, const float* bias, float* y, bool tensor_cores) {
  if (n <= 0 || w.rows <= 0) return;
  if (w.cols <= 0) {
    // An empty reduction: y = bias (or 0). Not a shape the model has; kept well-defined.
    throw Error(ErrorCode::kInvalidArgument, "linear: weight " + std::string("with no columns"));
  }
  if (n <= kGemvMaxN)
    gemv(x, n, w, bias, y);
  else
    gemm(x, n, w, bias, y, tensor_cores);
}

}  // namespace cuda
}  // namespace rustasr
