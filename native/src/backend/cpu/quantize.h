// The int8 weight quantiser (a CPU kernel run at load): symmetric int8 with one float32 scale per group of
// columns, scale = max|w| / 127, q = round-to-nearest-even(w * 127 / max|w|). The AVX-512 path computes
// exactly what the portable loop computes.
#pragma once

#include <cstdint>

#include "../../util/tensor.h"

namespace rustasr {

// The group size for a row of `cols` columns: 128, else 64, else 32, else the whole row.
int64_t int8_group(int64_t cols);

// Quantises rows [r0, r1) of `src` (any float dtype) into q ([rows, cols]) and scales ([rows, cols / group]).
void quantize_rows_int8(const Weight& src, int64_t group, int64_t r0, int64_t r1, int8_t* q, float* scales);

}  // namespace rustasr
