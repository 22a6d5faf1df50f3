// Attention kernels of the CPU backend (the ops' per-head and split-by-position forms; Backend::attention in
// cpu_backend.cpp drives them and runs the generic loop where they do not apply).
#pragma once

#include <cstdint>

#include "isa.h"

namespace rustasr {
namespace cpu {

// The unnormalised softmax of the attention rows, in place: s[j] = exp(s[j] - max s) (float exp), returning
// their sum in double, in j order. The one form of every attention path that does not fuse it (the generic
// loop and the AVX2 kernel), so that their rows agree bit for bit.
double softmax_exp(float* s, int64_t n);

// Attention of `group` query heads (q: group * head_dim floats, head after head) sharing one KV head,
// against `limit` key/value rows (rows kv_stride floats apart): out[g * head_dim ..] = softmax(q_g . k_j *
// scale) . v_j, with the scores and the output kept in registers where the ISA allows and each key/value
// row read once for the group. Returns false (nothing written) when this ISA / head_dim has no such
// kernel: the caller then runs the generic loop. scratch: group * `limit` floats.
bool attend_f32(Isa isa, const float* q, const float* k, const float* v, int64_t limit, int64_t kv_stride,
                int64_t head_dim, int64_t group, float scale, float* scratch, float* out);

// Decode attention split by position: one query row of every head (q_heads, kv_heads KV heads), over the
// key/value rows [j0, j1), all heads of a row at once (the rows are read in order, as one block). Per
// query head h: m[h] = max score, sum[h] = sum of exp(score - m[h]), o[h * head_dim ..] = the
// exp-weighted sum of value rows (not divided by sum). The caller combines the parts. Returns false
// (nothing written) when attend_part_available says no. sc: q_heads * (j1 - j0) floats.
bool attend_part_available(Isa isa, int64_t head_dim, int64_t q_heads, int64_t kv_heads);
bool attend_part_f32(Isa isa, const float* q, const float* k, const float* v, int64_t j0, int64_t j1,
                     int64_t kv_stride, int64_t q_heads, int64_t kv_heads, int64_t head_dim, float scale, float* sc,
                     float* o, float* m, double* sum);

}  // namespace cpu
}  // namespace rustasr
