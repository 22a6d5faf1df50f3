// The Metal backend's MSL kernels run on the CPU, each checked against a plain double-precision reference.
//
// The Metal backend cannot be compiled or run without a Mac; this checks the kernels' arithmetic and
// indexing everywhere else. test/metal-emulation.test.ts extracts the MSL source string from
// metal_backend.mm into metal_kernels.inc (threadgroup arrays become function statics: one threadgroup runs
// at a time), compiles this file with g++ -std=c++20 and runs it. The MSL dialect is mapped onto C++ by the
// shims below: one std::thread per GPU thread of a threadgroup, SIMD-group operations (simd_sum, simd_max,
// simd_shuffle) and threadgroup_barrier through a std::barrier, so SIMD groups run in lockstep as on the
// GPU. What this cannot check: MSL syntax, Metal's own math library, and everything host-side.
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <thread>
#include <vector>
#include <algorithm>
typedef unsigned int uint; typedef unsigned short ushort; typedef unsigned char uchar; typedef unsigned long ulong;
struct uint2 { uint x, y; };
#define kernel
#define device
#define constant
template <typename T, typename U> T as_type(U u) { T t; std::memcpy(&t, &u, sizeof t); return t; }
namespace precise { inline float exp(float x){return std::exp(x);} inline float sqrt(float x){return std::sqrt(x);} inline float cos(float x){return std::cos(x);} inline float sin(float x){return std::sin(x);} }
using std::min; using std::max;
inline uint min(uint a, uint b){return a<b?a:b;}
// emulation state
static std::barrier<>* g_bar; static float g_slot[1024]; static thread_local uint tl_tid;
enum class mem_flags { mem_threadgroup };
void threadgroup_barrier(mem_flags) { g_bar->arrive_and_wait(); }
static float simd_op(float v, int op, ushort lane = 0) {
  g_slot[tl_tid] = v; g_bar->arrive_and_wait();
  uint base = tl_tid / 32 * 32; float r;
  if (op == 0) { r = 0; for (int i = 0; i < 32; ++i) r += g_slot[base + i]; }
  else if (op == 1) { r = -INFINITY; for (int i = 0; i < 32; ++i) r = std::max(r, g_slot[base + i]); }
  else r = g_slot[base + lane];
  g_bar->arrive_and_wait(); return r;
}
float simd_sum(float v) { return simd_op(v, 0); }
float simd_max(float v) { return simd_op(v, 1); }
float simd_shuffle(float v, ushort l) { return simd_op(v, 2, l); }
#include "metal_kernels.inc"
// Run fn(tid) for tid in [0, n) as one threadgroup.
static void group(uint n, const std::function<void(uint)>& fn) {
  std::barrier<> bar(n); g_bar = &bar;
  std::vector<std::thread> th;
  for (uint t = 0; t < n; ++t) th.emplace_back([&, t] { tl_tid = t; fn(t); bar.arrive_and_drop(); });
  for (auto& x : th) x.join();
}
static std::mt19937 rng(1);
static std::vector<float> rnd(size_t n) { std::normal_distribution<float> d(0, 1); std::vector<float> v(n); for (auto& x : v) x = d(rng); return v; }
static ushort to_bf16(float f) { uint u; std::memcpy(&u, &f, 4); return ushort(u >> 16); }
static float bf(ushort h) { return as_type<float>(uint(h) << 16); }
static double maxdiff(const std::vector<float>& a, const std::vector<float>& b) { double m = 0; for (size_t i = 0; i < a.size(); ++i) m = std::max(m, (double)std::fabs(a[i] - b[i])); return m; }
static int fails = 0;
static void check(const char* what, double d, double tol) { printf("%-28s max diff %.3g %s\n", what, d, d <= tol ? "ok" : "FAIL"); if (!(d <= tol)) ++fails; }

int main() {
  // ---- linear (gemv n<=4, gemm) on bf16 weights with bias, and int8
  for (uint n : {1u, 3u, 37u}) {
    const uint K = 70, R = 45;
    auto x = rnd(n * K); auto wf = rnd(R * K); auto bias = rnd(R);
    std::vector<ushort> w(R * K); for (uint i = 0; i < R * K; ++i) w[i] = to_bf16(wf[i]);
    std::vector<float> ref(n * R), y(n * R, 123.f);
    for (uint m = 0; m < n; ++m) for (uint r = 0; r < R; ++r) { double s = bias[r]; for (uint c = 0; c < K; ++c) s += (double)x[m*K+c] * bf(w[r*K+c]); ref[m*R+r] = s; }
    LinArgs a{n, K, R, 1, WDesc{0, R, K, 0}};
    if (n <= 4) {
      for (uint tg = 0; tg < (R + 7) / 8; ++tg) group(256, [&](uint t) { rs_gemv(x.data(), (const uchar*)w.data(), bias.data(), bias.data(), y.data(), a, tg, t / 32, t % 32); });
    } else {
      for (uint gy = 0; gy < (n + 15) / 16; ++gy) for (uint gx = 0; gx < (R + 15) / 16; ++gx)
        group(256, [&](uint t) { rs_gemm(x.data(), (const uchar*)w.data(), bias.data(), bias.data(), y.data(), a, uint2{gx, gy}, uint2{t % 16, t / 16}); });
    }
    char name[64]; snprintf(name, sizeof name, "linear bf16 n=%u", n); check(name, maxdiff(y, ref), 1e-4);
    // int8, group 10
    std::vector<signed char> q(R * K); std::vector<float> sc(R * (K / 10));
    for (uint i = 0; i < R * K; ++i) q[i] = (signed char)((int)(wf[i] * 40) % 127);
    for (auto& s : sc) s = 0.01f + std::fabs(rnd(1)[0]) * 0.01f;
    for (uint m = 0; m < n; ++m) for (uint r = 0; r < R; ++r) { double s = 0; for (uint c = 0; c < K; ++c) s += (double)x[m*K+c] * q[r*K+c] * sc[r*(K/10)+c/10]; ref[m*R+r] = s; }
    LinArgs ai{n, K, R, 0, WDesc{1, R, K, 10}};
    if (n <= 4) for (uint tg = 0; tg < (R + 7) / 8; ++tg) group(256, [&](uint t) { rs_gemv(x.data(), (const uchar*)q.data(), sc.data(), sc.data(), y.data(), ai, tg, t / 32, t % 32); });
    else for (uint gy = 0; gy < (n + 15) / 16; ++gy) for (uint gx = 0; gx < (R + 15) / 16; ++gx)
        group(256, [&](uint t) { rs_gemm(x.data(), (const uchar*)q.data(), sc.data(), sc.data(), y.data(), ai, uint2{gx, gy}, uint2{t % 16, t / 16}); });
    snprintf(name, sizeof name, "linear int8 n=%u", n); check(name, maxdiff(y, ref), 1e-4);
  }
  // ---- layer_norm / rms_norm
  {
    const uint n = 3, d = 300; auto x = rnd(n * d), g = rnd(d), b = rnd(d); std::vector<float> y(n * d), ref(n * d);
    for (uint r = 0; r < n; ++r) { double s = 0, q = 0; for (uint i = 0; i < d; ++i) s += x[r*d+i]; double mean = s / d; for (uint i = 0; i < d; ++i) q += (x[r*d+i]-mean)*(x[r*d+i]-mean); double rs = 1 / std::sqrt(q / d + 1e-5);
      for (uint i = 0; i < d; ++i) ref[r*d+i] = (x[r*d+i]-mean)*rs*g[i]+b[i]; }
    NormArgs a{d, 1e-5f, 1, 1};
    for (uint row = 0; row < n; ++row) group(256, [&](uint t) { rs_layer_norm(x.data(), g.data(), b.data(), y.data(), a, row, t, t / 32, t % 32); });
    check("layer_norm", maxdiff(y, ref), 1e-5);
    for (uint r = 0; r < n; ++r) { double q = 0; for (uint i = 0; i < d; ++i) q += (double)x[r*d+i]*x[r*d+i]; double sc = 1 / std::sqrt(q / d + 1e-6); for (uint i = 0; i < d; ++i) ref[r*d+i] = g[i]*x[r*d+i]*sc; }
    NormArgs ra{d, 1e-6f, 1, 0}; std::vector<float> xy = x;  // in place (aliasing)
    for (uint row = 0; row < n; ++row) group(256, [&](uint t) { rs_rms_norm(xy.data(), g.data(), xy.data(), ra, row, t, t / 32, t % 32); });
    check("rms_norm (in place)", maxdiff(xy, ref), 1e-5);
  }
  // ---- attention: GQA, causal with q_pos0, kv_stride > kv width; and non-causal; head_dim 40 and 128
  for (int causal = 0; causal < 2; ++causal) for (uint hd : {40u, 128u}) {
    const uint nq = 5, q_heads = 4, kv_heads = 2, nk = causal ? 71 : 37, pos0 = causal ? 66 : 0, stride = kv_heads * hd + 8;
    auto q = rnd(nq * q_heads * hd), k = rnd(nk * stride), v = rnd(nk * stride); std::vector<float> o(nq * q_heads * hd), ref(o.size());
    const float scale = 1.0f / std::sqrt((float)hd);
    for (uint i = 0; i < nq; ++i) for (uint h = 0; h < q_heads; ++h) {
      uint kh = h / (q_heads / kv_heads); uint lim = causal ? std::min(nk, pos0 + i + 1) : nk;
      std::vector<double> s(lim); double mx = -1e300; for (uint j = 0; j < lim; ++j) { double dd = 0; for (uint e = 0; e < hd; ++e) dd += (double)q[(i*q_heads+h)*hd+e]*k[j*stride+kh*hd+e]; s[j] = dd*scale; mx = std::max(mx, s[j]); }
      double sum = 0; for (auto& z : s) { z = std::exp(z - mx); sum += z; }
      for (uint e = 0; e < hd; ++e) { double acc = 0; for (uint j = 0; j < lim; ++j) acc += s[j]*v[j*stride+kh*hd+e]; ref[(i*q_heads+h)*hd+e] = acc / sum; }
    }
    AttnArgs a{nq, pos0, nk, stride, q_heads, kv_heads, hd, (uint)causal, scale};
    for (uint tg = 0; tg < nq * q_heads; ++tg) group(32, [&](uint t) { rs_attention(q.data(), k.data(), v.data(), o.data(), a, tg, t); });
    char name[64]; snprintf(name, sizeof name, "attention causal=%d hd=%u", causal, hd); check(name, maxdiff(o, ref), 1e-5);
  }
  // ---- rope
  {
    const uint n = 3, heads = 2, hd = 16, pos0 = 1000; const float theta = 1e6f; auto x = rnd(n * heads * hd); auto ref = x;
    std::vector<float> inv(hd / 2); for (uint i = 0; i < hd / 2; ++i) inv[i] = 1.0f / std::pow(theta, (float)(2*i) / hd);
    for (uint t = 0; t < n; ++t) for (uint h = 0; h < heads; ++h) for (uint i = 0; i < hd / 2; ++i) {
      float ang = (float)(pos0 + t) * inv[i]; float* v = &ref[(t*heads+h)*hd]; float x1 = v[i], x2 = v[i+hd/2];
      v[i] = x1*std::cos(ang) - x2*std::sin(ang); v[i+hd/2] = x2*std::cos(ang) + x1*std::sin(ang); }
    RopeArgs a{n, heads, hd, pos0};
    for (uint gid = 0; gid < 256; ++gid) rs_rope(x.data(), inv.data(), a, gid);
    check("rope", maxdiff(x, ref), 0);
  }
  // ---- im2col + transpose(gelu) = conv3x3s2_gelu
  {
    const uint cin = 2, h = 7, w = 5, oh = 4, ow = 3, K = cin * 9, P = oh * ow; auto in = rnd(cin * h * w); std::vector<float> col(P * K), ref(P * K);
    for (uint oy = 0; oy < oh; ++oy) for (uint ox = 0; ox < ow; ++ox) for (uint ci = 0; ci < cin; ++ci) for (int ky = 0; ky < 3; ++ky) for (int kx = 0; kx < 3; ++kx) {
      int iy = 2*oy+ky-1, ix = 2*ox+kx-1; ref[(oy*ow+ox)*K + ci*9+ky*3+kx] = (iy>=0&&iy<(int)h&&ix>=0&&ix<(int)w) ? in[ci*h*w+iy*w+ix] : 0.f; }
    Im2colArgs a{cin, h, w, oh, ow};
    for (uint gid = 0; gid < P * K + 10; ++gid) rs_im2col(in.data(), col.data(), a, gid);
    check("im2col", maxdiff(col, ref), 0);
    auto m = rnd(P * 6); std::vector<float> out(P * 6), tr(P * 6);
    for (uint r = 0; r < P; ++r) for (uint c = 0; c < 6; ++c) tr[c*P+r] = m[r*6+c] * 0.5f * (1.0f + std::erf(m[r*6+c] * 0.70710678f));
    TransArgs ta{P, 6, 1};
    for (uint gid = 0; gid < P * 6 + 5; ++gid) rs_transpose(m.data(), out.data(), ta, gid);
    check("transpose + gelu", maxdiff(out, tr), 1e-6);
  }
  // ---- embed (bf16 table), silu_mul, add, copy
  {
    const uint V = 11, d = 7, n = 4; auto tf = rnd(V * d); std::vector<ushort> t(V * d); for (uint i = 0; i < V * d; ++i) t[i] = to_bf16(tf[i]);
    int ids[n] = {3, 0, 10, 3}; std::vector<float> out(n * d), ref(n * d);
    for (uint i = 0; i < n; ++i) for (uint c = 0; c < d; ++c) ref[i*d+c] = bf(t[ids[i]*d+c]);
    EmbedArgs a{n, d, WDesc{0, V, d, 0}};
    for (uint gid = 0; gid < n * d + 3; ++gid) rs_embed((const uchar*)t.data(), nullptr, ids, out.data(), a, gid);
    check("embed", maxdiff(out, ref), 0);
    auto g = rnd(50), u = rnd(50); std::vector<float> o(50), r(50); for (int i = 0; i < 50; ++i) r[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
    CountArgs c{50}; for (uint gid = 0; gid < 64; ++gid) rs_silu_mul(g.data(), u.data(), o.data(), c, gid);
    check("silu_mul", maxdiff(o, r), 1e-6);
  }
  printf("%s\n", fails ? "FAILURES" : "all ok");
  return fails != 0;
}
