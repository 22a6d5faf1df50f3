// The int8 weight quantiser (a CPU kernel run at load): symmetric int8 with one float32 scale per group of
// columns, scale = max|w| / 127, q = round-to-nearest-even(w * 127 / max|w|). The AVX-512 path computes
// exactly what the portable loop computes.
#pragma once

#include <cstdint>

#include "../../util/tensor.h"

namespace rustasr {

// The group size for a row of `cols` columns: 128, else 64, else 32, else 16, else the whole row.
int64_t int8_group(int64_t cols);

// Quantises rows [r0, r1) of `src` (any float dtype) into q ([rows, cols]) and scales ([rows, cols / group]).
void quantize_rows_int8(const Weight& src, int64_t group, int64_t r0, int64_t r1, int8_t* q, float* scales);

// int4: blocks of 32 columns (else 16); 0 when the row cannot be split so (that tensor is quantised as int8).
int64_t int4_group(int64_t cols);

// Quantises rows [r0, r1) of `src` into int4 blocks of `group` columns (DType::kI4 layout, util/tensor.h):
// q in -7 .. 7 stored as q + 8 (cols / 2 bytes per row), scales rows * (cols / group) floats. With 15 levels
// the plain scale max|w| / 7 wastes much of the range on one outlier: the scale is the one of a few
// candidates (max|w| / 7 times 1, 0.95, ..., 0.7) whose rounding has the least squared error, refitted by
// least squares for the q it chose (scale = sum w q / sum q^2).
void quantize_rows_int4(const Weight& src, int64_t group, int64_t r0, int64_t r1, uint8_t* q, float* scales);

}  // namespace rustasr
