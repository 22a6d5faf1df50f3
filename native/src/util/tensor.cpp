#include "tensor.h"

namespace rustasr {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kBF16: return "BF16";
    case DType::kF16: return "F16";
    case DType::kF32: return "F32";
    case DType::kI8: return "I8";
    case DType::kI4: return "I4";
  }
  return "?";
}

// IEEE 754 binary16 -> binary32, exact for every input (normals, subnormals, +-0, +-inf, NaN payloads).
float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);  // inf / NaN (payload kept)
  } else if (exp != 0) {
    bits = sign | ((exp + (127 - 15)) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;  // +-0
  } else {
    // Subnormal: value = mant * 2^-24. Normalise the mantissa.
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400u) == 0);
    mant &= 0x3FFu;
    bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Element reads go through memcpy so that a Weight whose data is not aligned to its dtype is still read
// correctly (the loader aligns mapped tensors, but Weights can be built elsewhere); compilers turn these
// into plain (vectorised) loads.
void weight_to_f32(const Weight& w, int64_t offset, int64_t n, float* out) {
  if (n <= 0) return;
  const unsigned char* base = static_cast<const unsigned char*>(w.data);
  switch (w.dtype) {
    case DType::kBF16: {
      const unsigned char* src = base + offset * 2;
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        const uint32_t bits = static_cast<uint32_t>(h) << 16;
        std::memcpy(out + i, &bits, 4);
      }
      return;
    }
    case DType::kF16: {
      const unsigned char* src = base + offset * 2;
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        out[i] = f16_to_f32(h);
      }
      return;
    }
    case DType::kF32:
      std::memcpy(out, base + offset * 4, static_cast<size_t>(n) * 4);
      return;
    case DType::kI8:
    case DType::kI4:
      for (int64_t i = 0; i < n; ++i) out[i] = weight_at(w, offset + i);
      return;
  }
}

}  // namespace rustasr
