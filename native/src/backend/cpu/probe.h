// Machine probes for the benchmark (`npm run bench`): the physical floors each stage is compared with.
//
//   * read bandwidth: N threads of a ThreadPool stream disjoint slices of one large buffer (summing it with
//     the widest vector loads this CPU has), bytes / seconds per repetition;
//   * compute peak: register-only loops (no memory traffic) of the widest multiply-add this CPU has: float32
//     FMA (AVX-512F, else AVX2 FMA, else NEON, else scalar) and, where the CPU has it, the BF16 dot product
//     (AVX512-BF16 vdpbf16ps); FLOP / seconds per repetition. This is the silicon's limit, the floor of the
//     compute-bound stages (encoder, prefill);
//   * GEMM rate: the backend's own batched product (cpu::gemm, the path linear() takes for many rows) on a
//     BF16 weight W[rows, cols] and float32 x[n, cols], 2 * n * rows * cols / seconds per repetition. This is
//     the engine's own speed (reported beside the peak, never used as a floor).
//
// Nothing here is used by inference; the functions allocate their own buffers and their own pool.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rustasr {
namespace cpu {

struct BandwidthProbe {
  int threads = 0;
  int64_t bytes = 0;             // buffer size actually read per repetition
  std::string isa;               // vector width used for the loads ("avx512f", "avx2", "scalar", ...)
  std::vector<double> seconds;   // one per repetition
};

// Reads a `bytes` buffer (rounded down to 4 KiB) `reps` times with `threads` threads (0 = hardware).
BandwidthProbe probe_read_bandwidth(int threads, int64_t bytes, int reps);

struct PeakProbe {
  std::string kind;              // "fp32-fma" | "bf16-dot"
  std::string isa;               // the instructions used ("avx512f", "avx2", "neon", "scalar", "avx512bf16")
  int threads = 0;
  double flops = 0;              // per repetition (all threads)
  std::vector<double> seconds;   // one per repetition
};

// Register-only multiply-add loops on `threads` threads (0 = hardware), each repetition about `seconds_each`
// long. kind "fp32-fma": 2 FLOP per float32 lane per FMA; "bf16-dot": 2 FLOP per BF16 pair product (vdpbf16ps:
// 32 products per 512-bit instruction). Throws Error(kUnsupportedDevice) for "bf16-dot" on a CPU without it
// and Error(kInvalidArgument) for an unknown kind.
PeakProbe probe_compute_peak(int threads, const std::string& kind, double seconds_each, int reps);
// The kinds this CPU can run ("fp32-fma" always; "bf16-dot" with AVX512-BF16).
std::vector<std::string> probe_peak_kinds();

struct GemmProbe {
  std::string impl;              // "auto" | "own" | "blas" (panels, BLAS single-threaded) | "blas-threaded"
  std::string isa;               // the gemv kernel path (as BackendOptions.kernel resolves it)
  int threads = 0;
  int64_t n = 0, rows = 0, cols = 0;
  double flops = 0;              // 2 * n * rows * cols
  std::vector<double> seconds;   // one per repetition (after one untimed warm-up)
};

// y[n, rows] = x[n, cols] * W^T with W BF16, through cpu::gemm. Throws Error(kInvalidArgument) for an
// unknown impl and Error(kUnsupportedDevice) for a BLAS impl in a build without BLAS.
GemmProbe probe_gemm(int threads, const std::string& kernel, const std::string& impl, int64_t n, int64_t rows,
                     int64_t cols, int reps);

// The BLAS as the build links it: "openblas <corename> (<config>)", "accelerate" or "none".
std::string probe_blas_info();

}  // namespace cpu
}  // namespace rustasr
