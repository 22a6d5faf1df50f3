// Views of weights as they lie in the checkpoint (memory-mapped, never copied on the CPU backend).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace rustasr {

// kI8: symmetric int8 quantised at load (ModelParams.quant = "int8"), never read from a checkpoint: element
// (r, c) = data[r * cols + c] * scales[r * (cols / group) + c / group].
enum class DType { kBF16, kF16, kF32, kI8 };

inline size_t dtype_size(DType t) { return t == DType::kF32 ? 4 : t == DType::kI8 ? 1 : 2; }
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

// Bytes of a weight's data (scales not included).
inline size_t weight_bytes(const Weight& w) {
  return static_cast<size_t>(w.rows) * static_cast<size_t>(w.cols) * dtype_size(w.dtype);
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
  }
  return 0.f;
}

// Converts elements [offset, offset + n) of a weight to float32.
void weight_to_f32(const Weight& w, int64_t offset, int64_t n, float* out);

}  // namespace rustasr
