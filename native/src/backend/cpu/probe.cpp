#include "probe.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "../../util/tensor.h"
#include "gemm.h"
#include "gemv.h"
#include "rustasr/engine.h"
#include "threadpool.h"

#if defined(__aarch64__)
#include <arm_neon.h>
#endif

#if defined(RUSTASR_HAVE_ACCELERATE)
// Accelerate: no core name to report.
#elif defined(RUSTASR_HAVE_CBLAS)
#include <cblas.h>
#endif

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define RUSTASR_PROBE_X86 1
#endif

namespace rustasr {
namespace cpu {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Sums 64-bit words [0, n) (n a multiple of 64 words = 512 bytes) with four independent accumulators,
// so the loop is limited by loads, not by the add latency.
uint64_t sum_scalar(const uint64_t* p, int64_t n) {
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (int64_t i = 0; i < n; i += 4) {
    a0 += p[i];
    a1 += p[i + 1];
    a2 += p[i + 2];
    a3 += p[i + 3];
  }
  return a0 + a1 + a2 + a3;
}

#if defined(RUSTASR_PROBE_X86)
__attribute__((target("avx2"))) uint64_t sum_avx2(const uint64_t* p, int64_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i < n; i += 16) {
    a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 4)));
    a2 = _mm256_add_epi64(a2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 8)));
    a3 = _mm256_add_epi64(a3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 12)));
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

__attribute__((target("avx512f"))) uint64_t sum_avx512(const uint64_t* p, int64_t n) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i < n; i += 32) {
    // Software prefetch 2 KiB ahead, as the matrix-vector kernels read their weights (a plain stream reached
    // ~15% less than the 1.7B decode step on the reference VM).
    for (int l = 0; l < 4; ++l) _mm_prefetch(reinterpret_cast<const char*>(p + i + 256 + 8 * l), _MM_HINT_T0);
    a0 = _mm512_add_epi64(a0, _mm512_loadu_si512(p + i));
    a1 = _mm512_add_epi64(a1, _mm512_loadu_si512(p + i + 8));
    a2 = _mm512_add_epi64(a2, _mm512_loadu_si512(p + i + 16));
    a3 = _mm512_add_epi64(a3, _mm512_loadu_si512(p + i + 24));
  }
  // Reduced by hand: GCC 12's _mm512_reduce_add_epi64 trips -Wuninitialized inside its own header.
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(reinterpret_cast<__m512i*>(lanes), _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)));
  uint64_t s = 0;
  for (uint64_t v : lanes) s += v;
  return s;
}
#endif

using SumFn = uint64_t (*)(const uint64_t*, int64_t);

SumFn pick_sum(std::string* name) {
#if defined(RUSTASR_PROBE_X86)
  if (__builtin_cpu_supports("avx512f")) {
    *name = "avx512f";
    return sum_avx512;
  }
  if (__builtin_cpu_supports("avx2")) {
    *name = "avx2";
    return sum_avx2;
  }
#endif
  *name = "scalar";
  return sum_scalar;
}

// ---- register-only multiply-add loops (the compute peak) ----
// Each runs `iters` rounds of kAcc independent multiply-adds on registers (no loads or stores: the chains are
// independent, so the loop is limited by the multiply-add units, not by their latency) and returns a value
// that depends on every chain, so nothing can be elided. Returns FLOP per round per thread via *flops.

constexpr int kAcc = 24;  // independent chains (latency 4-5 cycles x 2 pipes needs >= 10)

float peak_scalar(int64_t iters, double* flops) {
  *flops = 2.0 * 8;
  float a[8];
  for (int i = 0; i < 8; ++i) a[i] = 1.0f + static_cast<float>(i) * 1e-3f;
  const float b = 0.999999f, c = 1e-7f;
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < 8; ++i) a[i] = a[i] * b + c;
  float s = 0;
  for (float v : a) s += v;
  return s;
}

#if defined(RUSTASR_PROBE_X86)
__attribute__((target("avx512f"))) float peak_avx512(int64_t iters, double* flops) {
  *flops = 2.0 * 16 * kAcc;
  __m512 a[kAcc];
  for (int i = 0; i < kAcc; ++i) a[i] = _mm512_set1_ps(1.0f + static_cast<float>(i) * 1e-3f);
  const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < kAcc; ++i) a[i] = _mm512_fmadd_ps(a[i], b, c);
  }
  __m512 s = a[0];
  for (int i = 1; i < kAcc; ++i) s = _mm512_add_ps(s, a[i]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  return lanes[0] + lanes[15];
}

__attribute__((target("avx512f,avx512bw,avx512bf16"))) float peak_avx512bf16(int64_t iters, double* flops) {
  *flops = 2.0 * 32 * kAcc;  // 32 BF16 products (and their sums) per instruction
  __m512 a[kAcc];
  for (int i = 0; i < kAcc; ++i) a[i] = _mm512_set1_ps(1.0f + static_cast<float>(i) * 1e-3f);
  const __m512bh b = (__m512bh)_mm512_set1_epi16(0x3f80);  // 1.0
  const __m512bh c = (__m512bh)_mm512_set1_epi16(0x3400);  // 2^-23
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < kAcc; ++i) a[i] = _mm512_dpbf16_ps(a[i], b, c);
  }
  __m512 s = a[0];
  for (int i = 1; i < kAcc; ++i) s = _mm512_add_ps(s, a[i]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  return lanes[0] + lanes[15];
}

__attribute__((target("avx2,fma"))) float peak_avx2(int64_t iters, double* flops) {
  constexpr int kA = 12;  // 16 ymm registers
  *flops = 2.0 * 8 * kA;
  __m256 a[kA];
  for (int i = 0; i < kA; ++i) a[i] = _mm256_set1_ps(1.0f + static_cast<float>(i) * 1e-3f);
  const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kA; ++i) a[i] = _mm256_fmadd_ps(a[i], b, c);
  }
  __m256 s = a[0];
  for (int i = 1; i < kA; ++i) s = _mm256_add_ps(s, a[i]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  return lanes[0] + lanes[7];
}
#endif

#if defined(__aarch64__)
float peak_neon(int64_t iters, double* flops) {
  *flops = 2.0 * 4 * kAcc;
  float32x4_t a[kAcc];
  for (int i = 0; i < kAcc; ++i) a[i] = vdupq_n_f32(1.0f + static_cast<float>(i) * 1e-3f);
  const float32x4_t b = vdupq_n_f32(0.999999f), c = vdupq_n_f32(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < kAcc; ++i) a[i] = vfmaq_f32(c, a[i], b);
  }
  float32x4_t s = a[0];
  for (int i = 1; i < kAcc; ++i) s = vaddq_f32(s, a[i]);
  return vaddvq_f32(s);
}
#endif

using PeakFn = float (*)(int64_t, double*);

PeakFn pick_peak(const std::string& kind, std::string* isa) {
  if (kind == "fp32-fma") {
#if defined(RUSTASR_PROBE_X86)
    if (isa_supported(Isa::kAvx512f)) {
      *isa = "avx512f";
      return peak_avx512;
    }
    if (isa_supported(Isa::kAvx2)) {
      *isa = "avx2";
      return peak_avx2;
    }
#endif
#if defined(__aarch64__)
    *isa = "neon";
    return peak_neon;
#endif
    *isa = "scalar";
    return peak_scalar;
  }
  if (kind == "bf16-dot") {
#if defined(RUSTASR_PROBE_X86)
    if (isa_supported(Isa::kAvx512bf16)) {
      *isa = "avx512bf16";
      return peak_avx512bf16;
    }
#endif
    throw Error(ErrorCode::kUnsupportedDevice, "this CPU has no BF16 dot-product instruction the engine uses");
  }
  throw Error(ErrorCode::kInvalidArgument, "unknown peak kind \"" + kind + "\" (expected fp32-fma or bf16-dot)");
}

GemmImpl parse_impl(const std::string& s) {
  if (s == "auto") return GemmImpl::kAuto;
  if (s == "own") return GemmImpl::kOwn;
  if (s == "blas") return GemmImpl::kBlasPanels;
  if (s == "blas-threaded") return GemmImpl::kBlasThreaded;
  throw Error(ErrorCode::kInvalidArgument,
              "unknown GEMM impl \"" + s + "\" (expected auto, own, blas or blas-threaded)");
}

// Deterministic pseudo-random numbers in [-1, 1) (xorshift).
struct Rng {
  uint64_t s;
  float next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return static_cast<float>(static_cast<double>(s >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
  }
};

uint16_t f32_to_bf16(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  b += 0x7fff + ((b >> 16) & 1);  // round to nearest even (inputs are finite)
  return static_cast<uint16_t>(b >> 16);
}

}  // namespace

BandwidthProbe probe_read_bandwidth(int threads, int64_t bytes, int reps) {
  if (bytes < 4096 || reps < 1) throw Error(ErrorCode::kInvalidArgument, "bandwidth probe: bytes >= 4096 and reps >= 1");
  ThreadPool pool(threads);
  BandwidthProbe out;
  out.threads = pool.size();
  const SumFn sum = pick_sum(&out.isa);
  const int64_t page_words = 4096 / 8;
  const int64_t pages = bytes / 4096;
  out.bytes = pages * 4096;
  // The buffer in 2 MiB pages where the kernel gives them (Linux: an anonymous mapping advised MADV_HUGEPAGE),
  // as the weights are mapped (io/large_pages.h): in 4 KiB pages the probe measured the TLB misses of this VM's
  // paravirtualised paging as much as the memory (the 1.7B decode step read its 3.44 GB at 1.4x the rate the
  // 4 KiB probe reported).
  const size_t len = static_cast<size_t>(pages * 4096);
  uint64_t* data = nullptr;
  std::unique_ptr<uint64_t[]> heap;
#if defined(__linux__)
  constexpr size_t kHuge = size_t(2) << 20;
  void* raw = ::mmap(nullptr, len + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  std::shared_ptr<void> mapping;
  if (raw != MAP_FAILED) {
    mapping.reset(raw, [len](void* q) { ::munmap(q, len + kHuge); });
    const uintptr_t aligned = (reinterpret_cast<uintptr_t>(raw) + kHuge - 1) & ~(kHuge - 1);
    data = reinterpret_cast<uint64_t*>(aligned);
    (void)::madvise(data, len, MADV_HUGEPAGE);
  }
#endif
  if (!data) {
    heap.reset(new uint64_t[static_cast<size_t>(pages * page_words)]);
    data = heap.get();
  }
  // Pieces of 256 KiB handed out dynamically, as the decode step shares out a weight: a thread slowed by a
  // neighbour process takes fewer, and the threads read neighbouring memory (a few large pieces, far apart,
  // measured ~15% below the 1.7B decode step's own rate on the reference VM).
  const int64_t chunks = std::min<int64_t>(pages, std::max<int64_t>(8 * static_cast<int64_t>(pool.size()), pages / 64));
  // First touch in parallel (the pages then live where the readers run).
  pool.parallel_for(
      pages,
      [&](int64_t b, int64_t e) {
        for (int64_t i = b * page_words; i < e * page_words; ++i) data[i] = static_cast<uint64_t>(i) * 0x9e3779b97f4a7c15ull;
      },
      1, chunks);
  std::vector<uint64_t> sink(static_cast<size_t>(pages), 0);
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    pool.parallel_for(
        pages,
        [&](int64_t b, int64_t e) {
          sink[static_cast<size_t>(b)] += sum(data + b * page_words, (e - b) * page_words);
        },
        1, chunks);
    out.seconds.push_back(seconds_since(t0));
  }
  // Keep the sums observable so the reads cannot be elided.
  volatile uint64_t keep = 0;
  for (uint64_t v : sink) keep = keep + v;
  (void)keep;
  return out;
}

std::vector<std::string> probe_peak_kinds() {
  std::vector<std::string> k{"fp32-fma"};
  if (isa_supported(Isa::kAvx512bf16)) k.push_back("bf16-dot");
  return k;
}

PeakProbe probe_compute_peak(int threads, const std::string& kind, double seconds_each, int reps) {
  if (reps < 1 || !(seconds_each > 0)) throw Error(ErrorCode::kInvalidArgument, "peak probe: reps >= 1 and seconds > 0");
  PeakProbe out;
  out.kind = kind;
  const PeakFn fn = pick_peak(kind, &out.isa);
  ThreadPool pool(threads);
  out.threads = pool.size();
  // Calibrate on this thread: rounds for ~seconds_each (at least one full round).
  double per_round = 0;
  volatile float sink = 0;
  int64_t iters = 1 << 16;
  for (;;) {
    const auto t0 = Clock::now();
    sink = sink + fn(iters, &per_round);
    const double s = seconds_since(t0);
    if (s > 0.02 || iters > (int64_t(1) << 40)) {
      iters = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(iters) * seconds_each / std::max(s, 1e-9)));
      break;
    }
    iters *= 4;
  }
  out.flops = per_round * static_cast<double>(iters) * out.threads;
  std::vector<float> sinks(static_cast<size_t>(out.threads), 0.f);
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    pool.parallel_for(
        out.threads,
        [&](int64_t b, int64_t e) {
          double f = 0;
          for (int64_t t = b; t < e; ++t) sinks[static_cast<size_t>(t)] += fn(iters, &f);
        },
        1, out.threads);
    out.seconds.push_back(seconds_since(t0));
  }
  for (float v : sinks) sink = sink + v;
  return out;
}

GemmProbe probe_gemm(int threads, const std::string& kernel, const std::string& impl_name, int64_t n,
                     int64_t rows, int64_t cols, int reps) {
  if (n < 1 || rows < 1 || cols < 1 || reps < 1)
    throw Error(ErrorCode::kInvalidArgument, "gemm probe: n, rows, cols and reps must be positive");
  const GemmImpl impl = parse_impl(impl_name);
  if ((impl == GemmImpl::kBlasPanels || impl == GemmImpl::kBlasThreaded) && !gemm_has_blas())
    throw Error(ErrorCode::kUnsupportedDevice, "this build has no BLAS");
  const Isa isa = parse_kernel(kernel);
  ThreadPool pool(threads);
  GemmProbe out;
  out.impl = impl_name;
  out.isa = isa_name(isa);
  out.threads = pool.size();
  out.n = n;
  out.rows = rows;
  out.cols = cols;
  out.flops = 2.0 * static_cast<double>(n) * static_cast<double>(rows) * static_cast<double>(cols);

  Rng rng{0x243f6a8885a308d3ull};
  std::vector<uint16_t> wdata(static_cast<size_t>(rows * cols));
  for (uint16_t& v : wdata) v = f32_to_bf16(rng.next() * 0.05f);
  std::vector<float> x(static_cast<size_t>(n * cols));
  for (float& v : x) v = rng.next();
  std::vector<float> y(static_cast<size_t>(n * rows));
  Weight w;
  w.data = wdata.data();
  w.dtype = DType::kBF16;
  w.rows = rows;
  w.cols = cols;
  w.name = "probe.W";

  gemm(pool, isa, x.data(), n, w, y.data(), impl);  // warm-up: caches, page faults, BLAS buffers
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    gemm(pool, isa, x.data(), n, w, y.data(), impl);
    out.seconds.push_back(seconds_since(t0));
  }
  return out;
}

std::string probe_blas_info() {
#if defined(RUSTASR_HAVE_ACCELERATE)
  return "accelerate";
#elif defined(RUSTASR_HAVE_CBLAS)
  std::string s = "openblas";
  if (const char* core = openblas_get_corename()) s += std::string(" ") + core;
  if (const char* cfg = openblas_get_config()) s += std::string(" (") + cfg + ")";
  return s;
#else
  return "none";
#endif
}

}  // namespace cpu
}  // namespace rustasr
