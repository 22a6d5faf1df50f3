// The CPU backend: every op of backend.h on plain host memory, parallelised over a ThreadPool.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "../backend.h"
#include "attention.h"
#include "gemm.h"
#include "gemv.h"
#include "vecops.h"
#include "rustasr/engine.h"
#include "threadpool.h"

namespace rustasr {
namespace cpu {
namespace {

// Up to this many activation rows, linear reads the weight in place with the gemv kernels (one pass per
// kGemvMaxRows rows); above it, the panel GEMM.
constexpr int64_t kGemvMaxN = 4;

std::vector<float> to_f32(const Weight& w) {
  std::vector<float> v(static_cast<size_t>(w.numel()));
  if (!v.empty()) convert_to_f32(w, 0, w.numel(), v.data());
  return v;
}

void check_vector(const Weight& v, int64_t n, const char* what) {
  if (!v.empty() && v.numel() != n)
    throw Error(ErrorCode::kInvalidArgument, std::string(what) + " " + v.name + " has " +
                                                 std::to_string(v.numel()) + " elements, expected " +
                                                 std::to_string(n));
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const BackendOptions& o)
      : isa_(parse_kernel(o.kernel)), prec_(parse_precision(o.precision)), pool_(o.threads) {}

  std::string name() const override { return "cpu"; }
  std::string kernel() const override { return isa_name(isa_); }
  int threads() const override { return pool_.size(); }
  bool rows_independent() const override { return true; }
  std::string precision() const override {
    const bool bf = prec_ == Precision::kBf16 && isa_supported(Isa::kAvx512bf16) &&
                    (isa_ == Isa::kAvx512f || isa_ == Isa::kAvx512bf16);
    return bf ? "bf16" : "f32";
  }

  // Host memory, 64-byte aligned (whole cache lines for the SIMD kernels). (Transparent huge pages for
  // the KV cache were tried: no measurable change in a 0.6B step with 800 cached positions.)
  float* alloc(int64_t count) override {
    if (count <= 0) return nullptr;
    const size_t bytes = (static_cast<size_t>(count) * sizeof(float) + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, bytes);
    if (!p) throw Error(ErrorCode::kInternal, "out of memory allocating " + std::to_string(bytes) + " bytes");
    return static_cast<float*>(p);
  }
  void free(float* p) override {
#if defined(__linux__)
    if (p && unmap_grown(p)) return;
#endif
    std::free(p);
  }
#if defined(__linux__)
  // Growing buffers (the KV cache) live in their own anonymous mappings, grown by mremap: the kept part's
  // pages move to the new range as they are, where alloc + copy touched as many fresh pages again as it
  // copied. A 0.6B session's cache going from 224 to 448 positions (56 buffers, 51 MB kept) took 85-170 ms
  // that way on the reference VM, every session of a batched step waiting for it.
  float* realloc_keep(float* p, int64_t old_count, int64_t new_count) override {
    if (new_count <= 0) return Backend::realloc_keep(p, old_count, new_count);
    const size_t page = 4096;
    const size_t want = (static_cast<size_t>(new_count) * sizeof(float) + page - 1) / page * page;
    if (!p) return map_grown(want);
    size_t have = 0;
    if (!grown_size(p, &have)) {
      // A block from alloc: one copy into a mapping of its own, mremap from then on.
      float* q = map_grown(want);
      prefault(q, old_count);
      std::memcpy(q, p, static_cast<size_t>(std::max<int64_t>(old_count, 0)) * sizeof(float));
      std::free(p);
      return q;
    }
    if (want <= have) return p;
    void* m = ::mremap(p, have, want, MREMAP_MAYMOVE);
    if (m == MAP_FAILED)  // the old mapping is left as it was
      throw Error(ErrorCode::kInternal, "out of memory growing a buffer to " + std::to_string(want) + " bytes");
    std::lock_guard<std::mutex> lk(grown_mu_);
    grown_.erase(p);
    grown_[m] = want;
    return static_cast<float*>(m);
  }
#endif
  void prefault(float* p, int64_t count) override {
#if defined(__linux__)
    constexpr int kPopulateWrite = 23;  // MADV_POPULATE_WRITE (Linux 5.14); older kernels: EINVAL, ignored
    const size_t bytes = static_cast<size_t>(std::max<int64_t>(count, 0)) * sizeof(float);
    if (!p || bytes < (size_t(256) << 10)) return;
    const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + 4095) & ~uintptr_t(4095);
    const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + bytes) & ~uintptr_t(4095);
    if (e > b) (void)::madvise(reinterpret_cast<void*>(b), e - b, kPopulateWrite);
#else
    (void)p, (void)count;
#endif
  }
  void upload(float* dst, const float* host, int64_t count) override { copy(dst, host, count); }
  void download(float* host, const float* src, int64_t count) override { copy(host, src, count); }
  void copy(float* dst, const float* src, int64_t count) override {
    if (count > 0 && dst != src) std::memmove(dst, src, static_cast<size_t>(count) * sizeof(float));
  }

  void transpose(const float* in, int64_t rows, int64_t cols, float* out) override {
    constexpr int64_t B = 32;  // tiles of B x B keep both sides in cache
    pool_.parallel_for((cols + B - 1) / B, [&](int64_t cb, int64_t ce) {
      for (int64_t c0 = cb * B; c0 < std::min(cols, ce * B); c0 += B)
        for (int64_t r0 = 0; r0 < rows; r0 += B)
          for (int64_t c = c0; c < std::min(cols, c0 + B); ++c)
            for (int64_t r = r0; r < std::min(rows, r0 + B); ++r) out[c * rows + r] = in[r * cols + c];
    });
  }

  void linear(const float* x, int64_t n, const Weight& w, const Weight& bias, float* y) override {
    if (n <= 0) return;
    check_vector(bias, w.rows, "linear bias");
    if (n <= kGemvMaxN)
      gemv(pool_, isa_, x, n, w, y);
    else
      gemm(pool_, isa_, x, n, w, y, GemmImpl::kAuto, 0, prec_);
    if (!bias.empty()) add_bias(y, n, w.rows, bias);
  }

  void linear_multi(const float* x, int64_t n, const Weight* const* ws, float* const* ys, int count) override {
    if (n <= 0) return;
    if (n <= kGemvMaxN) return gemv_multi(pool_, isa_, x, n, ws, ys, count);
    gemm_multi(pool_, isa_, x, n, ws, ys, count, prec_);
  }

  void conv3x3s2_gelu(const float* in, int64_t cin, int64_t h, int64_t w, const Weight& weight,
                      const Weight& bias, float* out) override {
    const int64_t oh = (h + 1) / 2, ow = (w + 1) / 2, P = oh * ow, K = cin * 9, cout = weight.rows;
    if (weight.cols != K)
      throw Error(ErrorCode::kInvalidArgument, "conv weight " + weight.name + " has " +
                                                   std::to_string(weight.cols) + " columns, expected " +
                                                   std::to_string(K));
    check_vector(bias, cout, "conv bias");
    if (P <= 0 || cout <= 0) return;
    {
      // One call at a time uses the packed-weight scratch (the pool runs one job at a time anyway).
      std::lock_guard<std::mutex> lk(conv_mu_);
      if (conv3x3s2_gelu_direct(pool_, isa_, in, cin, h, w, weight, bias, out, conv_pack_)) return;
    }
    // im2col: col[p, ci*9 + ky*3 + kx] = in[ci, 2*oy + ky - 1, 2*ox + kx - 1] (zero outside).
    // Scratch reused across calls (per calling thread: sessions on other threads share this backend);
    // every element is written below, so it is never cleared.
    // (Plain pointers below: a thread_local named inside the lambdas would be the worker's own.)
    thread_local std::vector<float> col_buf, tmp_buf;
    if (col_buf.size() < static_cast<size_t>(P * K)) col_buf.resize(static_cast<size_t>(P * K));
    if (tmp_buf.size() < static_cast<size_t>(P * cout)) tmp_buf.resize(static_cast<size_t>(P * cout));
    float* const col = col_buf.data();
    float* const tmp = tmp_buf.data();
    pool_.parallel_for(oh, [&](int64_t yb, int64_t ye) {
      for (int64_t oy = yb; oy < ye; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox) {
          float* dst = col + (oy * ow + ox) * K;
          for (int64_t ci = 0; ci < cin; ++ci) {
            const float* src = in + ci * h * w;
            for (int64_t ky = 0; ky < 3; ++ky) {
              const int64_t iy = 2 * oy + ky - 1;
              for (int64_t kx = 0; kx < 3; ++kx) {
                const int64_t ix = 2 * ox + kx - 1;
                dst[ci * 9 + ky * 3 + kx] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? src[iy * w + ix] : 0.f;
              }
            }
          }
        }
    });
    linear(col, P, weight, bias, tmp);
    gelu(tmp, P * cout);
    // [P, cout] -> [cout, P].
    pool_.parallel_for(cout, [&](int64_t cb, int64_t ce) {
      for (int64_t co = cb; co < ce; ++co)
        for (int64_t p = 0; p < P; ++p) out[co * P + p] = tmp[p * cout + co];
    });
  }

  void layer_norm(const float* x, int64_t n, int64_t d, const Weight& g, const Weight& b, float eps,
                  float* y) override {
    check_vector(g, d, "layer_norm weight");
    check_vector(b, d, "layer_norm bias");
    const std::vector<float> gv = g.empty() ? std::vector<float>(static_cast<size_t>(d), 1.f) : to_f32(g);
    const std::vector<float> bv = b.empty() ? std::vector<float>(static_cast<size_t>(d), 0.f) : to_f32(b);
    pool_.parallel_for(
        n,
        [&](int64_t rb, int64_t re) {
          for (int64_t r = rb; r < re; ++r) {
            const float* xr = x + r * d;
            float* yr = y + r * d;
            double sum = 0;
            for (int64_t i = 0; i < d; ++i) sum += xr[i];
            const double mean = sum / static_cast<double>(d);
            double sq = 0;
            for (int64_t i = 0; i < d; ++i) {
              const double t = xr[i] - mean;
              sq += t * t;
            }
            const double var = sq / static_cast<double>(d);
            const float rstd = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
            const float shift = static_cast<float>(-mean * (1.0 / std::sqrt(var + static_cast<double>(eps))));
            for (int64_t i = 0; i < d; ++i) yr[i] = (xr[i] * rstd + shift) * gv[static_cast<size_t>(i)] + bv[static_cast<size_t>(i)];
          }
        },
        std::max<int64_t>(1, 16384 / std::max<int64_t>(1, d)));
  }

  void rms_norm(const float* x, int64_t rows, int64_t d, const Weight& g, float eps, float* y) override {
    check_vector(g, d, "rms_norm weight");
    const std::vector<float> gv = g.empty() ? std::vector<float>(static_cast<size_t>(d), 1.f) : to_f32(g);
    pool_.parallel_for(
        rows,
        [&](int64_t rb, int64_t re) {
          for (int64_t r = rb; r < re; ++r) {
            const float* xr = x + r * d;
            float* yr = y + r * d;
            double sq = 0;
            for (int64_t i = 0; i < d; ++i) sq += static_cast<double>(xr[i]) * xr[i];
            const float var = static_cast<float>(sq / static_cast<double>(d));
            const float scale = 1.0f / std::sqrt(var + eps);
            for (int64_t i = 0; i < d; ++i) yr[i] = gv[static_cast<size_t>(i)] * (xr[i] * scale);
          }
        },
        std::max<int64_t>(1, 16384 / std::max<int64_t>(1, d)));
  }

  void gelu(float* x, int64_t count) override {
    pool_.parallel_for(
        count,
        [&](int64_t b, int64_t e) {
          gelu_f32(isa_, x + b, e - b);
        },
        8192);
  }

  void silu_mul(const float* gate, const float* up, int64_t count, float* out) override {
    pool_.parallel_for(
        count,
        [&](int64_t b, int64_t e) { silu_mul_f32(isa_, gate + b, up + b, e - b, out + b); },
        8192);
  }

  void add(float* y, const float* x, int64_t count) override {
    pool_.parallel_for(
        count,
        [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) y[i] += x[i];
        },
        32768);
  }

  void rope(float* x, int64_t n, int64_t heads, int64_t head_dim, int64_t pos0, float theta) override {
    if (head_dim % 2 != 0) throw Error(ErrorCode::kInvalidArgument, "rope: odd head_dim");
    const int64_t half = head_dim / 2;
    // As torch: inv_freq = 1.0 / (theta ** (arange(0, dim, 2).float() / dim)), all float32.
    std::vector<float> inv(static_cast<size_t>(half));
    for (int64_t i = 0; i < half; ++i) {
      const float e = static_cast<float>(2 * i) / static_cast<float>(head_dim);
      inv[static_cast<size_t>(i)] = 1.0f / std::pow(theta, e);
    }
    pool_.parallel_for(
        n,
        [&](int64_t tb, int64_t te) {
          std::vector<float> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
          for (int64_t t = tb; t < te; ++t) {
            const float pos = static_cast<float>(pos0 + t);
            for (int64_t i = 0; i < half; ++i) {
              const float a = pos * inv[static_cast<size_t>(i)];
              c[static_cast<size_t>(i)] = std::cos(a);
              s[static_cast<size_t>(i)] = std::sin(a);
            }
            for (int64_t hh = 0; hh < heads; ++hh) {
              float* v = x + (t * heads + hh) * head_dim;
              for (int64_t i = 0; i < half; ++i) {
                const float x1 = v[i], x2 = v[i + half];
                const float ci = c[static_cast<size_t>(i)], si = s[static_cast<size_t>(i)];
                v[i] = x1 * ci - x2 * si;
                v[i + half] = x2 * ci + x1 * si;
              }
            }
          }
        },
        std::max<int64_t>(1, 4096 / std::max<int64_t>(1, heads * head_dim)));
  }

  // Decode attention (one query row) split by position across the pool: each thread reads one contiguous
  // block of cache rows, all heads at once, and the parts are combined with their softmax maxima. Used from
  // kSplitMinRows cached rows on (shorter caches take the per-head tasks; the split was only measured on
  // long ones). A plan per query row; several rows (sessions decoding together) run their parts in one pool
  // pass, each row's parts and merge exactly as alone.
  struct SplitPlan {
    const float* q;
    const float* k;
    const float* v;
    float* out;
    int64_t limit = 0, parts = 0, per_part = 0;
    size_t fbase = 0, sbase = 0;  // offsets of this row's part buffers in the shared fbuf / sums
  };
  static constexpr int64_t kMaxParts = 64;

  // Fills `plan` for one row; false when the row takes the per-head path (short cache, kernel not there).
  bool split_plan(const float* q, int64_t limit, const float* k, const float* v, int64_t q_heads, int64_t kv_heads,
                  int64_t head_dim, float* out, SplitPlan& plan) const {
    constexpr int64_t kSplitMinRows = 128;
    if (limit < kSplitMinRows || pool_.size() < 2 || !attend_part_available(isa_, head_dim, q_heads, kv_heads))
      return false;
    plan.q = q, plan.k = k, plan.v = v, plan.out = out, plan.limit = limit;
    plan.parts = std::min<int64_t>({static_cast<int64_t>(pool_.size()), limit / 64, kMaxParts});
    const int64_t max_len = (limit + plan.parts - 1) / plan.parts;
    plan.per_part = q_heads * (max_len + head_dim + 1);
    return true;
  }

  // Runs the planned rows: every part of every row in one pool pass, then each row's merge.
  void split_run(std::vector<SplitPlan>& plans, int64_t kv_stride, int64_t q_heads, int64_t kv_heads,
                 int64_t head_dim, float scale) {
    size_t fsize = 0, ssize = 0;
    std::vector<std::pair<size_t, int64_t>> tasks;  // (plan, part)
    for (size_t i = 0; i < plans.size(); ++i) {
      plans[i].fbase = fsize, plans[i].sbase = ssize;
      fsize += static_cast<size_t>(plans[i].parts * plans[i].per_part);
      ssize += static_cast<size_t>(plans[i].parts * q_heads);
      for (int64_t p = 0; p < plans[i].parts; ++p) tasks.emplace_back(i, p);
    }
    std::vector<float> fbuf(fsize);
    std::vector<double> sums(ssize);
    const Isa isa = isa_;
    pool_.parallel_for(
        static_cast<int64_t>(tasks.size()),
        [&](int64_t tb, int64_t te) {
          for (int64_t t = tb; t < te; ++t) {
            const SplitPlan& P = plans[tasks[static_cast<size_t>(t)].first];
            const int64_t p = tasks[static_cast<size_t>(t)].second;
            float* base = fbuf.data() + P.fbase + p * P.per_part;
            attend_part_f32(isa, P.q, P.k, P.v, P.limit * p / P.parts, P.limit * (p + 1) / P.parts, kv_stride, q_heads,
                            kv_heads, head_dim, scale, base + q_heads * (head_dim + 1), base, base + q_heads * head_dim,
                            sums.data() + P.sbase + p * q_heads);
          }
        },
        1, static_cast<int64_t>(tasks.size()));
    for (const SplitPlan& P : plans) {
      const float* fb = fbuf.data() + P.fbase;
      const double* sb = sums.data() + P.sbase;
      auto part_max = [&](int64_t p, int64_t h) {
        return fb[static_cast<size_t>(p * P.per_part + q_heads * head_dim + h)];
      };
      for (int64_t h = 0; h < q_heads; ++h) {
        float mx = -INFINITY;
        for (int64_t p = 0; p < P.parts; ++p) mx = std::max(mx, part_max(p, h));
        double den = 0;
        float w[kMaxParts];
        for (int64_t p = 0; p < P.parts; ++p) {
          const double wp = std::exp(static_cast<double>(part_max(p, h)) - mx);
          w[p] = static_cast<float>(wp);
          den += wp * sb[static_cast<size_t>(p * q_heads + h)];
        }
        const float inv = static_cast<float>(1.0 / den);
        float* o = P.out + h * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) {
          float acc = 0;
          for (int64_t p = 0; p < P.parts; ++p)
            acc += w[p] * fb[static_cast<size_t>(p * P.per_part + h * head_dim + d)];
          o[d] = acc * inv;
        }
      }
    }
  }

  void attention_rows(const AttentionRow* rows, int n, int64_t kv_stride, int64_t q_heads, int64_t kv_heads,
                      int64_t head_dim) override {
    if (n <= 0 || q_heads <= 0) return;
    if (kv_heads <= 0 || q_heads % kv_heads != 0)
      throw Error(ErrorCode::kInvalidArgument, "attention: q_heads must be a multiple of kv_heads");
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    std::vector<SplitPlan> plans;
    for (int i = 0; i < n; ++i) {
      SplitPlan plan;
      if (split_plan(rows[i].q, rows[i].pos + 1, rows[i].k, rows[i].v, q_heads, kv_heads, head_dim, rows[i].out, plan))
        plans.push_back(plan);
      else
        attention(rows[i].q, 1, rows[i].pos, rows[i].k, rows[i].v, rows[i].pos + 1, kv_stride, q_heads, kv_heads,
                  head_dim, true, rows[i].out);
    }
    if (!plans.empty()) split_run(plans, kv_stride, q_heads, kv_heads, head_dim, scale);
  }

  void attention(const float* q, int64_t nq, int64_t q_pos0, const float* k, const float* v, int64_t nk,
                 int64_t kv_stride, int64_t q_heads, int64_t kv_heads, int64_t head_dim, bool causal,
                 float* out) override {
    if (nq <= 0 || q_heads <= 0) return;
    if (kv_heads <= 0 || q_heads % kv_heads != 0)
      throw Error(ErrorCode::kInvalidArgument, "attention: q_heads must be a multiple of kv_heads");
    const int64_t group = q_heads / kv_heads;
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    const Isa isa = isa_;
    if (nq == 1) {
      std::vector<SplitPlan> plans(1);
      if (split_plan(q, causal ? std::min<int64_t>(nk, q_pos0 + 1) : nk, k, v, q_heads, kv_heads, head_dim, out,
                     plans[0])) {
        split_run(plans, kv_stride, q_heads, kv_heads, head_dim, scale);
        return;
      }
    }
    // One task per (query row, KV head): the `group` query heads that share a KV head are done together, so
    // each key and value row is read once per task (GQA), not once per query head. Per query head the
    // arithmetic and its order are those of a plain per-head loop.
    const int64_t tasks = nq * kv_heads;
    const int64_t work = std::max<int64_t>(1, nk * head_dim * group);
    const int64_t grain = std::max<int64_t>(1, 32768 / work);
    pool_.parallel_for(
        tasks,
        [&](int64_t tb, int64_t te) {
          std::vector<float> sc(static_cast<size_t>(std::max<int64_t>(nk, 1) * group));
          std::vector<double> sums(static_cast<size_t>(group));
          for (int64_t t = tb; t < te; ++t) {
            const int64_t i = t / kv_heads, kh = t % kv_heads;
            const float* q0 = q + (i * q_heads + kh * group) * head_dim;
            float* o0 = out + (i * q_heads + kh * group) * head_dim;
            int64_t limit = nk;
            if (causal) limit = std::min<int64_t>(nk, q_pos0 + i + 1);
            if (limit > 0 && attend_f32(isa, q0, k + kh * head_dim, v + kh * head_dim, limit, kv_stride, head_dim,
                                        group, scale, sc.data(), o0))
              continue;
            std::fill(o0, o0 + group * head_dim, 0.f);
            if (limit <= 0) continue;
            for (int64_t j = 0; j < limit; ++j) {
              const float* kr = k + j * kv_stride + kh * head_dim;
              for (int64_t g = 0; g < group; ++g)
                sc[static_cast<size_t>(g * limit + j)] = dot_f32(isa, q0 + g * head_dim, kr, head_dim) * scale;
            }
            for (int64_t g = 0; g < group; ++g) sums[static_cast<size_t>(g)] = softmax_exp(sc.data() + g * limit, limit);
            for (int64_t j = 0; j < limit; ++j) {
              const float* vr = v + j * kv_stride + kh * head_dim;
              for (int64_t g = 0; g < group; ++g)
                axpy_f32(isa, sc[static_cast<size_t>(g * limit + j)], vr, o0 + g * head_dim, head_dim);
            }
            for (int64_t g = 0; g < group; ++g) {
              const float inv = static_cast<float>(1.0 / sums[static_cast<size_t>(g)]);
              float* o = o0 + g * head_dim;
              for (int64_t dd = 0; dd < head_dim; ++dd) o[dd] *= inv;
            }
          }
        },
        grain, std::min<int64_t>(tasks, 8 * pool_.size()));
  }

  void embed(const Weight& table, const int32_t* ids, int64_t n, float* out) override {
    const int64_t d = table.cols;
    for (int64_t i = 0; i < n; ++i) {
      if (ids[i] < 0 || ids[i] >= table.rows)
        throw Error(ErrorCode::kInvalidArgument, "embed: token id " + std::to_string(ids[i]) + " out of range");
      convert_to_f32(table, static_cast<int64_t>(ids[i]) * d, d, out + i * d);
    }
  }

 private:
#if defined(__linux__)
  float* map_grown(size_t bytes) {
    void* m = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
      throw Error(ErrorCode::kInternal, "out of memory allocating " + std::to_string(bytes) + " bytes");
    try {
      std::lock_guard<std::mutex> lk(grown_mu_);
      grown_[m] = bytes;
    } catch (...) {
      ::munmap(m, bytes);
      throw;
    }
    return static_cast<float*>(m);
  }
  bool grown_size(const void* p, size_t* bytes) const {
    std::lock_guard<std::mutex> lk(grown_mu_);
    const auto it = grown_.find(const_cast<void*>(p));
    if (it == grown_.end()) return false;
    *bytes = it->second;
    return true;
  }
  bool unmap_grown(void* p) {
    size_t bytes = 0;
    {
      std::lock_guard<std::mutex> lk(grown_mu_);
      const auto it = grown_.find(p);
      if (it == grown_.end()) return false;
      bytes = it->second;
      grown_.erase(it);
    }
    ::munmap(p, bytes);
    return true;
  }
  mutable std::mutex grown_mu_;
  std::unordered_map<void*, size_t> grown_;  // mappings made by realloc_keep: start -> bytes
#endif

  void add_bias(float* y, int64_t n, int64_t m, const Weight& bias) {
    const std::vector<float> bv = to_f32(bias);
    pool_.parallel_for(
        n,
        [&](int64_t rb, int64_t re) {
          for (int64_t r = rb; r < re; ++r) {
            float* yr = y + r * m;
            for (int64_t j = 0; j < m; ++j) yr[j] += bv[static_cast<size_t>(j)];
          }
        },
        std::max<int64_t>(1, 32768 / std::max<int64_t>(1, m)));
  }

  static Precision parse_precision(const std::string& p) {
    if (p.empty() || p == "f32") return Precision::kF32;
    if (p == "bf16") return Precision::kBf16;
    throw Error(ErrorCode::kInvalidArgument, "unknown precision \"" + p + "\" (expected f32 or bf16)");
  }

  Isa isa_;
  Precision prec_;
  ThreadPool pool_;
  std::mutex conv_mu_;
  std::vector<float> conv_pack_;  // the direct conv's packed weight (gemm.h), kept between calls
};

}  // namespace
}  // namespace cpu

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& options) {
  return std::make_unique<cpu::CpuBackend>(options);
}

}  // namespace rustasr
