// Views of weights as they lie in the checkpoint (memory-mapped, never copied on the CPU backend).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace rustasr {

// kI8: symmetric int8 quantised at load (ModelParams.quant = "int8"), never read from a checkpoint: element
// (r, c) = data[r * cols + c] * scales[r * (cols / group) + c / group].
// kI4: symmetric int4 quantised at load (quant "int4"): each row is blocks of `group` (16 or 32) columns of
// group / 2 bytes; byte j of a block holds column j of the block in its low nibble and column group / 2 + j in
// its high nibble, as q + 8 (q in -7 .. 7); element (r, c) = q * scales[r * (cols / group) + c / group].
enum class DType { kBF16, kF16, kF32, kI8, kI4 };

// Bytes per element (kI4: 1, an upper bound; weight_row_bytes gives the exact size of a row).
inline size_t dtype_size(DType t) { return t == DType::kF32 ? 4 : (t == DType::kI8 || t == DType::kI4) ? 1 : 2; }
const char* dtype_name(DType t);

// A read-only weight tensor: `data` points into the mapping. Shapes are row-major; a Linear weight is
// [rows = out_features, cols = in_features] as in PyTorch. 1-D tensors have rows = 1.
struct Weight {
  const void* data = nullptr;
  DType dtype = DType::kBF16;
  int64_t rows = 0;
  int64_t cols = 0;
  std::string name;  // the checkpoint name, for error messages
  // kI8 only: one float32 scale per `group` consecutive elements of a row (group divides cols).
  const float* scales = nullptr;
  int64_t group = 0;
  // A GPU backend's own copy of data / scales (Backend::prepare_weight); null on the CPU backend.
  const void* dev = nullptr;
  const float* dev_scales = nullptr;

  int64_t numel() const { return rows * cols; }
  bool empty() const { return data == nullptr; }
};

// Bytes of one row of `w`'s data (scales not included).
inline int64_t weight_row_bytes(const Weight& w) {
  return w.dtype == DType::kI4 ? w.cols / 2 : w.cols * static_cast<int64_t>(dtype_size(w.dtype));
}

// Bytes of a weight's data (scales not included).
inline size_t weight_bytes(const Weight& w) {
  return static_cast<size_t>(w.rows) * static_cast<size_t>(weight_row_bytes(w));
}

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float f16_to_f32(uint16_t h);

// Element i of a weight, upcast to float (slow path: use for small vectors such as norm weights and biases).
inline float weight_at(const Weight& w, int64_t i) {
  switch (w.dtype) {
    case DType::kBF16: return bf16_to_f32(static_cast<const uint16_t*>(w.data)[i]);
    case DType::kF16: return f16_to_f32(static_cast<const uint16_t*>(w.data)[i]);
    case DType::kF32: return static_cast<const float*>(w.data)[i];
    case DType::kI8: {
      const int64_t r = i / w.cols, c = i % w.cols;
      return static_cast<float>(static_cast<const int8_t*>(w.data)[i]) * w.scales[r * (w.cols / w.group) + c / w.group];
    }
    case DType::kI4: {
      const int64_t r = i / w.cols, c = i % w.cols, g = c / w.group, j = c % w.group, half = w.group / 2;
      const uint8_t b = static_cast<const uint8_t*>(w.data)[r * (w.cols / 2) + g * half + j % half];
      const int q = (j < half ? (b & 15) : (b >> 4)) - 8;
      return static_cast<float>(q) * w.scales[r * (w.cols / w.group) + g];
    }
  }
  return 0.f;
}

// Converts elements [offset, offset + n) of a weight to float32.
void weight_to_f32(const Weight& w, int64_t offset, int64_t n, float* out);

}  // namespace rustasr
