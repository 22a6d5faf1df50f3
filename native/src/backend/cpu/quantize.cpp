// The int8 weight quantiser (see quantize.h).
#include "quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

namespace rustasr {

int64_t int8_group(int64_t cols) {
  for (int64_t g : {128, 64, 32, 16})
    if (cols % g == 0) return g;
  return cols;
}

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define RUSTASR_QUANT_X86 1
// BF16 rows, group a multiple of 16, AVX-512: the same arithmetic as the portable loop below (|w| max,
// scale = max / 127, q = round-to-nearest-even(w * (127 / max))).
namespace {
__attribute__((target("avx512f,avx512bw,avx512vl"))) void quantize_rows_bf16_avx512(
    const Weight& src, int64_t group, int64_t r0, int64_t r1, int8_t* q, float* scales) {
  const int64_t cols = src.cols, gpr = cols / group;
  const uint16_t* W = static_cast<const uint16_t*>(src.data);
  const __mmask16 all = static_cast<__mmask16>(0xFFFF);
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t g = 0; g < gpr; ++g) {
      const uint16_t* v = W + r * cols + g * group;
      __m512 mx = _mm512_setzero_ps();
      for (int64_t i = 0; i < group; i += 16) {
        const __m512i u = _mm512_maskz_cvtepu16_epi32(all, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + i)));
        // |w|: drop the sign bit along with the shift into the float32 position.
        const __m512 a = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(all, _mm512_maskz_and_epi32(all, u, _mm512_set1_epi32(0x7FFF)), 16));
        mx = _mm512_maskz_max_ps(all, mx, a);
      }
      alignas(64) float lanes[16];
      _mm512_store_ps(lanes, mx);
      float m = 0.f;
      for (float l : lanes) m = std::max(m, l);
      const float inv = m > 0.f ? 127.f / m : 0.f;
      scales[r * gpr + g] = m / 127.f;
      const __m512 iv = _mm512_set1_ps(inv);
      int8_t* out = q + r * cols + g * group;
      for (int64_t i = 0; i < group; i += 16) {
        const __m512 w = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(
            all, _mm512_maskz_cvtepu16_epi32(all, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + i))), 16));
        const __m512i t = _mm512_maskz_cvtps_epi32(all, _mm512_mul_ps(w, iv));  // MXCSR: nearest-even
        _mm512_mask_cvtsepi32_storeu_epi8(out + i, all, t);
      }
    }
  }
}
}  // namespace
#endif

// Quantises rows [r0, r1) of `src` (any float dtype) into q / scales.
void quantize_rows_int8(const Weight& src, int64_t group, int64_t r0, int64_t r1, int8_t* q, float* scales) {
#if defined(RUSTASR_QUANT_X86)
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512vl");
  if (avx512 && src.dtype == DType::kBF16 && group % 16 == 0)
    return quantize_rows_bf16_avx512(src, group, r0, r1, q, scales);
#endif
  const int64_t cols = src.cols, gpr = cols / group;
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = r0; r < r1; ++r) {
    weight_to_f32(src, r * cols, cols, row.data());
    for (int64_t g = 0; g < gpr; ++g) {
      const float* v = row.data() + g * group;
      float mx = 0.f;
      for (int64_t i = 0; i < group; ++i) mx = std::max(mx, std::fabs(v[i]));
      const float scale = mx / 127.f;
      const float inv = mx > 0.f ? 127.f / mx : 0.f;
      scales[r * gpr + g] = scale;
      int8_t* out = q + r * cols + g * group;
      // |v * inv| <= 127: adding and subtracting 1.5 * 2^23 rounds to nearest-even without a libm call.
      constexpr float kRound = 12582912.0f;
      for (int64_t i = 0; i < group; ++i) {
        float t = (v[i] * inv + kRound) - kRound;
        t = t > 127.f ? 127.f : (t < -127.f ? -127.f : t);
        out[i] = static_cast<int8_t>(static_cast<int>(t));
      }
    }
  }
}

int64_t int4_group(int64_t cols) {
  for (int64_t g : {32, 16})
    if (cols % g == 0) return g;
  return 0;
}

void quantize_rows_int4(const Weight& src, int64_t group, int64_t r0, int64_t r1, uint8_t* q, float* scales) {
  const int64_t cols = src.cols, gpr = cols / group, half = group / 2;
  std::vector<float> row(static_cast<size_t>(cols));
  int8_t qv[32], best[32];
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: rounds to nearest-even without a libm call
  for (int64_t r = r0; r < r1; ++r) {
    weight_to_f32(src, r * cols, cols, row.data());
    for (int64_t g = 0; g < gpr; ++g) {
      const float* v = row.data() + g * group;
      float mx = 0.f;
      for (int64_t i = 0; i < group; ++i) mx = std::max(mx, std::fabs(v[i]));
      float scale = 0.f;
      std::memset(best, 0, sizeof best);
      if (mx > 0.f) {
        double best_err = -1;
        for (int a = 0; a <= 6; ++a) {
          const float s = mx / 7.f * (1.f - 0.05f * static_cast<float>(a));
          const float inv = 1.f / s;
          double wq = 0, qq = 0;
          for (int64_t i = 0; i < group; ++i) {
            float t = (v[i] * inv + kRound) - kRound;
            t = t > 7.f ? 7.f : (t < -7.f ? -7.f : t);
            qv[i] = static_cast<int8_t>(t);
            wq += static_cast<double>(v[i]) * t;
            qq += static_cast<double>(t) * t;
          }
          // The least-squares scale for these q, and its error.
          const double fit = qq > 0 ? wq / qq : 0;
          double err = 0;
          for (int64_t i = 0; i < group; ++i) {
            const double d = v[i] - fit * qv[i];
            err += d * d;
          }
          if (best_err < 0 || err < best_err) {
            best_err = err;
            scale = static_cast<float>(fit);
            std::copy(qv, qv + group, best);
          }
        }
      }
      scales[r * gpr + g] = scale;
      uint8_t* out = q + r * (cols / 2) + g * half;
      // The block's first half in the low nibbles, its second half in the high nibbles.
      for (int64_t j = 0; j < half; ++j) out[j] = static_cast<uint8_t>((best[j] + 8) | ((best[half + j] + 8) << 4));
    }
  }
}

}  // namespace rustasr
