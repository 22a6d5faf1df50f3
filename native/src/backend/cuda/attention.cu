// Scaled dot-product attention of the CUDA backend (float32 throughout), flash-attention style:
//
//   grid (query tiles, query heads, KV splits), 4 warps per block. A block stages its BQ query rows and
//   then BKV keys / values at a time in shared memory (rows padded to head_dim + 1 floats: the per-key dot
//   products read them without bank conflicts). Each warp owns RPW query rows and keeps for each a running
//   max, a running sum and its output accumulator (head_dim spread over the 32 lanes) - the online softmax.
//   Scores: lane j computes the dot product for key j of the tile. Output: every lane adds p_j * V[j][d]
//   for its d, p_j broadcast by shuffles.
//
//   When query tiles x heads give too few blocks to fill the GPU (decode: one query row), the keys are
//   split across gridDim.z blocks, each writing (max, sum, unnormalised output) to scratch, merged by a
//   second kernel.
//
// Semantics as the CPU backend: GQA (kv head = h / (q_heads / kv_heads)), causal limit
// min(nk, q_pos0 + i + 1), key row j at k + j * kv_stride + kv_head * head_dim, a row that sees no key
// gives zeros, scale 1/sqrt(head_dim) applied to the dot product.
#include <cfloat>

#include "common.cuh"

namespace rustasr {
namespace cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxSplits = 64;

struct AttnArgs {
  const float* q;
  const float* k;
  const float* v;
  float* out;
  float* partial;  // [splits, nq, q_heads, head_dim + 2] when splits > 1
  int64_t nq, q_pos0, nk, kv_stride, q_heads, group, head_dim;
  int64_t tiles_per_split;
  float scale;
  bool causal;
};

template <int MAXD, int BKV, int RPW>
__global__ void __launch_bounds__(kWarps * 32) attn_kernel(AttnArgs a) {
  constexpr int BQ = kWarps * RPW;
  constexpr int JJ = (BKV + 31) / 32;
  extern __shared__ float smem[];
  const int64_t hd = a.head_dim, ld = hd + 1;
  float* Qs = smem;           // [BQ][hd]
  float* Ks = Qs + BQ * hd;   // [BKV][hd + 1]
  float* Vs = Ks + BKV * ld;  // [BKV][hd + 1]

  const int tid = threadIdx.x, lane = tid & 31, warp = tid / 32;
  const int64_t h = blockIdx.y, kh = h / a.group;
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * BQ;
  const int64_t split = blockIdx.z, splits = gridDim.z;
  const int64_t last_row = (a.nq < q0 + BQ ? a.nq : q0 + BQ) - 1;
  int64_t kv_end = a.nk;
  if (a.causal && a.q_pos0 + last_row + 1 < kv_end) kv_end = a.q_pos0 + last_row + 1;
  const int64_t ks = split * a.tiles_per_split * BKV;
  int64_t ke = ks + a.tiles_per_split * BKV;
  if (ke > kv_end) ke = kv_end;

  for (int64_t idx = tid; idx < BQ * hd; idx += blockDim.x) {
    const int64_t r = idx / hd, d = idx % hd, qi = q0 + r;
    Qs[idx] = qi < a.nq ? a.q[(qi * a.q_heads + h) * hd + d] : 0.f;
  }

  float m[RPW], l[RPW], acc[RPW][MAXD];
#pragma unroll
  for (int rr = 0; rr < RPW; ++rr) {
    m[rr] = -INFINITY;
    l[rr] = 0.f;
#pragma unroll
    for (int t = 0; t < MAXD; ++t) acc[rr][t] = 0.f;
  }
  __syncthreads();

  for (int64_t t0 = ks; t0 < ke; t0 += BKV) {
    const int tn = static_cast<int>(ke - t0 < BKV ? ke - t0 : BKV);
    for (int64_t idx = tid; idx < BKV * hd; idx += blockDim.x) {
      const int64_t j = idx / hd, d = idx % hd;
      float kv = 0.f, vv = 0.f;
      if (j < tn) {
        const int64_t off = (t0 + j) * a.kv_stride + kh * hd + d;
        kv = a.k[off];
        vv = a.v[off];
      }
      Ks[j * ld + d] = kv;
      Vs[j * ld + d] = vv;
    }
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < RPW; ++rr) {
      const int r = warp * RPW + rr;
      const int64_t qi = q0 + r;
      if (qi >= a.nq) continue;  // warp-uniform
      int64_t limit = a.nk;
      if (a.causal && a.q_pos0 + qi + 1 < limit) limit = a.q_pos0 + qi + 1;
      const float* qr = Qs + r * hd;
      float s[JJ];
      float tmax = -INFINITY;
#pragma unroll
      for (int jj = 0; jj < JJ; ++jj) {
        const int j = lane + 32 * jj;
        float dot = 0.f;
        if (j < BKV) {
          const float* kr = Ks + j * ld;
          for (int64_t d = 0; d < hd; ++d) dot += qr[d] * kr[d];
        }
        const bool valid = j < tn && t0 + j < limit;
        s[jj] = valid ? dot * a.scale : -INFINITY;
        tmax = fmaxf(tmax, s[jj]);
      }
      tmax = warp_max(tmax);
      if (tmax == -INFINITY) continue;  // no visible key in this tile for this row (warp-uniform)
      const float m_new = fmaxf(m[rr], tmax);
      const float corr = expf(m[rr] - m_new);  // 0 on the first visible tile (m = -inf)
      float p[JJ];
      float psum = 0.f;
#pragma unroll
      for (int jj = 0; jj < JJ; ++jj) {
        p[jj] = s[jj] == -INFINITY ? 0.f : expf(s[jj] - m_new);
        psum += p[jj];
      }
      psum = warp_sum(psum);
      l[rr] = l[rr] * corr + psum;
      m[rr] = m_new;
#pragma unroll
      for (int t = 0; t < MAXD; ++t) acc[rr][t] *= corr;
#pragma unroll
      for (int jj = 0; jj < JJ; ++jj) {
        const int jn = tn - 32 * jj < 32 ? tn - 32 * jj : 32;  // keys of this 32-slice inside the tile
        for (int src = 0; src < jn; ++src) {
          const float pj = __shfl_sync(0xffffffffu, p[jj], src);
          const float* vr = Vs + (32 * jj + src) * ld;
#pragma unroll
          for (int t = 0; t < MAXD; ++t) {
            const int64_t d = lane + 32 * t;
            if (d < hd) acc[rr][t] += pj * vr[d];
          }
        }
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int rr = 0; rr < RPW; ++rr) {
    const int64_t qi = q0 + warp * RPW + rr;
    if (qi >= a.nq) continue;
    if (splits == 1) {
      float* o = a.out + (qi * a.q_heads + h) * hd;
      const float inv = l[rr] > 0.f ? 1.0f / l[rr] : 0.f;
#pragma unroll
      for (int t = 0; t < MAXD; ++t) {
        const int64_t d = lane + 32 * t;
        if (d < hd) o[d] = acc[rr][t] * inv;
      }
    } else {
      float* P = a.partial + ((split * a.nq + qi) * a.q_heads + h) * (hd + 2);
      if (lane == 0) {
        P[0] = m[rr];
        P[1] = l[rr];
      }
#pragma unroll
      for (int t = 0; t < MAXD; ++t) {
        const int64_t d = lane + 32 * t;
        if (d < hd) P[2 + d] = acc[rr][t];
      }
    }
  }
}

// One block per (query row, head): merges the split partial results.
__global__ void attn_combine_kernel(const float* __restrict__ partial, int64_t splits, int64_t nq, int64_t q_heads,
                                    int64_t hd, float* __restrict__ out) {
  const int64_t rows = nq * q_heads;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t stride = rows * (hd + 2);
    float M = -INFINITY;
    for (int64_t s = 0; s < splits; ++s) M = fmaxf(M, partial[s * stride + row * (hd + 2)]);
    float L = 0.f;
    for (int64_t s = 0; s < splits; ++s) {
      const float* P = partial + s * stride + row * (hd + 2);
      if (P[0] != -INFINITY) L += P[1] * expf(P[0] - M);
    }
    const float inv = (M != -INFINITY && L > 0.f) ? 1.0f / L : 0.f;
    for (int64_t d = threadIdx.x; d < hd; d += blockDim.x) {
      float o = 0.f;
      if (inv != 0.f)
        for (int64_t s = 0; s < splits; ++s) {
          const float* P = partial + s * stride + row * (hd + 2);
          if (P[0] != -INFINITY) o += P[2 + d] * expf(P[0] - M);
        }
      out[row * hd + d] = o * inv;
    }
  }
}

struct Config {
  int bkv = 0, bq = 0;
};

Config config_for(int64_t head_dim) {
  if (head_dim <= 32) return {64, kWarps * 4};
  if (head_dim <= 64) return {64, kWarps * 4};
  if (head_dim <= 128) return {32, kWarps * 4};
  if (head_dim <= 256) return {16, kWarps * 2};
  return {};
}

struct Plan {
  Config cfg;
  int64_t qtiles = 0, tiles = 0, tiles_per_split = 0, splits = 1;
};

Plan plan_for(int64_t nq, int64_t nk, int64_t q_pos0, bool causal, int64_t q_heads, int64_t head_dim, int sm_count) {
  Plan p;
  p.cfg = config_for(head_dim);
  if (p.cfg.bkv == 0) return p;
  p.qtiles = (nq + p.cfg.bq - 1) / p.cfg.bq;
  int64_t kv_max = nk;
  if (causal && q_pos0 + nq < kv_max) kv_max = q_pos0 + nq;
  if (kv_max < 0) kv_max = 0;
  p.tiles = (kv_max + p.cfg.bkv - 1) / p.cfg.bkv;
  const int64_t blocks = p.qtiles * q_heads;
  const int64_t want = 2LL * (sm_count > 0 ? sm_count : 1);
  int64_t splits = 1;
  if (blocks < want && p.tiles > 1) {
    splits = (want + blocks - 1) / blocks;
    if (splits > p.tiles) splits = p.tiles;
    if (splits > kMaxSplits) splits = kMaxSplits;
  }
  p.tiles_per_split = p.tiles > 0 ? (p.tiles + splits - 1) / splits : 1;
  p.splits = p.tiles > 0 ? (p.tiles + p.tiles_per_split - 1) / p.tiles_per_split : 1;
  return p;
}

template <int MAXD, int BKV, int RPW>
void launch(const AttnArgs& a, const Plan& p) {
  const size_t smem = (static_cast<size_t>(kWarps * RPW) * a.head_dim + 2ull * BKV * (a.head_dim + 1)) * sizeof(float);
  const dim3 grid(static_cast<unsigned>(p.qtiles), static_cast<unsigned>(a.q_heads), static_cast<unsigned>(p.splits));
  attn_kernel<MAXD, BKV, RPW><<<grid, kWarps * 32, smem, stream()>>>(a);
  RUSTASR_CK_LAUNCH();
}

}  // namespace

int64_t attention_scratch(int64_t nq, int64_t nk, int64_t q_pos0, bool causal, int64_t q_heads, int64_t head_dim,
                          int sm_count) {
  const Plan p = plan_for(nq, nk, q_pos0, causal, q_heads, head_dim, sm_count);
  if (p.cfg.bkv == 0 || p.splits <= 1) return 0;
  return p.splits * nq * q_heads * (head_dim + 2);
}

void attention(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v, int64_t nk,
               int64_t kv_stride, int64_t q_heads, int64_t kv_heads, int64_t head_dim, bool causal, float* out,
               float* partial, int64_t partial_floats, int sm_count) {
  if (nq <= 0 || q_heads <= 0 || head_dim <= 0) return;
  if (kv_heads <= 0 || q_heads % kv_heads != 0)
    throw Error(ErrorCode::kInvalidArgument, "attention: q_heads must be a multiple of kv_heads");
  if (head_dim > 256)
    throw Error(ErrorCode::kInvalidArgument,
                "attention: head_dim " + std::to_string(head_dim) + " above the CUDA backend's limit 256");
  if (q_heads > 65535) throw Error(ErrorCode::kInvalidArgument, "attention: more than 65535 query heads");
  const Plan p = plan_for(nq, nk, q_pos0, causal, q_heads, head_dim, sm_count);
  if (p.qtiles > 0x7fffffffLL) throw Error(ErrorCode::kInvalidArgument, "attention: too many query rows");
  AttnArgs a{};
  a.q = q;
  a.k = k;
  a.v = v;
  a.out = out;
  a.partial = partial;
  a.nq = nq;
  a.q_pos0 = q_pos0;
  a.nk = nk;
  a.kv_stride = kv_stride;
  a.q_heads = q_heads;
  a.group = q_heads / kv_heads;
  a.head_dim = head_dim;
  a.tiles_per_split = p.tiles_per_split;
  a.scale = 1.0f / sqrtf(static_cast<float>(head_dim));
  a.causal = causal;
  if (p.splits > 1 && (partial == nullptr || partial_floats < p.splits * nq * q_heads * (head_dim + 2)))
    throw Error(ErrorCode::kInternal, "attention: split scratch too small");
  if (head_dim <= 32)
    launch<1, 64, 4>(a, p);
  else if (head_dim <= 64)
    launch<2, 64, 4>(a, p);
  else if (head_dim <= 128)
    launch<4, 32, 4>(a, p);
  else
    launch<8, 16, 2>(a, p);
  if (p.splits > 1) {
    const int64_t rows = nq * q_heads;
    const unsigned grid = static_cast<unsigned>(rows < 0x7fffffffLL ? rows : 0x7fffffffLL);
    attn_combine_kernel<<<grid, 128, 0, stream()>>>(partial, p.splits, nq, q_heads, head_dim, out);
    RUSTASR_CK_LAUNCH();
  }
}

}  // namespace cuda
}  // namespace rustasr
