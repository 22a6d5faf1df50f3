// The CPU backend's instruction-set paths (BackendOptions.kernel): which this CPU and build can run, the best
// one ("auto"), and their names.
#pragma once

#include <string>

namespace rustasr {
namespace cpu {

enum class Isa { kScalar, kAvx2, kAvx512f, kAvx512bf16, kNeon };

const char* isa_name(Isa isa);
bool isa_supported(Isa isa);
// The best path this CPU supports ("auto").
Isa best_isa();
// "auto" | "avx512bf16" | "avx512f" | "avx2" | "neon" | "scalar". Throws Error(kInvalidArgument) for an
// unknown name and Error(kUnsupportedDevice) for a path this CPU (or build) cannot run.
Isa parse_kernel(const std::string& name);
// x86: the CPU has AVX-512F/BW/VL, AVX2 + FMA, F16C (false elsewhere).
bool cpu_has_avx512();
bool cpu_has_avx2();
bool cpu_has_f16c();

}  // namespace cpu
}  // namespace rustasr
