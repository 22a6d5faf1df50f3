// Machine probes for the benchmark (`npm run bench`): the physical floors each stage is compared with.
//
//   * read bandwidth: N threads of a ThreadPool stream disjoint slices of one large buffer (summing it with
//     the widest vector loads this CPU has), bytes / seconds per repetition;
//   * GEMM rate: the backend's own batched product (cpu::gemm, the path linear() takes for many rows) on a
//     BF16 weight W[rows, cols] and float32 x[n, cols], 2 * n * rows * cols / seconds per repetition.
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
