// Op-by-op parity of a GPU backend against the CPU backend (the reference): every Backend op of
// backend.h on random data and on edge shapes (column counts no vector width divides, 1..130 activation
// rows across the gemv / gemm boundary, every weight dtype incl. int8 with odd groups, prepared and
// unprepared weights, GQA, causal with q_pos0, kv_stride, split-KV decode, odd conv sizes). Run by
// golden_main --device cuda|metal; needs the device.
#include <rustasr/engine.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace {

using rustasr::Backend;
using rustasr::DType;
using rustasr::Weight;
using Report = std::function<void(bool, const std::string&, const std::string&)>;

struct Rng {
  uint64_t s = 0x243f6a8885a308d3ull;
  float next() {  // uniform in [-1, 1)
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    return static_cast<float>(static_cast<double>(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
  }
  std::vector<float> vec(size_t n, float scale = 1.f) {
    std::vector<float> v(n);
    for (float& x : v) x = next() * scale;
    return v;
  }
};

std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3g", v);
  return b;
}

uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
uint16_t to_f16(float f) {  // round to nearest even, normal range only (test values are small)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const int e = static_cast<int>((u >> 23) & 0xff) - 127 + 15;
  uint32_t m = u & 0x7fffffu;
  if (e <= 0) return static_cast<uint16_t>(sign);
  uint32_t h = sign | (static_cast<uint32_t>(e) << 10) | (m >> 13);
  const uint32_t rest = m & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(h);
}

// A weight with its own storage.
struct OwnedWeight {
  Weight w;
  std::vector<uint16_t> h16;
  std::vector<float> f32, scales;
  std::vector<int8_t> q;
};

std::unique_ptr<OwnedWeight> make_weight(Rng& rng, DType dt, int64_t rows, int64_t cols, int64_t group = 0) {
  auto o = std::make_unique<OwnedWeight>();
  o->w.dtype = dt;
  o->w.rows = rows;
  o->w.cols = cols;
  o->w.name = "test.W";
  const size_t n = static_cast<size_t>(rows * cols);
  switch (dt) {
    case DType::kBF16:
    case DType::kF16: {
      o->h16.resize(n);
      for (auto& h : o->h16) h = dt == DType::kBF16 ? to_bf16(rng.next() * 0.5f) : to_f16(rng.next() * 0.5f);
      o->w.data = o->h16.data();
      break;
    }
    case DType::kF32:
      o->f32 = rng.vec(n, 0.5f);
      o->w.data = o->f32.data();
      break;
    case DType::kI8: {
      o->q.resize(n);
      for (auto& v : o->q) v = static_cast<int8_t>(std::lround(rng.next() * 127.f));
      o->scales = rng.vec(static_cast<size_t>(rows * (cols / group)), 0.01f);
      for (float& s : o->scales) s = std::fabs(s) + 1e-3f;
      o->w.data = o->q.data();
      o->w.scales = o->scales.data();
      o->w.group = group;
      break;
    }
    case DType::kI4:  // CPU only: no GPU backend takes int4 weights (the device checks never ask for them)
      break;
  }
  return o;
}

// A pair of backends and helpers to run one op on both and compare.
struct Pair {
  Backend& cpu;
  Backend& dev;
  const Report& report;
  std::vector<float*> cpu_bufs, dev_bufs;

  ~Pair() {
    for (float* p : cpu_bufs) cpu.free(p);
    for (float* p : dev_bufs) dev.free(p);
  }
  // Uploads host data to both backends (count floats, at least 1 allocated).
  std::pair<float*, float*> put(const std::vector<float>& h) {
    const int64_t n = std::max<int64_t>(1, static_cast<int64_t>(h.size()));
    float* a = cpu.alloc(n);
    float* b = dev.alloc(n);
    cpu_bufs.push_back(a);
    dev_bufs.push_back(b);
    if (!h.empty()) {
      cpu.upload(a, h.data(), static_cast<int64_t>(h.size()));
      dev.upload(b, h.data(), static_cast<int64_t>(h.size()));
    }
    return {a, b};
  }
  std::pair<float*, float*> zeros(size_t n) { return put(std::vector<float>(n, 0.f)); }
  void compare(const std::string& what, std::pair<float*, float*> bufs, size_t n, double tol) {
    std::vector<float> a(n), b(n);
    cpu.download(a.data(), bufs.first, static_cast<int64_t>(n));
    dev.download(b.data(), bufs.second, static_cast<int64_t>(n));
    double md = 0, ma = 0;
    for (size_t i = 0; i < n; ++i) {
      const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
      md = (d > md || std::isnan(d)) ? (std::isnan(d) ? INFINITY : d) : md;
      ma = std::max(ma, std::fabs(static_cast<double>(a[i])));
    }
    const double rel = ma > 0 ? md / ma : md;
    report(rel <= tol, what, "max|d|/max|cpu| " + fmt(rel) + " (tol " + fmt(tol) + ")");
  }
};

void run_guarded(const Report& report, const std::string& what, const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    report(false, what, std::string("exception: ") + e.what());
  }
}

const char* dt_name(DType d) { return rustasr::dtype_name(d); }

}  // namespace

void device_op_checks(const std::string& device, const Report& report) {
  rustasr::BackendOptions bo;
  bo.threads = 2;
  std::unique_ptr<Backend> cpu = rustasr::make_cpu_backend(bo);
  std::unique_ptr<Backend> dev;
  try {
    dev = rustasr::make_backend(device, bo);
  } catch (const std::exception& e) {
    report(false, "create " + device + " backend", e.what());
    return;
  }
  report(dev->name() == device, "create " + device + " backend", dev->device_name() + ", kernel " + dev->kernel());
  const std::string tag = "[" + device + " vs cpu] ";
  Rng rng;

  // ---- memory ----
  run_guarded(report, tag + "upload / copy / download", [&] {
    std::vector<float> h = rng.vec(1000), back(1000);
    float* a = dev->alloc(1000);
    float* b = dev->alloc(1000);
    dev->upload(a, h.data(), 1000);
    dev->copy(b, a, 1000);
    dev->download(back.data(), b, 1000);
    dev->free(a);
    dev->free(b);
    dev->free(nullptr);
    report(back == h && dev->alloc(0) == nullptr, tag + "upload / copy / download", "");
  });

  // ---- linear / linear_multi ----
  struct Shape {
    int64_t rows, cols, group;
  };
  for (DType dt : {DType::kBF16, DType::kF16, DType::kF32, DType::kI8}) {
    for (const Shape& s : {Shape{37, 83, 83}, Shape{5, 1, 1}, Shape{130, 257, 257}, Shape{64, 128, 32},
                           Shape{200, 512, 128}, Shape{96, 48, 16}, Shape{70, 24, 8}}) {
      for (bool prepared : {false, true}) {
        const std::string what = tag + "linear " + dt_name(dt) + " " + std::to_string(s.rows) + "x" +
                                 std::to_string(s.cols) + (dt == DType::kI8 ? " g" + std::to_string(s.group) : "") +
                                 (prepared ? " prepared" : " unprepared");
        run_guarded(report, what, [&] {
          auto W = make_weight(rng, dt, s.rows, s.cols, s.group);
          auto B = make_weight(rng, DType::kBF16, 1, s.rows);
          Weight wc = W->w, wd = W->w, bc = B->w, bd = B->w;
          if (prepared) {
            dev->prepare_weight(wd);
            dev->prepare_weight(bd);
          }
          double worst_tol = dt == DType::kI8 ? 5e-3 : 5e-5;
          for (int64_t n : {1, 2, 3, 4, 5, 9, 40, 130}) {
            Pair p{*cpu, *dev, report, {}, {}};
            auto x = p.put(rng.vec(static_cast<size_t>(n * s.cols)));
            auto y = p.zeros(static_cast<size_t>(n * s.rows));
            cpu->linear(x.first, n, wc, bc, y.first);
            dev->linear(x.second, n, wd, bd, y.second);
            p.compare(what + " n=" + std::to_string(n), y, static_cast<size_t>(n * s.rows), worst_tol);
            if (n == 3 || n == 40) {
              auto y2 = p.zeros(static_cast<size_t>(n * s.rows));
              auto y3 = p.zeros(static_cast<size_t>(n * s.rows));
              const Weight* wsc[2] = {&wc, &wc};
              const Weight* wsd[2] = {&wd, &wd};
              float* ysc[2] = {y2.first, y3.first};
              float* ysd[2] = {y2.second, y3.second};
              cpu->linear_multi(x.first, n, wsc, ysc, 2);
              dev->linear_multi(x.second, n, wsd, ysd, 2);
              p.compare(what + " linear_multi n=" + std::to_string(n), y3, static_cast<size_t>(n * s.rows), worst_tol);
            }
          }
        });
      }
    }
  }

  // ---- conv3x3s2_gelu ----
  for (const auto& c : {std::vector<int64_t>{1, 9, 7, 5}, {3, 16, 10, 4}, {2, 1, 1, 3}, {4, 33, 20, 16}}) {
    const int64_t cin = c[0], h = c[1], w = c[2], cout = c[3];
    const std::string what = tag + "conv3x3s2_gelu cin " + std::to_string(cin) + " " + std::to_string(h) + "x" +
                             std::to_string(w) + " cout " + std::to_string(cout);
    run_guarded(report, what, [&] {
      auto W = make_weight(rng, DType::kBF16, cout, cin * 9);
      auto B = make_weight(rng, DType::kBF16, 1, cout);
      Pair p{*cpu, *dev, report, {}, {}};
      auto in = p.put(rng.vec(static_cast<size_t>(cin * h * w)));
      const size_t on = static_cast<size_t>(cout * ((h + 1) / 2) * ((w + 1) / 2));
      auto out = p.zeros(on);
      cpu->conv3x3s2_gelu(in.first, cin, h, w, W->w, B->w, out.first);
      dev->conv3x3s2_gelu(in.second, cin, h, w, W->w, B->w, out.second);
      p.compare(what, out, on, 5e-5);
    });
  }

  // ---- norms ----
  for (int64_t d : {7, 64, 100, 1024}) {
    const std::string what = tag + "layer_norm / rms_norm d=" + std::to_string(d);
    run_guarded(report, what, [&] {
      const int64_t n = 9;
      auto G = make_weight(rng, DType::kBF16, 1, d);
      auto Bv = make_weight(rng, DType::kF32, 1, d);
      Pair p{*cpu, *dev, report, {}, {}};
      std::vector<float> xh = rng.vec(static_cast<size_t>(n * d), 3.f);
      for (float& v : xh) v += 0.5f;
      auto x = p.put(xh);
      auto y = p.zeros(static_cast<size_t>(n * d));
      cpu->layer_norm(x.first, n, d, G->w, Bv->w, 1e-5f, y.first);
      dev->layer_norm(x.second, n, d, G->w, Bv->w, 1e-5f, y.second);
      p.compare(tag + "layer_norm d=" + std::to_string(d), y, static_cast<size_t>(n * d), 1e-5);
      cpu->layer_norm(x.first, n, d, Weight{}, Weight{}, 1e-5f, y.first);
      dev->layer_norm(x.second, n, d, Weight{}, Weight{}, 1e-5f, y.second);
      p.compare(tag + "layer_norm (no affine) d=" + std::to_string(d), y, static_cast<size_t>(n * d), 1e-5);
      cpu->rms_norm(x.first, n, d, G->w, 1e-6f, x.first);  // in place, as the model does
      dev->rms_norm(x.second, n, d, G->w, 1e-6f, x.second);
      p.compare(tag + "rms_norm in place d=" + std::to_string(d), x, static_cast<size_t>(n * d), 1e-5);
    });
  }

  // ---- element-wise ----
  run_guarded(report, tag + "gelu / silu_mul / add", [&] {
    const size_t n = 100003;
    Pair p{*cpu, *dev, report, {}, {}};
    auto a = p.put(rng.vec(n, 6.f));
    auto b = p.put(rng.vec(n, 6.f));
    cpu->gelu(a.first, static_cast<int64_t>(n));
    dev->gelu(a.second, static_cast<int64_t>(n));
    p.compare(tag + "gelu", a, n, 2e-6);
    cpu->silu_mul(a.first, b.first, static_cast<int64_t>(n), a.first);
    dev->silu_mul(a.second, b.second, static_cast<int64_t>(n), a.second);
    p.compare(tag + "silu_mul (out = gate)", a, n, 2e-6);
    cpu->add(a.first, b.first, static_cast<int64_t>(n));
    dev->add(a.second, b.second, static_cast<int64_t>(n));
    p.compare(tag + "add", a, n, 2e-6);
  });

  // ---- rope ----
  for (int64_t hd : {16, 64, 128}) {
    const std::string what = tag + "rope head_dim " + std::to_string(hd);
    run_guarded(report, what, [&] {
      const int64_t n = 5, heads = 3, pos0 = 1234;
      Pair p{*cpu, *dev, report, {}, {}};
      auto x = p.put(rng.vec(static_cast<size_t>(n * heads * hd)));
      cpu->rope(x.first, n, heads, hd, pos0, 1e6f);
      dev->rope(x.second, n, heads, hd, pos0, 1e6f);
      p.compare(what, x, static_cast<size_t>(n * heads * hd), 1e-5);
    });
  }

  // ---- attention ----
  struct Att {
    int64_t nq, nk, q_pos0, q_heads, kv_heads, hd, stride_extra;
    bool causal;
  };
  for (const Att& a : {Att{1, 37, 36, 4, 2, 16, 8, true}, Att{20, 20, 0, 4, 2, 16, 0, true},
                       Att{104, 104, 0, 14, 14, 64, 0, false}, Att{70, 70, 0, 3, 3, 128, 0, false},
                       Att{1, 600, 599, 16, 8, 128, 0, true}, Att{3, 1500, 1497, 16, 8, 128, 32, true},
                       Att{300, 300, 0, 16, 8, 128, 0, true}, Att{5, 9, 4, 2, 1, 200, 3, true},
                       Att{4, 9, 0, 2, 2, 32, 0, true}, Att{2, 0, 0, 2, 2, 16, 0, false}, Att{2, 1, 0, 2, 2, 48, 0, true}}) {
    const std::string what = tag + "attention nq " + std::to_string(a.nq) + " nk " + std::to_string(a.nk) +
                             " pos0 " + std::to_string(a.q_pos0) + " heads " + std::to_string(a.q_heads) + "/" +
                             std::to_string(a.kv_heads) + " hd " + std::to_string(a.hd) +
                             (a.causal ? " causal" : "") + (a.stride_extra ? " strided" : "");
    run_guarded(report, what, [&] {
      const int64_t stride = a.kv_heads * a.hd + a.stride_extra;
      Pair p{*cpu, *dev, report, {}, {}};
      auto q = p.put(rng.vec(static_cast<size_t>(a.nq * a.q_heads * a.hd), 2.f));
      auto k = p.put(rng.vec(static_cast<size_t>(std::max<int64_t>(a.nk, 1) * stride), 2.f));
      auto v = p.put(rng.vec(static_cast<size_t>(std::max<int64_t>(a.nk, 1) * stride)));
      const size_t on = static_cast<size_t>(a.nq * a.q_heads * a.hd);
      auto o = p.put(rng.vec(on));  // garbage: every element must be written
      cpu->attention(q.first, a.nq, a.q_pos0, k.first, v.first, a.nk, stride, a.q_heads, a.kv_heads, a.hd, a.causal,
                     o.first);
      dev->attention(q.second, a.nq, a.q_pos0, k.second, v.second, a.nk, stride, a.q_heads, a.kv_heads, a.hd,
                     a.causal, o.second);
      p.compare(what, o, on, 1e-5);
    });
  }

  // ---- embed / transpose ----
  for (DType dt : {DType::kBF16, DType::kF32, DType::kI8}) {
    const std::string what = tag + "embed " + std::string(dt_name(dt));
    run_guarded(report, what, [&] {
      auto T = make_weight(rng, dt, 50, 48, 16);
      Weight td = T->w;
      dev->prepare_weight(td);
      const std::vector<int32_t> ids = {0, 49, 7, 7, 23};
      Pair p{*cpu, *dev, report, {}, {}};
      auto o = p.zeros(ids.size() * 48);
      cpu->embed(T->w, ids.data(), static_cast<int64_t>(ids.size()), o.first);
      dev->embed(td, ids.data(), static_cast<int64_t>(ids.size()), o.second);
      p.compare(what, o, ids.size() * 48, 0);
      bool threw = false;
      try {
        const int32_t bad = 50;
        dev->embed(td, &bad, 1, o.second);
      } catch (const rustasr::Error& e) {
        threw = e.code() == rustasr::ErrorCode::kInvalidArgument;
      }
      report(threw, what + " rejects id 50 of 50", "");
    });
  }
  run_guarded(report, tag + "transpose", [&] {
    for (const auto& rc : {std::pair<int64_t, int64_t>{37, 45}, {1, 70}, {256, 3}}) {
      Pair p{*cpu, *dev, report, {}, {}};
      const size_t n = static_cast<size_t>(rc.first * rc.second);
      auto in = p.put(rng.vec(n));
      auto out = p.zeros(n);
      cpu->transpose(in.first, rc.first, rc.second, out.first);
      dev->transpose(in.second, rc.first, rc.second, out.second);
      p.compare(tag + "transpose " + std::to_string(rc.first) + "x" + std::to_string(rc.second), out, n, 0);
    }
  });
}
