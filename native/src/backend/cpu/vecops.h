// Float32 vector helpers of the CPU backend, on the best path of an Isa: dot product, axpy, GELU, SiLU * up,
// and weight rows as float32.
#pragma once

#include <cstdint>

#include "../../util/tensor.h"
#include "isa.h"

namespace rustasr {
namespace cpu {

float dot_f32(Isa isa, const float* a, const float* b, int64_t n);
void axpy_f32(Isa isa, float a, const float* x, float* y, int64_t n);  // y += a * x

// x = GELU(x) in place, the exact (erf) form: libm's erf, or on the AVX-512 paths a vector erf within 1.5e-7.
void gelu_f32(Isa isa, float* x, int64_t n);

// out = silu(gate) * up (out may alias gate): libm's exp, or on the AVX-512 paths a vector exp (a few ulp).
void silu_mul_f32(Isa isa, const float* gate, const float* up, int64_t n, float* out);

// out[0 .. n) = weight elements [offset, offset + n) as float32 (vectorised BF16/F16 upcast).
void convert_to_f32(const Weight& w, int64_t offset, int64_t n, float* out);

}  // namespace cpu
}  // namespace rustasr
