// ISA detection and names (isa.h).
#include "isa.h"

#include "rustasr/engine.h"
#include "simd.h"

namespace rustasr {
namespace cpu {

// ------------------------------------------------------------------------------------------------
// CPU feature detection.

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512f: return "avx512f";
    case Isa::kAvx512bf16: return "avx512bf16";
    case Isa::kNeon: return "neon";
  }
  return "scalar";
}

namespace {
#if defined(RUSTASR_X86)
bool has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
bool has_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}
bool has_avx512bf16() { return has_avx512() && __builtin_cpu_supports("avx512bf16"); }
bool has_f16c() {
  // (Not every compiler knows __builtin_cpu_supports("f16c"): read CPUID.1:ECX bit 29 directly.)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__builtin_cpu_supports("avx") || !__get_cpuid(1, &a, &b, &c, &d)) return false;
  return (c & (1u << 29)) != 0;
}
#endif
}  // namespace

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return true;
#if defined(RUSTASR_X86)
    case Isa::kAvx2: return has_avx2();
    case Isa::kAvx512f: return has_avx512();
    case Isa::kAvx512bf16: return has_avx512bf16();
#else
    case Isa::kAvx2:
    case Isa::kAvx512f:
    case Isa::kAvx512bf16: return false;
#endif
    case Isa::kNeon:
#if defined(__aarch64__)
      return true;
#else
      return false;
#endif
  }
  return false;
}

Isa best_isa() {
  // avx512f and avx512bf16 both give float32 accuracy and both saturate memory bandwidth on decode;
  // avx512f is preferred (fewer instructions per byte, no activation split).
  for (Isa isa : {Isa::kAvx512f, Isa::kAvx512bf16, Isa::kAvx2, Isa::kNeon})
    if (isa_supported(isa)) return isa;
  return Isa::kScalar;
}

Isa parse_kernel(const std::string& name) {
  if (name.empty() || name == "auto") return best_isa();
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512f, Isa::kAvx512bf16, Isa::kNeon}) {
    if (name == isa_name(isa)) {
      if (!isa_supported(isa))
        throw Error(ErrorCode::kUnsupportedDevice,
                    "kernel \"" + name + "\" is not supported on this CPU or build");
      return isa;
    }
  }
  throw Error(ErrorCode::kInvalidArgument, "unknown kernel \"" + name +
                                               "\" (expected auto, avx512bf16, avx512f, avx2, neon or scalar)");
}

#if defined(RUSTASR_X86)
bool cpu_has_avx512() { return has_avx512(); }
bool cpu_has_avx2() { return has_avx2(); }
bool cpu_has_f16c() { return has_f16c(); }
#else
bool cpu_has_avx512() { return false; }
bool cpu_has_avx2() { return false; }
bool cpu_has_f16c() { return false; }
#endif

}  // namespace cpu
}  // namespace rustasr
