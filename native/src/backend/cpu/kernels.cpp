// rustasr::cpu_kernels(): the public list of matrix-vector paths this CPU can run, best first.
#include <rustasr/engine.h>

#include "isa.h"

namespace rustasr {

std::vector<std::string> cpu_kernels() {
  std::vector<std::string> out;
  for (cpu::Isa isa : {cpu::Isa::kAvx512bf16, cpu::Isa::kAvx512f, cpu::Isa::kAvx2, cpu::Isa::kNeon, cpu::Isa::kScalar})
    if (cpu::isa_supported(isa)) out.emplace_back(cpu::isa_name(isa));
  return out;
}

}  // namespace rustasr
